"""Maps on the spine mesh, rendered off screen: non-blank, colour bar, planted hot spots in place.

Where a hot spot must appear is computed here from the returned camera (a pinhole or
parallel projection written out below, independent of VTK's own transforms).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.levels import DISC_LEVELS
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
from discvbr.render import build_scene, colour_scale, render_spine_maps, spine_mesh
from discvbr.render.scene import central_slices, map_plane

REPO = Path(__file__).resolve().parents[1]
SIZE = (480, 560)


def _session(mode: str):
    config = PhantomConfig(n_subjects=1, mode=mode, matrix=128, n_slices=4, seed=11)
    return simulate_session(config, draw_subject(config, 0))


@pytest.fixture(scope="module")
def atlas_2d():
    session = _session("2d")
    return session.labels, Image(session.truth.spine, session.labels.affine)


@pytest.fixture(scope="module")
def atlas_3d():
    session = _session("3d")
    return session.labels, Image(session.truth.spine, session.labels.affine)


def _project(camera, point: np.ndarray) -> tuple[float, float]:
    """Image (col, row) of a RAS point seen by ``camera`` (rows from the top)."""
    forward = camera.focal_point - camera.position
    forward = forward / np.linalg.norm(forward)
    up = camera.view_up - forward * (camera.view_up @ forward)
    up /= np.linalg.norm(up)
    right = np.cross(forward, up)
    col0, row0, col1, row1 = camera.viewport
    half_h = 0.5 * (row1 - row0)
    rel = point - camera.position
    if camera.parallel:
        scale = half_h / camera.parallel_scale
        x, y = (point - camera.focal_point) @ right, (point - camera.focal_point) @ up
    else:
        depth = rel @ forward
        scale = half_h / np.tan(np.radians(camera.view_angle / 2))
        x, y = (rel @ right) / depth, (rel @ up) / depth
    return 0.5 * (col0 + col1) + x * scale, 0.5 * (row0 + row1) - y * scale


def _patch(image: np.ndarray, col: float, row: float, half: int = 1) -> np.ndarray:
    c, r = int(round(col)), int(round(row))
    return image[r - half : r + half + 1, c - half : c + half + 1].reshape(-1, 3).astype(float).mean(axis=0)


def _hot_map(labels: Image, level: str, *, slice_index: int, offset=(0, 0)):
    """r = 0 in every disc, +1 in a 3 x 3 voxel block at the centre of ``level`` in one slice."""
    values = np.where(labels.array > 0, 0.0, np.nan).astype(np.float32)
    label = DISC_LEVELS.index(level) + 1
    js, ks = np.nonzero(labels.array[slice_index] == label)
    j, k = int(round(js.mean())) + offset[0], int(round(ks.mean())) + offset[1]
    values[slice_index, j - 1 : j + 2, k - 1 : k + 2] = 1.0
    centre = (labels.affine @ np.array([slice_index, j, k, 1.0]))[:3]
    return Image(values, labels.affine), centre, (j, k)


def _closer_to(pixel: np.ndarray, target: np.ndarray, other: np.ndarray) -> bool:
    return np.linalg.norm(pixel - target) < np.linalg.norm(pixel - other)


@pytest.mark.parametrize("camera", ["sagittal", "oblique"])
def test_hot_spot_2d_lands_where_projected(atlas_2d, camera):
    discs, spine = atlas_2d
    maps, centre, (j, k) = _hot_map(discs, "L4L5", slice_index=0)
    figure = render_spine_maps(spine, maps, kind="r", size=SIZE, camera=camera)
    image = figure.image
    assert image.shape == (SIZE[1], SIZE[0], 3)
    hot = 255 * figure.scale.rgba(np.array([1.0]))[0, :3]
    cold = 255 * figure.scale.rgba(np.array([0.0]))[0, :3]
    col, row = _project(figure.cameras[0], centre)
    pixel = _patch(image, col, row)
    # seen through the semi-transparent disc the colour is tinted, but it is the hot colour's
    assert _closer_to(pixel, hot, cold), (pixel, hot, cold)
    assert pixel[0] > pixel[1] + 30 and pixel[0] > pixel[2] + 30  # red dominates
    # 6 voxels anteriorly in the same disc, and at the centre of L3L4, r = 0: the cold colour
    for point in (
        (discs.affine @ np.array([0, j + 6, k, 1.0]))[:3],
        _disc_centre(discs, "L3L4", 0),
    ):
        control = _patch(image, *_project(figure.cameras[0], point))
        assert _closer_to(control, cold, hot), (control, cold, hot)


def _disc_centre(labels: Image, level: str, slice_index: int) -> np.ndarray:
    js, ks = np.nonzero(labels.array[slice_index] == DISC_LEVELS.index(level) + 1)
    return (labels.affine @ np.array([slice_index, js.mean(), ks.mean(), 1.0]))[:3]


def test_hot_spot_3d_in_its_central_slice_panel_only(atlas_3d):
    discs, spine = atlas_3d
    slices = central_slices(np.where(discs.array > 0, 0.0, np.nan))
    assert len(slices) == 2 and slices[1] == slices[0] + 1
    maps, centre, _ = _hot_map(discs, "L2L3", slice_index=slices[1])
    figure = render_spine_maps(spine, maps, kind="r", size=(720, 520), camera="sagittal")
    assert len(figure.cameras) == 2
    hot = 255 * figure.scale.rgba(np.array([1.0]))[0, :3]
    cold = 255 * figure.scale.rgba(np.array([0.0]))[0, :3]
    in_panel = _patch(figure.image, *_project(figure.cameras[1], centre))
    other_panel = _patch(figure.image, *_project(figure.cameras[0], centre - [4.0, 0, 0]))
    assert _closer_to(in_panel, hot, cold), in_panel
    assert _closer_to(other_panel, cold, hot), other_panel
    # both panels sit side by side, left of the colour bar
    assert figure.cameras[0].viewport[2] <= figure.cameras[1].viewport[0] + 1
    assert figure.cameras[1].viewport[2] <= figure.colour_bar_box[0] + 1


def test_render_not_blank_and_has_colour_bar(atlas_2d, tmp_path):
    discs, spine = atlas_2d
    values = np.where(discs.array > 0, np.linspace(-0.9, 0.9, discs.array.size).reshape(discs.shape), np.nan)
    out = tmp_path / "r.png"
    figure = render_spine_maps(spine, Image(values.astype(np.float32), discs.affine), kind="r", size=SIZE, out=out)
    image = figure.image.astype(int)
    background = np.all(image >= 250, axis=-1)
    assert background.mean() < 0.9 and image.std() > 20
    col0, row0, col1, row1 = figure.colour_bar_box
    strip = image[row0:row1, col0:col1]
    lut = np.round(255 * figure.scale.table[:, :3]).astype(int)
    rows = {}
    for name, colour in (("low", lut[0]), ("high", lut[-1])):
        match = np.all(np.abs(strip - colour) <= 3, axis=-1)
        assert match.sum() > 100, f"colour-bar {name} end colour {colour} not drawn"
        rows[name] = np.nonzero(match)[0].mean()
    assert rows["high"] < rows["low"]  # the maximum at the top
    # the title and labels are dark text in the strip
    assert np.all(strip < 80, axis=-1).sum() > 50
    # the PNG on disk is the same picture
    from matplotlib.image import imread

    on_disk = np.round(imread(out)[..., :3] * 255).astype(int)
    np.testing.assert_array_equal(on_disk, image)


def test_p_map_log_scale_marks_alpha(atlas_2d):
    discs, spine = atlas_2d
    p = np.where(discs.array > 0, 0.2, np.nan).astype(np.float32)
    maps, centre, _ = _hot_map(discs, "L4L5", slice_index=0)
    p[maps.array == 1.0] = 1e-4
    figure = render_spine_maps(spine, Image(p, discs.affine), kind="p", alpha=0.05, size=SIZE, camera="sagittal")
    scale = figure.scale
    assert scale.log and scale.alpha == 0.05
    significant = _patch(figure.image, *_project(figure.cameras[0], centre))
    assert _closer_to(significant, 255 * scale.rgba(np.array([1e-4]))[0, :3], 255 * scale.rgba(np.array([0.2]))[0, :3])
    # the bar changes from grey to colour at alpha: find that row in the strip and check it sits
    # at log10(alpha)'s place between the bar's ends
    col0, row0, col1, row1 = figure.colour_bar_box
    strip = figure.image[row0:row1, col0:col1].astype(int)
    grey = np.all(np.abs(strip - np.round(255 * np.array(scale.table[-1, :3]))) <= 3, axis=-1)
    coloured = np.all(np.abs(strip - np.round(255 * np.array(scale.table[0, :3]))) <= 3, axis=-1)
    # the bar's middle column: the one with the most grey pixels (text anti-aliasing has a few)
    column = int(np.argmax(grey.sum(axis=0)))
    grey_rows, coloured_rows = np.nonzero(grey[:, column])[0], np.nonzero(coloured[:, column])[0]
    assert grey_rows.size > 20 and coloured_rows.size > 0
    top, bottom, boundary = grey_rows.min(), coloured_rows.max(), grey_rows.max()
    expected = top + (bottom - top) * (np.log10(1.0) - np.log10(0.05)) / (np.log10(1.0) - np.log10(scale.vmin))
    assert abs(boundary - expected) < 4


def test_scene_elements_for_slicer(atlas_3d):
    discs, spine = atlas_3d
    values = np.where(discs.array > 0, 80.0, np.nan).astype(np.float32)
    mesh = spine_mesh(spine)
    scene = build_scene(spine, {"L4L5": Image(np.where(discs.array == 2, values, np.nan), discs.affine)}, kind="T", mesh=mesh)
    roles = {}
    for element in scene.elements:
        roles.setdefault(element.role, []).append(element)
    assert {e.name for e in roles["vertebra"]} == {"sacrum", "L5", "L4", "L3", "L2", "L1"}
    assert {e.name for e in roles["disc"]} == set(DISC_LEVELS)
    maps = roles["map"]
    assert [e.slice_index for e in maps] == central_slices(np.where(discs.array == 2, 1.0, np.nan))
    for element in maps:
        cells = element.polydata.GetNumberOfCells()
        assert cells == int(np.sum(discs.array[element.slice_index] == 2))
        array = element.polydata.GetCellData().GetArray(element.scalars)
        assert array is not None and array.GetRange() == (80.0, 80.0)
    assert scene.scale.title == "T1rho (ms)"
    lut = scene.scale.lookup_table()
    assert lut.GetRange() == pytest.approx((scene.scale.vmin, scene.scale.vmax))


def test_map_plane_geometry():
    affine = np.array([[4.0, 0, 0, 10], [0, 0.5, 0, -20], [0, 0, 2.0, 5], [0, 0, 0, 1]])
    values = np.full((3, 4, 5), np.nan, np.float32)
    values[1, 2, 3] = 7.0
    poly = map_plane(Image(values, affine), 1, name="T")
    from vtkmodules.util.numpy_support import vtk_to_numpy

    points = vtk_to_numpy(poly.GetPoints().GetData())
    # the voxel (1, 2, 3) spans y -20 + 0.5 * (1.5 .. 2.5), z 5 + 2 * (2.5 .. 3.5) at x = 14
    np.testing.assert_allclose(points[:, 0], 14.0)
    np.testing.assert_allclose(sorted(set(points[:, 1])), [-19.25, -18.75])
    np.testing.assert_allclose(sorted(set(points[:, 2])), [10.0, 12.0])
    assert poly.GetCellData().GetArray("T").GetValue(0) == 7.0


def test_numpy_colours_match_vtk_lookup_table():
    rng = np.random.default_rng(0)
    for kind, values in (("r", rng.uniform(-1.2, 1.2, 200)), ("p", 10 ** rng.uniform(-5, 0, 200)), ("T", rng.uniform(40, 160, 200))):
        scale = colour_scale(kind, values=values)
        lut = scale.lookup_table()
        vtk_rgb = np.empty((values.size, 3))
        for i, v in enumerate(values):
            rgb = [0.0, 0.0, 0.0]
            lut.GetColor(float(v), rgb)
            vtk_rgb[i] = rgb
        # VTK keeps 8-bit entries: compare with the table rounded the same way (tolerance 1e-6);
        # values within rounding of a bin edge may fall in the neighbouring entry
        ours = np.round(scale.rgba(values)[:, :3] * 255) / 255
        same = np.all(np.abs(vtk_rgb - ours) < 1e-6, axis=1)
        assert same.mean() > 0.97, kind


def test_diverging_scale_centred_on_zero():
    from matplotlib import colormaps

    white = np.asarray(colormaps["RdBu_r"](0.5))[:3]
    for vmin, vmax in ((-1, 1), (-0.3, 1.0), (0.5, 1.0)):
        scale = colour_scale("r", vmin=vmin, vmax=vmax)
        if vmin < 0:
            np.testing.assert_allclose(scale.rgba(np.array([0.0]))[0, :3], white, atol=0.02)
    # 0.5..1 (the paper's T1rho-T2 maps) is all reds
    reds = colour_scale("r", vmin=0.5, vmax=1.0).table
    assert np.all(reds[:, 0] >= reds[:, 2])


def test_bad_inputs_raise_discvbr_error(atlas_2d):
    discs, spine = atlas_2d
    with pytest.raises(DiscVBRError, match="unknown disc level"):
        build_scene(spine, {"L6S1": discs})
    with pytest.raises(DiscVBRError, match="no finite value"):
        build_scene(spine, Image(np.full(discs.shape, np.nan, np.float32), discs.affine))
    with pytest.raises(DiscVBRError, match="not on the atlas grid"):
        build_scene(spine, Image(np.zeros((2, 3, 4), np.float32), np.eye(4)))
    with pytest.raises(DiscVBRError, match="unknown map kind"):
        colour_scale("z")
    with pytest.raises(DiscVBRError, match="camera"):
        values = np.where(discs.array > 0, 1.0, np.nan).astype(np.float32)
        render_spine_maps(spine, Image(values, discs.affine), kind="T", camera="top", size=(100, 100))


def test_no_opengl_context_is_a_clear_error(tmp_path):
    """Without a usable EGL vendor (and no display) rendering raises DiscVBRError, not a crash."""
    script = textwrap.dedent(
        """
        import numpy as np
        from discvbr.errors import DiscVBRError
        from discvbr.io import Image
        from discvbr.render import render_spine_maps
        labels = np.zeros((1, 40, 60), np.uint8)
        for i in range(5):
            labels[0, 10:30, 5 + 11 * i : 10 + 11 * i] = i + 1
        values = np.where(labels > 0, 1.0, np.nan).astype(np.float32)
        try:
            render_spine_maps(Image(labels, np.eye(4)), Image(values, np.eye(4)), kind="T", size=(100, 100))
        except DiscVBRError as exc:
            print("DiscVBRError:", exc)
        else:
            print("rendered")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "VTK_DEFAULT_OPENGL_WINDOW")}
    env["__EGL_VENDOR_LIBRARY_DIRS"] = str(tmp_path)  # glvnd finds no EGL implementation there
    env["PYTHONPATH"] = str(REPO)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "DiscVBRError: VTK could not create an off-screen OpenGL" in run.stdout
    assert "libegl" in run.stdout.lower()
