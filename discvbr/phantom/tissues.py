"""Relaxation times and signal weights of the phantom's tissues.

Values are for 3 T, in ms, with ``s0`` the signal at zero preparation time relative
to a healthy nucleus pulposus. Disc values follow the degeneration score (Pfirrmann
grade 1-5, continuous): the nucleus loses T1rho/T2 and contrast with the annulus as
it degenerates (healthy nucleus T1rho about 140 ms, annulus 40-70 ms; T2 lower), as
reported for lumbar discs (e.g. Blumenkrantz et al. 2010, Zobel et al. 2012, Pandit
et al. 2016). A darker intranuclear cleft runs along the disc's mid-plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discvbr.phantom.anatomy import Tissue

__all__ = ["TissueProperties", "TISSUE_PROPERTIES", "DiscRelaxation", "disc_relaxation", "NUCLEUS_CENTER"]


@dataclass(frozen=True)
class TissueProperties:
    """Signal weight, T1rho and T2 (ms), and texture amplitude (relative SD) of a tissue."""

    s0: float
    t1rho: float
    t2: float
    texture: float = 0.0


TISSUE_PROPERTIES: dict[Tissue, TissueProperties] = {
    Tissue.AIR: TissueProperties(0.0, 1.0, 1.0),
    Tissue.FAT: TissueProperties(0.90, 75.0, 62.0, 0.05),
    Tissue.MUSCLE: TissueProperties(0.45, 40.0, 32.0, 0.10),
    Tissue.VISCERA: TissueProperties(0.50, 58.0, 46.0, 0.25),
    Tissue.CSF: TissueProperties(1.00, 420.0, 600.0, 0.0),
    Tissue.CORD: TissueProperties(0.70, 90.0, 75.0, 0.03),
    Tissue.ROOTS: TissueProperties(0.65, 85.0, 70.0, 0.05),
    Tissue.LIGAMENT: TissueProperties(0.15, 15.0, 10.0, 0.05),
    Tissue.CORTEX: TissueProperties(0.06, 6.0, 4.0, 0.0),
    Tissue.MARROW: TissueProperties(0.55, 50.0, 42.0, 0.12),
    Tissue.DISC: TissueProperties(1.00, 140.0, 105.0, 0.0),  # replaced by disc_relaxation()
    Tissue.RUDIMENT: TissueProperties(0.40, 45.0, 35.0, 0.05),
    Tissue.FLUID: TissueProperties(0.95, 250.0, 300.0, 0.05),
    Tissue.GAS: TissueProperties(0.02, 5.0, 5.0, 0.0),
    Tissue.IMAGE: TissueProperties(0.5, 50.0, 40.0, 0.0),  # placeholder: real-image mode sets its own
}

_GRADES = np.arange(1.0, 6.0)
_NUCLEUS_T1RHO = np.array([140.0, 115.0, 92.0, 72.0, 58.0])
_INNER_ANNULUS_T1RHO = np.array([72.0, 68.0, 62.0, 56.0, 50.0])
_OUTER_ANNULUS_T1RHO = np.array([50.0, 48.0, 45.0, 43.0, 41.0])
_NUCLEUS_S0 = np.array([1.00, 0.90, 0.75, 0.62, 0.52])
_ANNULUS_S0 = np.array([0.60, 0.58, 0.55, 0.50, 0.46])
_NUCLEUS_SIZE = np.array([1.00, 0.95, 0.85, 0.75, 0.65])
_NUCLEUS_SOFTNESS = np.array([0.07, 0.10, 0.16, 0.22, 0.28])
_CLEFT_DEPTH = np.array([0.06, 0.14, 0.18, 0.15, 0.10])
#: T2 / T1rho ratio in nucleus and annulus
T2_RATIO_NUCLEUS, T2_RATIO_ANNULUS = 0.75, 0.68
#: Nucleus centre and semi-axes in normalised disc coordinates (u posterior->anterior, v, x)
NUCLEUS_CENTER = (-0.10, 0.0, 0.0)
_NUCLEUS_AXES = (0.60, 0.72, 0.65)


@dataclass(frozen=True)
class DiscRelaxation:
    """Relaxation pattern of one disc at its sub-voxel samples."""

    t1rho: np.ndarray  # ms
    t2_ratio: np.ndarray  # T2 / T1rho
    s0: np.ndarray
    nucleus: np.ndarray  # 0..1 nucleus weight


def disc_relaxation(u: np.ndarray, v: np.ndarray, x: np.ndarray, degeneration: float) -> DiscRelaxation:
    """Nucleus/annulus relaxation pattern of a disc from normalised disc coordinates.

    Parameters
    ----------
    u, v, x : ndarray
        Normalised position in the disc: ``u`` posterior (-1) to anterior (+1), ``v``
        inferior (-1) to superior (+1) endplate, ``x`` right (-1) to left (+1) edge.
    degeneration : float
        Continuous degeneration score, 1 (healthy, Pfirrmann I) to 5 (Pfirrmann V).

    Returns
    -------
    DiscRelaxation
        T1rho (ms), T2/T1rho ratio, relative S0 and nucleus weight per sample.
    """
    d = float(np.clip(degeneration, 1.0, 5.0))
    at = lambda table: float(np.interp(d, _GRADES, table))  # noqa: E731
    size = at(_NUCLEUS_SIZE)
    r = np.sqrt(
        ((u - NUCLEUS_CENTER[0]) / (_NUCLEUS_AXES[0] * size)) ** 2
        + ((v - NUCLEUS_CENTER[1]) / (_NUCLEUS_AXES[1] * size)) ** 2
        + ((x - NUCLEUS_CENTER[2]) / (_NUCLEUS_AXES[2] * size)) ** 2
    )
    nucleus = 1.0 / (1.0 + np.exp((r - 1.0) / at(_NUCLEUS_SOFTNESS)))
    radial = np.clip(u**2 + x**2, 0.0, 1.0)
    annulus = at(_INNER_ANNULUS_T1RHO) - (at(_INNER_ANNULUS_T1RHO) - at(_OUTER_ANNULUS_T1RHO)) * radial
    t1rho = annulus + (at(_NUCLEUS_T1RHO) - annulus) * nucleus
    t1rho = t1rho * (1.0 - at(_CLEFT_DEPTH) * np.exp(-0.5 * (v / 0.12) ** 2) * nucleus)
    s0 = at(_ANNULUS_S0) + (at(_NUCLEUS_S0) - at(_ANNULUS_S0)) * nucleus
    ratio = T2_RATIO_ANNULUS + (T2_RATIO_NUCLEUS - T2_RATIO_ANNULUS) * nucleus
    return DiscRelaxation(t1rho.astype(np.float32), ratio.astype(np.float32), s0.astype(np.float32), nucleus.astype(np.float32))
