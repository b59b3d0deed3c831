"""Postprocessing and level labelling on hand-made masks: straight, tilted, strongly curved
spines, missing and extra discs, pieces, size filter, 2D/3D connectivity, uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from discvbr.errors import DiscVBRError
from discvbr.levels import DISC_LEVELS
from discvbr.segmentation.postprocess import (
    assign_levels,
    connected_components,
    order_along_spine,
    per_disc_uncertainty,
    postprocess,
    uncertainty_map,
)

SPACING = 36.0  # mm between neighbouring disc centres in these spines
AFFINE = np.diag([4.0, 1.0, 1.0, 1.0])  # 1 mm in-plane; axis 1 anterior, axis 2 superior


def _draw(centres, tangents, shape=(1, 260, 300), half_depth=17.0, half_height=5.0, slices=None):
    """Ellipse discs (17 x 5 mm half-axes) around ``centres`` (y, z), long axis along ``tangents``."""
    out = np.zeros(shape, np.uint8)
    yy, zz = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    for k, ((cy, cz), (ty, tz)) in enumerate(zip(centres, tangents), start=1):
        u = (yy - cy) * ty + (zz - cz) * tz
        v = -(yy - cy) * tz + (zz - cz) * ty
        disc = (u / half_depth) ** 2 + (v / half_height) ** 2 <= 1.0
        for i in (range(shape[0]) if slices is None else slices):
            out[i][disc] = k
    return out


def _straight(angle_deg=0.0, origin=(130.0, 50.0), n=5):
    """Disc centres every 36 mm along a line tilted by ``angle_deg`` from vertical (anterior positive)."""
    a = np.deg2rad(angle_deg)
    direction = np.array([np.sin(a), np.cos(a)])
    centres = [np.asarray(origin) + k * SPACING * direction for k in range(n)]
    tangent = np.array([direction[1], -direction[0]])  # discs lie across the spine
    return centres, [tangent] * n


def _hook(n=5):
    """A spine curved so strongly that image rows would swap levels: centres on a circular
    arc of radius 60 mm (36 mm apart) from 150 deg below the horizontal to 10 deg below it."""
    radius = SPACING / (2 * np.sin(np.deg2rad(35.0) / 2))
    angles = np.deg2rad([-150.0, -115.0, -80.0, -45.0, -10.0][:n])
    centre = np.array([140.0, 150.0])
    centres = [centre + radius * np.array([np.cos(t), np.sin(t)]) for t in angles]
    tangents = [np.array([np.cos(t), np.sin(t)]) for t in angles]  # radial: across the curved spine
    return centres, tangents


def _assign(labels, **kw):
    comps, n = connected_components(labels > 0, min_size=50)
    return assign_levels(comps, n, AFFINE, **kw)


def _level_at(result, centre):
    return int(result.labels[0, int(round(centre[0])), int(round(centre[1]))])


def test_straight_spine_is_labelled_bottom_up():
    centres, tangents = _straight()
    truth = _draw(centres, tangents)
    res = _assign(truth)
    np.testing.assert_array_equal(res.labels, truth)
    assert res.found == list(DISC_LEVELS) and not res.warnings


@pytest.mark.parametrize("angle", [-40.0, 35.0])
def test_tilted_spine_keeps_levels(angle):
    centres, tangents = _straight(angle, origin=(150.0 - 60 * np.sin(np.deg2rad(angle)), 50.0))
    truth = _draw(centres, tangents)
    res = _assign(truth)
    np.testing.assert_array_equal(res.labels, truth)


def test_strongly_curved_spine_is_labelled_along_the_curve_not_by_rows():
    centres, tangents = _hook()
    truth = _draw(centres, tangents)
    # image rows (superior coordinate) would put L3L4, not L5S1, lowest
    heights = [c[1] for c in centres]
    assert np.argmin(heights) != 0
    res = _assign(truth)
    np.testing.assert_array_equal(res.labels, truth)
    assert not res.warnings


def test_missing_middle_disc_is_seen_as_a_gap():
    centres, tangents = _straight()
    truth = _draw(centres, tangents)
    truth[truth == 3] = 0  # no L3L4
    res = _assign(truth)
    np.testing.assert_array_equal(res.labels, truth)
    assert res.missing == ["L3L4"]
    assert any("missing L3L4" in w and "gap" in w for w in res.warnings)


def test_missing_top_disc_without_votes_is_presumed_and_said():
    centres, tangents = _straight()
    truth = _draw(centres, tangents)
    truth[truth == 5] = 0
    res = _assign(truth, where="sub-07")
    np.testing.assert_array_equal(res.labels, truth)
    assert any(w.startswith("sub-07: 4 of 5 discs found; missing L1L2") and "position only" in w for w in res.warnings)


def _votes_from(truth_levels, labels):
    """Class probabilities whose per-disc votes name the true levels (background 0 elsewhere)."""
    probs = np.zeros((6,) + labels.shape, np.float32)
    probs[0] = 1.0
    for comp_value, level in truth_levels.items():
        where = labels == comp_value
        probs[0][where] = 0.1
        probs[level][where] = 0.8
        probs[1 + (level % 5)][where] = 0.1
    return probs


def test_missing_bottom_disc_is_placed_by_network_votes():
    centres, tangents = _straight()
    truth = _draw(centres, tangents)
    truth[truth == 1] = 0  # no L5S1: the lowest disc found is L4L5
    probs = _votes_from({k: k for k in range(2, 6)}, truth)
    res = postprocess(probs, AFFINE, min_size=50)
    np.testing.assert_array_equal(res.labels, truth)
    assert res.missing == ["L5S1"]
    # without votes the paper's rule would have called the lowest disc L5S1: the votes changed it
    no_votes = _assign(truth)
    assert _level_at(no_votes, centres[1]) == 1


def test_extra_t12l1_disc_is_left_unlabelled_and_reported():
    centres, tangents = _straight(n=6)
    drawn = _draw(centres, tangents)
    truth = np.where(drawn == 6, 0, drawn)
    votes = {k: k for k in range(1, 6)}
    votes[6] = 5  # the network thinks the T12L1 disc looks like L1L2
    res = postprocess(_votes_from(votes, drawn), AFFINE, min_size=50)
    np.testing.assert_array_equal(res.labels, truth)
    assert any("1 extra component(s) left unlabelled, above L1L2" in w for w in res.warnings)
    assert [f.label for f in res.findings] == [1, 2, 3, 4, 5, 0]


def test_small_components_are_dropped():
    centres, tangents = _straight()
    truth = _draw(centres, tangents)
    noisy = truth.copy()
    noisy[0, 10:15, 10:15] = 1  # 25 voxels of noise
    comps, n = connected_components(noisy > 0, min_size=125)
    assert n == 5
    res = assign_levels(comps, n, AFFINE)
    np.testing.assert_array_equal(res.labels, truth)


def test_2d_and_3d_connectivity():
    mask = np.zeros((3, 20, 20), bool)
    mask[0, 2:8, 2:8] = True
    mask[1, 2:8, 2:8] = True  # touches slice 0 through faces
    mask[2, 12:18, 12:18] = True
    _, n3 = connected_components(mask, min_size=1, mode="3d")
    _, n2 = connected_components(mask, min_size=1, mode="2d")
    assert (n3, n2) == (2, 3)
    diagonal = np.zeros((1, 6, 6), bool)
    diagonal[0, 1, 1] = diagonal[0, 2, 2] = True  # corner contact only: two components
    assert connected_components(diagonal, min_size=1)[1] == 2
    with pytest.raises(DiscVBRError, match="mode"):
        connected_components(mask, mode="4d")


def test_disc_in_two_pieces_is_merged_with_a_warning():
    centres, tangents = _straight()
    stack = _draw(centres, tangents, shape=(7, 260, 300), slices=range(7))
    stack[3] = 0  # L-R split: every disc in two pieces, 12 mm apart laterally (4 mm slices)
    comps, n = connected_components(stack > 0, min_size=50, mode="3d")
    assert n == 10
    res = assign_levels(comps, n, AFFINE)
    np.testing.assert_array_equal(res.labels, stack)
    assert sum("2 separate pieces" in w for w in res.warnings) == 5


def test_order_along_spine_walks_the_chain():
    centres, _ = _hook()
    shuffled = [3, 0, 4, 1, 2]
    order = order_along_spine(np.array([centres[i] for i in shuffled]))
    assert [shuffled[i] for i in order] == [0, 1, 2, 3, 4]


def test_no_disc_at_all_is_reported():
    res = postprocess(np.stack([np.ones((1, 40, 40))] + [np.zeros((1, 40, 40))] * 5), AFFINE, where="sub-01")
    assert res.found == [] and res.warnings == ["sub-01: no disc found (0 of 5)"]


def test_threshold_applies_to_disc_probability():
    probs = np.zeros((6, 1, 40, 40), np.float32)
    probs[0] = 1.0
    # a 20 x 20 square where background is 0.45: disc probability 0.55, split over two classes
    probs[0, 0, 10:30, 10:30] = 0.45
    probs[1, 0, 10:30, 10:30] = 0.30
    probs[2, 0, 10:30, 10:30] = 0.25
    res = postprocess(probs, AFFINE, threshold=0.5, min_size=125)
    assert (res.labels > 0).sum() == 400
    assert postprocess(probs, AFFINE, threshold=0.6, min_size=125).labels.sum() == 0
    with pytest.raises(DiscVBRError, match="threshold"):
        postprocess(probs, AFFINE, threshold=1.5)


def test_uncertainty_map_and_per_disc_scores():
    uniform = np.full((6, 1, 4, 4), 1 / 6)
    certain = np.zeros((6, 1, 4, 4))
    certain[0] = 1.0
    np.testing.assert_allclose(uncertainty_map(uniform), 1.0, atol=1e-6)
    np.testing.assert_allclose(uncertainty_map(certain), 0.0, atol=1e-6)
    two = np.zeros((6, 1, 1, 1))
    two[0] = two[1] = 0.5
    assert uncertainty_map(two)[0, 0, 0] == pytest.approx(np.log(2) / np.log(6), rel=1e-5)
    labels = np.zeros((1, 10, 10), np.uint8)
    labels[0, 4:6, 4:6] = 1
    unc = np.zeros((1, 10, 10), np.float32)
    unc[0, 3:7, 3:7] = 0.5  # the disc and its rim
    scores = per_disc_uncertainty(unc, labels)
    # disc (4 voxels) + 4-connected rim (8 voxels) all at 0.5
    assert scores["L5S1"] == pytest.approx(0.5)
    assert scores["L4L5"] == 1.0  # missing: reviewed first
