"""Per-disc registration against ground truth: known synthetic deformations of atlas discs.

A subject disc is made by deforming an atlas disc with a known map psi (subject position ->
atlas position: rotation, anisotropic scaling, shift and a smooth sinusoidal warp). The ideal
registration T (atlas -> subject) is psi's inverse, so
* the registered subject mask must overlap the atlas disc (Dice >= 0.95, the issue's bar),
* det J of T must average 1 / det(linear part of psi) (the sinusoid has zero mean effect),
* a map planted in atlas space, carried into the subject by psi and warped back by T, must
  correlate with the planted map (and much better than with no registration).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, Image
from discvbr.registration import (
    DiscRegistration,
    RegistrationParams,
    apply_registration,
    build_atlas,
    disc_histogram_change,
    load_atlas,
    paste_discs,
    register_disc,
    register_subject,
    warp_image,
    warp_mask,
)
from discvbr.registration.engine import frame_geometry, prepare_transform_maps, voxel_positions

ANGLE_DEG = 7.0
SCALE = (1.10, 0.90)  # along the frame's posterior and superior axes
SHIFT_MM = (4.0, -3.0)
WARP_MM = 1.2


def _psi(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Known subject -> atlas map in the 2D registration frame."""
    a = np.deg2rad(ANGLE_DEG)
    linear = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag(SCALE)
    q = (points - centre) @ linear.T + centre + np.array(SHIFT_MM)
    q[..., 0] += WARP_MM * np.sin(2 * np.pi * (points[..., 1] - centre[1]) / 25.0)
    q[..., 1] += WARP_MM * np.sin(2 * np.pi * (points[..., 0] - centre[0]) / 30.0)
    return q


def _sample2d(values: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int) -> np.ndarray:
    matrix, origin = frame_geometry(affine, 2)
    index = (points - origin) @ np.linalg.inv(matrix).T
    return ndimage.map_coordinates(values[0].astype(float), index.reshape(-1, 2).T, order=order, mode="nearest").reshape(points.shape[:-1])


def _pattern(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """A relaxation-like map (ms): a nucleus bump off-centre plus an antero-posterior gradient."""
    u = points - centre
    return 100.0 + 40.0 * np.exp(-((u[..., 0] - 5.0) ** 2 / 60.0 + (u[..., 1] + 2.0) ** 2 / 8.0)) + 0.8 * u[..., 0]


@pytest.fixture(scope="module")
def atlas_2d():
    return load_atlas("phantom-healthy", mode="2d")


@pytest.fixture(scope="module", params=[2, 4], ids=["L4L5", "L2L3"])
def known(request, atlas_2d):
    """A subject disc deformed by psi from the atlas disc, registered with the paper's parameters."""
    label = request.param
    grid = atlas_2d.labels
    points = voxel_positions(grid.shape, grid.affine, 2)
    centre = points[np.asarray(grid.array)[0] == label].mean(axis=0)
    to_atlas = _psi(points, centre)
    inside = _sample2d((np.asarray(grid.array) == label).astype(float), grid.affine, to_atlas, order=1) > 0.5
    mask = Image((inside * label).astype(np.uint8)[None], grid.affine)
    planted = _pattern(points, centre)
    subject_map = Image(_sample2d(planted[None], grid.affine, to_atlas, order=3)[None].astype(np.float32), grid.affine)
    reg = register_disc(mask, label, atlas_2d, subject="known-deformation")
    return {"label": label, "mask": mask, "map": subject_map, "centre": centre, "reg": reg}


def test_known_deformation_overlap_and_no_folding(known):
    qc = known["reg"].qc
    assert qc.dice >= 0.95
    assert qc.folded_fraction == 0.0 and qc.det_jacobian_min > 0.0
    # SD(det J) is reported: finite, and the known warp is not a pure affine, so it is > 0
    assert np.isfinite(qc.det_jacobian_sd) and 0.0 < qc.det_jacobian_sd < 0.4
    assert qc.flags == []


def test_known_deformation_jacobian_matches_the_known_area_change(known):
    # T = psi^-1: its mean det J over the disc is 1 / (sx * sy) up to the sinusoid (mean ~0);
    # tolerance 3 %
    expected = 1.0 / (SCALE[0] * SCALE[1])
    assert known["reg"].qc.det_jacobian_mean == pytest.approx(expected, rel=0.03)


def test_transformix_jacobian_agrees_with_finite_differences(known):
    # det J from transformix against central differences of the sampled transform, in the
    # disc's interior (2 voxels in from its edge); tolerances: mean 0.01, max 0.06 (the
    # B-spline varies on a 2-voxel grid, where central differences are only approximate)
    reg = known["reg"]
    matrix, _ = frame_geometry(reg.grid.affine, 2)
    spacing = np.linalg.norm(matrix, axis=0)
    d0 = np.gradient(reg.points, spacing[0], axis=0)
    d1 = np.gradient(reg.points, spacing[1], axis=1)
    jac = np.stack([d0, d1], axis=-1) @ np.linalg.inv(matrix / spacing)
    interior = ndimage.binary_erosion(reg.grid.array[0], iterations=2)
    diff = np.abs(np.linalg.det(jac)[interior] - reg.det_jacobian[0][interior])
    assert diff.mean() < 0.01 and diff.max() < 0.06


def test_warped_map_preserves_the_planted_pattern(known):
    reg = known["reg"]
    warped = warp_image(reg, known["map"]).array[0]
    truth = _pattern(voxel_positions(reg.grid.shape, reg.grid.affine, 2), known["centre"])
    disc = reg.grid.array[0]
    assert np.all(np.isfinite(warped[disc])) and np.all(np.isnan(warped[~disc]))
    r = np.corrcoef(warped[disc], truth[disc])[0, 1]
    # without registration (the subject map read at atlas positions) the pattern is lost
    unregistered = _sample2d(known["map"].array, known["map"].affine, voxel_positions(reg.grid.shape, reg.grid.affine, 2), 3)
    r_none = np.corrcoef(unregistered[disc], truth[disc])[0, 1]
    assert r >= 0.97
    assert r_none < 0.85
    # and the values stay on scale: RMS error below a quarter of the pattern's SD
    assert np.sqrt(np.mean((warped[disc] - truth[disc]) ** 2)) < 0.25 * truth[disc].std()


def test_echoes_in_atlas_space_fit_to_the_planted_map(known):
    # every echo of a series S_e = 1000 exp(-t_e / T) with T the subject map; after warping
    # all echoes, the two-point log fit in atlas space gives back the planted T
    reg = known["reg"]
    times = np.array([0.0, 10.0, 40.0, 80.0])
    t_map = known["map"].array
    data = 1000.0 * np.exp(-times / t_map[..., None])
    series = EchoSeries(data.astype(np.float32), times, known["map"].affine, "t1rho")
    warped = apply_registration(reg, series)
    assert warped.data.shape == reg.grid.shape + (4,)
    assert np.array_equal(warped.times, times) and warped.kind == "t1rho"
    disc = reg.grid.array
    fitted = -(times[-1] - times[0]) / np.log(warped.data[..., -1] / warped.data[..., 0])
    truth = _pattern(voxel_positions(reg.grid.shape, reg.grid.affine, 2), known["centre"])[None]
    assert np.corrcoef(fitted[disc], truth[disc])[0, 1] >= 0.97
    # each echo equals the single-image warp of that echo
    np.testing.assert_array_equal(warped.data[..., 2], warp_image(reg, series.echo(2)).array)


def test_warp_matches_transformix_resampling(known):
    # reference: transformix resamples the subject map with the same transform and its own
    # cubic B-spline interpolator (FinalBSplineInterpolationOrder 3) onto the atlas grid;
    # the two must agree inside the atlas disc (tolerance 1e-4 of the map's range; linear
    # interpolation would miss it by about 1e-2)
    from discvbr.registration.engine import load_itk

    itk = load_itk()
    reg = known["reg"]
    image = known["map"]
    matrix, origin = frame_geometry(image.affine, 2)
    spacing = np.linalg.norm(matrix, axis=0)
    moving = itk.image_from_array(np.ascontiguousarray(image.array[0].T.astype(np.float32)))
    moving.SetSpacing(spacing.tolist())
    moving.SetOrigin(origin.tolist())
    moving.SetDirection(itk.matrix_from_array(np.ascontiguousarray(matrix / spacing)))
    maps = itk.ParameterObject.New()
    for pm in prepare_transform_maps(reg.transform_maps):
        maps.AddParameterMap(dict(pm, FinalBSplineInterpolationOrder=("3",), ResultImagePixelType=("float",)))
    reference = np.asarray(itk.transformix_filter(moving, maps, log_to_console=False)).T
    ours = warp_image(reg, image).array[0]
    disc = reg.grid.array[0]
    span = np.ptp(image.array)
    assert np.abs(ours[disc] - reference[disc]).max() < 1e-4 * span


def test_histogram_before_and_after_match(known):
    reg = known["reg"]
    change = disc_histogram_change(reg, known["map"], known["mask"])
    from scipy.stats import ks_2samp

    before = known["map"].array[known["mask"].array == known["label"]]
    after = warp_image(reg, known["map"]).array[reg.grid.array]
    assert change.ks_distance == pytest.approx(ks_2samp(before, after).statistic, abs=1e-12)
    # the deformation is smooth, so the distribution of values barely moves (KS < 0.15)
    assert change.ks_distance < 0.15


def test_warped_mask_overlaps_atlas_disc(known):
    reg = known["reg"]
    warped = warp_mask(reg, known["mask"]).array == known["label"]
    overlap = 2 * np.sum(warped & reg.grid.array) / (warped.sum() + reg.grid.array.sum())
    assert overlap == pytest.approx(reg.qc.dice, abs=1e-12)


def test_saved_registration_reloads_identically(known, tmp_path):
    reg = known["reg"]
    folder = reg.save(tmp_path / reg.level)
    text = (folder / "TransformParameters.1.txt").read_text()
    assert '(InitialTransformParameterFileName "TransformParameters.0.txt")' in text
    loaded = DiscRegistration.load(folder)
    np.testing.assert_allclose(loaded.points, reg.points, atol=1e-6)
    np.testing.assert_allclose(loaded.det_jacobian, reg.det_jacobian, atol=1e-6)
    assert loaded.qc == reg.qc and loaded.params == reg.params and loaded.label == reg.label
    np.testing.assert_array_equal(loaded.grid.array, reg.grid.array)
    np.testing.assert_array_equal(warp_image(loaded, known["map"]).array, warp_image(reg, known["map"]).array)
    # without the stored points, transformix runs the saved chain: it must give the same map (to 1e-4 mm)
    (folder / "points.npy").unlink()
    (folder / "det_jacobian.nii.gz").unlink()
    chained = DiscRegistration.load(folder)
    np.testing.assert_allclose(chained.points, reg.points, atol=1e-4)
    np.testing.assert_allclose(chained.det_jacobian, reg.det_jacobian, atol=1e-4)


def test_paste_discs_places_each_disc_in_its_atlas_disc(atlas_2d):
    parts = {}
    for label in (1, 3):
        crop = atlas_2d.disc(label, margin_mm=10.0)
        parts[label] = Image(np.full(crop.shape, 10.0 * label, np.float32), crop.affine)
    full = paste_discs(parts, atlas_2d)
    labels = np.asarray(atlas_2d.labels.array)
    assert full.shape == labels.shape and np.allclose(full.affine, atlas_2d.labels.affine)
    for label in (1, 3):
        assert np.all(full.array[labels == label] == 10.0 * label)
    assert np.all(np.isnan(full.array[(labels != 1) & (labels != 3)]))


# ------------------------------------------------------------------ failures and bad input


@pytest.fixture(scope="module")
def subject_without_l3l4(phantom_session_2d):
    labels = np.asarray(phantom_session_2d.labels.array).copy()
    labels[labels == 3] = 0
    return Image(labels, phantom_session_2d.labels.affine)


def test_failed_disc_is_reported_and_the_others_complete(subject_without_l3l4, atlas_2d):
    params = RegistrationParams(iterations=30)
    result = register_subject(subject_without_l3l4, atlas_2d, subject="sub-07", labels=[2, 3, 4], params=params, jobs=2)
    assert sorted(result.discs) == [2, 4] and sorted(result.failures) == [3]
    message = result.failures[3].message
    assert "sub-07" in message and "L3L4" in message
    assert all(reg.qc.dice > 0.9 for reg in result.discs.values())
    table = result.qc_table()
    assert list(table["label"]) == [2, 3, 4]
    assert set(table.loc[table.label != 3, "status"]) <= {"ok", "flagged"}
    assert table.loc[table.label == 3, "status"].item() == "failed"
    # worker processes give the same transform as registering in this process (seeded)
    serial = register_disc(subject_without_l3l4, 2, atlas_2d, subject="sub-07", params=params)
    # (the maps differ only in the temporary folder elastix names as the initial transform)
    assert prepare_transform_maps(serial.transform_maps) == prepare_transform_maps(result.discs[2].transform_maps)


def test_empty_disc_label_names_subject_and_disc(subject_without_l3l4, atlas_2d):
    with pytest.raises(DiscVBRError, match=r"subject sub-07, disc L3L4: the mask has no voxel labelled 3"):
        register_disc(subject_without_l3l4, 3, atlas_2d, subject="sub-07")


def test_atlas_without_the_level_names_subject_disc_and_atlas(phantom_session_2d):
    labels = np.asarray(phantom_session_2d.labels.array).copy()
    labels[labels == 5] = 0
    partial = build_atlas(Image(labels, phantom_session_2d.labels.affine), name="no-l1l2")
    with pytest.raises(DiscVBRError, match=r"subject sub-03, disc L1L2: atlas 'no-l1l2' has no L1L2 disc"):
        register_disc(phantom_session_2d.labels, 5, partial, subject="sub-03")


def test_label_outside_the_five_discs_is_refused(phantom_session_2d, atlas_2d):
    with pytest.raises(DiscVBRError, match="disc label 9 is outside 1..5"):
        register_disc(phantom_session_2d.labels, 9, atlas_2d, subject="sub-03")


def test_single_slice_mask_against_stack_atlas_is_refused(phantom_session_2d):
    with pytest.raises(DiscVBRError, match=r"subject sub-03, disc L4L5: the mask is a single slice \(2D\) but atlas"):
        register_disc(phantom_session_2d.labels, 2, load_atlas("phantom-healthy", mode="3d"), subject="sub-03")


def test_non_integer_mask_is_refused(atlas_2d):
    mask = Image(np.full((1, 20, 20), 0.5, np.float32), np.eye(4))
    with pytest.raises(DiscVBRError, match="subject s, disc L4L5: the mask holds non-integer values"):
        register_disc(mask, 2, atlas_2d, subject="s")


def test_series_on_another_grid_names_subject_and_disc(known):
    reg = known["reg"]
    shifted = known["map"].affine.copy()
    shifted[:3, 3] += [0.0, 5.0, 0.0]
    series = EchoSeries(np.ones(known["map"].shape + (2,), np.float32), [0.0, 10.0], shifted, "t2")
    with pytest.raises(DiscVBRError, match=rf"subject known-deformation, disc {reg.level}: the t2 series .* is not on the grid of the mask"):
        apply_registration(reg, series)
    with pytest.raises(DiscVBRError, match=rf"disc {reg.level}: the mask .* is not on the grid"):
        warp_mask(reg, Image(np.zeros((1, 30, 30), np.uint8), np.eye(4)))


# ------------------------------------------------------------------ one small 3D case


@pytest.mark.slow
def test_stack_registration_3d_known_deformation():
    # a 3D atlas disc (6 slices of 4 mm) rotated, scaled and shifted in plane; 50 iterations
    # (not the paper's 200) keep the test short and already reach the bar
    atlas = load_atlas("phantom-healthy", mode="3d")
    grid = atlas.labels
    label = 2
    points = voxel_positions(grid.shape, grid.affine, 3)
    disc = np.asarray(grid.array) == label
    centre = points[disc].mean(axis=0)
    a = np.deg2rad(6.0)
    linear = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) @ np.diag([1.0, 1.08, 0.92])
    to_atlas = (points - centre) @ linear.T + centre + np.array([0.0, 3.0, -2.0])
    matrix, origin = frame_geometry(grid.affine, 3)
    index = (to_atlas - origin) @ np.linalg.inv(matrix).T
    inside = ndimage.map_coordinates(disc.astype(float), index.reshape(-1, 3).T, order=1, mode="nearest").reshape(grid.shape) > 0.5
    mask = Image((inside * label).astype(np.uint8), grid.affine)
    reg = register_disc(mask, label, atlas, subject="stack", params=RegistrationParams(iterations=50))
    assert reg.ndim == 3 and reg.grid.shape[0] == grid.shape[0]
    assert reg.qc.dice >= 0.95
    assert reg.qc.folded_fraction == 0.0
    assert reg.qc.det_jacobian_mean == pytest.approx(1.0 / (1.08 * 0.92), rel=0.06)
