"""Disc levels, their label values and their colours, the same everywhere.

Levels are numbered from the bottom up, as in the paper: label 1 is L5S1, the
most inferior disc, and label 5 is L1L2. The colours are used by every figure,
the Slicer segmentations and the colour tables, so a disc keeps its colour
throughout a study.
"""

from __future__ import annotations

__all__ = ["DISC_LEVELS", "DISC_COLOURS", "VERTEBRA_LABELS", "T12L1_LABEL", "label_of", "level_of"]

#: Disc names indexed by ``label - 1`` (label 1 = L5S1 ... label 5 = L1L2).
DISC_LEVELS: tuple[str, ...] = ("L5S1", "L4L5", "L3L4", "L2L3", "L1L2")

#: RGB colour (0..1) per disc level; distinguishable for the common colour-vision deficiencies
#: (Okabe-Ito palette).
DISC_COLOURS: dict[str, tuple[float, float, float]] = {
    "L5S1": (0.835, 0.369, 0.000),  # vermillion
    "L4L5": (0.902, 0.624, 0.000),  # orange
    "L3L4": (0.000, 0.620, 0.451),  # bluish green
    "L2L3": (0.000, 0.447, 0.698),  # blue
    "L1L2": (0.800, 0.475, 0.655),  # reddish purple
}


#: Labels of the vertebrae in spine label maps (the phantom's ``truth/spine_labels``), next to
#: the disc labels 1-5; the whole sacrum is one label.
VERTEBRA_LABELS: dict[str, int] = {"sacrum": 10, "L5": 11, "L4": 12, "L3": 13, "L2": 14, "L1": 15, "T12": 16}
#: Label of the T12L1 disc in spine label maps (not one of the five analysed discs).
T12L1_LABEL = 6


def label_of(level: str) -> int:
    """Label value of a disc level name (``"L5S1"`` -> 1 ... ``"L1L2"`` -> 5)."""
    from discvbr.errors import DiscVBRError

    try:
        return DISC_LEVELS.index(level) + 1
    except ValueError:
        raise DiscVBRError(f"unknown disc level {level!r}; expected one of {', '.join(DISC_LEVELS)}") from None


def level_of(label: int) -> str:
    """Disc level name of a label value (1 -> ``"L5S1"`` ... 5 -> ``"L1L2"``)."""
    from discvbr.errors import DiscVBRError

    if not 1 <= int(label) <= len(DISC_LEVELS):
        raise DiscVBRError(f"disc label {label} is outside 1..{len(DISC_LEVELS)} (1 = L5S1 ... 5 = L1L2)")
    return DISC_LEVELS[int(label) - 1]
