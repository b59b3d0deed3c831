"""The result of one voxel-wise analysis of one region (a disc).

A :class:`VoxelResult` holds per-voxel values for the analysed voxels only, and
places them on the grid on request (:meth:`VoxelResult.map`). Names of the values:

``r``, ``t``, ``p``, ``df``, ``n``
    Statistic, two-sided uncorrected p-value, degrees of freedom and subjects per voxel.
``mean_a``, ``mean_b``, ``n_a``, ``n_b``, ``mean_baseline``, ``mean_followup``, ``difference``
    Descriptive maps of the group and paired analyses.
``p_bonferroni``, ``p_holm``, ``p_fdr_bh``
    Corrected p-values over the voxels of this result with a defined test.
``p_fwe_voxel``, ``p_fwe_cluster``, ``p_fwe_tfce``, ``tfce``, ``cluster``
    Permutation inference (:func:`discvbr.stats.permutation_inference`): max-T, cluster
    mass and TFCE family-wise corrected p-values, the TFCE map and the cluster id of
    each voxel (0 outside clusters; positive ids for t > 0 clusters, negative for t < 0).
``..._joint``
    The same, corrected over all the discs of a study
    (:func:`discvbr.stats.joint_inference`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.stats.inputs import Region

__all__ = ["VoxelResult", "CORRECTION_NAMES"]

#: Every correction a result can carry, by the suffix of its p map.
CORRECTION_NAMES: tuple[str, ...] = (
    "bonferroni",
    "holm",
    "fdr_bh",
    "fwe_voxel",
    "fwe_cluster",
    "fwe_tfce",
    "bonferroni_joint",
    "holm_joint",
    "fdr_bh_joint",
    "fwe_voxel_joint",
    "fwe_cluster_joint",
    "fwe_tfce_joint",
)


@dataclass(frozen=True)
class VoxelResult:
    """Maps and tables of one analysis on one region.

    Attributes
    ----------
    analysis : str
        ``"voxel_by_variable"``, ``"voxel_by_group"``, ``"voxel_by_voxel"`` or
        ``"voxel_by_time"``.
    description : str
        The test in words (statistic, variables, covariates, variant).
    values : dict of str to ndarray (V,)
        Per-voxel values over ``region`` (see the module documentation for names).
    region : Region
        Grid shape and the analysed voxels.
    subjects : tuple of str
        Subjects that entered the analysis (rows of the model).
    all_subjects : tuple of str
        Every subject of the maps, in row order: permutations relabel these and the
        analysis takes the permutation they induce on its own subjects.
    excluded : dict of str to str
        Subjects left out, with the reason (a variable they miss).
    parameters : dict
        Every option of the analysis and inference, for provenance.
    n_tests : dict of str to int
        Size of the family of each correction (voxels with a defined test).
    null : dict of str to ndarray
        Per-permutation maximum of ``|t|`` (``"voxel"``), cluster mass (``"cluster"``)
        and ``|TFCE|`` (``"tfce"``), in permutation order (for joint correction).
    clusters, peaks : DataFrame or None
        Tables from permutation inference (see :func:`discvbr.stats.permutation_inference`).
    model : object
        The fitted statistic model, used to run permutations.
    """

    analysis: str
    description: str
    values: dict[str, np.ndarray]
    region: Region
    subjects: tuple[str, ...]
    all_subjects: tuple[str, ...]
    excluded: dict[str, str]
    parameters: dict[str, Any]
    n_tests: dict[str, int] = field(default_factory=dict)
    null: dict[str, np.ndarray] = field(default_factory=dict)
    clusters: pd.DataFrame | None = None
    peaks: pd.DataFrame | None = None
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def n_voxels(self) -> int:
        return self.region.n_voxels

    def map(self, name: str) -> np.ndarray:
        """One value on the grid (``region.shape``), NaN outside the analysed voxels.

        Raises
        ------
        DiscVBRError
            When the result has no value of that name.
        """
        if name not in self.values:
            raise DiscVBRError(f"{self.analysis} result has no map {name!r}; it has {', '.join(self.values)}")
        fill = 0 if name == "cluster" else np.nan
        return self.region.unflatten(self.values[name], fill=fill)

    def significant(self, correction: str = "fwe_voxel", *, alpha: float = 0.05) -> np.ndarray:
        """Voxels whose corrected p-value is at most ``alpha``, on the grid.

        Parameters
        ----------
        correction : str
            One of :data:`CORRECTION_NAMES` that this result carries.
        alpha : float
            Significance level.

        Returns
        -------
        ndarray of bool, shape ``region.shape``
        """
        key = f"p_{correction}"
        if key not in self.values:
            carried = [c for c in CORRECTION_NAMES if f"p_{c}" in self.values]
            raise DiscVBRError(
                f"no {correction!r} correction in this result; it carries {', '.join(carried) or 'none'}"
                + ("" if correction in CORRECTION_NAMES else f" (known: {', '.join(CORRECTION_NAMES)})")
            )
        if not 0 < alpha < 1:
            raise DiscVBRError(f"alpha must be in (0, 1), got {alpha}")
        with np.errstate(invalid="ignore"):
            hits = self.values[key] <= alpha
        return self.region.unflatten(hits, fill=False)

    def with_values(self, **changes: Any) -> "VoxelResult":
        """A copy with some fields replaced; ``values`` and ``n_tests`` are merged, not replaced."""
        if "values" in changes:
            changes["values"] = {**self.values, **changes["values"]}
        if "n_tests" in changes:
            changes["n_tests"] = {**self.n_tests, **changes["n_tests"]}
        if "null" in changes:
            changes["null"] = {**self.null, **changes["null"]}
        if "parameters" in changes:
            changes["parameters"] = {**self.parameters, **changes["parameters"]}
        return dataclasses.replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """One row describing the result: subjects, voxels, tests and significant counts at 0.05."""
        row: dict[str, Any] = {
            "analysis": self.analysis,
            "description": self.description,
            "n_subjects": len(self.subjects),
            "n_excluded": len(self.excluded),
            "n_voxels": self.n_voxels,
            "n_tested": int(np.isfinite(self.values["p"]).sum()),
        }
        for name in CORRECTION_NAMES:
            key = f"p_{name}"
            if key in self.values:
                with np.errstate(invalid="ignore"):
                    row[f"n_significant_{name}"] = int((self.values[key] <= 0.05).sum())
                if name in self.n_tests:
                    row[f"n_tests_{name}"] = self.n_tests[name]
        return row
