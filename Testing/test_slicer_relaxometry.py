"""DiscRelaxometry's logic on a headless MRML scene (slicer-core): inputs, registration, fits, QC, decay curves."""

from __future__ import annotations

import numpy as np
import pytest

from discvbr import DiscVBRError
from discvbr.mrml.scene import ROLE_ATTRIBUTE, new_scene
from discvbr.mrml.segmentations import segmentation_from_labels
from discvbr.mrml.series import sequence_from_series
from discvbr.mrml.tables import dataframe_from_table
from discvbr.mrml.transforms import points_from_transform
from discvbr.mrml.volumes import image_from_volume, volume_from_image
from discvbr.extension import relaxometry as R
from discvbr.extension.relaxometry import DiscRelaxometryLogic, checkerboard
from discvbr.io import Image
from discvbr.levels import DISC_LEVELS
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session

ITERATIONS = "20"  # few B-spline iterations: these tests check the plumbing, the registration tests its quality


@pytest.fixture(scope="module")
def session():
    config = PhantomConfig(n_subjects=1, matrix=128, seed=31)
    return simulate_session(config, draw_subject(config, 0))


def _inputs(session, *, labels=None, t1rho_times=None):
    """A scene with the T1rho echoes as volumes, the T2 series as a sequence and the disc segmentation."""
    scene = new_scene()
    logic = DiscRelaxometryLogic(scene)
    echoes = [volume_from_image(scene, session.t1rho.echo(e), name=f"sub-31 T1rho {t:g} ms") for e, t in enumerate(session.t1rho.times)]
    t2, _ = sequence_from_series(scene, session.t2, name="sub-31 T2")
    segmentation = segmentation_from_labels(scene, labels if labels is not None else session.labels, name="sub-31 discs")
    node = logic.parameter_node()  # the latest DiscVBR segmentation is preselected
    logic.set_echo_volumes(node, "t1rho", echoes, t1rho_times or ";".join(f"{t:g}" for t in session.t1rho.times))
    logic.set_series_node(node, "t2", t2)
    node.SetParameter(R.ITERATIONS, ITERATIONS)
    return scene, logic, node, echoes, segmentation


def _ids(scene):
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


@pytest.fixture(scope="module")
def run(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    assert node.GetNodeReference(R.SEGMENTATION) is segmentation
    assert logic.disabled_reason(node) is None
    steps = []
    output = logic.run(node, progress=lambda fraction, text: steps.append((fraction, text)))
    return scene, logic, node, output, echoes, steps


def test_native_maps_are_the_fit_of_the_series(session, run):
    from discvbr.fitting import fit_monoexp

    scene, logic, node, output, echoes, steps = run
    expected = fit_monoexp(session.t1rho.data, session.t1rho.times, session.labels.array > 0, t_max=250.0, min_snr=2.0)
    t_map = image_from_volume(output.nodes["t1rho T"])
    assert t_map.same_grid(session.t1rho.grid)
    np.testing.assert_array_equal(t_map.array, expected.T.astype(np.float32))
    # and the fit finds the phantom's truth: median error in the discs well under the T1rho spread
    inside = (session.labels.array > 0) & np.isfinite(t_map.array)
    assert inside.sum() > 0.95 * (session.labels.array > 0).sum()
    assert np.median(np.abs(t_map.array[inside] - session.truth.t1rho[inside])) < 5.0  # ms
    t2 = image_from_volume(output.nodes["t2 T"])  # the T2 series came as a sequence
    inside = (session.labels.array > 0) & np.isfinite(t2.array)
    assert np.median(np.abs(t2.array[inside] - session.truth.t2[inside])) < 5.0  # ms
    colours = output.nodes["t1rho T"].GetDisplayNode()
    assert colours.GetColorNodeID() == output.nodes["t1rho colours"].GetID() and colours.GetApplyThreshold()
    assert steps[-1][0] == 1.0 and [f for f, _ in steps] == sorted(f for f, _ in steps)


def test_atlas_maps_are_the_true_t1rho_carried_to_the_atlas(session, run):
    from discvbr.registration import load_atlas, warp_image

    scene, logic, node, output, echoes, steps = run
    atlas = load_atlas("phantom-healthy", mode="2d")
    atlas_t = image_from_volume(output.nodes["t1rho T atlas"])
    assert atlas_t.same_grid(atlas.labels)
    atlas_labels = np.asarray(atlas.labels.array)
    truth = Image(session.truth.t1rho.astype(np.float32), session.t1rho.affine)
    for label, level in enumerate(DISC_LEVELS, start=1):
        inside = atlas_labels == label
        assert np.isfinite(atlas_t.array[inside]).mean() > 0.9, level
        # the echoes were warped with the disc's transform and fitted there: the result is the
        # phantom's true T1rho carried by the same transform (median error in ms)
        reg = output.registrations[label]
        carried = warp_image(reg, truth).array[reg.grid.array]
        fitted = np.sort(atlas_t.array[inside])
        assert np.nanmedian(np.abs(np.sort(carried) - fitted)) < 5.0, level
    assert np.isnan(atlas_t.array[atlas_labels == 0]).all()  # NaN outside the discs, never 0


def test_registration_qc_nodes_agree_with_the_registrations(session, run):
    from discvbr.registration import load_atlas

    scene, logic, node, output, echoes, steps = run
    atlas = load_atlas("phantom-healthy", mode="2d")
    atlas_labels = np.asarray(atlas.labels.array)
    qc = dataframe_from_table(output.nodes["qc table"])
    assert qc["disc"].tolist() == list(DISC_LEVELS) and set(qc["status"]) == {"registered"}
    registered = image_from_volume(output.nodes["registered discs"])
    assert output.nodes["registered discs"].IsA("vtkMRMLLabelMapVolumeNode")
    det = image_from_volume(output.nodes["det jacobian"]).array
    for label, level in enumerate(DISC_LEVELS, start=1):
        reg = output.registrations[label]
        a, b = registered.array == label, atlas_labels == label
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice == pytest.approx(qc.loc[qc["disc"] == level, "dice"].item(), abs=1e-9)  # the node is what QC measured
        assert dice > 0.8, level
        # the Jacobian volume holds each disc's determinant on its atlas disc
        np.testing.assert_allclose(np.sort(det[b]), np.sort(reg.det_jacobian[reg.grid.array]), rtol=1e-6)
        # the transform node resamples the subject exactly where the registration does
        np.testing.assert_allclose(points_from_transform(output.nodes[f"transform {level}"], reg.grid, ndim=2), reg.points, atol=1e-4)
    board = image_from_volume(output.nodes["checkerboard"]).array
    assert set(np.unique(board)) <= {0.0, 1.0, 2.0} and (board == 1).any() and (board == 2).any()
    assert output.nodes["atlas discs"].GetAttribute(ROLE_ATTRIBUTE) == "atlas discs"  # never offered as a subject's discs
    assert logic.parameter_node().GetNodeReference(R.SEGMENTATION).GetAttribute(ROLE_ATTRIBUTE) == "disc segmentation"
    outline = output.nodes["atlas discs"].GetDisplayNode()  # atlas discs drawn as outlines over the registered discs
    assert not any(outline.GetSegmentVisibility2DFill(level) for level in DISC_LEVELS)
    assert all(outline.GetSegmentVisibility2DOutline(level) for level in DISC_LEVELS)
    assert node.GetNodeReference(R.OUTPUT_PREFIX + "qc_table") is output.nodes["qc table"]


def test_decay_curve_of_a_clicked_voxel(session, run):
    scene, logic, node, output, echoes, steps = run
    ijk = tuple(int(v) for v in np.argwhere(session.labels.array == 3)[10])
    ras = (session.t1rho.affine @ np.append(np.array(ijk, float) + [0.0, 0.3, -0.2], 1.0))[:3]  # inside the voxel
    curve = logic.decay_curve(node, "t1rho", ras)
    assert curve.ijk == ijk
    np.testing.assert_allclose(curve.signal, [image_from_volume(e).array[ijk] for e in echoes])
    assert curve.T == pytest.approx(float(image_from_volume(output.nodes["t1rho T"]).array[ijk]))
    np.testing.assert_allclose(curve.model(curve.times), curve.S0 * np.exp(-curve.times / curve.T))
    chart = logic.plot_decay_curve(curve)
    assert chart.GetNumberOfPlotSeriesNodes() == 2 and "T = " in chart.GetTitle()
    measured = dataframe_from_table(chart.GetNthPlotSeriesNode(0).GetTableNode())
    np.testing.assert_allclose(measured["y"], curve.signal)
    with pytest.raises(DiscVBRError, match="outside the T1rho series"):
        logic.decay_curve(node, "t1rho", (1000.0, 0.0, 0.0))


def test_bad_inputs_give_one_clear_message_and_leave_the_scene_unchanged(session):
    # a times table that does not match the echoes
    scene, logic, node, echoes, segmentation = _inputs(session, t1rho_times="0;10;40")
    before = _ids(scene)
    with pytest.raises(DiscVBRError, match="4 echo volume\\(s\\) but 3 times"):
        logic.run(node)
    assert _ids(scene) == before
    # echo volumes on different grids
    scene, logic, node, echoes, segmentation = _inputs(session)
    moved = session.t1rho.affine.copy()
    moved[:3, 3] += 2.0
    other = volume_from_image(scene, Image(session.t1rho.data[..., 3], moved), name="sub-31 T1rho moved")
    logic.set_echo_volumes(node, "t1rho", [*echoes[:3], other], "0;10;40;80")
    before = _ids(scene)
    with pytest.raises(DiscVBRError, match="different grids.*'sub-31 T1rho moved'"):
        logic.run(node)
    assert _ids(scene) == before
    # a segmentation with a missing level
    labels = np.asarray(session.labels.array).copy()
    labels[labels == 4] = 0
    scene, logic, node, echoes, segmentation = _inputs(session, labels=Image(labels, session.labels.affine))
    before = _ids(scene)
    with pytest.raises(DiscVBRError, match="no voxel for disc\\(s\\) L2L3"):
        logic.run(node)
    assert _ids(scene) == before


def test_apply_explains_why_it_is_disabled(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    assert logic.disabled_reason(node) is None
    node.SetNodeReferenceID(R.series_role("t1rho"), node.GetNodeReference(R.series_role("t2")).GetID())
    assert logic.disabled_reason(node) == "T1rho: select either echo volumes or one series node, not both"
    logic.set_echo_volumes(node, "t1rho", echoes[:1], "0")
    assert logic.disabled_reason(node) == "T1rho: select at least two echo volumes"
    logic.set_echo_volumes(node, "t1rho", echoes, "")
    assert "type the spin-lock times" in logic.disabled_reason(node)
    logic.set_echo_volumes(node, "t1rho", echoes, "0;10;40;80")
    node.SetParameter(R.ITERATIONS, "0")
    assert logic.disabled_reason(node) == "iterations: 0 is outside 1 to inf"
    node.SetParameter(R.ITERATIONS, "20")
    node.SetNodeReferenceID(R.SEGMENTATION, None)
    assert logic.disabled_reason(node) == "Select the disc segmentation"


def test_t1rho_and_t2_on_different_grids_are_refused(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    from discvbr.io import EchoSeries

    shifted = session.t2.affine.copy()
    shifted[1, 3] += 3.0
    t2, _ = sequence_from_series(scene, EchoSeries(session.t2.data, session.t2.times, shifted, "t2"), name="t2 elsewhere")
    logic.set_series_node(node, "t2", t2)
    with pytest.raises(DiscVBRError, match="T1rho and T2 series are on different grids"):
        logic.run(node)


def test_cancel_stops_between_steps_and_adds_nothing(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    before = _ids(scene)
    seen = []

    def cancelled() -> bool:
        return any("registering L4L5" in text for _, text in seen)

    with pytest.raises(R.Cancelled, match="nothing was added"):
        logic.run(node, progress=lambda fraction, text: seen.append((fraction, text)), cancelled=cancelled)
    assert _ids(scene) == before
    assert not any("registering L3L4" in text for _, text in seen)


def test_engine_choice(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    node.SetParameter(R.ENGINE, "slicer-elastix")
    with pytest.raises(DiscVBRError, match="SlicerElastix extension is not installed"):
        logic.registration_runner(node, ndim=3)
    fake = DiscRelaxometryLogic(scene, elastix_logic=object())
    with pytest.raises(DiscVBRError, match="single-slice \\(2D\\) data need the itk-elastix engine"):
        fake.registration_runner(node, ndim=2)
    node.SetParameter(R.ENGINE, "auto")
    assert fake.registration_runner(node, ndim=2) == (None, "itk-elastix")
    runner, name = fake.registration_runner(node, ndim=3)
    assert name == "SlicerElastix" and runner.elastix_logic is fake._elastix_logic


def test_one_failing_disc_keeps_the_others(session):
    from discvbr.registration.disc import itk_elastix_runner

    default, calls = itk_elastix_runner(), []

    def flaky(fixed, moving, parameter_maps, *, ndim):
        # each disc's registration starts with the affine stage; discs run in label order,
        # so the third affine run is L3L4's
        calls.append(parameter_maps[0]["Transform"][0])
        if calls.count("AffineTransform") == 3 and calls[-1] == "AffineTransform":
            raise RuntimeError("the metric diverged (simulated)")
        return default(fixed, moving, parameter_maps, ndim=ndim)

    scene, logic, node, echoes, segmentation = _inputs(session)
    output = logic.run(node, runner=flaky)
    assert list(output.failures) == ["L3L4"] and "diverged (simulated)" in output.failures["L3L4"]
    assert sorted(output.registrations) == [1, 2, 4, 5] and "transform L3L4" not in output.nodes
    qc = dataframe_from_table(output.nodes["qc table"]).set_index("disc")
    assert qc.loc["L3L4", "status"] == "failed" and (qc.drop("L3L4")["status"] == "registered").all()
    from discvbr.registration import load_atlas

    atlas_labels = np.asarray(load_atlas("phantom-healthy", mode="2d").labels.array)
    atlas_t = image_from_volume(output.nodes["t1rho T atlas"]).array
    assert np.isnan(atlas_t[atlas_labels == 3]).all() and np.isfinite(atlas_t[atlas_labels == 2]).mean() > 0.9
    assert 3 not in np.unique(image_from_volume(output.nodes["registered discs"]).array)


def test_checkerboard_alternates_squares():
    a, b = np.zeros((1, 16, 8)), np.ones((1, 16, 8))
    board = checkerboard(a, b, squares=4)
    # squares of 4 x 2 voxels; (0, 0) shows a, its neighbours b
    assert board[0, 0, 0] == 0 and board[0, 4, 0] == 1 and board[0, 0, 2] == 1 and board[0, 4, 2] == 0
    assert board.sum() == board.size / 2
    with pytest.raises(DiscVBRError, match="different shapes"):
        checkerboard(a, np.ones((1, 8, 8)))


def test_edited_preset_is_checked_before_it_replaces_anything(session, tmp_path):
    scene, logic, node, echoes, segmentation = _inputs(session)
    texts = logic.parameter_texts(node, ndim=2)
    assert set(texts) == {"affine-2d.txt", "bspline-2d.txt"}
    texts["bspline-2d.txt"] = texts["bspline-2d.txt"].replace("(MaximumNumberOfIterations 200)", "(MaximumNumberOfIterations 55)")
    folder = logic.save_parameter_preset(tmp_path / "preset", texts, ndim=2)
    node.SetParameter(R.PARAMETER_FOLDER, str(folder))
    assert "(MaximumNumberOfIterations 55)" in logic.parameter_texts(node, ndim=2)["bspline-2d.txt"]
    # the run's maps start from the preset (the iterations setting is then written over it)
    from discvbr.registration import build_parameter_maps

    params = logic.registration_params(node)
    assert params.parameter_dir == str(folder)
    assert build_parameter_maps(params.with_values(iterations=55), ndim=2)[1]["MaximumNumberOfIterations"] == ("55",)
    broken = dict(texts, **{"affine-2d.txt": texts["affine-2d.txt"].replace('(Transform "AffineTransform")', '(Transform "BSplineTransform")')})
    with pytest.raises(DiscVBRError, match="Transform is 'BSplineTransform'; expected 'AffineTransform'"):
        logic.save_parameter_preset(folder, broken, ndim=2)
    assert "(MaximumNumberOfIterations 55)" in (folder / "bspline-2d.txt").read_text()  # unchanged
    assert sorted(p.name for p in folder.iterdir()) == ["affine-2d.txt", "bspline-2d.txt"]


class FakeElastixLogic:
    """Stands in for SlicerElastix's ElastixLogic: returns a known affine as a displacement field.

    Like SlicerElastix (transformix ``-def all`` loaded by Slicer), the output transform node
    holds a grid transform on the fixed volume's grid whose "from parent" direction maps fixed
    RAS positions to moving RAS positions.
    """

    def __init__(self, matrix: np.ndarray, offset: np.ndarray):
        self.matrix, self.offset = matrix, offset
        self.files: list[str] = []
        self.cancelRequested = False

    def registerVolumes(self, fixedVolumeNode, movingVolumeNode, parameterFilenames, outputTransformNode, forceDisplacementFieldOutputTransform):
        import slicer
        from vtkmodules.util.numpy_support import numpy_to_vtk
        from vtkmodules.vtkCommonDataModel import vtkImageData

        assert forceDisplacementFieldOutputTransform
        self.files = [open(name).read() for name in parameterFilenames]
        fixed = image_from_volume(fixedVolumeNode)
        assert np.allclose(fixed.direction, np.eye(3))  # axis-aligned atlas crops keep this fake simple
        nx, ny, nz = fixed.shape
        i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
        ras = np.stack([i, j, k], axis=-1) * fixed.spacing + fixed.origin
        displacement = ras @ self.matrix.T + self.offset - ras
        field = vtkImageData()
        field.SetDimensions(nx, ny, nz)
        field.SetSpacing(*fixed.spacing)
        field.SetOrigin(*fixed.origin)
        vectors = numpy_to_vtk(np.ascontiguousarray(displacement.transpose(2, 1, 0, 3).reshape(-1, 3)), deep=True)
        field.GetPointData().SetScalars(vectors)
        transform = slicer.vtkOrientedGridTransform()
        transform.SetDisplacementGridData(field)
        outputTransformNode.SetAndObserveTransformFromParent(transform)


def test_slicer_elastix_runner_reads_the_displacement_field(tmp_path):
    from discvbr.extension.elastix import SlicerElastixRunner
    from discvbr.registration import RegistrationParams, build_parameter_maps, load_atlas, register_disc
    from discvbr.registration.params import read_parameter_file

    atlas = load_atlas("phantom-healthy", mode="3d")
    fixed = atlas.disc(2, margin_mm=10.0)
    scene = new_scene()
    matrix = np.array([[1.05, 0.02, 0.0], [0.0, 0.97, 0.03], [0.01, 0.0, 1.1]])
    offset = np.array([1.5, -2.0, 0.5])
    fake = FakeElastixLogic(matrix, offset)
    runner = SlicerElastixRunner(scene, fake)
    maps = build_parameter_maps(RegistrationParams(iterations=5), ndim=3)
    before = _ids(scene)
    transform_maps, points, det = runner(fixed, fixed, maps, ndim=3)
    assert _ids(scene) == before  # temporary nodes removed
    assert transform_maps == []
    # the files SlicerElastix got are the run's maps (result images off)
    assert len(fake.files) == len(maps) == 2
    for text, pm in zip(fake.files, maps):
        path = tmp_path / "check.txt"
        path.write_text(text)
        read = read_parameter_file(path)
        assert read["WriteResultImage"] == ("false",)
        assert {k: v for k, v in read.items() if k != "WriteResultImage"} == {k: v for k, v in pm.items() if k != "WriteResultImage"}
    nx, ny, nz = fixed.shape
    i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    ras = np.stack([i, j, k], axis=-1) * fixed.spacing + fixed.origin
    expected_lps = (ras @ matrix.T + offset) * np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(points, expected_lps, atol=1e-6)
    np.testing.assert_allclose(det, np.linalg.det(matrix), rtol=1e-6)
    # through register_disc: an identity field maps the atlas disc onto itself
    identity = SlicerElastixRunner(scene, FakeElastixLogic(np.eye(3), np.zeros(3)))
    reg = register_disc(atlas.labels, 2, atlas, params=RegistrationParams(iterations=5), subject="atlas", runner=identity)
    assert reg.qc.dice == pytest.approx(1.0) and reg.qc.det_jacobian_mean == pytest.approx(1.0)
    with pytest.raises(DiscVBRError, match="displacement field"):
        reg.save(tmp_path / "transform")
    with pytest.raises(RuntimeError, match="3D volumes"):
        runner(fixed, fixed, build_parameter_maps(RegistrationParams(), ndim=2), ndim=2)


def test_maps_have_colour_legends_with_units(run):
    from discvbr.mrml.legends import colour_legend

    scene, logic, node, output, echoes, steps = run
    for key, title in (("t1rho T", "T1rho (ms)"), ("t1rho T atlas", "T1rho (ms)"), ("t2 T", "T2 (ms)"), ("det jacobian", R.JACOBIAN_LEGEND)):
        legend = colour_legend(output.nodes[key])
        assert legend is not None and legend.GetTitleText() == title, key
        assert legend.GetPrimaryDisplayNode().GetID() == output.nodes[key].GetDisplayNode().GetID()


@pytest.mark.slow
def test_job_in_a_child_process_adds_what_the_in_process_run_adds(session, run):
    """The GUI's path: prepare in the scene, compute in a child process, add the results; a second run keeps the first."""
    scene, logic, node, output, echoes, steps = run
    first_t = output.nodes["t1rho T"]
    job = logic.start(node)
    assert job.running
    fractions = []
    assert job.wait(progress=lambda fraction, text: fractions.append((fraction, text)), timeout=600) == 0
    assert any("registering L3L4" in text for _, text in fractions)
    again = logic.finish(job, node)
    assert not job.folder.exists()
    np.testing.assert_array_equal(image_from_volume(again.nodes["t1rho T"]).array, image_from_volume(first_t).array)
    a = image_from_volume(again.nodes["t1rho T atlas"]).array
    b = image_from_volume(output.nodes["t1rho T atlas"]).array
    both = np.isfinite(a) & np.isfinite(b)
    assert both.sum() > 0.9 * np.isfinite(b).sum()
    assert np.median(np.abs(a[both] - b[both])) < 1.0  # ms: the same registration, run in another process
    # the first run's nodes are still there, and the parameter node points at the new ones
    assert scene.GetNodeByID(first_t.GetID()) is first_t and again.nodes["t1rho T"] is not first_t
    assert logic.output_node(node, "t1rho T") is again.nodes["t1rho T"]


def test_job_cancel_ends_the_child_and_adds_nothing(session):
    import time

    scene, logic, node, echoes, segmentation = _inputs(session)
    before = _ids(scene)
    job = logic.start(node)
    deadline = time.monotonic() + 300
    while job.running and "registering" not in job.text and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    assert job.running and "registering" in job.text
    job.cancel()
    assert job.process.returncode is not None and not job.folder.exists()
    with pytest.raises(DiscVBRError, match="cancelled"):
        logic.finish(job, node)
    assert _ids(scene) == before


def test_slicer_elastix_engine_is_refused_in_a_child_process(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    node.SetParameter(R.ENGINE, "slicer-elastix")
    with pytest.raises(DiscVBRError, match="runs inside Slicer"):
        logic.start(node)


def test_echo_table_pairs_volumes_with_times_and_reorders(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    times = list(session.t1rho.times)
    rows = logic.echo_rows(node, "t1rho")
    assert [r.name for r in rows] == [e.GetName() for e in echoes] and [r.time for r in rows] == times
    # swapped volumes with the times typed in the original order: the signal rises with time
    logic.move_echo(node, "t1rho", 0, +1)
    assert [r.name for r in logic.echo_rows(node, "t1rho")][:2] == [echoes[1].GetName(), echoes[0].GetName()]
    with pytest.raises(DiscVBRError, match=r"brighter than the one at .* reorder them in the echo table"):
        logic.series_inputs(node)
    logic.move_echo(node, "t1rho", 1, -1)  # moved back: accepted, and the fit equals the correct order's
    assert logic.series_inputs(node)["t1rho"].times.tolist() == times
    with pytest.raises(DiscVBRError, match="cannot move echo 1 of 4 by -1"):
        logic.move_echo(node, "t1rho", 0, -1)


def test_times_recorded_on_the_volumes_are_used_and_contradictions_refused(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    for echo, time in zip(echoes, session.t1rho.times):
        echo.SetAttribute(R.ECHO_TIME_ATTRIBUTE, f"{time:g}")
    node.SetParameter(R.times_parameter("t1rho"), "")
    assert logic.disabled_reason(node) is None  # no typing needed: the volumes carry their times
    np.testing.assert_array_equal(logic.series_inputs(node)["t1rho"].times, session.t1rho.times)
    # a volume moved away from its time: refused, naming the volume and both times
    node.SetParameter(R.times_parameter("t1rho"), ";".join(f"{t:g}" for t in session.t1rho.times))
    logic.move_echo(node, "t1rho", 0, +1)
    with pytest.raises(DiscVBRError, match=f"{echoes[1].GetName()} was acquired at {session.t1rho.times[1]:g} ms but is paired with {session.t1rho.times[0]:g} ms"):
        logic.series_inputs(node)
    logic.move_echo(node, "t1rho", 0, +1)
    logic.series_inputs(node)
    logic.set_echo_time(node, "t1rho", 3, session.t1rho.times[3] + 10)
    assert logic.echo_rows(node, "t1rho")[3].time == session.t1rho.times[3] + 10
    with pytest.raises(DiscVBRError, match="was acquired at"):
        logic.series_inputs(node)


def test_checking_another_volume_keeps_the_order_the_user_gave(session):
    scene, logic, node, echoes, segmentation = _inputs(session)
    logic.move_echo(node, "t1rho", 2, +1)  # the user swapped the last two rows
    swapped = [r.volume_id for r in logic.echo_rows(node, "t1rho")]
    logic.select_echo_volumes(node, "t1rho", echoes)  # the combo box reports its scene order
    assert [r.volume_id for r in logic.echo_rows(node, "t1rho")] == swapped
    logic.select_echo_volumes(node, "t1rho", echoes[1:])
    assert [r.volume_id for r in logic.echo_rows(node, "t1rho")] == swapped[1:]
    logic.select_echo_volumes(node, "t1rho", echoes)
    assert [r.volume_id for r in logic.echo_rows(node, "t1rho")] == [*swapped[1:], echoes[0].GetID()]
