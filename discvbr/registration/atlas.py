"""Disc atlases: level-specific disc masks of one subject, with geometry.

Every disc of every subject is registered to the same-level disc of an atlas (Iriondo et
al., MRM 2020, section 2.2: a healthy spine without gross deformities; another healthy
spine and a degenerated spine were tried as alternatives). An atlas is a disc label map
(1 = L5S1 ... 5 = L1L2) in DiscVBR's sagittal layout: a single slice ``(1, ny, nz)`` for
2D studies or a stack of slices for 3D studies, so its mode must match the data's.

Atlases are folders holding ``labels.nii.gz`` and ``atlas.json`` (name, description,
provenance). DiscVBR ships some in ``discvbr/data/atlas/`` (see :func:`available_atlases`),
built by ``discvbr build-atlas`` from the phantom (a healthy and a degenerated synthetic
spine) and from a real subject of ``data/lumbar-t2-real`` (their label maps come from
:mod:`discvbr.phantom.atlas`); users build their own from a healthy subject's disc labels
with the same command.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import Image, read_image, require_sagittal, write_image, write_json
from discvbr.levels import DISC_LEVELS, level_of
from discvbr.naming import check_id
from discvbr.registration.crop import bounding_box, crop
from discvbr.resources import ATLAS_DIR, DEFAULT_ATLAS

__all__ = [
    "ATLAS_DIR",
    "DEFAULT_ATLAS",
    "Atlas",
    "build_atlas",
    "save_atlas",
    "load_atlas",
    "available_atlases",
]

#: Margin kept around the discs when an atlas is stored, mm.
STORED_MARGIN_MM = 20.0


@dataclass(frozen=True)
class Atlas:
    """Level-specific atlas disc masks.

    Parameters
    ----------
    name : str
        Short name (``"phantom-healthy-2d"``).
    labels : Image
        uint8 disc labels 1 = L5S1 ... 5 = L1L2 on the atlas grid (DiscVBR layout).
    description : str
        What the atlas is, for people.
    source : dict
        Provenance (how it was built, versions).
    """

    name: str
    labels: Image
    description: str = ""
    source: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """2 for a single-slice atlas, 3 for a stack."""
        return 2 if self.labels.shape[0] == 1 else 3

    @property
    def mode(self) -> str:
        return f"{self.ndim}d"

    @property
    def levels(self) -> tuple[int, ...]:
        """Disc labels present in the atlas, ascending."""
        present = np.unique(np.asarray(self.labels.array))
        return tuple(int(v) for v in present if 1 <= v <= len(DISC_LEVELS))

    def has(self, label: int) -> bool:
        return int(label) in self.levels

    def disc(self, label: int, *, margin_mm: float) -> Image:
        """The atlas disc ``label`` as a 0/1 float32 mask cropped to its box plus ``margin_mm``.

        Raises
        ------
        DiscVBRError
            When the atlas has no such disc.
        """
        mask = np.asarray(self.labels.array) == int(label)
        box = bounding_box(mask, self.labels.spacing, margin_mm=margin_mm)
        if box is None:
            have = ", ".join(level_of(v) for v in self.levels) or "none"
            raise DiscVBRError(
                f"atlas {self.name!r} has no {level_of(label)} disc (label {label}); it has: {have}"
            )
        return crop(Image(mask.astype(np.float32), self.labels.affine), box)


def build_atlas(
    labels: Image,
    *,
    name: str,
    description: str = "",
    source: dict | None = None,
    margin_mm: float = STORED_MARGIN_MM,
) -> Atlas:
    """An atlas from a subject's disc label map.

    Parameters
    ----------
    labels : Image
        Disc labels 1 = L5S1 ... 5 = L1L2, 0 elsewhere, sagittal (any axis order; it is
        brought to DiscVBR's layout).
    name : str
        Atlas name (letters, digits, ``-``, ``_``).
    description : str
        Free text stored with the atlas.
    source : dict, optional
        Provenance stored with the atlas.
    margin_mm : float
        The atlas keeps the discs' bounding box plus this margin.

    Raises
    ------
    DiscVBRError
        On a bad name, non-sagittal labels, values other than 0-5, or no disc.
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise DiscVBRError(f"atlas name {name!r}: use letters, digits, '-' and '_' only")
    labels = require_sagittal(labels, what=f"atlas {name!r} labels")
    values = np.asarray(labels.array)
    if values.ndim != 3:
        raise DiscVBRError(f"atlas {name!r}: labels must be a 3D volume, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DiscVBRError(f"atlas {name!r}: labels must be whole numbers 0-5")
    unexpected = sorted(set(np.unique(values).astype(int).tolist()) - set(range(len(DISC_LEVELS) + 1)))
    if unexpected:
        raise DiscVBRError(
            f"atlas {name!r}: label values {unexpected} are not discs; expected 0 and 1 = L5S1 ... 5 = L1L2"
        )
    box = bounding_box(values > 0, labels.spacing, margin_mm=margin_mm)
    if box is None:
        raise DiscVBRError(f"atlas {name!r}: the label map has no disc")
    cropped = crop(Image(values.astype(np.uint8), labels.affine), box)
    return Atlas(name=name, labels=cropped, description=description, source=dict(source or {}))


def save_atlas(atlas: Atlas, folder: str | os.PathLike) -> Path:
    """Write ``labels.nii.gz`` and ``atlas.json`` to ``folder``; return the folder."""
    folder = Path(folder)
    write_image(folder / "labels.nii.gz", atlas.labels)
    write_json(folder / "atlas.json", {
        "name": atlas.name,
        "description": atlas.description,
        "mode": atlas.mode,
        "levels": [level_of(v) for v in atlas.levels],
        "shape": list(atlas.labels.shape),
        "spacing_mm": atlas.labels.spacing.round(4).tolist(),
        "source": atlas.source,
        "discvbr_version": __version__,
    })
    return folder


def available_atlases() -> dict[str, str]:
    """Shipped atlases: name -> description."""
    result = {}
    for meta in sorted(ATLAS_DIR.glob("*/atlas.json")):
        info = json.loads(meta.read_text())
        result[meta.parent.name] = info.get("description", "")
    return result


def load_atlas(name_or_path: str | os.PathLike, *, mode: str | None = None) -> Atlas:
    """Load an atlas folder, or a shipped atlas by name.

    Parameters
    ----------
    name_or_path : str or path-like
        A folder with ``labels.nii.gz`` and ``atlas.json``, or the name of a shipped atlas
        with or without its ``-2d``/``-3d`` suffix.
    mode : {"2d", "3d"}, optional
        Completes a name given without suffix, and is checked against the atlas found.

    Raises
    ------
    DiscVBRError
        When no such atlas exists, its files are broken, or its mode is not ``mode``.
    """
    if mode is not None and mode not in ("2d", "3d"):
        raise DiscVBRError(f"atlas mode must be '2d' or '3d', got {mode!r}")
    folder = Path(name_or_path)
    if not (folder / "atlas.json").is_file():
        name = check_id(str(name_or_path), what="atlas (neither a folder with atlas.json nor a shipped atlas name)")
        candidates = [name] + ([f"{name}-{mode}"] if mode else [])
        found = [ATLAS_DIR / c for c in candidates if (ATLAS_DIR / c / "atlas.json").is_file()]
        if not found:
            shipped = ", ".join(available_atlases()) or "none"
            raise DiscVBRError(
                f"atlas {name!r} not found: not a folder with atlas.json and labels.nii.gz, nor a shipped atlas "
                f"({shipped})"
            )
        folder = found[-1]
    try:
        info = json.loads((folder / "atlas.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DiscVBRError(f"atlas file {folder / 'atlas.json'} could not be read: {exc}") from None
    labels = read_image(folder / "labels.nii.gz", what=f"atlas {folder.name} labels")
    atlas = build_atlas(
        labels,
        name=str(info.get("name", folder.name)),
        description=str(info.get("description", "")),
        source=dict(info.get("source", {})),
        margin_mm=STORED_MARGIN_MM,
    )
    if mode is not None and atlas.mode != mode:
        raise DiscVBRError(f"atlas {atlas.name!r} is {atlas.mode}; the data need a {mode} atlas")
    return atlas
