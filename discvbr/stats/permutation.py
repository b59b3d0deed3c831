"""Permutation inference: family-wise error by max-T, cluster mass and TFCE; joint over discs.

For each permutation the statistic of every voxel is recomputed (Freedman-Lane for
correlations with covariates, relabelling for groups, sign flipping for paired
differences; see :mod:`discvbr.stats.models`) and the maximum over the region of
``|t|``, of the cluster mass and of ``|TFCE|`` is kept. A voxel's family-wise corrected
p-value is the share of permutations whose maximum reaches its value, counting the
data themselves once (Phipson & Smyth 2010): ``p = (1 + #{max_b >= x}) / (1 + B)``.

Permutations are drawn per subject: each subject id gets one uniform key per
permutation from a generator seeded by ``(seed, id)``; a permutation of the subjects of
the maps is the order of their keys, and an analysis that left some subjects out uses
the permutation this induces on its own (the others spliced out of the cycles); a sign
flip is ``key < 0.5``. The same seed therefore relabels whole subjects the same way in
every analysis of a study, which is what makes the joint correction over the five discs
(:func:`joint_inference`) valid: its null distribution is, permutation by permutation,
the maximum over the discs.

References
----------
Freedman D, Lane D. A nonstochastic interpretation of reported significance levels.
J Bus Econ Stat 1983;1:292-298.
Nichols TE, Holmes AP. Nonparametric permutation tests for functional neuroimaging.
Hum Brain Mapp 2002;15:1-25.
Winkler AM, Ridgway GR, Webster MA, Smith SM, Nichols TE. Permutation inference for the
general linear model. NeuroImage 2014;92:381-397.
Phipson B, Smyth GK. Permutation p-values should never be zero. Stat Appl Genet Mol
Biol 2010;9:39.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from discvbr.errors import DiscVBRError
from discvbr.stats.corrections import CORRECTIONS, adjust_pvalues
from discvbr.stats.models import induced_permutation
from discvbr.stats.results import VoxelResult
from discvbr.stats.spatial import (
    TFCE_E,
    TFCE_H,
    cluster_ids,
    local_maxima,
    max_cluster_mass_per_row,
    max_tfce_per_row,
    neighbour_table,
    tfce_values,
)

__all__ = ["subject_keys", "permutation_inference", "joint_inference", "fwe_pvalues"]

DEFAULT_CLUSTER_THRESHOLD = 0.001
# Elements of one (permutations x voxels) batch of statistics: 8 MB arrays stay in cache (measured 2x faster than 32 MB).
_BATCH_ELEMENTS = 1 << 20
_PERMUTATION_KEYS = ("n_permutations", "seed", "tfce", "tfce_e", "tfce_h", "tfce_dh", "cluster_threshold", "connectivity")


def subject_keys(subjects: Sequence[str], n_permutations: int, *, seed: int) -> np.ndarray:
    """Uniform permutation keys per permutation and subject.

    Parameters
    ----------
    subjects : sequence of str
        Subject ids (the key stream of a subject depends only on its id and ``seed``).
    n_permutations : int
        Number of permutations ``B``.
    seed : int
        Non-negative seed.

    Returns
    -------
    ndarray of float64, shape (B, n_subjects)
        The permutation of a set of subjects is ``argsort`` of their columns; a sign
        flip is ``key < 0.5``. The first ``B`` rows are the same for any larger ``B``.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DiscVBRError(f"seed must be a non-negative integer, got {seed!r}")
    keys = np.empty((n_permutations, len(subjects)))
    for j, subject in enumerate(subjects):
        digest = int.from_bytes(hashlib.sha256(str(subject).encode()).digest()[:8], "little")
        keys[:, j] = np.random.default_rng([int(seed), digest]).random(n_permutations)
    return keys


def fwe_pvalues(observed: np.ndarray, null_maxima: np.ndarray) -> np.ndarray:
    """Family-wise corrected p-values ``(1 + #{null_maxima >= observed}) / (1 + B)``.

    Parameters
    ----------
    observed : ndarray
        Observed statistic (already made positive, e.g. ``|t|``); NaN stays NaN.
    null_maxima : ndarray, shape (B,)
        Maximum of the statistic over the family in each permutation.
    """
    ordered = np.sort(np.asarray(null_maxima, dtype=np.float64))
    observed = np.asarray(observed, dtype=np.float64)
    at_least = ordered.size - np.searchsorted(ordered, np.nan_to_num(observed, nan=np.inf), side="left")
    p = (1.0 + at_least) / (1.0 + ordered.size)
    return np.where(np.isnan(observed), np.nan, p)


def permutation_inference(
    result: VoxelResult,
    *,
    n_permutations: int = 5000,
    seed: int = 0,
    tfce: bool = True,
    cluster_threshold: float | None = DEFAULT_CLUSTER_THRESHOLD,
    connectivity: int = 1,
    tfce_e: float = TFCE_E,
    tfce_h: float = TFCE_H,
    tfce_dh: float | None = None,
    n_jobs: int = 1,
) -> VoxelResult:
    """Add permutation family-wise error control to a voxel-wise result.

    Parameters
    ----------
    result : VoxelResult
        From one of the :mod:`discvbr.stats.voxelwise` analyses.
    n_permutations : int
        Number of random permutations (or sign flips) ``B``; the smallest possible
        p-value is ``1 / (B + 1)``.
    seed : int
        Seed of the permutations (see :func:`subject_keys`).
    tfce : bool
        Compute TFCE and its corrected p-values (needs voxels on a grid).
    cluster_threshold : float or None
        Uncorrected two-sided p-value that forms clusters (converted to ``|t|`` at each
        voxel's degrees of freedom); clusters are inferred on their mass
        ``sum(|t| - t_threshold)``. None: no cluster inference (needed for voxels
        without a grid, e.g. ROI means).
    connectivity : int
        Neighbourhood of the disc's voxels: 1 faces, 2 edges, 3 corners (3D).
    tfce_e, tfce_h : float
        TFCE extent and height exponents (Smith & Nichols: E = 0.5, H = 2).
    tfce_dh : float, optional
        TFCE threshold step; None integrates exactly.
    n_jobs : int
        Threads for the cluster and TFCE computations.

    Returns
    -------
    VoxelResult
        The input with ``p_fwe_voxel`` and, as requested, ``tfce``, ``p_fwe_tfce``,
        ``cluster``, ``p_fwe_cluster``; ``null`` holds the per-permutation maxima.
        ``clusters``: one row per cluster (id, sign, size in voxels, mass, corrected p,
        peak t, p and max-T p, the peak's and the centre's voxel indices
        ``peak_index_<axis>``, ``centre_index_<axis>``), by decreasing mass. ``peaks``:
        local maxima of ``|t|`` (at least every neighbour) with uncorrected p below the
        cluster-forming threshold (0.001 without clusters), by decreasing ``|t|``, with
        their corrected p-values, cluster id and voxel indices ``index_<axis>``.

    Raises
    ------
    DiscVBRError
        Bad options, cluster or TFCE inference on voxels without a grid, or a result
        without its model.
    """
    if result.model is None:
        raise DiscVBRError("this result has no statistic model to permute; give a result of discvbr.stats.voxel_by_*")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise DiscVBRError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    if n_jobs < 1:
        raise DiscVBRError(f"n_jobs must be at least 1, got {n_jobs}")
    spatial = result.region.spatial
    if (tfce or cluster_threshold is not None) and not spatial:
        raise DiscVBRError(
            "cluster and TFCE inference need voxels on a grid: give image-shaped maps or a mask placing the voxels "
            "(or tfce=False, cluster_threshold=None)"
        )
    if cluster_threshold is not None and not 0 < cluster_threshold < 1:
        raise DiscVBRError(f"cluster_threshold is a p-value in (0, 1), got {cluster_threshold}")

    t_obs = result.values["t"]
    tested = np.flatnonzero(~np.isnan(t_obs))
    if tested.size == 0:
        raise DiscVBRError(f"{result.description}: no voxel has a defined test; nothing to permute")
    neighbours = None
    if spatial:
        neighbours = neighbour_table(result.region.shape, result.region.indices[tested], connectivity=connectivity)
    threshold = None
    if cluster_threshold is not None:
        threshold = special.stdtrit(result.values["df"][tested], 1.0 - cluster_threshold / 2.0)

    keys = _model_keys(result, n_permutations, seed)
    null_t = np.empty(n_permutations)
    null_mass = np.empty(n_permutations) if threshold is not None else None
    null_tfce = np.empty(n_permutations) if tfce else None
    batch = int(np.clip(_BATCH_ELEMENTS // max(1, result.n_voxels), 1, n_permutations))
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        for start in range(0, n_permutations, batch):
            stop = min(start + batch, n_permutations)
            stats = result.model.permuted_t(keys[start:stop])
            if tested.size < stats.shape[1]:
                stats = stats[:, tested]
            # max |t| without temporaries; fmax/fmin skip undefined (NaN) voxels.
            largest = np.maximum(np.fmax.reduce(stats, axis=1), -np.fmin.reduce(stats, axis=1))
            null_t[start:stop] = np.nan_to_num(largest, nan=0.0)
            if null_mass is not None:
                null_mass[start:stop] = _rows_in_threads(
                    pool, n_jobs, lambda rows: max_cluster_mass_per_row(rows, threshold, neighbours), stats
                )
            if null_tfce is not None:
                null_tfce[start:stop] = _rows_in_threads(
                    pool,
                    n_jobs,
                    lambda rows: max_tfce_per_row(rows, neighbours, e=tfce_e, h=tfce_h, dh=tfce_dh),
                    stats,
                )

    n_vox = result.n_voxels
    values: dict[str, np.ndarray] = {"p_fwe_voxel": fwe_pvalues(np.abs(t_obs), null_t)}
    null = {"voxel": null_t}
    n_tests = {"fwe_voxel": int(tested.size)}
    clusters_table = None
    tfce_map = None
    cluster_map = None
    if null_tfce is not None:
        tfce_map = np.full(n_vox, np.nan)
        tfce_map[tested] = tfce_values(t_obs[tested], neighbours, e=tfce_e, h=tfce_h, dh=tfce_dh)
        values["tfce"] = tfce_map
        values["p_fwe_tfce"] = fwe_pvalues(np.abs(tfce_map), null_tfce)
        null["tfce"] = null_tfce
        n_tests["fwe_tfce"] = int(tested.size)
    if null_mass is not None:
        ids = cluster_ids(t_obs[tested], threshold, neighbours)
        cluster_map = np.zeros(n_vox, dtype=np.int64)
        cluster_map[tested] = ids
        masses = _cluster_masses(t_obs[tested], threshold, ids)
        cluster_p = {cid: float(fwe_pvalues(np.array([mass]), null_mass)[0]) for cid, mass in masses.items()}
        p_cluster = np.full(n_vox, np.nan)
        p_cluster[tested] = 1.0
        for cid, p in cluster_p.items():
            p_cluster[tested[ids == cid]] = p
        values["cluster"] = cluster_map
        values["p_fwe_cluster"] = p_cluster
        null["cluster"] = null_mass
        n_tests["fwe_cluster"] = int(tested.size)
        clusters_table = _clusters_table(result, values, tested, ids, masses, cluster_p, threshold)
    parameters = {
        "n_permutations": int(n_permutations),
        "seed": int(seed),
        "tfce": bool(tfce),
        "tfce_e": float(tfce_e),
        "tfce_h": float(tfce_h),
        "tfce_dh": tfce_dh,
        "cluster_threshold": cluster_threshold,
        "connectivity": int(connectivity),
        "permutation_scheme": _scheme(result),
    }
    updated = result.with_values(values=values, null=null, n_tests=n_tests, parameters=parameters)
    peak_threshold = cluster_threshold if cluster_threshold is not None else DEFAULT_CLUSTER_THRESHOLD
    peaks = _peaks_table(updated, tested, neighbours, peak_threshold)
    return updated.with_values(clusters=clusters_table, peaks=peaks)


def joint_inference(results: Mapping[str, VoxelResult]) -> dict[str, VoxelResult]:
    """Correct every disc's maps over the family of all discs of a study.

    Parameters
    ----------
    results : mapping of str to VoxelResult
        One result per disc (e.g. keyed by level), of the same analysis. Those with
        permutation inference must share its options (``n_permutations``, ``seed`` ...)
        so that their permutations relabel the same subjects the same way.

    Returns
    -------
    dict of str to VoxelResult
        Each result with ``p_bonferroni_joint``, ``p_holm_joint``, ``p_fdr_bh_joint``
        (tests of all discs together) and, when permuted, ``p_fwe_voxel_joint``,
        ``p_fwe_cluster_joint``, ``p_fwe_tfce_joint`` from the per-permutation maximum
        over the discs.

    Raises
    ------
    DiscVBRError
        Results of different analyses or with different permutation options.
    """
    if not results:
        raise DiscVBRError("joint_inference: no results given")
    names = list(results)
    analyses = {results[n].analysis for n in names}
    if len(analyses) > 1:
        raise DiscVBRError(f"joint_inference: results of different analyses ({', '.join(sorted(analyses))})")
    updates: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    n_tests: dict[str, int] = {}
    joint_null: dict[str, np.ndarray] = {}
    p_all = np.concatenate([results[n].values["p"] for n in names])
    bounds = np.cumsum([results[n].n_voxels for n in names])[:-1]
    for method in CORRECTIONS:
        adjusted, n_tests[f"{method}_joint"] = adjust_pvalues(p_all, method=method)
        for name, part in zip(names, np.split(adjusted, bounds)):
            updates[name][f"p_{method}_joint"] = part
    permuted = [n for n in names if results[n].null]
    if permuted:
        if len(permuted) != len(names):
            missing = [n for n in names if n not in permuted]
            raise DiscVBRError(f"joint_inference: {', '.join(missing)} without permutation inference")
        reference = {k: results[names[0]].parameters.get(k) for k in _PERMUTATION_KEYS}
        for name in names[1:]:
            other = {k: results[name].parameters.get(k) for k in _PERMUTATION_KEYS}
            if other != reference:
                differing = [k for k in _PERMUTATION_KEYS if other[k] != reference[k]]
                raise DiscVBRError(
                    f"joint_inference: {name} was permuted with other options than {names[0]} ({', '.join(differing)})"
                )
        for kind in ("voxel", "cluster", "tfce"):
            if not all(kind in results[n].null for n in names):
                continue
            maxima = np.max(np.stack([results[n].null[kind] for n in names]), axis=0)
            joint_null[f"{kind}_joint"] = maxima
            for name in names:
                res = results[name]
                if kind == "cluster":
                    updates[name]["p_fwe_cluster_joint"] = _cluster_p_map(res, maxima)
                else:
                    statistic = res.values["t" if kind == "voxel" else "tfce"]
                    updates[name][f"p_fwe_{kind}_joint"] = fwe_pvalues(np.abs(statistic), maxima)
            n_tests[f"fwe_{kind}_joint"] = sum(results[n].n_tests[f"fwe_{kind}"] for n in names)
    return {
        name: results[name].with_values(values=updates[name], n_tests=n_tests, null=joint_null) for name in names
    }


# --------------------------------------------------------------------------- helpers


def _model_keys(result: VoxelResult, n_permutations: int, seed: int) -> np.ndarray:
    """Keys of the analysis's subjects: sign-flip keys as drawn, or keys ordering the permutation
    that the permutation of every subject of the maps induces on them (others spliced out of its
    cycles), so that analyses of one stack with different exclusions permute alike."""
    position = {s: i for i, s in enumerate(result.all_subjects)}
    members = np.array([position[s] for s in result.subjects])
    keys = subject_keys(result.all_subjects, n_permutations, seed=seed)
    if result.analysis == "voxel_by_time":
        return keys[:, members]
    induced = induced_permutation(np.argsort(keys, axis=1), members)
    ordered = np.empty(induced.shape)
    np.put_along_axis(ordered, induced, (np.arange(members.size) / members.size)[None, :], axis=1)
    return ordered



def _rows_in_threads(pool, n_jobs, function, stats):
    if n_jobs == 1 or stats.shape[0] < 2 * n_jobs:
        return function(stats)
    parts = np.array_split(np.arange(stats.shape[0]), n_jobs)
    return np.concatenate(list(pool.map(lambda idx: function(stats[idx]), parts)))


def _cluster_masses(t: np.ndarray, threshold: np.ndarray, ids: np.ndarray) -> dict[int, float]:
    excess = np.abs(t) - threshold
    return {int(c): float(excess[ids == c].sum()) for c in np.unique(ids) if c != 0}


def _cluster_p_map(result: VoxelResult, null_mass: np.ndarray) -> np.ndarray:
    t = result.values["t"]
    tested = np.isfinite(t)
    out = np.where(tested, 1.0, np.nan)
    if result.clusters is None or result.clusters.empty:
        return out
    cluster_map = result.values["cluster"]
    for cid, mass in zip(result.clusters["cluster"], result.clusters["mass"]):
        out[cluster_map == cid] = fwe_pvalues(np.array([mass]), null_mass)[0]
    return out


def _clusters_table(result, values, tested, ids, masses, cluster_p, threshold) -> pd.DataFrame:
    t = result.values["t"][tested]
    coords = result.region.coordinates()[tested]
    rows = []
    for cid, mass in masses.items():
        members = np.flatnonzero(ids == cid)
        peak = members[np.argmax(np.abs(t[members]))]
        rows.append(
            {
                "cluster": cid,
                "sign": "positive" if cid > 0 else "negative",
                "size_voxels": int(members.size),
                "mass": mass,
                "p_fwe_cluster": cluster_p[cid],
                "peak_t": float(t[peak]),
                "peak_p": float(result.values["p"][tested[peak]]),
                "peak_p_fwe_voxel": float(values["p_fwe_voxel"][tested[peak]]),
                "t_threshold": float(threshold[peak]),
                **{f"peak_index_{axis}": int(c) for axis, c in enumerate(coords[peak])},
                **{f"centre_index_{axis}": float(c) for axis, c in enumerate(coords[members].mean(axis=0))},
            }
        )
    columns = ["cluster", "sign", "size_voxels", "mass", "p_fwe_cluster", "peak_t", "peak_p", "peak_p_fwe_voxel", "t_threshold"]
    table = pd.DataFrame(rows, columns=columns + [c for c in (rows[0] if rows else {}) if c not in columns])
    return table.sort_values("mass", ascending=False, ignore_index=True) if rows else table


def _peaks_table(result: VoxelResult, tested, neighbours, p_threshold: float) -> pd.DataFrame:
    values = result.values
    t = values["t"][tested]
    if neighbours is None:
        peak = np.ones(tested.size, bool)
    else:
        peak = local_maxima(t, neighbours)
    peak &= values["p"][tested] <= p_threshold
    chosen = tested[peak]
    order = np.argsort(-np.abs(values["t"][chosen]), kind="stable")
    chosen = chosen[order]
    coords = result.region.coordinates()[chosen]
    table = pd.DataFrame({"t": values["t"][chosen], "p": values["p"][chosen], "n": values["n"][chosen]})
    for key in ("r", "difference"):
        if key in values:
            table.insert(0, key, values[key][chosen])
    for name in ("p_fwe_voxel", "p_fwe_tfce", "p_fwe_cluster", "cluster"):
        if name in values:
            table[name] = values[name][chosen]
    for axis in range(coords.shape[1]):
        table[f"index_{axis}"] = coords[:, axis]
    return table


def _scheme(result: VoxelResult) -> str:
    return {
        "voxel_by_variable": "Freedman-Lane permutation of residuals" if result.parameters.get("covariates")
        else "permutation of subjects",
        "voxel_by_voxel": "Freedman-Lane permutation of residuals" if result.parameters.get("covariates")
        else "permutation of subjects",
        "voxel_by_group": "permutation of group labels",
        "voxel_by_time": "sign flipping of paired differences",
    }[result.analysis]
