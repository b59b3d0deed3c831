"""Fit presets: the plausibility thresholds of the paper, by sequence and data set.

Iriondo et al. (MRM 2020, section 2.3) keep only voxels with a physically plausible fit:
data set A (2D, T1rho) T1rho < 250 ms; data set B (3D, T1rho and T2) T1rho < 200 ms and
T2 < 150 ms. A preset bundles such a threshold with the kind of series; pass its name to
:func:`discvbr.fitting.fit_monoexp` (``preset="t2"``) or to ``discvbr fit --preset``.
"""

from __future__ import annotations

from dataclasses import dataclass

from discvbr.errors import DiscVBRError

__all__ = ["FitPreset", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class FitPreset:
    """Fit options for one kind of series.

    Attributes
    ----------
    name : str
        Key in :data:`PRESETS`.
    kind : str
        Relaxation time measured: ``"t1rho"`` (times are spin-lock times) or ``"t2"``
        (echo times).
    t_min, t_max : float
        Valid T range in ms, exclusive.
    description : str
        Where the numbers come from.
    """

    name: str
    kind: str
    t_min: float
    t_max: float
    description: str


#: Presets by name. ``"t1rho"`` is the paper's more inclusive T1rho threshold (data set A).
PRESETS: dict[str, FitPreset] = {
    preset.name: preset
    for preset in (
        FitPreset("t1rho_a", "t1rho", 0.0, 250.0, "T1rho < 250 ms (Iriondo 2020, data set A, 2D)"),
        FitPreset("t1rho_b", "t1rho", 0.0, 200.0, "T1rho < 200 ms (Iriondo 2020, data set B, 3D)"),
        FitPreset("t1rho", "t1rho", 0.0, 250.0, "T1rho < 250 ms (Iriondo 2020, data set A; the inclusive one)"),
        FitPreset("t2", "t2", 0.0, 150.0, "T2 < 150 ms (Iriondo 2020, data set B, 3D)"),
    )
}


def get_preset(preset: "str | FitPreset") -> FitPreset:
    """The preset of that name (or the preset itself).

    Raises
    ------
    DiscVBRError
        Unknown name.
    """
    if isinstance(preset, FitPreset):
        return preset
    try:
        return PRESETS[str(preset).lower()]
    except KeyError:
        raise DiscVBRError(f"unknown fit preset {preset!r}; choose one of {', '.join(PRESETS)}") from None
