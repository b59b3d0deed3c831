"""Voxel-wise statistics of relaxation-time maps across subjects.

The four analyses of voxel-based relaxometry (Iriondo et al., MRM 2020), exact and
vectorised, with per-analysis missing data, on plain arrays (modelled on nilearn's
``mass_univariate``):

>>> result = voxel_by_variable(maps, table, variable="odi", covariates=["age", "sex"])
>>> result = permutation_inference(result, n_permutations=5000, seed=0)
>>> result.significant("fwe_voxel", alpha=0.05)        # boolean map

* :func:`voxel_by_variable`, :func:`voxel_by_group`, :func:`voxel_by_voxel`,
  :func:`voxel_by_time` (:mod:`~discvbr.stats.voxelwise`): maps of r / t / p / n.
* :func:`adjust_pvalues` (:mod:`~discvbr.stats.corrections`): Bonferroni, Holm, BH-FDR.
* :func:`permutation_inference`, :func:`joint_inference`
  (:mod:`~discvbr.stats.permutation`): max-T, cluster-mass and TFCE family-wise error,
  per disc and jointly over the discs.
* :func:`tfce` (:mod:`~discvbr.stats.spatial`): threshold-free cluster enhancement.
* :func:`roi_means`, :func:`roi_analysis`, :func:`roi_table` (:mod:`~discvbr.stats.roi`).
* :func:`analyze_discs` (:mod:`~discvbr.stats.study`): all discs of an atlas in one
  call, and :func:`save_study` / :func:`read_map_stack` / :func:`read_variables`
  (:mod:`~discvbr.stats.io`) for files.
"""

from discvbr.stats.corrections import CORRECTIONS, adjust_pvalues
from discvbr.stats.io import read_map_stack, read_variables, save_study
from discvbr.stats.permutation import fwe_pvalues, joint_inference, permutation_inference, subject_keys
from discvbr.stats.results import CORRECTION_NAMES, VoxelResult
from discvbr.stats.roi import roi_analysis, roi_means, roi_table
from discvbr.stats.spatial import tfce
from discvbr.stats.study import StudyResult, analyze_discs
from discvbr.stats.voxelwise import voxel_by_group, voxel_by_time, voxel_by_variable, voxel_by_voxel

__all__ = [
    "CORRECTIONS",
    "CORRECTION_NAMES",
    "StudyResult",
    "VoxelResult",
    "adjust_pvalues",
    "analyze_discs",
    "fwe_pvalues",
    "joint_inference",
    "permutation_inference",
    "read_map_stack",
    "read_variables",
    "roi_analysis",
    "roi_means",
    "roi_table",
    "save_study",
    "subject_keys",
    "tfce",
    "voxel_by_group",
    "voxel_by_time",
    "voxel_by_variable",
    "voxel_by_voxel",
]
