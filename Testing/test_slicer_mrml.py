"""The MRML glue (discvbr.mrml) against the real Slicer core libraries (slicer-core), headless."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discvbr import DiscVBRError
from discvbr.mrml.colours import colour_table_from_scale, disc_colour_table
from discvbr.mrml.legends import add_colour_legend
from discvbr.mrml.models import model_from_polydata
from discvbr.mrml.plots import plot_curves
from discvbr.mrml.scene import NodeTransaction, load_scene, new_scene, save_scene
from discvbr.mrml.segmentations import _binary_name, _oriented, labels_from_segmentation, segment_level, segmentation_from_labels
from discvbr.mrml.series import sequence_from_series, series_from_node, series_from_volumes
from discvbr.mrml.tables import dataframe_from_table, table_from_dataframe
from discvbr.mrml.transforms import det_jacobian_from_points, points_from_transform, transform_from_points
from discvbr.mrml.volumes import image_from_volume, volume_from_image
from discvbr.io import Image
from discvbr.levels import DISC_COLOURS, DISC_LEVELS
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
from discvbr.render.colours import colour_scale

# an oblique, anisotropic grid: any mix-up of axes, transposition or LPS/RAS shows
OBLIQUE = np.array([
    [0.0, 0.9 * np.cos(0.2), -0.9 * np.sin(0.2), -20.0],
    [0.0, 0.9 * np.sin(0.2), 0.9 * np.cos(0.2), 35.0],
    [-4.0, 0.0, 0.0, 12.5],
    [0.0, 0.0, 0.0, 1.0],
])


@pytest.fixture(scope="module")
def session():
    config = PhantomConfig(n_subjects=1, matrix=128, seed=11)
    return simulate_session(config, draw_subject(config, 0))


@pytest.fixture()
def scene():
    return new_scene()


def _node_ids(scene) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def test_volume_geometry_round_trip(scene):
    rng = np.random.default_rng(0)
    image = Image(rng.normal(size=(3, 5, 7)).astype(np.float32), OBLIQUE)
    node = volume_from_image(scene, image, name="oblique")
    back = image_from_volume(node)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, OBLIQUE, atol=1e-9)
    # Slicer's own view of the voxel (i, j, k) = (2, 4, 6): IJKToRAS gives the affine's position
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras = matrix.MultiplyPoint([2.0, 4.0, 6.0, 1.0])
    np.testing.assert_allclose(ras[:3], (OBLIQUE @ [2, 4, 6, 1])[:3], atol=1e-9)
    # slicer.util's array (k, j, i) agrees with the image (i, j, k)
    import slicer.util

    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), image.array.transpose(2, 1, 0))


def test_volume_under_linear_transform_is_read_in_world_coordinates(scene):
    image = Image(np.zeros((2, 3, 4), np.float32), np.diag([1.0, 2.0, 3.0, 1.0]))
    node = volume_from_image(scene, image, name="moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = [5.0, -2.0, 1.0]
    import slicer.util

    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(image_from_volume(node).affine, shift @ image.affine, atol=1e-9)


def test_multicomponent_volume_round_trip(scene, session):
    node = volume_from_image(scene, Image(session.t1rho.data, session.t1rho.affine), name="series")
    assert node.IsA("vtkMRMLVectorVolumeNode")
    node.SetAttribute("MultiVolume.FrameLabels", ",".join(f"{t:g}" for t in session.t1rho.times))
    series = series_from_node(node, kind="t1rho")
    np.testing.assert_array_equal(series.data, session.t1rho.data)
    np.testing.assert_array_equal(series.times, session.t1rho.times)


def test_series_from_echo_volumes_and_sequence(scene, session):
    echoes = [volume_from_image(scene, session.t2.echo(e), name=f"echo {e}") for e in range(session.t2.n_echoes)]
    from_volumes = series_from_volumes(echoes, "0;12.9;25.7;51.4", kind="t2")
    np.testing.assert_array_equal(from_volumes.data, session.t2.data)
    np.testing.assert_allclose(from_volumes.affine, session.t2.affine)
    sequence, browser = sequence_from_series(scene, session.t2, name="t2")
    assert sequence.GetNumberOfDataNodes() == 4 and sequence.GetIndexUnit() == "ms"
    assert browser.GetProxyNode(sequence) is not None  # the echoes can be browsed in the views
    from_sequence = series_from_node(sequence, kind="t2")  # times from the index values
    np.testing.assert_array_equal(from_sequence.data, session.t2.data)
    np.testing.assert_allclose(from_sequence.times, session.t2.times)


def test_series_bad_input_names_the_problem(scene, session):
    echoes = [volume_from_image(scene, session.t1rho.echo(e), name=f"tsl {e}") for e in range(4)]
    with pytest.raises(DiscVBRError, match="4 echo volume\\(s\\) but 3 times"):
        series_from_volumes(echoes, "0;10;40", kind="t1rho")
    shifted = session.t1rho.affine.copy()
    shifted[:3, 3] += 1.5
    other = volume_from_image(scene, Image(session.t1rho.data[..., 3], shifted), name="tsl moved")
    with pytest.raises(DiscVBRError, match="different grids.*'tsl 0'.*'tsl moved'"):
        series_from_volumes([*echoes[:3], other], "0;10;40;80", kind="t1rho")
    with pytest.raises(DiscVBRError, match="at least two"):
        series_from_volumes(echoes[:1], "0", kind="t1rho")
    sequence, _ = sequence_from_series(scene, session.t1rho, name="t1rho", browse=False)
    with pytest.raises(DiscVBRError, match="4 echo volume\\(s\\) but 2 times"):
        series_from_node(sequence, times="0;10", kind="t1rho")


def test_segmentation_names_colours_and_round_trip(scene, session):
    node = segmentation_from_labels(scene, session.labels, name="discs")
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert ids == list(DISC_LEVELS)
    for label, level in enumerate(DISC_LEVELS, start=1):
        segment = segmentation.GetSegment(level)
        assert segment.GetName() == level and segment.GetLabelValue() == label
        np.testing.assert_allclose(segment.GetColor(), DISC_COLOURS[level], atol=1e-6)
    back = labels_from_segmentation(node, reference=session.labels)
    np.testing.assert_array_equal(back.array, session.labels.array)
    # on a reoriented grid (axes flipped): the same physical labelling
    flipped = Image(np.empty(session.labels.shape, np.uint8), session.labels.affine @ np.array([[1, 0, 0, 0], [0, -1, 0, 127], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    np.testing.assert_array_equal(labels_from_segmentation(node, reference=flipped).array, session.labels.array[:, ::-1, :])


def test_segmentation_with_missing_level_or_bad_names(scene, session):
    labels = np.asarray(session.labels.array).copy()
    labels[labels == 4] = 0  # no L2L3
    node = segmentation_from_labels(scene, Image(labels, session.labels.affine), name="partial")
    assert node.GetSegmentation().GetSegment("L2L3") is not None  # kept as an empty segment to paint
    with pytest.raises(DiscVBRError, match="partial.*no voxel for disc\\(s\\) L2L3"):
        labels_from_segmentation(node, reference=session.labels, what="'partial'")
    node.GetSegmentation().GetSegment("L1L2").SetName("Segment_1")
    with pytest.raises(DiscVBRError, match="segment 'Segment_1' is not a disc level"):
        labels_from_segmentation(node, reference=session.labels)
    assert segment_level("L4-L5") == "L4L5" and segment_level("l5/s1 disc") == "L5S1"
    assert segment_level("vertebra L4") is None


def test_overlapping_segments_are_refused(scene, session):
    node = segmentation_from_labels(scene, session.labels, name="discs")
    import slicer

    labels = np.asarray(session.labels.array)
    grown = slicer.vtkOrientedImageData()
    # L4L5 painted over L3L4 (a segment's labelmap holds its label value, 2)
    grown.DeepCopy(_oriented(np.where((labels == 2) | (labels == 3), 2, 0), session.labels.affine))
    node.GetSegmentation().GetSegment("L4L5").AddRepresentation(_binary_name(), grown)
    with pytest.raises(DiscVBRError, match="L4L5 and L3L4 overlap|L3L4 and L4L5 overlap"):
        labels_from_segmentation(node, reference=session.labels)


@pytest.mark.parametrize("kind, values", [("T", np.linspace(40, 160, 50)), ("r", np.linspace(-0.9, 0.8, 50)), ("p", 10 ** np.linspace(-5, 0, 50))])
def test_colour_tables_give_the_scale_colours(scene, kind, values):
    scale = colour_scale(kind, values=values)
    node, (lo, hi) = colour_table_from_scale(scene, scale, name=kind)
    table = node.GetLookupTable()
    n = node.GetNumberOfColors()
    probe = np.clip(values, lo, hi)
    # a display node maps [lo, hi] linearly onto the entries, as here
    entries = np.clip(np.floor((probe - lo) / (hi - lo) * n), 0, n - 1).astype(int)
    got = np.array([table.GetTableValue(int(i)) for i in entries])
    expected = scale.rgba(values)
    if kind == "p":
        # a log scale sampled on a linear axis: each entry has the log scale's colour at its bin's centre,
        # and bins are no wider than the scale's smallest value (or 1/65536 of the range, the most entries)
        width = (hi - lo) / n
        assert width <= max(scale.vmin, (hi - lo) / 65536)
        centres = lo + (entries + 0.5) * width
        assert np.all(np.abs(centres - probe) <= 0.5 * width + 1e-12)
        np.testing.assert_allclose(got, scale.rgba(centres), atol=0.5 / 255 + 1e-9)  # VTK stores table colours in 8 bits
        significant = values < scale.alpha * 0.9
        assert np.all(np.abs(got[significant, 0] - got[significant, 2]) > 0.2)  # coloured, not grey
        grey = values > scale.alpha * 1.1
        np.testing.assert_allclose(got[grey, :3], np.tile(got[grey][0, :3], (grey.sum(), 1)))
    else:
        np.testing.assert_allclose(got, expected, atol=0.5 / 255 + 1e-9)  # VTK stores table colours in 8 bits


def test_disc_colour_table_once_per_scene(scene):
    first = disc_colour_table(scene)
    assert disc_colour_table(scene) is first
    for label, level in enumerate(DISC_LEVELS, start=1):
        assert first.GetColorName(label) == level
        rgba = [0.0] * 4
        first.GetColor(label, rgba)
        np.testing.assert_allclose(rgba[:3], DISC_COLOURS[level], atol=0.5 / 255 + 1e-9)  # 8-bit colours


def test_model_scalars_and_legend(scene):
    from discvbr.render.scene import map_plane

    values = np.full((1, 4, 5), np.nan, np.float32)
    values[0, 1:3, 1:4] = np.arange(6).reshape(2, 3) / 10 - 0.2
    poly = map_plane(Image(values, np.eye(4)), 0, name="r")
    scale = colour_scale("r")
    colours, value_range = colour_table_from_scale(scene, scale, name="r colours")
    model = model_from_polydata(scene, poly, name="map", scalars="r", colour_node=colours, value_range=value_range)
    legend = add_colour_legend(scene, model, title=scale.title)
    import slicer.util

    np.testing.assert_allclose(np.sort(slicer.util.arrayFromModelCellData(model, "r")), np.sort(values[np.isfinite(values)]))
    display = model.GetDisplayNode()
    assert display.GetActiveScalarName() == "r" and display.GetScalarVisibility()
    assert display.GetColorNodeID() == colours.GetID()
    assert tuple(display.GetScalarRange()) == (-1.0, 1.0)
    assert legend.GetPrimaryDisplayNode() is display and legend.GetTitleText() == "r"
    with pytest.raises(DiscVBRError, match="no cell array 'p'"):
        model_from_polydata(scene, poly, name="bad", scalars="p", colour_node=colours, value_range=value_range)


def _affine_points(grid: Image, ndim: int, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Registration-frame points (DiscVBR's elastix frame) of an affine map of the grid's voxel centres."""
    from discvbr.registration.engine import voxel_positions

    return voxel_positions(grid.shape, grid.affine, ndim) @ matrix.T + offset


@pytest.mark.parametrize("ndim", [3, 2])
def test_transform_round_trip_and_jacobian(scene, ndim):
    shape = (6, 7, 8) if ndim == 3 else (1, 9, 11)
    affine = np.diag([1.5, 1.0, 1.25, 1.0]) if ndim == 3 else np.diag([8.0, 0.9, 0.9, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    grid = Image(np.ones(shape, bool), affine)
    matrix = np.array([[1.1, 0.05, 0.0], [0.0, 0.9, 0.02], [0.03, 0.0, 1.05]])[:ndim, :ndim]
    offset = np.array([2.0, -3.0, 1.0])[:ndim]
    moving = affine.copy()
    moving[0, 3] += 3.0  # in 2D the subject's slice lies elsewhere left-right than the atlas's
    points = _affine_points(grid, ndim, matrix, offset)
    node = transform_from_points(scene, points, grid, ndim=ndim, moving_affine=moving, name="disc")
    back = points_from_transform(node, grid, ndim=ndim)
    np.testing.assert_allclose(back, points, atol=1e-6)  # linear interpolation of an affine field is exact
    det = det_jacobian_from_points(points, grid, ndim=ndim)
    np.testing.assert_allclose(det, np.linalg.det(matrix), rtol=1e-6)


def test_tables_round_trip(scene):
    frame = pd.DataFrame({"disc": ["L5S1", "L4L5"], "dice": [0.91, np.nan], "flags": ["", "low dice"]})
    node = table_from_dataframe(scene, frame, name="qc")
    back = dataframe_from_table(node)
    assert list(back.columns) == ["disc", "dice", "flags"]
    assert back["disc"].tolist() == ["L5S1", "L4L5"]
    np.testing.assert_array_equal(back["dice"].to_numpy(), [0.91, np.nan])


def test_plot_chart_is_refilled_not_duplicated(scene):
    curves = {"a": (np.arange(4.0), np.arange(4.0) ** 2, "markers", (0, 0, 0)), "b": (np.arange(4.0), np.ones(4), "line", (1, 0, 0))}
    chart = plot_curves(scene, curves, name="c", title="t", x_title="x", y_title="y")
    count = scene.GetNumberOfNodes()
    chart = plot_curves(scene, curves, name="c", title="t2", x_title="x", y_title="y", chart=chart)
    assert scene.GetNumberOfNodes() == count and chart.GetNumberOfPlotSeriesNodes() == 2
    table = chart.GetNthPlotSeriesNode(0).GetTableNode()
    np.testing.assert_array_equal(dataframe_from_table(table)["y"], np.arange(4.0) ** 2)


def test_transaction_removes_partial_nodes(scene, session):
    before = _node_ids(scene)
    with pytest.raises(DiscVBRError, match="label value 9"):
        with NodeTransaction(scene):
            volume_from_image(scene, session.t1rho.echo(0), name="made first")
            bad = np.asarray(session.labels.array).copy()
            bad[0, 0, 0] = 9
            segmentation_from_labels(scene, Image(bad, session.labels.affine), name="bad labels")
    assert _node_ids(scene) == before


def test_scene_bundle_round_trip(scene, session, tmp_path):
    volume = volume_from_image(scene, session.t1rho.echo(0), name="echo")
    segmentation_from_labels(scene, session.labels, name="discs", reference_volume=volume)
    sequence_from_series(scene, session.t2, name="t2")
    path = save_scene(scene, tmp_path / "scene.mrb")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written left
    loaded = load_scene(path)
    echo = image_from_volume(loaded.GetFirstNodeByName("echo"))
    np.testing.assert_allclose(echo.array, session.t1rho.data[..., 0])
    np.testing.assert_allclose(echo.affine, session.t1rho.affine, atol=1e-5)
    discs = loaded.GetFirstNodeByName("discs")
    np.testing.assert_array_equal(labels_from_segmentation(discs, reference=session.labels).array, session.labels.array)
    t2 = series_from_node(loaded.GetFirstNodeByName("t2"), kind="t2")
    np.testing.assert_allclose(t2.data, session.t2.data)
    with pytest.raises(DiscVBRError, match="must end in .mrb"):
        save_scene(scene, tmp_path / "scene.mrml")
