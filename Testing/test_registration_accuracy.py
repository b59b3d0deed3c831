"""Where each atlas-disc voxel lands, against deformations known exactly (issue 17).

A subject disc is made by pushing a shipped atlas disc through a known smooth map phi
(rotation 6-9 degrees, in-plane scales 0.85-1.25, a 1-1.5 mm sinusoidal displacement;
:mod:`discvbr.registration.known`) onto a subject grid of 0.7 mm in-plane voxels, tilted,
with its anteroposterior axis reversed and another origin. The registration must send each
atlas-disc voxel to phi of it: the issue's goal is a median point error <= 0.5 mm and a 95th
percentile <= 1.0 mm per disc.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.registration import QCThresholds, load_atlas, register_disc
from discvbr.registration.disc import aligned_distance_image, distance_image
from discvbr.registration.engine import voxel_positions
from discvbr.registration.known import deform_labels, draw_deformation, point_errors, subject_grid
from discvbr.registration.params import (
    DEPTH_LIMIT_ENTRY,
    INPUT_IMAGE_ENTRY,
    PARAMETER_DIR,
    depth_limit,
    load_parameter_files,
    read_parameter_file,
    registration_preset,
    write_parameter_file,
)
from discvbr.registration.qc import DiscQC, flag_disc, jacobian_summary

GOAL_MEDIAN_MM = 0.5
GOAL_P95_MM = 1.0


def _known_subject(atlas, label: int, family: str, seed: int):
    deformation = draw_deformation(atlas.labels, label, family=family, seed=seed)
    shape, affine = subject_grid(atlas.labels, label, deformation, slice_mm=3.5, n_slices=7)
    return deformation, deform_labels(atlas.labels, deformation, shape, affine)


def test_known_deformation_is_exact_and_invertible():
    # the generator itself: phi^-1(phi(x)) = x to 1e-6 mm, and det J from the analytic
    # Jacobian equals central differences of phi (step 1e-4 mm, tolerance 1e-6)
    atlas = load_atlas("phantom-degenerated", mode="3d")
    deformation = draw_deformation(atlas.labels, 3, family="squeeze", seed=5)
    rng = np.random.default_rng(0)
    x = deformation.centre + rng.uniform(-20, 20, size=(200, 3))
    np.testing.assert_allclose(deformation.inverse(deformation.forward(x)), x, atol=1e-6)
    h = 1e-4
    columns = [(deformation.forward(x + h * e) - deformation.forward(x - h * e)) / (2 * h) for e in np.eye(3)]
    numeric = np.linalg.det(np.stack(columns, axis=-1))
    np.testing.assert_allclose(deformation.det_jacobian(x), numeric, atol=1e-6)
    # the ranges hold: the linear part turns 6-9 degrees in the sagittal plane
    turn = np.degrees(np.arctan2(deformation.linear[2, 1], deformation.linear[1, 1]))
    assert 6.0 <= abs(turn) <= 9.0


def test_subject_grid_differs_from_the_atlas_grid():
    atlas = load_atlas("phantom-healthy", mode="2d")
    deformation, subject = _known_subject(atlas, 2, "wave", seed=1)
    assert np.allclose(subject.spacing[1:], 0.7)
    assert not np.allclose(subject.affine[:3, :3] / subject.spacing, atlas.labels.affine[:3, :3] / atlas.labels.spacing)
    # the subject disc's area is the atlas disc's times the mean det J of phi (within 3 %)
    atlas_disc = np.asarray(atlas.labels.array)[0] == 2
    atlas_area = atlas_disc.sum() * np.prod(atlas.labels.spacing[1:])
    subject_area = (np.asarray(subject.array)[0] == 2).sum() * np.prod(subject.spacing[1:])
    positions = voxel_positions(atlas.labels.shape, atlas.labels.affine, 2)[atlas_disc]
    assert subject_area == pytest.approx(atlas_area * deformation.det_jacobian(positions).mean(), rel=0.03)


@pytest.mark.parametrize(
    "atlas_name, label, family, seed",
    [("phantom-healthy", 3, "wave", 11), ("phantom-degenerated", 2, "squeeze", 12)],
    ids=["healthy-L3L4-wave", "degenerated-L4L5-squeeze"],
)
def test_known_deformation_2d_point_error_within_goal(atlas_name, label, family, seed):
    atlas = load_atlas(atlas_name, mode="2d")
    deformation, subject = _known_subject(atlas, label, family, seed)
    reg = register_disc(subject, label, atlas, subject="known")
    errors = point_errors(reg, deformation)
    assert np.median(errors["error_mm"]) <= GOAL_MEDIAN_MM
    assert np.percentile(errors["error_mm"], 95) <= GOAL_P95_MM
    # far better than translating the atlas disc onto the subject disc's centroid
    assert np.median(errors["error_mm"]) < 0.5 * np.median(errors["centroid_error_mm"])
    # det J spans about what phi's does (issue's goal: within 0.1 at either end; here 0.15
    # so that the test pins the order of magnitude, the benchmark reports the exact gaps)
    assert abs(errors["det_jacobian"].min() - errors["det_jacobian_true"].min()) <= 0.15
    assert abs(errors["det_jacobian"].max() - errors["det_jacobian_true"].max()) <= 0.15
    assert reg.qc.dice >= 0.97 and reg.qc.flags == []


def test_affine_known_deformation_keeps_det_jacobian_within_goal():
    # a pure affine map (degenerated L3L4, 25 % more area): the true det J is one number; the
    # B-spline stage, comparing depth maps measured in the same (atlas) millimetres after the
    # affine stage, must not spread it by more than the 0.1 at either end (depth maps
    # in each disc's own millimetres spread it to 1.12-1.28 around the true 1.26)
    atlas = load_atlas("phantom-degenerated", mode="2d")
    deformation, subject = _known_subject(atlas, 3, "affine", seed=37)
    errors = point_errors(register_disc(subject, 3, atlas, subject="known-affine"), deformation)
    true = errors["det_jacobian_true"]
    assert np.ptp(true) < 1e-9
    assert np.abs(errors["det_jacobian"] - true[0]).max() <= 0.1
    assert np.median(errors["error_mm"]) <= GOAL_MEDIAN_MM


def test_known_deformation_3d_point_error_within_goal():
    # a stack: the disc fills the 6-slice slab from side to side, so no mask tells its
    # left-right position (the subject's 7 slices of 3.5 mm span 24.5 mm against the atlas's
    # 24 mm); the median goal applies to the in-plane part of the error, and the whole error
    # stays within a quarter of the 4 mm slice thickness. The 95th percentile is held to
    # 1.25 mm, not the goal's 1.0: stacks do not meet it in every case (BENCHMARKS.md)
    atlas = load_atlas("phantom-healthy", mode="3d")
    deformation, subject = _known_subject(atlas, 3, "wave", seed=21)
    reg = register_disc(subject, 3, atlas, subject="known-3d")
    errors = point_errors(reg, deformation)
    assert np.median(errors["in_plane_error_mm"]) <= GOAL_MEDIAN_MM
    assert np.percentile(errors["in_plane_error_mm"], 95) <= 1.25
    assert np.median(errors["error_mm"]) <= 1.0
    assert reg.qc.dice >= 0.97 and reg.qc.folded_fraction == 0.0


def test_qc_flags_an_implausible_det_jacobian_range():
    # the det J of a known smooth deformation over an atlas disc passes; the same with one
    # part of the disc compressed to a quarter of its volume (a registration bending the
    # interior to fit the outline) is flagged "jacobian-range", and only that
    atlas = load_atlas("phantom-healthy", mode="2d")
    disc = np.asarray(atlas.labels.array)[0] == 2
    deformation = draw_deformation(atlas.labels, 2, family="squeeze", seed=3)
    det = deformation.det_jacobian(voxel_positions(atlas.labels.shape, atlas.labels.affine, 2))

    def qc_of(values):
        s = jacobian_summary(values, disc)
        return DiscQC(0.99, s["mean"], s["sd"], s["min"], s["max"], s["folded_fraction"], 1.0, 500, 500)

    assert flag_disc(qc_of(det)) == []
    bent = det.copy()
    spot = np.argwhere(disc)[len(np.argwhere(disc)) // 2]
    near = np.hypot(*(np.indices(disc.shape) - spot[:, None, None])) < 2
    bent[near & disc] *= 0.25
    assert flag_disc(qc_of(bent)) == ["jacobian-range"]
    assert flag_disc(qc_of(bent), QCThresholds(det_jacobian_range=(0.1, 2.0))) == []


def _circle_mask(radius: float, spacing: float) -> tuple[Image, np.ndarray]:
    """A single-slice disc of ``radius`` mm on a 61 x 61 grid, and each voxel's distance (mm) from its centre."""
    n = 61
    j, k = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    r = np.hypot(j - n // 2, k - n // 2) * spacing
    return Image((r <= radius).astype(np.float32)[None], np.diag([4.0, spacing, spacing, 1.0])), r


def test_distance_image_is_depth_inside_and_fades_outside():
    # a disc of radius 10 mm on a 0.5 mm grid: the value is band + depth inside and band -
    # distance outside, 0 beyond the band (reference: the analytic distance to the circle;
    # tolerance half a voxel)
    spacing, radius, band = 0.5, 10.0, 5.0
    mask, r = _circle_mask(radius, spacing)
    values = distance_image(mask, ndim=2, band_mm=band).array[0]
    expected = np.clip(band + radius - r, 0.0, None)
    assert np.abs(values - expected).max() <= 0.5 * spacing + 1e-6
    assert values.min() == 0.0 and values[r > radius + band + spacing].max() == 0.0


def test_distance_image_levels_off_at_the_depth_limit():
    # same circle: with a 3 mm limit the value is band + min(depth, 3) (tolerance half a voxel),
    # and outside the disc nothing changes
    spacing, radius, band, limit = 0.5, 10.0, 5.0, 3.0
    mask, r = _circle_mask(radius, spacing)
    values = distance_image(mask, ndim=2, band_mm=band, depth_limit_mm=limit).array[0]
    expected = np.clip(band + np.minimum(radius - r, limit), 0.0, None)
    assert np.abs(values - expected).max() <= 0.5 * spacing + 1e-6
    assert values.max() == pytest.approx(band + limit)


def test_depth_limit_entry_is_read_and_checked(tmp_path):
    for ndim in (2, 3):
        assert {depth_limit(pm) for pm in load_parameter_files(ndim)} == {3.0}
    paper = registration_preset("paper")
    assert {depth_limit(pm) for pm in load_parameter_files(2, parameter_dir=paper.parameter_dir)} == {None}
    for name in ("affine-2d.txt", "bspline-2d.txt"):
        pm = read_parameter_file(PARAMETER_DIR / name)
        if name.startswith("bspline"):
            pm[DEPTH_LIMIT_ENTRY] = ("-1",)
        write_parameter_file(tmp_path / name, pm)
    with pytest.raises(DiscVBRError, match=r"bspline-2d.txt: DiscVBRDepthLimit must be a positive number of mm, got '-1'"):
        load_parameter_files(2, parameter_dir=tmp_path)
    pm[DEPTH_LIMIT_ENTRY] = ("5",)
    write_parameter_file(tmp_path / "bspline-2d.txt", pm)
    with pytest.raises(DiscVBRError, match=rf"{tmp_path}.*different {DEPTH_LIMIT_ENTRY}"):
        load_parameter_files(2, parameter_dir=tmp_path)


def test_default_and_paper_presets_register_what_their_files_say(tmp_path):
    default_affine, default_bspline = load_parameter_files(2)
    assert default_affine[INPUT_IMAGE_ENTRY] == default_bspline[INPUT_IMAGE_ENTRY] == ("distance",)
    assert default_bspline["Metric"] == ("AdvancedMeanSquares", "TransformRigidityPenalty")
    paper = registration_preset("paper")
    assert (paper.final_grid_spacing, paper.iterations, paper.rigidity_weight) == (2.0, 200, 0.77)
    for ndim in (2, 3):
        affine, bspline = load_parameter_files(ndim, parameter_dir=paper.parameter_dir)
        assert affine[INPUT_IMAGE_ENTRY] == ("mask",)
        assert bspline["Metric"] == ("AdvancedMattesMutualInformation", "TransformRigidityPenalty")
        assert bspline["FinalGridSpacingInVoxels"] == ("2",) and bspline["Metric1Weight"] == ("0.77",)
    # stages that disagree on their input are refused, naming the folder
    for name in ("affine-2d.txt", "bspline-2d.txt"):
        pm = read_parameter_file(Path(paper.parameter_dir) / name)
        if name.startswith("bspline"):
            pm[INPUT_IMAGE_ENTRY] = ("distance",)
        write_parameter_file(tmp_path / name, pm)
    with pytest.raises(DiscVBRError, match=rf"{tmp_path}.*different {INPUT_IMAGE_ENTRY}"):
        load_parameter_files(2, parameter_dir=tmp_path)
    pm[INPUT_IMAGE_ENTRY] = ("sdf",)
    write_parameter_file(tmp_path / "bspline-2d.txt", pm)
    with pytest.raises(DiscVBRError, match=r"bspline-2d.txt: DiscVBRInputImage is 'sdf'"):
        load_parameter_files(2, parameter_dir=tmp_path)
    with pytest.raises(DiscVBRError, match="preset must be one of default, paper"):
        registration_preset("fast")


def test_registration_does_not_import_the_phantom():
    # layering (issue 15): atlases are built from the phantom in discvbr.phantom.atlas; the
    # registration package only loads and uses them
    package = Path(__file__).resolve().parents[1] / "discvbr" / "registration"
    assert list(package.glob("*.py")), "registration sources not found"
    offenders = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "discvbr.phantom" or n.startswith("discvbr.phantom.")]
    assert offenders == []


def test_known_deformation_refuses_bad_requests():
    atlas = load_atlas("phantom-healthy", mode="2d")
    with pytest.raises(DiscVBRError, match="family must be one of affine, wave, squeeze"):
        draw_deformation(atlas.labels, 2, family="twist", seed=0)
    with pytest.raises(DiscVBRError, match="could fold"):
        draw_deformation(atlas.labels, 2, family="wave", seed=0, amplitude_mm=(4.0, 5.0))
    empty = Image(np.zeros_like(np.asarray(atlas.labels.array)), atlas.labels.affine)
    with pytest.raises(DiscVBRError, match="no disc labelled 2"):
        draw_deformation(empty, 2, family="wave", seed=0)
    # a map that does fold cannot be inverted, and says so
    deformation = draw_deformation(atlas.labels, 2, family="wave", seed=0)
    folded = type(deformation)(**{**deformation.__dict__, "amplitude_mm": 30.0, "wavelength_mm": 10.0})
    with pytest.raises(DiscVBRError, match="could not be inverted"):
        folded.inverse(voxel_positions(atlas.labels.shape, atlas.labels.affine, 2))


def test_aligned_distance_image_measures_depth_in_atlas_millimetres():
    # subject disc: an ellipse (semi-axes 12.5 and 8 mm, turned 20 degrees, shifted) on a
    # 0.7 mm grid, which is the atlas circle of radius 10 mm through x -> linear x + shift.
    # Seen through that map its depth map is the circle's, on the atlas's 0.5 mm grid
    # (reference: the analytic distance to the circle), where its own depth map is up to
    # 8 mm deep, not 10
    spacing, radius, band = 0.5, 10.0, 5.0
    atlas_mask, r = _circle_mask(radius, spacing)
    turn = np.deg2rad(20.0)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    centre = voxel_positions(atlas_mask.shape, atlas_mask.affine, 2)[30, 30]
    linear = rotation @ np.diag([1.25, 0.8])
    shift = centre - linear @ centre + np.array([3.0, -2.0])
    subject_affine = np.diag([4.0, 0.7, 0.7, 1.0])
    subject_affine[1:3, 3] = [-10.0, -10.0]
    points = voxel_positions((1, 66, 66), subject_affine, 2)
    back = (points - shift) @ np.linalg.inv(linear).T
    inside = np.linalg.norm(back - centre, axis=-1) <= radius
    subject = Image(inside.astype(np.float32)[None], subject_affine)
    values = aligned_distance_image(subject, atlas_mask, linear, shift, ndim=2, band_mm=band).array[0]
    expected = np.clip(band + radius - r, 0.0, None)
    error = np.abs(values - expected)
    # a subject voxel seen in atlas mm is up to 0.7 * 1.25 = 0.875 mm wide: within one such
    # voxel of the edge a voxel can take the wrong side; farther, half of one
    assert error.max() <= 0.875 and error[np.abs(r - radius) > 1.0].max() <= 0.44
    assert np.median(error[expected > 0]) <= 0.2
    assert distance_image(subject, ndim=2, band_mm=band).array.max() <= band + 8.0 + 0.35


def test_a_disc_filling_its_crop_is_refused_by_name():
    # a box-shaped disc cropped with no margin has no edge to measure depth from: one clear
    # message naming the subject and the disc, not a k-d tree error
    atlas = load_atlas("phantom-healthy", mode="2d")
    labels = np.zeros(atlas.labels.shape, np.uint8)
    labels[0, 40:70, 100:112] = 2
    with pytest.raises(DiscVBRError, match=r"^subject box, disc L4L5: the disc fills its whole crop.*crop margin above 0 mm"):
        register_disc(Image(labels, atlas.labels.affine), 2, atlas, subject="box", margin_mm=0.0)
