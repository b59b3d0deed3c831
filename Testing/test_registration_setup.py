"""Atlases, elastix parameter files and QC arithmetic of the registration (no registration run)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.registration import (
    RegistrationParams,
    available_atlases,
    build_atlas,
    build_parameter_maps,
    histogram_change,
    load_atlas,
    save_atlas,
)
from discvbr.registration.params import (
    PARAMETER_DIR,
    format_parameter_map,
    load_parameter_files,
    pyramid_schedule,
    read_parameter_file,
    write_parameter_files,
)
from discvbr.registration.qc import DiscQC, QCThresholds, dice, flag_disc, jacobian_summary

SHIPPED = [f"{folder}{name}" for folder in ("", "paper/") for name in ("affine-2d.txt", "bspline-2d.txt", "affine-3d.txt", "bspline-3d.txt")]

# ------------------------------------------------------------------ atlases


def test_shipped_atlases_cover_both_modes_and_all_levels():
    names = available_atlases()
    for base in ("phantom-healthy", "phantom-degenerated", "real-sub-20"):
        for mode in ("2d", "3d"):
            assert f"{base}-{mode}" in names
            atlas = load_atlas(base, mode=mode)
            assert atlas.mode == mode and atlas.levels == (1, 2, 3, 4, 5)
            # levels are numbered from the bottom up: L5S1's centroid is the lowest
            heights = [atlas.labels.affine[2, 2] * np.argwhere(atlas.labels.array == v)[:, 2].mean() for v in atlas.levels]
            assert np.all(np.diff(heights) > 0)


def test_degenerated_atlas_has_lower_discs_than_healthy():
    healthy = load_atlas("phantom-healthy", mode="2d")
    degenerated = load_atlas("phantom-degenerated", mode="2d")
    for label in range(1, 6):
        assert (degenerated.labels.array == label).sum() < (healthy.labels.array == label).sum()


def test_atlas_round_trip_and_crop_keeps_positions(tmp_path):
    labels = np.zeros((1, 60, 80), np.uint8)
    labels[0, 20:40, 10:16] = 1
    labels[0, 22:38, 50:55] = 2
    affine = np.diag([8.0, 0.9, 0.9, 1.0])
    affine[:3, 3] = [1.0, -20.0, -30.0]
    atlas = build_atlas(Image(labels, affine), name="mine", description="test atlas", margin_mm=5.0)
    assert atlas.levels == (1, 2)
    # stored crop: the discs' box (rows 20-39, columns 10-54) plus 5 mm = 6 voxels of 0.9 mm
    assert atlas.labels.shape == (1, 20 + 12, 45 + 12)
    loaded = load_atlas(save_atlas(atlas, tmp_path / "mine"))
    assert loaded.name == "mine" and loaded.description == "test atlas"
    np.testing.assert_array_equal(loaded.labels.array, atlas.labels.array)
    np.testing.assert_allclose(loaded.labels.affine, atlas.labels.affine, atol=1e-5)
    disc = loaded.disc(2, margin_mm=1.0)
    centre = lambda img, sel: (img.affine @ np.r_[np.argwhere(sel).mean(axis=0), 1.0])[:3]  # noqa: E731
    np.testing.assert_allclose(centre(disc, disc.array > 0), centre(Image(labels, affine), labels == 2), atol=1e-6)


def test_atlas_errors_name_the_problem(tmp_path):
    with pytest.raises(DiscVBRError, match=r"label values \[7\] are not discs"):
        build_atlas(Image(np.full((1, 10, 10), 7, np.uint8), np.eye(4)), name="bad")
    with pytest.raises(DiscVBRError, match="has no disc"):
        build_atlas(Image(np.zeros((1, 10, 10), np.uint8), np.eye(4)), name="empty")
    with pytest.raises(DiscVBRError, match="use letters, digits"):
        build_atlas(Image(np.ones((1, 10, 10), np.uint8), np.eye(4)), name="a b")
    with pytest.raises(DiscVBRError, match=r"atlas 'nowhere' not found.*phantom-healthy-2d"):
        load_atlas("nowhere")
    with pytest.raises(DiscVBRError, match=r"is 2d; the data need a 3d atlas"):
        load_atlas("phantom-healthy-2d", mode="3d")
    atlas = build_atlas(Image(np.ones((1, 10, 10), np.uint8), np.eye(4)), name="only-l5s1")
    with pytest.raises(DiscVBRError, match=r"atlas 'only-l5s1' has no L4L5 disc \(label 2\); it has: L5S1"):
        atlas.disc(2, margin_mm=5.0)


# ------------------------------------------------------------------ parameter files


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_parameter_files_parse_as_elastix_reads_them(name):
    from discvbr.registration.engine import load_itk

    itk = load_itk()
    reference = itk.ParameterObject.New()
    reference.ReadParameterFile(str(PARAMETER_DIR / name))
    theirs = {k: tuple(v) for k, v in dict(reference.GetParameterMap(0)).items()}
    assert read_parameter_file(PARAMETER_DIR / name) == theirs


def test_paper_preset_files_hold_the_papers_method():
    for ndim in (2, 3):
        affine, bspline = load_parameter_files(ndim, parameter_dir=PARAMETER_DIR / "paper")
        assert affine["Transform"] == ("AffineTransform",) and affine["NumberOfResolutions"] == ("4",)
        assert affine["FixedImagePyramid"] == ("FixedRecursiveImagePyramid",)
        assert affine["AutomaticTransformInitializationMethod"] == ("CenterOfGravity",)
        assert bspline["Metric"] == ("AdvancedMattesMutualInformation", "TransformRigidityPenalty")
        assert bspline["FinalGridSpacingInVoxels"] == ("2",) and bspline["MaximumNumberOfIterations"] == ("200",)
        assert bspline["Metric1Weight"] == ("0.77",) and float(bspline["MaximumStepLength"][0]) == 0.1
        assert affine["DiscVBRInputImage"] == bspline["DiscVBRInputImage"] == ("mask",)
        for pm in (affine, bspline):
            levels = int(pm["NumberOfResolutions"][0])
            assert len(pm["FixedImagePyramidSchedule"]) == levels * ndim


def test_default_files_hold_the_paper_pipeline_on_depth_maps():
    # same stages, pyramids and initialisation as the paper; mean squares of depth maps, an
    # 8-voxel final grid and rigidity weight 4 (issue 17's benchmark)
    for ndim in (2, 3):
        affine, bspline = load_parameter_files(ndim)
        paper_affine, paper_bspline = load_parameter_files(ndim, parameter_dir=PARAMETER_DIR / "paper")
        for ours, theirs in ((affine, paper_affine), (bspline, paper_bspline)):
            for key in ("Transform", "NumberOfResolutions", "FixedImagePyramidSchedule", "Optimizer", "MaximumNumberOfIterations"):
                assert ours[key] == theirs[key]
        assert affine["AutomaticTransformInitializationMethod"] == ("CenterOfGravity",)
        assert affine["Metric"] == ("AdvancedMeanSquares",)
        assert bspline["Metric"] == ("AdvancedMeanSquares", "TransformRigidityPenalty")
        assert bspline["FinalGridSpacingInVoxels"] == ("8",) and bspline["Metric1Weight"] == ("4",)
        assert affine["DiscVBRInputImage"] == bspline["DiscVBRInputImage"] == ("distance",)
    defaults = RegistrationParams()
    assert (defaults.final_grid_spacing, defaults.iterations, defaults.rigidity_weight) == (8.0, 200, 4.0)


def test_parameter_map_text_round_trip(tmp_path):
    original = read_parameter_file(PARAMETER_DIR / "bspline-3d.txt")
    path = tmp_path / "copy.txt"
    path.write_text(format_parameter_map(original, header="copy"))
    assert read_parameter_file(path) == original


def test_malformed_parameter_file_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text('(Transform "AffineTransform")\n// fine\nMetric "oops"\n')
    with pytest.raises(DiscVBRError, match=r"bad.txt, line 3: not an elastix entry"):
        read_parameter_file(path)


def test_build_parameter_maps_writes_the_tuned_values():
    params = RegistrationParams(final_grid_spacing=3.0, iterations=77, rigidity_weight=1.5, max_step_length=0.05, seed=9)
    affine, bspline = build_parameter_maps(params, ndim=2, spacing=[0.9375, 0.9375], shape=[60, 33])
    assert bspline["FinalGridSpacingInVoxels"] == ("3",)
    assert bspline["MaximumNumberOfIterations"] == ("77",)
    assert bspline["Metric1Weight"] == ("1.5",) and bspline["MaximumStepLength"] == ("0.05",)
    assert affine["RandomSeed"] == bspline["RandomSeed"] == ("9",)
    # a 33-voxel axis cannot shrink 8x (would leave 4 voxels): capped at 33 // 3 = 11 -> 8 is fine,
    # so the isotropic schedule is the usual 8, 4, 2, 1
    assert affine["FixedImagePyramidSchedule"] == tuple("8 8 4 4 2 2 1 1".split())


def test_pyramid_schedule_for_anisotropic_stacks():
    schedule = pyramid_schedule([4.0, 0.9375, 0.9375], [6, 64, 40], 4)
    assert schedule.shape == (4, 3) and np.all(schedule[-1] == 1)
    # in-plane halves per level; the 4 mm axis shrinks so coarse voxels are near-isotropic
    np.testing.assert_array_equal(schedule[:, 1], [8, 4, 2, 1])
    coarse_mm = schedule[0] * np.array([4.0, 0.9375, 0.9375])
    assert coarse_mm.max() / coarse_mm.min() < 1.5
    # never below 3 voxels along an axis
    assert np.all(np.array([6, 64, 40]) // schedule >= 3)
    np.testing.assert_array_equal(pyramid_schedule([1.0, 1.0], [100, 100], 3), [[4, 4], [2, 2], [1, 1]])


def test_written_parameter_files_reload_as_user_parameters(tmp_path):
    params = RegistrationParams(final_grid_spacing=4.0, iterations=120, rigidity_weight=0.3)
    write_parameter_files(tmp_path, params, ndim=3, note="from a test")
    again = build_parameter_maps(RegistrationParams(parameter_dir=str(tmp_path), final_grid_spacing=4.0, iterations=120, rigidity_weight=0.3), ndim=3)
    assert again == build_parameter_maps(params, ndim=3)


def test_registration_params_validation():
    with pytest.raises(DiscVBRError, match="final grid spacing"):
        RegistrationParams(final_grid_spacing=0)
    with pytest.raises(DiscVBRError, match="iterations"):
        RegistrationParams(iterations=0)
    with pytest.raises(DiscVBRError, match="rigidity weight"):
        RegistrationParams(rigidity_weight=-1)
    with pytest.raises(DiscVBRError, match="not found"):
        build_parameter_maps(RegistrationParams(parameter_dir="/nonexistent"), ndim=2)


# ------------------------------------------------------------------ QC arithmetic


def test_dice_and_jacobian_summary():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True  # 16 voxels
    b[4:8, 2:6] = True  # 16 voxels, 8 shared
    assert dice(a, b) == pytest.approx(2 * 8 / 32)
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))
    det = np.linspace(-0.5, 2.0, 100).reshape(10, 10)
    mask = np.ones((10, 10), bool)
    mask[0] = False
    summary = jacobian_summary(det, mask)
    values = det[mask]
    assert summary["mean"] == pytest.approx(values.mean()) and summary["sd"] == pytest.approx(values.std())
    assert summary["folded_fraction"] == pytest.approx(np.mean(values <= 0))


def test_histogram_change_is_the_ks_statistic():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 10, 500)
    y = rng.normal(103, 10, 400)
    change = histogram_change(np.r_[x, np.nan], y, bins=20)
    test = ks_2samp(x, y)
    assert change.ks_distance == pytest.approx(test.statistic) and change.ks_pvalue == pytest.approx(test.pvalue)
    assert change.n_before == 500 and change.edges.size == 21
    widths = np.diff(change.edges)
    assert np.sum(change.density_before * widths) == pytest.approx(1.0)
    assert histogram_change(x, x).ks_distance == 0.0


def test_flags_follow_thresholds():
    qc = DiscQC(0.97, 1.0, 0.1, 0.5, 1.5, 0.0, 2.0, 400, 420, ks_distance=0.05)
    assert flag_disc(qc) == []
    bad = DiscQC(0.80, 1.0, 0.6, -0.1, 1.5, 0.01, 2.0, 400, 420, ks_distance=0.5)
    assert flag_disc(bad) == ["low-dice", "folding", "irregular-jacobian", "jacobian-range", "histogram-changed"]
    lenient = QCThresholds(
        min_dice=0.5, max_folded_fraction=0.05, max_det_jacobian_sd=1.0, det_jacobian_range=(-0.2, 2.0), max_ks_distance=0.6
    )
    assert flag_disc(bad, lenient) == []


def test_phantom_atlas_labels_rebuild_the_shipped_atlas():
    # the phantom-side builder (discvbr.phantom.atlas) remakes the shipped healthy 2D atlas
    # voxel for voxel from the provenance stored with it
    from discvbr.phantom.atlas import phantom_atlas_labels

    shipped = load_atlas("phantom-healthy", mode="2d")
    labels, source = phantom_atlas_labels("healthy", mode="2d", seed=int(shipped.source["seed"]))
    rebuilt = build_atlas(labels, name="rebuilt", source=source)
    assert rebuilt.labels.shape == shipped.labels.shape
    np.testing.assert_allclose(rebuilt.labels.affine, shipped.labels.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(rebuilt.labels.array), np.asarray(shipped.labels.array))
    assert source["kind"] == "healthy" and source["degeneration"] == shipped.source["degeneration"]
