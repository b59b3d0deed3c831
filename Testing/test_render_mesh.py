"""Spine meshes: vertebrae from spine labels or derived from discs, extrusion of 2D atlases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from discvbr.errors import DiscVBRError
from discvbr.io import Image, read_image
from discvbr.levels import DISC_LEVELS, VERTEBRA_LABELS
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
from discvbr.render.mesh import DEFAULT_WIDTH_RATIO, mask_surface, part_label, spine_mesh, spine_parts

REAL = Path(__file__).resolve().parents[1] / "data" / "lumbar-t2-real"


@pytest.fixture(scope="module")
def session_2d():
    config = PhantomConfig(n_subjects=1, matrix=128, seed=5)
    return simulate_session(config, draw_subject(config, 0))


@pytest.fixture(scope="module")
def real_discs() -> Image:
    return read_image(REAL / "sub-11" / "discs.nii.gz")


def _volume_and_area(poly) -> tuple[float, float]:
    from vtkmodules.vtkFiltersCore import vtkMassProperties, vtkTriangleFilter

    tri = vtkTriangleFilter()
    tri.SetInputData(poly)
    props = vtkMassProperties()
    props.SetInputConnection(tri.GetOutputPort())
    props.Update()
    return props.GetVolume(), props.GetSurfaceArea()


def _centroid_z(volume: np.ndarray, label: int) -> float:
    return float(np.argwhere(volume == label)[:, 2].mean())


def test_bodies_derived_from_discs_sit_between_them(real_discs):
    parts = spine_parts(real_discs)
    assert parts.derived_vertebrae and not parts.extruded  # real 3D discs cover ~40 mm left-right
    volume = np.asarray(parts.volume.array)
    labels = np.asarray(real_discs.array)
    # discs are unchanged and no body voxel overlaps a disc
    np.testing.assert_array_equal(volume[labels > 0], labels[labels > 0])
    for lower in range(1, 5):
        body = VERTEBRA_LABELS[f"L{6 - lower}"]
        z_body = _centroid_z(volume, body)
        assert _centroid_z(labels, lower) < z_body < _centroid_z(labels, lower + 1)
        # the body fills the gap: in the disc columns, from the lower disc's top to the upper's bottom
        heights = (volume == body).sum(axis=2)[(volume == body).any(axis=2)] * real_discs.spacing[2]
        assert 15.0 < np.median(heights) < 45.0  # adult lumbar bodies are about 25-30 mm tall
    assert _centroid_z(volume, VERTEBRA_LABELS["L1"]) > _centroid_z(labels, 5)
    sacrum = np.argwhere(volume == VERTEBRA_LABELS["sacrum"])
    assert sacrum[:, 2].max() < np.argwhere(labels == 1)[:, 2].max()
    assert np.ptp(sacrum[:, 2]) * real_discs.spacing[2] <= 30.0 + np.ptp(np.argwhere(labels == 1)[:, 2])


def test_disc_surfaces_match_label_volumes(real_discs):
    mesh = spine_mesh(real_discs)
    assert list(mesh) == ["sacrum", "L5", "L4", "L3", "L2", "L1", *DISC_LEVELS]
    voxel = float(np.prod(real_discs.spacing))
    labels = np.asarray(real_discs.array)
    for level in DISC_LEVELS:
        volume, _ = _volume_and_area(mesh[level])
        expected = np.sum(labels == part_label(level)) * voxel
        # smoothing and decimation shrink a little; 12% of a ~10 cm3 disc
        assert volume == pytest.approx(expected, rel=0.12), level
        # same place: bounds within 2 mm of the voxels' outer edges (RAS = index + origin here)
        idx = np.argwhere(labels == part_label(level))
        lo = real_discs.affine[:3, :3] @ (idx.min(axis=0) - 0.5) + real_discs.affine[:3, 3]
        hi = real_discs.affine[:3, :3] @ (idx.max(axis=0) + 0.5) + real_discs.affine[:3, 3]
        bounds = np.asarray(mesh[level].GetBounds())
        np.testing.assert_allclose(bounds[0::2], lo, atol=2.0)
        np.testing.assert_allclose(bounds[1::2], hi, atol=2.0)


def test_single_slice_is_extruded_to_a_plausible_solid(session_2d):
    discs = session_2d.labels
    parts = spine_parts(discs)
    assert parts.extruded and parts.derived_vertebrae
    volume = np.asarray(parts.volume.array)
    x_centre = (discs.affine @ np.array([0, 0, 0, 1.0]))[0]
    for level in DISC_LEVELS:
        mask = volume == part_label(level)
        xs = np.flatnonzero(mask.any(axis=(1, 2)))
        ys = np.flatnonzero(mask.any(axis=(0, 2)))
        width = (xs.max() - xs.min() + 1) * parts.volume.spacing[0]
        depth = (ys.max() - ys.min() + 1) * parts.volume.spacing[1]
        assert width / depth == pytest.approx(DEFAULT_WIDTH_RATIO, rel=0.1), level
        # centred on the acquired slice, and its mid-sagittal section is the 2D label
        x_mid = (parts.volume.affine @ np.array([0.5 * (xs.min() + xs.max()), 0, 0, 1.0]))[0]
        assert abs(x_mid - x_centre) < parts.volume.spacing[0]
        mid = volume[volume.shape[0] // 2] == part_label(level)
        np.testing.assert_array_equal(mid, discs.array[0] == part_label(level))
    mesh = spine_mesh(parts)
    for name, poly in mesh.items():
        volume_mm3, _ = _volume_and_area(poly)
        assert volume_mm3 > 1000.0, name


def test_spine_labels_keep_bodies_and_top_of_sacrum(session_2d):
    spine = Image(session_2d.truth.spine, session_2d.labels.affine)
    parts = spine_parts(spine, sacrum_height_mm=25.0, extrude=False)
    assert not parts.derived_vertebrae
    volume = np.asarray(parts.volume.array)
    assert set(np.unique(volume)) == {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}  # T12 and T12L1 dropped
    spine_array = np.asarray(spine.array)
    disc_ys = np.flatnonzero(((spine_array >= 1) & (spine_array <= 5)).any(axis=(0, 2)))
    margin = int(np.ceil(3.0 / spine.spacing[1]))
    body_ys = np.flatnonzero((volume >= 10).any(axis=(0, 2)))
    assert body_ys.min() >= disc_ys.min() - margin  # posterior elements cut off
    assert np.flatnonzero((spine_array == 11).any(axis=(0, 2))).min() < body_ys.min()
    z_l5s1 = np.flatnonzero((spine_array == 1).any(axis=(0, 1))).min()
    z_sacrum = np.flatnonzero((volume == 10).any(axis=(0, 1))).min()
    assert (z_l5s1 - z_sacrum) * spine.spacing[2] == pytest.approx(25.0, abs=spine.spacing[2] + 1e-6)


def test_mesh_follows_the_affine_and_points_outward():
    mask = np.zeros((20, 24, 28), bool)
    mask[5:15, 6:18, 8:20] = True  # a 10 x 12 x 12 voxel box
    for affine in (np.diag([2.0, 1.0, 1.5, 1.0]), np.diag([-2.0, 1.0, 1.5, 1.0])):
        affine = affine.copy()
        affine[:3, 3] = [30.0, -40.0, 5.0]
        poly = mask_surface(mask, affine, resolution_mm=0.5, decimation=0.0, smoothing_iterations=0)
        centre = (affine @ np.array([9.5, 11.5, 13.5, 1.0]))[:3]
        np.testing.assert_allclose(np.mean(np.asarray(poly.GetBounds()).reshape(3, 2), axis=1), centre, atol=0.3)
        volume, _ = _volume_and_area(poly)
        assert volume == pytest.approx(20 * 12 * 18, rel=0.05)
        from vtkmodules.util.numpy_support import vtk_to_numpy

        points = vtk_to_numpy(poly.GetPoints().GetData())
        normals = vtk_to_numpy(poly.GetPointData().GetNormals())
        assert np.mean(np.sum((points - centre) * normals, axis=1) > 0) > 0.95


def test_bad_label_maps():
    labels = np.zeros((1, 10, 10), np.uint8)
    with pytest.raises(DiscVBRError, match="no lumbar disc"):
        spine_parts(Image(labels, np.eye(4)))
    labels[0, 2:4, 2:4] = 7
    with pytest.raises(DiscVBRError, match=r"unknown label value\(s\) \[7\]"):
        spine_parts(Image(labels, np.eye(4)))
    with pytest.raises(DiscVBRError, match="3D"):
        spine_parts(Image(np.ones((4, 4), np.uint8), np.eye(4)))
