"""Region-of-interest analysis: the whole-disc mean per subject, with the voxel-wise tests.

The paper compares voxel-wise maps with the classic analysis of the mean relaxation
time of each disc (e.g. mean-disc T1rho against Pfirrmann grade, r from -0.15 at L1L2
to -0.77 at L5S1). :func:`roi_analysis` runs the same test as the voxel analysis on
that mean, so both are read side by side (:func:`roi_table`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.stats.corrections import CORRECTIONS, adjust_pvalues
from discvbr.stats.results import VoxelResult
from discvbr.stats.voxelwise import voxel_by_group, voxel_by_time, voxel_by_variable, voxel_by_voxel

__all__ = ["ANALYSES", "roi_means", "roi_analysis", "roi_table"]

#: The voxel-wise analyses by name.
ANALYSES = {
    "voxel_by_variable": voxel_by_variable,
    "voxel_by_group": voxel_by_group,
    "voxel_by_voxel": voxel_by_voxel,
    "voxel_by_time": voxel_by_time,
}


def roi_means(maps: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean of each subject's map over the disc.

    Parameters
    ----------
    maps : array_like, shape (n_subjects, *spatial) or (n_subjects, n_voxels)
        NaN outside the disc and for invalid fits.
    mask : array_like of bool, optional
        The disc's voxels (spatial shape); default every voxel.

    Returns
    -------
    ndarray of float64, shape (n_subjects,)
        Mean over the subject's finite voxels; NaN for a subject with none.
    """
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim < 2:
        raise DiscVBRError(f"maps: expected (subjects, ...) array, got shape {arr.shape}")
    flat = arr.reshape(arr.shape[0], -1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != arr.shape[1:]:
            raise DiscVBRError(f"mask of shape {mask.shape} does not fit maps of spatial shape {arr.shape[1:]}")
        flat = flat[:, mask.reshape(-1)]
    finite = np.isfinite(flat)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(finite, flat, 0.0).sum(axis=1) / count, np.nan)


def roi_analysis(
    analysis: str,
    maps: np.ndarray,
    *,
    second_maps: np.ndarray | None = None,
    variables: pd.DataFrame | None = None,
    mask: np.ndarray | None = None,
    **options,
) -> VoxelResult:
    """Run a voxel-wise analysis on the whole-disc mean of each subject.

    Parameters
    ----------
    analysis : str
        ``"voxel_by_variable"``, ``"voxel_by_group"``, ``"voxel_by_voxel"`` or
        ``"voxel_by_time"``.
    maps : array_like
        The maps (for ``voxel_by_voxel`` the first stack, for ``voxel_by_time`` the
        baseline).
    second_maps : array_like, optional
        ``voxel_by_voxel``: the second stack; ``voxel_by_time``: the follow-up. Both
        means of a subject are then taken over the voxels it has in both stacks.
    variables : DataFrame, optional
        Subject variables indexed by subject id.
    mask : array_like of bool, optional
        The disc's voxels.
    **options
        Keyword options of the analysis (``variable``, ``covariates``, ``subjects``...).

    Returns
    -------
    VoxelResult
        A result on one "voxel" (the mean), on no grid.
    """
    if analysis not in ANALYSES:
        raise DiscVBRError(f"unknown analysis {analysis!r}; choose one of {', '.join(ANALYSES)}")
    function = ANALYSES[analysis]
    if analysis in ("voxel_by_voxel", "voxel_by_time"):
        if second_maps is None:
            raise DiscVBRError(f"{analysis} needs a second stack of maps")
        a = np.asarray(maps, dtype=np.float64)
        b = np.asarray(second_maps, dtype=np.float64)
        if a.shape != b.shape:
            raise DiscVBRError(f"the two stacks of maps differ in shape: {a.shape} and {b.shape}")
        # Both means of a subject over the same voxels: those it has in both stacks.
        both = np.isfinite(a) & np.isfinite(b)
        first = roi_means(np.where(both, a, np.nan), mask=mask)[:, None]
        second = roi_means(np.where(both, b, np.nan), mask=mask)[:, None]
        if analysis == "voxel_by_voxel":
            return function(first, second, variables, **options)
        return function(first, second, **options)
    return function(roi_means(maps, mask=mask)[:, None], variables, **options)


def roi_table(results: Mapping[str, VoxelResult]) -> pd.DataFrame:
    """One row per region (disc) with the ROI test's statistics.

    Parameters
    ----------
    results : mapping of str to VoxelResult
        ROI results by region name (e.g. disc level).

    Returns
    -------
    DataFrame
        Index: region; columns: the test's values (``r``, ``t``, ``p``, ``n`` ...),
        ``n_subjects``, ``n_excluded``, and ``p_bonferroni``, ``p_holm``, ``p_fdr_bh``
        corrected over the regions of the table (one test per disc).
    """
    rows = {}
    for name, result in results.items():
        row = {
            key: float(value[0])
            for key, value in result.values.items()
            if np.size(value) == 1 and not key.startswith("p_")
        }
        row["n_subjects"] = len(result.subjects)
        row["n_excluded"] = len(result.excluded)
        row["description"] = result.description
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "region"
    for method in CORRECTIONS:
        table[f"p_{method}"] = adjust_pvalues(table["p"].to_numpy(dtype=float), method=method)[0]
    return table
