"""Quality control of a disc registration: overlap, Jacobian, distribution of values, flags.

Iriondo et al. (MRM 2020, section 2.2) judge a registration by the Dice overlap of the
registered mask with the atlas mask, the determinant of the spatial Jacobian of the
deformation (J > 1 expansion, 0 < J < 1 compression, J <= 0 folding; its SD over the disc
enters the tuning objective) and by checking that the distribution of relaxation values
inside the disc is the same before and after registration (their Fig. 4). The thresholds
that turn these numbers into flags (:class:`QCThresholds`) are DiscVBR's defaults, not
values from the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "QCThresholds",
    "HistogramChange",
    "DiscQC",
    "dice",
    "jacobian_summary",
    "histogram_change",
    "flag_disc",
]


@dataclass(frozen=True)
class QCThresholds:
    """Limits beyond which a registered disc is flagged for review.

    Parameters
    ----------
    min_dice : float
        Dice of the registered mask with the atlas mask below this -> ``"low-dice"``.
    max_folded_fraction : float
        Fraction of atlas-disc voxels with det J <= 0 above this -> ``"folding"``.
    max_det_jacobian_sd : float
        SD of det J over the atlas disc above this -> ``"irregular-jacobian"``.
    det_jacobian_range : tuple of float
        Plausible (lowest, highest) det J over the atlas disc relative to its mean over the
        disc; beyond -> ``"jacobian-range"``. A part of a disc that shrinks to less than half,
        or grows to more than twice, the volume change of the disc as a whole is not a
        correspondence of anatomy but a registration bending the interior to fit the
        outline (known smooth deformations of the shipped atlases span 0.7-1.5 relative
        to their mean; ``benchmarks/bench_registration_accuracy.py``).
    max_ks_distance : float
        Kolmogorov-Smirnov distance between the disc's values before and after
        registration above this -> ``"histogram-changed"``.
    """

    min_dice: float = 0.90
    max_folded_fraction: float = 0.0
    max_det_jacobian_sd: float = 0.4
    det_jacobian_range: tuple[float, float] = (0.5, 2.0)
    max_ks_distance: float = 0.2


@dataclass(frozen=True)
class HistogramChange:
    """Distribution of a disc's values before and after registration.

    ``ks_distance`` is the two-sample Kolmogorov-Smirnov statistic (largest gap between the
    two empirical CDFs, 0..1); ``density_*`` are histograms normalised to unit area over
    ``edges``.
    """

    ks_distance: float
    ks_pvalue: float
    n_before: int
    n_after: int
    edges: np.ndarray
    density_before: np.ndarray
    density_after: np.ndarray

    def summary(self) -> dict:
        return {"ks_distance": self.ks_distance, "ks_pvalue": self.ks_pvalue, "n_before": self.n_before, "n_after": self.n_after}


@dataclass
class DiscQC:
    """Numbers that describe one registered disc (see the module notes).

    ``det_jacobian_*`` are over the atlas disc mask; ``folded_fraction`` is the fraction of
    atlas-disc voxels with det J <= 0; ``centroid_offset_mm`` is the distance between the
    subject's and the atlas's disc centroids before registration; ``ks_distance`` is set
    when the transform is applied to an image (:func:`histogram_change`).
    """

    dice: float
    det_jacobian_mean: float
    det_jacobian_sd: float
    det_jacobian_min: float
    det_jacobian_max: float
    folded_fraction: float
    centroid_offset_mm: float
    subject_voxels: int
    atlas_voxels: int
    ks_distance: float | None = None
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DiscQC":
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |A and B| / (|A| + |B|)`` of two boolean masks (NaN if both empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def jacobian_summary(det_jacobian: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean, SD (population, ddof 0), min, max and folded fraction (J <= 0) of det J in ``mask``."""
    values = np.asarray(det_jacobian, dtype=float)[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        nan = float("nan")
        return {"mean": nan, "sd": nan, "min": nan, "max": nan, "folded_fraction": nan}
    return {
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "folded_fraction": float(np.mean(values <= 0)),
    }


def histogram_change(before: np.ndarray, after: np.ndarray, *, bins: int = 32) -> HistogramChange:
    """Compare the values of a disc before and after registration.

    Parameters
    ----------
    before : ndarray
        Values inside the subject's disc in its own space (NaN ignored).
    after : ndarray
        Values inside the atlas disc after warping (NaN ignored).
    bins : int
        Histogram bins over the common range.

    Returns
    -------
    HistogramChange
        With the two-sample Kolmogorov-Smirnov distance (:func:`scipy.stats.ks_2samp`).
    """
    from scipy.stats import ks_2samp

    x = np.asarray(before, dtype=float).ravel()
    y = np.asarray(after, dtype=float).ravel()
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        nan = float("nan")
        return HistogramChange(nan, nan, int(x.size), int(y.size), np.zeros(0), np.zeros(0), np.zeros(0))
    test = ks_2samp(x, y)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    density_before, _ = np.histogram(x, bins=edges, density=True)
    density_after, _ = np.histogram(y, bins=edges, density=True)
    return HistogramChange(float(test.statistic), float(test.pvalue), int(x.size), int(y.size), edges, density_before, density_after)


def flag_disc(qc: DiscQC, thresholds: QCThresholds = QCThresholds()) -> list[str]:
    """Names of the thresholds ``qc`` fails (empty when the disc passes)."""
    flags = []
    if not qc.dice >= thresholds.min_dice:
        flags.append("low-dice")
    if not qc.folded_fraction <= thresholds.max_folded_fraction:
        flags.append("folding")
    if not qc.det_jacobian_sd <= thresholds.max_det_jacobian_sd:
        flags.append("irregular-jacobian")
    low, high = thresholds.det_jacobian_range
    mean = qc.det_jacobian_mean
    if not (mean > 0 and low * mean <= qc.det_jacobian_min and qc.det_jacobian_max <= high * mean):
        flags.append("jacobian-range")
    if qc.ks_distance is not None and not qc.ks_distance <= thresholds.max_ks_distance:
        flags.append("histogram-changed")
    return flags
