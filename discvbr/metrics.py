"""Segmentation quality per disc (2D and 3D) and biomarker agreement.

Segmentation metrics (Iriondo et al. 2020, Table 2), comparing an automatic mask A
with a manual (reference) mask M of one disc:

* Dice similarity ``2 |A & M| / (|A| + |M|)``;
* mean absolute surface distance (MSD): the mean, over the boundary voxels of both
  masks, of the distance to the other mask's boundary (symmetric), in pixels (unit
  voxel spacing) and in mm;
* percent volume difference ``100 (|A| - |M|) / |M|`` (negative: under-segmentation);
* sensitivity ``|A & M| / |M|`` and precision ``|A & M| / |A|``.

In 2D mode every sagittal slice is scored on its own (single-slice data); in 3D mode
the stack is one volume. Undefined values (a disc absent from both masks, a surface
distance with an empty mask) are NaN.

Biomarker agreement (Table 3): the mean relaxation time of each disc from manual
versus automatic masks, compared with Pearson's r, a paired two-sided t-test and
Bland-Altman analysis (bias = mean of automatic - manual, limits bias +- 1.96 SD).

References
----------
Dice LR. Measures of the amount of ecologic association between species. Ecology 1945.
Bland JM, Altman DG. Statistical methods for assessing agreement between two methods of
clinical measurement. Lancet 1986;1:307-310.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

from discvbr.errors import DiscVBRError
from discvbr.levels import DISC_LEVELS

__all__ = [
    "dice",
    "sensitivity",
    "precision",
    "percent_volume_difference",
    "surface_voxels",
    "mean_surface_distance",
    "disc_metrics",
    "segmentation_metrics",
    "summarise_metrics",
    "mean_per_disc",
    "biomarker_agreement",
]

METRIC_NAMES = ("dice", "msd_px", "msd_mm", "vd_percent", "sensitivity", "precision")


def _pair(manual: np.ndarray, automatic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    manual = np.asarray(manual, dtype=bool)
    automatic = np.asarray(automatic, dtype=bool)
    if manual.shape != automatic.shape:
        raise DiscVBRError(f"masks differ in shape: manual {manual.shape}, automatic {automatic.shape}")
    return manual, automatic


def dice(manual: np.ndarray, automatic: np.ndarray) -> float:
    """Dice similarity coefficient; NaN when both masks are empty."""
    m, a = _pair(manual, automatic)
    total = m.sum() + a.sum()
    return float(2.0 * np.logical_and(m, a).sum() / total) if total else float("nan")


def sensitivity(manual: np.ndarray, automatic: np.ndarray) -> float:
    """True positive fraction of the manual mask; NaN when the manual mask is empty."""
    m, a = _pair(manual, automatic)
    return float(np.logical_and(m, a).sum() / m.sum()) if m.any() else float("nan")


def precision(manual: np.ndarray, automatic: np.ndarray) -> float:
    """Fraction of the automatic mask inside the manual one; NaN when the automatic mask is empty."""
    m, a = _pair(manual, automatic)
    return float(np.logical_and(m, a).sum() / a.sum()) if a.any() else float("nan")


def percent_volume_difference(manual: np.ndarray, automatic: np.ndarray) -> float:
    """``100 (|A| - |M|) / |M|``; NaN when the manual mask is empty."""
    m, a = _pair(manual, automatic)
    return float(100.0 * (a.sum() - m.sum()) / m.sum()) if m.any() else float("nan")


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a mask: mask voxels with a face neighbour outside it.

    Voxels on the array's edge count as boundary (the outside is background).
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def mean_surface_distance(manual: np.ndarray, automatic: np.ndarray, *, spacing=None) -> float:
    """Symmetric mean absolute surface distance between two masks.

    Parameters
    ----------
    manual, automatic : ndarray of bool
        Masks of one structure on the same grid (2D or 3D).
    spacing : sequence of float, optional
        Voxel size per axis (mm); default 1 (distances in pixels).

    Returns
    -------
    float
        Mean over the boundary voxels of both masks of the Euclidean distance to the
        nearest boundary voxel of the other mask; NaN when either mask is empty.
    """
    m, a = _pair(manual, automatic)
    if not m.any() or not a.any():
        return float("nan")
    spacing = np.ones(m.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    if spacing.shape != (m.ndim,):
        raise DiscVBRError(f"spacing needs {m.ndim} values, got {spacing.tolist()}")
    sm, sa = surface_voxels(m), surface_voxels(a)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    to_m = ndimage.distance_transform_edt(~sm, sampling=spacing)
    total = to_a[sm].sum() + to_m[sa].sum()
    return float(total / (sm.sum() + sa.sum()))


def disc_metrics(manual: np.ndarray, automatic: np.ndarray, *, spacing) -> dict[str, float]:
    """Every segmentation metric for one disc's masks (2D or 3D).

    Returns
    -------
    dict
        dice, msd_px, msd_mm, vd_percent, sensitivity, precision, manual_voxels,
        automatic_voxels.
    """
    m, a = _pair(manual, automatic)
    return {
        "dice": dice(m, a),
        "msd_px": mean_surface_distance(m, a),
        "msd_mm": mean_surface_distance(m, a, spacing=spacing),
        "vd_percent": percent_volume_difference(m, a),
        "sensitivity": sensitivity(m, a),
        "precision": precision(m, a),
        "manual_voxels": int(m.sum()),
        "automatic_voxels": int(a.sum()),
    }


def segmentation_metrics(
    manual_labels: np.ndarray,
    automatic_labels: np.ndarray,
    *,
    spacing,
    mode: str = "3d",
    subject: str | None = None,
) -> list[dict]:
    """Per-disc metrics of two label maps (1 = L5S1 ... 5 = L1L2).

    Parameters
    ----------
    manual_labels, automatic_labels : ndarray (X, Y, Z)
        Canonical sagittal label maps on the same grid.
    spacing : sequence of 3 float
        Voxel size, mm.
    mode : {"3d", "2d"}
        ``"3d"``: one record per disc over the stack; ``"2d"``: one record per disc and
        sagittal slice where the disc is in either map.
    subject : str, optional
        Copied into every record.

    Returns
    -------
    list of dict
        Records with ``subject``, ``level``, ``slice`` (None in 3D) and the metrics of
        :func:`disc_metrics`. A disc absent from the whole manual map is skipped (it has
        no reference); in 2D, a slice where only the automatic map has it scores Dice 0.
    """
    manual_labels = np.asarray(manual_labels)
    automatic_labels = np.asarray(automatic_labels)
    if manual_labels.shape != automatic_labels.shape or manual_labels.ndim != 3:
        raise DiscVBRError(
            f"label maps must be 3D and of one shape: manual {manual_labels.shape}, automatic {automatic_labels.shape}"
        )
    if mode not in ("2d", "3d"):
        raise DiscVBRError(f"metric mode must be '2d' or '3d', got {mode!r}")
    spacing = np.asarray(spacing, dtype=float)
    records = []
    for label, level in enumerate(DISC_LEVELS, start=1):
        m_all, a_all = manual_labels == label, automatic_labels == label
        if not m_all.any():
            continue
        if mode == "3d":
            records.append({"subject": subject, "level": level, "slice": None, **disc_metrics(m_all, a_all, spacing=spacing)})
            continue
        # slices with the disc in either map: a false-positive slice scores Dice 0
        for i in np.flatnonzero(m_all.any(axis=(1, 2)) | a_all.any(axis=(1, 2))):
            metrics = disc_metrics(m_all[i], a_all[i], spacing=spacing[1:])
            records.append({"subject": subject, "level": level, "slice": int(i), **metrics})
    return records


def summarise_metrics(records: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of each metric per level and pooled over all discs (NaN-aware).

    Returns
    -------
    dict
        ``{level or "all": {metric: mean, ..., "n": count}}``.
    """
    out: dict[str, dict[str, float]] = {}
    for level in list(DISC_LEVELS) + ["all"]:
        rows = [r for r in records if level == "all" or r["level"] == level]
        if not rows:
            continue
        summary = {}
        for name in METRIC_NAMES:
            values = np.array([r[name] for r in rows], dtype=float)
            summary[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        summary["n"] = len(rows)
        out[level] = summary
    return out


def mean_per_disc(values: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean of a map (for example T1rho, ms) within each disc of a label map.

    Non-finite map values are ignored; a disc absent from the labels (or without finite
    values) gets NaN.
    """
    values = np.asarray(values, dtype=float)
    labels = np.asarray(labels)
    if values.shape != labels.shape:
        raise DiscVBRError(f"map of shape {values.shape} does not match labels of shape {labels.shape}")
    out = {}
    for label, level in enumerate(DISC_LEVELS, start=1):
        v = values[(labels == label) & np.isfinite(values)]
        out[level] = float(v.mean()) if v.size else float("nan")
    return out


def biomarker_agreement(manual: np.ndarray, automatic: np.ndarray) -> dict[str, float]:
    """Agreement of paired per-disc values (manual-mask vs automatic-mask means).

    Parameters
    ----------
    manual, automatic : array-like (n,)
        Paired values (for example mean T1rho per disc, ms); pairs with a NaN are left out.

    Returns
    -------
    dict
        n, pearson_r, pearson_p, t, t_p (paired two-sided t-test of automatic vs manual),
        bias (mean automatic - manual), sd_difference (ddof 1), loa_lower, loa_upper
        (bias -+ 1.96 SD).
    """
    manual = np.asarray(manual, dtype=float).ravel()
    automatic = np.asarray(automatic, dtype=float).ravel()
    if manual.shape != automatic.shape:
        raise DiscVBRError(f"{manual.size} manual values but {automatic.size} automatic values; they must be paired")
    keep = np.isfinite(manual) & np.isfinite(automatic)
    manual, automatic = manual[keep], automatic[keep]
    n = int(manual.size)
    if n < 3:
        raise DiscVBRError(f"biomarker agreement needs at least 3 paired values, got {n}")
    diff = automatic - manual
    r, r_p = stats.pearsonr(manual, automatic) if np.ptp(manual) > 0 and np.ptp(automatic) > 0 else (np.nan, np.nan)
    if np.ptp(diff) > 0:
        t, t_p = stats.ttest_rel(automatic, manual)
    else:
        t, t_p = np.nan, np.nan
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1))
    return {
        "n": n,
        "pearson_r": float(r),
        "pearson_p": float(r_p),
        "t": float(t),
        "t_p": float(t_p),
        "bias": bias,
        "sd_difference": sd,
        "loa_lower": bias - 1.96 * sd,
        "loa_upper": bias + 1.96 * sd,
    }
