"""Spatial statistics on a disc's own voxels: neighbours, clusters, TFCE, peaks.

The voxels of one analysis form a graph: two voxels are neighbours when they touch
on the grid (faces, edges or corners: ``connectivity`` 1, 2 or 3, as
``scipy.ndimage.generate_binary_structure``) and both belong to the analysis. Voxels
outside the disc or without a defined test are not in the graph, so clusters never
leave the disc. This works the same for a single sagittal slice (2D) and a stack
(3D).

Threshold-free cluster enhancement (TFCE; Smith & Nichols 2009) of a statistic map
``t`` at voxel ``v`` is

    TFCE(v) = integral over h from 0 to t(v) of e(v, h)^E h^H dh,

where ``e(v, h)`` is the number of voxels of the cluster containing ``v`` among the
voxels with ``t >= h``. Negative values are enhanced the same way on ``-t`` and keep
their sign. With a step ``dh`` the integral is the sum over ``h = dh, 2 dh, ...`` (the
FSL definition with the ``dh`` factor); without it the integral is exact. Either way
it is computed for all thresholds at once by a union-find over the voxels sorted by
value (the component tree of the map), in ``O(V log V)`` per map, compiled with numba.

References
----------
Smith SM, Nichols TE. Threshold-free cluster enhancement: addressing problems of
smoothing, threshold dependence and localisation in cluster inference. NeuroImage
2009;44:83-98.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import ndimage

from discvbr.errors import DiscVBRError

__all__ = [
    "neighbour_table",
    "tfce",
    "tfce_values",
    "step_table",
    "cluster_ids",
    "local_maxima",
    "max_tfce_per_row",
    "max_cluster_mass_per_row",
]

TFCE_E = 0.5
TFCE_H = 2.0
_MAX_TFCE_STEPS = 1_000_000
# Statistics enter clusters and TFCE clipped to +-1000: only a (near-)perfect fit reaches
# that, and larger values would swamp the precision of TFCE's running sums.
STATISTIC_LIMIT = 1000.0


def _finite(values: np.ndarray) -> np.ndarray:
    """NaN -> 0 (in no cluster), values clipped to +-STATISTIC_LIMIT, as float64."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    return np.clip(values, -STATISTIC_LIMIT, STATISTIC_LIMIT, out=values)


def neighbour_table(shape: tuple[int, ...], indices: np.ndarray, *, connectivity: int = 1) -> np.ndarray:
    """Neighbours of each voxel among a set of voxels of a grid.

    Parameters
    ----------
    shape : tuple of int
        Grid shape (1 to 3 dimensions).
    indices : ndarray of int, shape (V,)
        Flat (C-order) indices of the voxels of the graph.
    connectivity : int
        1 = share a face, 2 = a face or an edge, 3 = also a corner (3D only).

    Returns
    -------
    ndarray of int64, shape (V, K)
        Row ``i`` lists the positions (in ``indices``) of voxel ``i``'s neighbours,
        padded with -1; ``K`` is the number of neighbours of an interior voxel.
    """
    ndim = len(shape)
    if not 1 <= connectivity <= ndim:
        raise DiscVBRError(f"connectivity must be 1..{ndim} for {ndim}D maps, got {connectivity}")
    structure = ndimage.generate_binary_structure(ndim, connectivity)
    offsets = np.argwhere(structure) - 1
    offsets = offsets[np.any(offsets != 0, axis=1)]
    lookup = np.full(int(np.prod(shape)), -1, dtype=np.int64)
    lookup[indices] = np.arange(indices.size)
    coords = np.stack(np.unravel_index(indices, shape), axis=1)
    table = np.full((indices.size, len(offsets)), -1, dtype=np.int64)
    bounds = np.asarray(shape)
    for k, offset in enumerate(offsets):
        moved = coords + offset
        inside = np.all((moved >= 0) & (moved < bounds), axis=1)
        flat = np.ravel_multi_index(tuple(moved[inside].T), shape)
        table[inside, k] = lookup[flat]
    return table


def step_table(max_value: float, dh: float | None, exponent_h: float) -> np.ndarray:
    """Cumulative TFCE height weights ``sum_{j<=n} (j dh)^H dh`` for n = 0, 1, ... (empty without steps)."""
    if dh is None:
        return np.empty(0)
    if not dh > 0:
        raise DiscVBRError(f"TFCE step dh must be positive, got {dh}")
    if not max_value / dh <= _MAX_TFCE_STEPS:
        raise DiscVBRError(
            f"TFCE step dh = {dh:g} gives more than {_MAX_TFCE_STEPS} steps up to |t| = {max_value:g}; "
            "use a larger step or the exact integral (dh=None)"
        )
    n_max = int(np.floor(max_value / dh)) + 2
    heights = np.arange(1, n_max + 1) * dh
    return np.concatenate([[0.0], np.cumsum(heights**exponent_h * dh)])


def tfce_values(
    values: np.ndarray,
    neighbours: np.ndarray,
    *,
    e: float = TFCE_E,
    h: float = TFCE_H,
    dh: float | None = None,
) -> np.ndarray:
    """Signed TFCE of a statistic over a voxel graph.

    Parameters
    ----------
    values : ndarray, shape (V,)
        Statistic per voxel; NaN counts as 0 (not in any cluster); values beyond
        +-1000 (only a near-perfect fit reaches them) count as +-1000.
    neighbours : ndarray of int64, shape (V, K)
        From :func:`neighbour_table`.
    e, h : float
        Extent and height exponents (0.5 and 2 are the usual 3D values; Smith & Nichols
        suggest E = 1 for 2D).
    dh : float, optional
        Threshold step; None integrates exactly.

    Returns
    -------
    ndarray of float64, shape (V,)
        TFCE of the positive part, minus TFCE of the negative part.
    """
    values = _finite(values)
    table = step_table(float(np.abs(values).max(initial=0.0)), dh, h)
    out = np.zeros(values.size)
    _tfce_signed(values, np.argsort(values), neighbours, float(e), float(h), float(dh or 0.0), table, out)
    return out


def tfce(
    stat_map: np.ndarray,
    *,
    connectivity: int = 1,
    e: float = TFCE_E,
    h: float = TFCE_H,
    dh: float | None = None,
) -> np.ndarray:
    """TFCE of a statistic map on its grid (voxels that are NaN are outside the graph).

    Parameters
    ----------
    stat_map : ndarray, 1 to 3 dimensions
        Statistic (t) map, NaN outside the region.
    connectivity, e, h, dh
        See :func:`neighbour_table` and :func:`tfce_values`.

    Returns
    -------
    ndarray of float64, same shape
        Signed TFCE, NaN where ``stat_map`` is NaN.
    """
    stat_map = np.asarray(stat_map, dtype=np.float64)
    inside = np.flatnonzero(~np.isnan(stat_map).reshape(-1))
    neighbours = neighbour_table(stat_map.shape, inside, connectivity=connectivity)
    out = np.full(stat_map.size, np.nan)
    out[inside] = tfce_values(stat_map.reshape(-1)[inside], neighbours, e=e, h=h, dh=dh)
    return out.reshape(stat_map.shape)


def cluster_ids(values: np.ndarray, threshold: np.ndarray | float, neighbours: np.ndarray) -> np.ndarray:
    """Clusters of voxels beyond a threshold, positive and negative apart.

    Parameters
    ----------
    values : ndarray, shape (V,)
        Statistic per voxel (NaN: not in a cluster).
    threshold : float or ndarray (V,)
        Cluster-forming threshold (positive) per voxel: voxels with
        ``values > threshold`` form positive clusters, ``values < -threshold`` negative.
    neighbours : ndarray (V, K)

    Returns
    -------
    ndarray of int64, shape (V,)
        0 outside clusters; positive clusters numbered 1, 2, ... and negative ones -1,
        -2, ..., each in order of decreasing cluster mass ``sum(|t| - threshold)``.
    """
    values = _finite(values)
    threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float64), values.shape)
    ids = np.zeros(values.size, dtype=np.int64)
    for sign in (1.0, -1.0):
        excess = sign * values - threshold
        supra = excess > 0
        roots = _cluster_roots(supra, neighbours)
        members = np.flatnonzero(supra)
        if members.size == 0:
            continue
        unique_roots, inverse = np.unique(roots[members], return_inverse=True)
        mass = np.bincount(inverse, weights=excess[members])
        rank = np.empty(unique_roots.size, dtype=np.int64)
        rank[np.argsort(-mass, kind="stable")] = np.arange(1, unique_roots.size + 1)
        ids[members] = int(sign) * rank[inverse]
    return ids


def local_maxima(values: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Voxels whose ``|value|`` is at least that of every neighbour (and not NaN).

    Returns
    -------
    ndarray of bool, shape (V,)
    """
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    padded = np.concatenate([np.nan_to_num(magnitude, nan=-np.inf), [-np.inf]])
    around = padded[neighbours]  # -1 picks the padding
    return np.isfinite(magnitude) & np.all(padded[:-1, None] >= around, axis=1)


def max_tfce_per_row(
    stats: np.ndarray,
    neighbours: np.ndarray,
    *,
    e: float = TFCE_E,
    h: float = TFCE_H,
    dh: float | None = None,
) -> np.ndarray:
    """Largest ``|TFCE|`` of each row of a batch of statistic maps ``(B, V)``."""
    stats = np.ascontiguousarray(_finite(stats))
    table = step_table(float(np.abs(stats).max(initial=0.0)), dh, h)
    out = np.zeros(stats.shape[0])
    orders = np.argsort(stats, axis=1)
    _tfce_max_rows(stats, orders, neighbours, float(e), float(h), float(dh or 0.0), table, out)
    return out


def max_cluster_mass_per_row(stats: np.ndarray, threshold: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Largest cluster mass ``sum(|t| - threshold)`` (either sign) of each row of ``(B, V)``."""
    stats = np.ascontiguousarray(_finite(stats))
    out = np.zeros(stats.shape[0])
    _cluster_mass_rows(stats, np.ascontiguousarray(threshold, dtype=np.float64), neighbours, out)
    return out


# --------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _height_weight(level: float, dh: float, table: np.ndarray, exponent_h: float) -> float:
    """Integral of h^H from 0 to ``level`` (dh = 0) or its sum over the steps j dh <= level."""
    if dh <= 0.0:
        return level ** (exponent_h + 1.0) / (exponent_h + 1.0)
    last = table.size - 1
    n = int(level / dh)
    if n > last:
        n = last
    while n + 1 <= last and (n + 1) * dh <= level:
        n += 1
    while n > 0 and n * dh > level:
        n -= 1
    return table[n]


@njit(cache=True, nogil=True)
def _tfce_part(values, order, sign, neighbours, exponent_e, exponent_h, dh, table, out):
    """Add ``sign`` x TFCE of the part of ``values`` of that sign to ``out``; return its largest value.

    ``order`` sorts ``values`` ascending; voxels enter from the most extreme of the
    given sign. A union-find (by size) keeps the clusters. Each root carries the
    running integral of its cluster since the level at which its extent last
    changed; a voxel attached under a root stores an offset, so that the sum along
    its path to the root is its TFCE.
    """
    n = values.size
    parent = np.empty(n, np.int64)
    extent = np.zeros(n)
    started = np.zeros(n)
    integral = np.zeros(n)
    active = np.zeros(n, np.bool_)
    attached = np.empty(n, np.int64)
    n_attached = 0
    n_active = 0
    for step in range(n):
        v = order[n - 1 - step] if sign > 0 else order[step]
        level = sign * values[v]
        if not level > 0.0:
            break
        weight = _height_weight(level, dh, table, exponent_h)
        parent[v] = v
        extent[v] = 1.0
        started[v] = weight
        integral[v] = 0.0
        active[v] = True
        n_active = step + 1
        root_v = v
        for k in range(neighbours.shape[1]):
            u = neighbours[v, k]
            if u < 0 or not active[u]:
                continue
            root_u = u
            while parent[root_u] != root_u:
                root_u = parent[root_u]
            if root_u == root_v:
                continue
            integral[root_u] += extent[root_u] ** exponent_e * (started[root_u] - weight)
            integral[root_v] += extent[root_v] ** exponent_e * (started[root_v] - weight)
            if extent[root_u] < extent[root_v]:
                root_u, root_v = root_v, root_u
            parent[root_v] = root_u
            integral[root_v] -= integral[root_u]
            extent[root_u] += extent[root_v]
            started[root_u] = weight
            attached[n_attached] = root_v
            n_attached += 1
            root_v = root_u
    largest = 0.0
    # Roots close their last piece at level 0; a voxel's TFCE is its offset plus its
    # parent's TFCE, and parents are attached after their children, so walking the
    # attachments backwards meets every parent first.
    for step in range(n_active):
        v = order[n - 1 - step] if sign > 0 else order[step]
        if parent[v] == v:
            integral[v] += extent[v] ** exponent_e * started[v]
    for i in range(n_attached - 1, -1, -1):
        v = attached[i]
        integral[v] += integral[parent[v]]
    for step in range(n_active):
        v = order[n - 1 - step] if sign > 0 else order[step]
        out[v] += sign * integral[v]
        if integral[v] > largest:
            largest = integral[v]
    return largest


@njit(cache=True, nogil=True)
def _tfce_signed(values, order, neighbours, exponent_e, exponent_h, dh, table, out):
    _tfce_part(values, order, 1.0, neighbours, exponent_e, exponent_h, dh, table, out)
    _tfce_part(values, order, -1.0, neighbours, exponent_e, exponent_h, dh, table, out)


@njit(cache=True, nogil=True)
def _tfce_max_rows(stats, orders, neighbours, exponent_e, exponent_h, dh, table, out):
    scratch = np.zeros(stats.shape[1])
    for b in range(stats.shape[0]):
        high = _tfce_part(stats[b], orders[b], 1.0, neighbours, exponent_e, exponent_h, dh, table, scratch)
        low = _tfce_part(stats[b], orders[b], -1.0, neighbours, exponent_e, exponent_h, dh, table, scratch)
        out[b] = max(high, low)


@njit(cache=True, nogil=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, nogil=True)
def _cluster_roots(supra, neighbours):
    n = supra.size
    parent = np.arange(n)
    for v in range(n):
        if not supra[v]:
            continue
        for k in range(neighbours.shape[1]):
            u = neighbours[v, k]
            if u < 0 or not supra[u]:
                continue
            a = _find(parent, v)
            b = _find(parent, u)
            if a != b:
                if a < b:
                    parent[b] = a
                else:
                    parent[a] = b
    for v in range(n):
        parent[v] = _find(parent, v)
    return parent


@njit(cache=True, nogil=True)
def _cluster_mass_rows(stats, threshold, neighbours, out):
    n_vox = stats.shape[1]
    mass = np.zeros(n_vox)
    for b in range(stats.shape[0]):
        best = 0.0
        for sign in (1.0, -1.0):
            supra = sign * stats[b] - threshold > 0.0
            roots = _cluster_roots(supra, neighbours)
            mass[:] = 0.0
            for v in range(n_vox):
                if supra[v]:
                    mass[roots[v]] += sign * stats[b, v] - threshold[v]
            for v in range(n_vox):
                if mass[v] > best:
                    best = mass[v]
        out[b] = best
