"""TFCE and clusters against straightforward references built on scipy.ndimage.label."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from discvbr import DiscVBRError
from discvbr.stats import tfce
from discvbr.stats.spatial import (
    cluster_ids,
    local_maxima,
    max_cluster_mass_per_row,
    max_tfce_per_row,
    neighbour_table,
    tfce_values,
)


def reference_tfce(stat_map, dh, *, e=0.5, h=2.0, connectivity=1):
    """TFCE by thresholding at dh, 2 dh, ... and labelling each level (Smith & Nichols 2009).

    Voxels that are NaN never belong to a cluster. Sum over steps of extent^E * height^H * dh,
    positive and negative parts apart.
    """
    structure = ndimage.generate_binary_structure(stat_map.ndim, connectivity)
    values = np.nan_to_num(stat_map, nan=0.0)
    out = np.zeros(stat_map.shape)
    for sign in (1.0, -1.0):
        part = sign * values
        step = 1
        while step * dh <= part.max():
            level = step * dh
            labels, _ = ndimage.label(part >= level, structure)
            extent = np.bincount(labels.ravel()).astype(float)
            extent[0] = 0.0
            out += sign * extent[labels] ** e * level**h * dh
            step += 1
    return np.where(np.isnan(stat_map), np.nan, out)


def _smooth_map(shape, seed, sigma=1.5):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return 3.0 * field / field.std()


def test_tfce_equals_the_stepwise_reference_on_a_2d_map_with_holes():
    stat = _smooth_map((24, 30), seed=1)
    stat[5:8, 4:20] = np.nan  # outside the disc: splits clusters that would touch through it
    stat[15, 10] = np.nan
    ours = tfce(stat, dh=0.1)
    reference = reference_tfce(stat, 0.1)
    assert np.array_equal(np.isnan(ours), np.isnan(stat))
    # Same sums in another order: relative tolerance 1e-12 of the largest value.
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12 * np.nanmax(np.abs(reference)))
    assert (ours > 0).any() and (ours < 0).any()


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_tfce_equals_the_reference_in_3d_for_every_connectivity(connectivity):
    stat = _smooth_map((5, 12, 14), seed=connectivity, sigma=1.2)
    ours = tfce(stat, dh=0.05, connectivity=connectivity, e=1.0, h=1.5)
    reference = reference_tfce(stat, 0.05, e=1.0, h=1.5, connectivity=connectivity)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12 * np.abs(reference).max())


def test_exact_tfce_is_the_limit_of_small_steps():
    stat = _smooth_map((16, 18), seed=4)
    exact = tfce(stat)
    fine = reference_tfce(stat, 0.001)
    # The step sum is a right Riemann sum: error of order dh relative to the integral.
    np.testing.assert_allclose(exact, fine, rtol=0, atol=2e-3 * np.abs(fine).max())


def test_tfce_of_a_single_flat_cluster_has_a_closed_form():
    stat = np.full((1, 4, 5), np.nan)
    stat[0, 1:3, 1:4] = 2.5  # six voxels at height 2.5
    # integral_0^2.5 6^0.5 h^2 dh = sqrt(6) * 2.5^3 / 3
    np.testing.assert_allclose(tfce(stat)[0, 1:3, 1:4], np.sqrt(6) * 2.5**3 / 3, rtol=1e-13)


def test_batched_maxima_equal_maps_one_by_one():
    rng = np.random.default_rng(3)
    shape = (12, 13)
    indices = np.flatnonzero(rng.random(shape).reshape(-1) < 0.9)
    neighbours = neighbour_table(shape, indices, connectivity=2)
    rows = np.stack([_smooth_map(shape, seed=s).reshape(-1)[indices] for s in range(6)])
    rows[2, 5] = np.nan
    threshold = np.full(indices.size, 1.0) + 0.2 * rng.random(indices.size)
    maxima = max_tfce_per_row(rows, neighbours, dh=0.1)
    masses = max_cluster_mass_per_row(rows, threshold, neighbours)
    for b, row in enumerate(rows):
        assert maxima[b] == pytest.approx(np.abs(tfce_values(row, neighbours, dh=0.1)).max(), rel=1e-12)
        ids = cluster_ids(row, threshold, neighbours)
        excess = np.abs(np.nan_to_num(row)) - threshold
        best = max((excess[ids == c].sum() for c in np.unique(ids) if c != 0), default=0.0)
        assert masses[b] == pytest.approx(best, rel=1e-12)


def test_clusters_equal_ndimage_labels_split_by_sign():
    stat = _smooth_map((20, 22), seed=8)
    stat[0:3, :] = np.nan
    inside = np.flatnonzero(np.isfinite(stat).reshape(-1))
    neighbours = neighbour_table(stat.shape, inside, connectivity=1)
    ids = cluster_ids(stat.reshape(-1)[inside], 1.5, neighbours)
    grid = np.zeros(stat.size, np.int64)
    grid[inside] = ids
    grid = grid.reshape(stat.shape)
    for sign in (1, -1):
        labels, count = ndimage.label(np.nan_to_num(sign * stat) > 1.5)
        assert count == (np.unique(grid[grid * sign > 0])).size
        for label in range(1, count + 1):
            ours = np.unique(grid[labels == label])
            assert ours.size == 1 and ours[0] * sign > 0  # each reference cluster is one of ours
        masses = [np.sum(sign * stat[grid == sign * k] - 1.5) for k in range(1, count + 1)]
        assert masses == sorted(masses, reverse=True)  # numbered by decreasing mass


def test_neighbours_and_peaks():
    table = neighbour_table((3, 3), np.array([0, 1, 4, 8]), connectivity=1)
    assert sorted(set(table[0]) - {-1}) == [1]  # (0,0) touches (0,1); (1,1) is diagonal
    assert sorted(set(table[2]) - {-1}) == [1]  # (1,1) touches (0,1); (2,2) is diagonal
    assert sorted(set(neighbour_table((3, 3), np.array([0, 1, 4, 8]), connectivity=2)[2]) - {-1}) == [0, 1, 3]
    values = np.array([1.0, 3.0, -4.0, np.nan])
    peaks = local_maxima(values, neighbour_table((4,), np.arange(4)))
    np.testing.assert_array_equal(peaks, [False, False, True, False])
    with pytest.raises(DiscVBRError, match="connectivity must be 1..2"):
        neighbour_table((3, 3), np.arange(9), connectivity=3)


def test_infinite_statistics_count_as_the_limit():
    from discvbr.stats.spatial import STATISTIC_LIMIT

    stat = _smooth_map((8, 9), seed=2)
    stat[4, 4] = np.inf
    capped = stat.copy()
    capped[4, 4] = STATISTIC_LIMIT
    np.testing.assert_array_equal(tfce(stat), tfce(capped))
    assert np.isfinite(tfce(stat)).all()
