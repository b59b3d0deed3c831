"""Segmentation metrics and biomarker agreement against hand-computed values and pingouin."""

from __future__ import annotations

import math

import numpy as np
import pytest

from discvbr.errors import DiscVBRError
from discvbr.metrics import (
    biomarker_agreement,
    dice,
    disc_metrics,
    mean_per_disc,
    mean_surface_distance,
    percent_volume_difference,
    precision,
    segmentation_metrics,
    sensitivity,
    summarise_metrics,
    surface_voxels,
)


def _squares():
    """Manual: 5x5 square; automatic: the 3x3 square at its centre (a 9x9 grid)."""
    manual = np.zeros((9, 9), bool)
    manual[2:7, 2:7] = True
    auto = np.zeros((9, 9), bool)
    auto[3:6, 3:6] = True
    return manual, auto


def test_overlap_metrics_by_hand():
    manual, auto = _squares()
    # |M| = 25, |A| = 9, |M & A| = 9
    assert dice(manual, auto) == pytest.approx(2 * 9 / 34)
    assert sensitivity(manual, auto) == pytest.approx(9 / 25)
    assert precision(manual, auto) == pytest.approx(1.0)
    assert percent_volume_difference(manual, auto) == pytest.approx(100 * (9 - 25) / 25)
    # symmetric in Dice, not in sensitivity/precision/volume difference
    assert dice(auto, manual) == dice(manual, auto)
    assert sensitivity(auto, manual) == pytest.approx(1.0)


def test_empty_masks_give_nan_not_zero():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert math.isnan(dice(empty, empty))
    assert dice(full, empty) == 0.0
    assert math.isnan(sensitivity(empty, full))
    assert math.isnan(precision(full, empty))
    assert math.isnan(mean_surface_distance(full, empty))


def test_surface_voxels_are_the_ring():
    manual, auto = _squares()
    assert surface_voxels(manual).sum() == 16  # 5x5 minus its 3x3 interior
    assert surface_voxels(auto).sum() == 8


def test_mean_surface_distance_by_hand_isotropic_and_anisotropic():
    manual, auto = _squares()
    # manual ring -> auto ring: 12 edge voxels at 1, 4 corners at sqrt(2); auto ring -> manual ring: 8 at 1
    expected_px = (12 * 1 + 4 * math.sqrt(2) + 8 * 1) / 24
    assert mean_surface_distance(manual, auto) == pytest.approx(expected_px, rel=1e-12)
    # spacing (2, 1) mm: rows 2 mm apart. manual -> auto: 6 top/bottom edge voxels at 2 mm,
    # 6 left/right edge voxels at 1 mm, 4 corners at sqrt(2^2 + 1^2); auto -> manual: the middles of
    # the auto ring's top and bottom rows are 2 mm from the manual ring (one row up, or two columns
    # aside), the other 6 auto ring voxels 1 mm (one column aside)
    expected_mm = (6 * 2 + 6 * 1 + 4 * math.sqrt(5) + 2 * 2 + 6 * 1) / 24
    assert mean_surface_distance(manual, auto, spacing=(2.0, 1.0)) == pytest.approx(expected_mm, rel=1e-12)


def test_identical_masks_are_perfect():
    manual, _ = _squares()
    m = disc_metrics(manual, manual, spacing=(1.0, 1.0))
    assert m["dice"] == 1.0 and m["msd_px"] == 0.0 and m["vd_percent"] == 0.0
    assert m["sensitivity"] == 1.0 and m["precision"] == 1.0


def test_segmentation_metrics_2d_and_3d_per_disc():
    manual = np.zeros((3, 9, 9), np.uint8)
    auto = np.zeros_like(manual)
    square, small = _squares()
    manual[0][square] = 1
    auto[0][small] = 1
    manual[1][square] = 1
    auto[1][square] = 1
    auto[2][square] = 2  # L4L5 only in the automatic map: no reference, skipped
    rec3 = segmentation_metrics(manual, auto, spacing=(4.0, 1.0, 1.0), mode="3d", subject="s")
    assert [r["level"] for r in rec3] == ["L5S1"]
    # 3D: |M| = 50, |A| = 34, |M & A| = 34
    assert rec3[0]["dice"] == pytest.approx(2 * 34 / 84)
    assert rec3[0]["vd_percent"] == pytest.approx(100 * (34 - 50) / 50)
    rec2 = segmentation_metrics(manual, auto, spacing=(4.0, 1.0, 1.0), mode="2d")
    assert [(r["level"], r["slice"]) for r in rec2] == [("L5S1", 0), ("L5S1", 1)]
    assert rec2[0]["dice"] == pytest.approx(18 / 34) and rec2[1]["dice"] == 1.0
    summary = summarise_metrics(rec2)
    assert summary["L5S1"]["dice"] == pytest.approx((18 / 34 + 1.0) / 2)
    assert summary["all"]["n"] == 2


def test_false_positive_slice_scores_zero_in_2d():
    manual = np.zeros((2, 9, 9), np.uint8)
    auto = np.zeros_like(manual)
    square, _ = _squares()
    manual[0][square] = 3
    auto[0][square] = 3
    auto[1][square] = 3  # the network finds L3L4 on a slice where the reference has none
    recs = segmentation_metrics(manual, auto, spacing=(4.0, 1.0, 1.0), mode="2d")
    assert [r["dice"] for r in recs] == [1.0, 0.0]


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(DiscVBRError, match="shape"):
        dice(np.zeros((3, 3)), np.zeros((4, 4)))
    with pytest.raises(DiscVBRError, match="3D"):
        segmentation_metrics(np.zeros((3, 3)), np.zeros((3, 3)), spacing=(1, 1, 1))


def test_mean_per_disc_ignores_nan_and_reports_missing_as_nan():
    labels = np.array([[[1, 1, 2, 0]]])
    values = np.array([[[10.0, np.nan, 30.0, 99.0]]])
    means = mean_per_disc(values, labels)
    assert means["L5S1"] == 10.0 and means["L4L5"] == 30.0
    assert math.isnan(means["L1L2"])


def test_biomarker_agreement_by_hand_and_against_pingouin():
    pingouin = pytest.importorskip("pingouin")
    manual = np.array([1.0, 2.0, 3.0, 4.0])
    auto = np.array([1.5, 2.0, 3.5, 4.0])
    res = biomarker_agreement(manual, auto)
    # differences 0.5, 0, 0.5, 0: mean 0.25, SD (n-1) sqrt(0.25/3)
    sd = math.sqrt(0.25 / 3)
    assert res["bias"] == pytest.approx(0.25)
    assert res["sd_difference"] == pytest.approx(sd)
    assert res["loa_lower"] == pytest.approx(0.25 - 1.96 * sd)
    assert res["loa_upper"] == pytest.approx(0.25 + 1.96 * sd)
    rng = np.random.default_rng(0)
    manual = rng.normal(100, 15, 30)
    auto = manual + rng.normal(-0.5, 2, 30)
    res = biomarker_agreement(manual, auto)
    corr = pingouin.corr(manual, auto)
    tt = pingouin.ttest(auto, manual, paired=True)
    assert res["pearson_r"] == pytest.approx(float(corr["r"].iloc[0]), rel=1e-10)
    assert res["t"] == pytest.approx(float(tt["T"].iloc[0]), rel=1e-10)
    assert res["t_p"] == pytest.approx(float(tt["p_val"].iloc[0] if "p_val" in tt else tt["p-val"].iloc[0]), rel=1e-8)
    assert res["n"] == 30


def test_biomarker_agreement_drops_nan_pairs_and_needs_three():
    res = biomarker_agreement([1, 2, np.nan, 4, 5], [1.1, 2.1, 3.0, np.nan, 5.2])
    assert res["n"] == 3
    with pytest.raises(DiscVBRError, match="at least 3"):
        biomarker_agreement([1, 2], [1, 2])
