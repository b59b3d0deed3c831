"""One call for a study: every disc of an atlas, the ROI means, and the joint correction.

:func:`analyze_discs` is what the command line and the end-to-end pipeline call. It
takes the subjects' maps on the atlas grid and the atlas label map (1 = L5S1 ... 5 =
L1L2), runs the chosen analysis on each disc's own voxels with permutation inference,
runs the same test on each disc's mean (ROI), and corrects over all discs jointly by
permuting whole subjects. A disc that fails (too few subjects with a variable, no
voxel) is reported in ``failures`` and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.levels import DISC_LEVELS
from discvbr.stats.permutation import DEFAULT_CLUSTER_THRESHOLD, joint_inference, permutation_inference
from discvbr.stats.results import VoxelResult
from discvbr.stats.roi import ANALYSES, roi_analysis, roi_table
from discvbr.stats.spatial import TFCE_E, TFCE_H

__all__ = ["StudyResult", "analyze_discs", "WHOLE_MAP"]

#: Region name when no label map is given.
WHOLE_MAP = "all"


@dataclass(frozen=True)
class StudyResult:
    """Results of one analysis over the discs of a study.

    Attributes
    ----------
    analysis : str
        Name of the voxel-wise analysis.
    regions : dict of str to VoxelResult
        Voxel-wise result per disc level (or ``"all"``), in label order.
    roi : dict of str to VoxelResult
        The same test on each disc's mean.
    failures : dict of str to str
        Discs (or ``"<disc> ROI"`` tests) that could not be analysed, with the reason.
    shape : tuple of int
        Grid of the maps (the atlas grid).
    parameters : dict
        Options of the study, for provenance.
    """

    analysis: str
    regions: dict[str, VoxelResult]
    roi: dict[str, VoxelResult]
    failures: dict[str, str]
    shape: tuple[int, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    def map(self, name: str) -> np.ndarray:
        """A value of every disc on the atlas grid (NaN, or 0 for ``cluster``, elsewhere)."""
        fill = 0 if name == "cluster" else np.nan
        out = np.full(self.shape, fill, dtype=np.int64 if name == "cluster" else np.float64)
        for level, result in self.regions.items():
            if name not in result.values:
                raise DiscVBRError(f"disc {level} has no map {name!r}")
            out.reshape(-1)[result.region.indices] = result.values[name]
        return out

    def significant(self, correction: str = "fwe_voxel_joint", *, alpha: float = 0.05) -> np.ndarray:
        """Significant voxels of every disc on the atlas grid (see :meth:`VoxelResult.significant`)."""
        out = np.zeros(self.shape, bool)
        for result in self.regions.values():
            out |= result.significant(correction, alpha=alpha)
        return out

    def summary_table(self) -> pd.DataFrame:
        """One row per disc: subjects, voxels, number of tests, significant voxels at 0.05."""
        rows = {level: result.summary() for level, result in self.regions.items()}
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "disc"
        return table

    def roi_table(self) -> pd.DataFrame:
        """The ROI test per disc, p-values corrected over the discs."""
        return roi_table(self.roi) if self.roi else pd.DataFrame()

    def clusters_table(self) -> pd.DataFrame:
        """Clusters of every disc (column ``disc`` first)."""
        return _stacked({k: r.clusters for k, r in self.regions.items()})

    def peaks_table(self) -> pd.DataFrame:
        """Peaks of every disc (column ``disc`` first)."""
        return _stacked({k: r.peaks for k, r in self.regions.items()})

    def excluded_table(self) -> pd.DataFrame:
        """Subjects left out of each disc's analysis, with the reason."""
        rows = [
            {"disc": level, "subject": subject, "reason": reason}
            for level, result in self.regions.items()
            for subject, reason in result.excluded.items()
        ]
        return pd.DataFrame(rows, columns=["disc", "subject", "reason"])


def analyze_discs(
    analysis: str,
    maps: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    second_maps: np.ndarray | None = None,
    variables: pd.DataFrame | None = None,
    subjects: Sequence[str] | None = None,
    variable: str | None = None,
    covariates: Sequence[str] = (),
    method: str = "pearson",
    cut: float | None = None,
    equal_var: bool = True,
    map_names: tuple[str, str] = ("maps", "second maps"),
    n_permutations: int = 5000,
    seed: int = 0,
    tfce: bool = True,
    cluster_threshold: float | None = DEFAULT_CLUSTER_THRESHOLD,
    connectivity: int = 1,
    tfce_e: float = TFCE_E,
    tfce_h: float = TFCE_H,
    tfce_dh: float | None = None,
    joint: bool = True,
    roi: bool = True,
    n_jobs: int = 1,
) -> StudyResult:
    """Run one analysis on every disc of the atlas, with ROI means and joint correction.

    Parameters
    ----------
    analysis : str
        ``"voxel_by_variable"``, ``"voxel_by_group"``, ``"voxel_by_voxel"`` or
        ``"voxel_by_time"``.
    maps : array_like, shape (n_subjects, *grid)
        Maps of the subjects on the atlas grid, NaN outside the discs and for invalid
        fits (the follow-up's baseline for ``voxel_by_time``; the x maps for
        ``voxel_by_voxel``).
    labels : array_like of int, shape grid, optional
        Atlas disc labels (1 = L5S1 ... 5 = L1L2, 0 = background). Without it the
        whole grid is one region named ``"all"``.
    second_maps : array_like, optional
        ``voxel_by_voxel``: the y maps (e.g. T2); ``voxel_by_time``: the follow-up.
    variables : DataFrame, optional
        Subject variables indexed by subject id.
    subjects : sequence of str, optional
        Subject id of each map row (default: ``variables.index`` order).
    variable : str, optional
        Tested or grouping variable; ``"{level}"`` in it is replaced by each disc's
        level (``"pfirrmann_{level}"`` tests each disc against its own grade).
    covariates, method, cut, equal_var
        Options of the analysis (see :mod:`discvbr.stats.voxelwise`).
    map_names : (str, str)
        Names of ``maps`` and ``second_maps`` for messages and descriptions.
    n_permutations : int
        Permutations for family-wise error control; 0 for parametric corrections only.
    seed, tfce, cluster_threshold, connectivity, tfce_e, tfce_h, tfce_dh, n_jobs
        Options of :func:`discvbr.stats.permutation_inference`.
    joint : bool
        Also correct over all discs together (``*_joint`` maps).
    roi : bool
        Also run the test on each disc's mean.

    Returns
    -------
    StudyResult

    Raises
    ------
    DiscVBRError
        Bad options, or when no disc could be analysed (the first disc's reason).
    """
    if analysis not in ANALYSES:
        raise DiscVBRError(f"unknown analysis {analysis!r}; choose one of {', '.join(ANALYSES)}")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 0:
        raise DiscVBRError(f"n_permutations must be a non-negative integer, got {n_permutations!r}")
    maps = np.asarray(maps)
    if maps.ndim < 2:
        raise DiscVBRError(f"{map_names[0]}: expected (subjects, *grid) array, got shape {maps.shape}")
    grid = tuple(int(s) for s in maps.shape[1:])
    if second_maps is not None:
        second_maps = np.asarray(second_maps)
        if second_maps.shape != maps.shape:
            raise DiscVBRError(f"{map_names[1]} of shape {second_maps.shape} do not match {map_names[0]} {maps.shape}")
    elif analysis in ("voxel_by_voxel", "voxel_by_time"):
        raise DiscVBRError(f"{analysis} needs second maps ({'y maps' if analysis == 'voxel_by_voxel' else 'follow-up'})")
    regions = _regions(labels, grid)
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    flat_second = second_maps.reshape(n, -1) if second_maps is not None else None

    results: dict[str, VoxelResult] = {}
    roi_results: dict[str, VoxelResult] = {}
    failures: dict[str, str] = {}
    for level, inside in regions.items():
        options = _analysis_options(analysis, variable, level, covariates, method, cut, equal_var, subjects, map_names)
        columns = np.flatnonzero(inside.reshape(-1))
        try:
            result = _run(analysis, flat[:, columns], None if flat_second is None else flat_second[:, columns],
                          variables, inside, options)
            if n_permutations:
                result = permutation_inference(
                    result,
                    n_permutations=int(n_permutations),
                    seed=seed,
                    tfce=tfce,
                    cluster_threshold=cluster_threshold,
                    connectivity=connectivity,
                    tfce_e=tfce_e,
                    tfce_h=tfce_h,
                    tfce_dh=tfce_dh,
                    n_jobs=n_jobs,
                )
            results[level] = result
        except DiscVBRError as exc:
            failures[level] = str(exc)
            continue
        if roi:
            try:
                roi_results[level] = roi_analysis(
                    analysis,
                    flat[:, columns],
                    second_maps=None if flat_second is None else flat_second[:, columns],
                    variables=variables,
                    **options,
                )
            except DiscVBRError as exc:
                failures[f"{level} ROI"] = str(exc)
    if not results:
        first = next(iter(failures))
        raise DiscVBRError(f"no disc could be analysed; {first}: {failures[first]}")
    if joint and len(results) > 1:
        results = joint_inference(results)
    parameters = {
        "analysis": analysis,
        "variable": variable,
        "covariates": list(covariates),
        "method": method,
        "cut": cut,
        "equal_var": equal_var,
        "map_names": list(map_names),
        "n_permutations": int(n_permutations),
        "seed": int(seed),
        "tfce": bool(tfce),
        "cluster_threshold": cluster_threshold,
        "connectivity": int(connectivity),
        "tfce_e": float(tfce_e),
        "tfce_h": float(tfce_h),
        "tfce_dh": tfce_dh,
        "joint": bool(joint and len(results) > 1),
        "roi": bool(roi),
        "regions": list(regions),
    }
    return StudyResult(analysis, results, roi_results, failures, grid, parameters)


def _regions(labels: np.ndarray | None, grid: tuple[int, ...]) -> dict[str, np.ndarray]:
    if labels is None:
        return {WHOLE_MAP: np.ones(grid, bool)}
    labels = np.asarray(labels)
    if labels.shape != grid:
        raise DiscVBRError(f"label map of shape {labels.shape} does not fit maps on a grid of shape {grid}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise DiscVBRError("label map must hold whole numbers (0 = background, 1 = L5S1 ... 5 = L1L2)")
        labels = labels.astype(np.int64)
    present = [int(v) for v in np.unique(labels) if v != 0]
    bad = [v for v in present if not 1 <= v <= len(DISC_LEVELS)]
    if bad:
        raise DiscVBRError(f"label map holds {bad}; disc labels are 1 (L5S1) ... {len(DISC_LEVELS)} (L1L2)")
    if not present:
        raise DiscVBRError("label map has no disc (all 0)")
    return {DISC_LEVELS[v - 1]: labels == v for v in present}


def _analysis_options(analysis, variable, level, covariates, method, cut, equal_var, subjects, map_names):
    options: dict[str, Any] = {"subjects": subjects}
    if analysis in ("voxel_by_variable", "voxel_by_group"):
        if not variable:
            raise DiscVBRError(f"{analysis} needs a variable")
        options["variable"] = variable.replace("{level}", level)
        options["map_name"] = map_names[0]
    if analysis == "voxel_by_variable":
        options.update(covariates=list(covariates), method=method)
    elif analysis == "voxel_by_group":
        options.update(cut=cut, equal_var=equal_var)
    elif analysis == "voxel_by_voxel":
        options.update(covariates=list(covariates), method=method, map_names=tuple(map_names))
    else:
        options["map_name"] = map_names[0]
    return options


def _run(analysis, maps, second, variables, inside, options) -> VoxelResult:
    function = ANALYSES[analysis]
    if analysis == "voxel_by_voxel":
        return function(maps, second, variables, mask=inside, **options)
    if analysis == "voxel_by_time":
        return function(maps, second, mask=inside, **options)
    return function(maps, variables, mask=inside, **options)


def _stacked(tables: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    parts = [t.assign(disc=level) for level, t in tables.items() if t is not None and not t.empty]
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    return table[["disc", *[c for c in table.columns if c != "disc"]]]
