"""DiscSegmentation's logic on a headless MRML scene (slicer-core), with the network in a child process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from discvbr import DiscVBRError
from discvbr.mrml.scene import new_scene
from discvbr.mrml.segmentations import labels_from_segmentation, segmentation_from_labels
from discvbr.mrml.volumes import image_from_volume, volume_from_image
from discvbr.extension import segmentation as S
from discvbr.extension.segmentation import DiscSegmentationLogic
from discvbr.io import Image, read_image
from discvbr.levels import DISC_COLOURS, DISC_LEVELS
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
from discvbr.resources import default_model_path


@pytest.fixture(scope="module")
def session():
    config = PhantomConfig(n_subjects=1, matrix=128, seed=21)
    return simulate_session(config, draw_subject(config, 0))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained compact CFCM: the tests are about the plumbing, not the network's quality."""
    import torch

    from discvbr.segmentation.model_store import save_model
    from discvbr.segmentation.network import CFCMConfig, build_network
    from discvbr.segmentation.preprocess import PreprocessConfig

    torch.manual_seed(0)
    config = CFCMConfig(width=0.0625, blocks=(1, 1, 1, 1))
    folder = tmp_path_factory.mktemp("model") / "tiny"
    return save_model(folder, build_network(config), architecture=config, preprocess=PreprocessConfig(), name="tiny", training={"purpose": "tests"})


def _setup(session, *, model=None):
    scene = new_scene()
    logic = DiscSegmentationLogic(scene)
    node = logic.parameter_node()
    volume = volume_from_image(scene, session.t1rho.echo(0), name="sub first echo")
    node.SetNodeReferenceID(S.INPUT, volume.GetID())
    node.SetParameter(S.DEVICE, "cpu")
    if model is not None:
        logic.use_model_folder(node, model)
    return scene, logic, node, volume


def _ids(scene):
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def test_apply_explains_why_it_is_disabled(session, tiny_model, tmp_path):
    scene = new_scene()
    logic = DiscSegmentationLogic(scene)
    node = logic.parameter_node()
    assert logic.parameter_node() is node  # one parameter node per scene
    assert node.GetParameter(S.DEVICE) == "auto" and node.GetParameter(S.MODEL_SOURCE) == "shipped"
    assert logic.disabled_reason(node).startswith("Select the input volume")
    volume = volume_from_image(scene, session.t1rho.echo(0), name="echo")
    node.SetNodeReferenceID(S.INPUT, volume.GetID())
    shipped = logic.disabled_reason(node)
    assert (shipped is None) == default_model_path().is_dir()
    if shipped is not None:
        assert "shipped model is not installed" in shipped
    node.SetParameter(S.MODEL_SOURCE, "folder")
    assert logic.disabled_reason(node) == "Choose a model or ensemble folder"
    logic.use_model_folder(node, tmp_path)
    assert "is not a model folder" in logic.disabled_reason(node)
    logic.use_model_folder(node, tiny_model)
    assert logic.disabled_reason(node) is None
    node.SetParameter(S.THRESHOLD, "1.5")
    assert "probability threshold: 1.5 is outside" in logic.disabled_reason(node)
    with pytest.raises(DiscVBRError, match="probability threshold"):
        logic.start(node)


def test_segmentation_in_a_child_process_matches_the_library(session, tiny_model):
    from discvbr.segmentation import segment_discs

    scene, logic, node, volume = _setup(session, model=tiny_model)
    seen = []
    output = logic.run(node, progress=lambda fraction, text: seen.append(fraction), timeout=300)
    expected = segment_discs(session.t1rho.echo(0), model=tiny_model, device="cpu", subject="sub first echo")
    # the nodes hold what the library computes on the same image
    segmentation = output.segmentation.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == list(DISC_LEVELS)
    for level in DISC_LEVELS:
        np.testing.assert_allclose(segmentation.GetSegment(level).GetColor(), DISC_COLOURS[level], atol=1e-6)
    labels = labels_from_segmentation(output.segmentation, reference=session.t1rho.echo(0), require=())
    np.testing.assert_array_equal(labels.array, expected.labels.array)
    uncertainty = image_from_volume(output.uncertainty)
    assert uncertainty.same_grid(session.t1rho.echo(0))
    np.testing.assert_allclose(uncertainty.array, expected.uncertainty.array, atol=1e-6)
    # review: missing discs first, then by decreasing uncertainty from the report
    assert [item.level for item in output.review] == expected.review_order
    report = json.loads(output.segmentation.GetAttribute(S.REPORT_ATTRIBUTE))
    assert report["per_disc_uncertainty"] == {k: round(v, 4) for k, v in expected.per_disc_uncertainty.items()}
    assert output.warnings == expected.warnings
    # progress lines arrived, in order, up to the end
    assert seen and seen == sorted(seen) and seen[-1] == 1.0
    # the parameter node points at the outputs; a second run goes into new nodes, so hand corrections
    # of the first segmentation are never wiped without asking
    assert node.GetNodeReference(S.SEGMENTATION) is output.segmentation
    corrected = output.segmentation.GetSegmentation().GetSegment("L3L4")
    corrected.SetName("L3L4 corrected")  # stands for an edit in the Segment Editor
    again = logic.run(node, timeout=300)
    assert again.segmentation is not output.segmentation and again.uncertainty is not output.uncertainty
    assert scene.GetNodeByID(output.segmentation.GetID()) is output.segmentation
    assert output.segmentation.GetSegmentation().GetSegment("L3L4").GetName() == "L3L4 corrected"
    assert node.GetNodeReference(S.SEGMENTATION) is again.segmentation
    assert again.segmentation.GetName() != output.segmentation.GetName()
    # refilling the same nodes is a choice the user makes (the widget asks first)
    node.SetParameter(S.REPLACE_OUTPUT, "true")
    count = scene.GetNumberOfNodes()
    third = logic.run(node, timeout=300)
    assert third.segmentation is again.segmentation and scene.GetNumberOfNodes() == count


def test_cancel_kills_the_process_and_adds_nothing(session, tiny_model):
    scene, logic, node, volume = _setup(session, model=tiny_model)
    before = _ids(scene)
    job = logic.start(node)
    workdir = job.workdir.name
    job.cancel()
    assert job.process.returncode is not None and job.process.cancelled
    with pytest.raises(DiscVBRError, match="cancelled"):
        logic.finish(job, node)
    assert _ids(scene) == before
    assert not os.path.exists(workdir)


def test_bad_input_message_comes_back_from_the_process(session, tiny_model):
    scene, logic, node, volume = _setup(session, model=tiny_model)
    # an axial acquisition: thick slices along the superior axis
    axial = Image(np.random.default_rng(0).random((96, 96, 6)).astype(np.float32), np.diag([1.0, 1.0, 6.0, 1.0]))
    node.SetNodeReferenceID(S.INPUT, volume_from_image(scene, axial, name="axial").GetID())
    before = _ids(scene)
    with pytest.raises(DiscVBRError, match="looks axial, not sagittal"):
        logic.run(node, timeout=300)
    assert _ids(scene) == before


def test_imported_masks_review_centres_and_jump(session):
    scene, logic, node, volume = _setup(session)
    output = logic.import_labels(node, session.labels)
    assert output.uncertainty is None
    assert [item.level for item in output.review] == list(DISC_LEVELS)  # no uncertainty: level order
    labels = np.asarray(session.labels.array)
    for item in output.review:
        index = np.argwhere(labels == DISC_LEVELS.index(item.level) + 1)
        centre = (session.labels.affine @ np.append(index.mean(axis=0), 1.0))[:3]
        assert item.voxels == len(index)
        np.testing.assert_allclose(item.centre_ras, centre, atol=1e-6)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    logic.jump_slices(scene, output.review[1])
    import slicer.util

    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(red.GetSliceToRAS())[:3, 3], output.review[1].centre_ras, atol=1e-6)


def test_corrected_masks_are_saved_on_the_input_grid(session, tmp_path):
    scene, logic, node, volume = _setup(session)
    labels = np.asarray(session.labels.array).copy()
    output = logic.import_labels(node, session.labels)
    # a correction: L3L4 loses its first row of voxels
    first_row = np.argwhere(labels == 3)[:, 1].min()
    labels[(labels == 3) & (np.arange(labels.shape[1])[None, :, None] == first_row)] = 0
    segmentation_from_labels(scene, Image(labels, session.labels.affine), name="corrected", node=output.segmentation)
    review = {item.level: item for item in logic.review(output.segmentation)}
    assert review["L3L4"].voxels == int((labels == 3).sum())  # the list follows corrections
    saved = read_image(logic.save_masks(node, tmp_path / "discs.nii.gz"))
    np.testing.assert_array_equal(saved.array, labels)
    np.testing.assert_allclose(saved.affine, session.labels.affine)
    labels[labels == 5] = 0
    segmentation_from_labels(scene, Image(labels, session.labels.affine), name="corrected", node=output.segmentation)
    with pytest.raises(DiscVBRError, match="no voxel for disc\\(s\\) L1L2"):
        logic.save_masks(node, tmp_path / "incomplete.nii.gz")
    assert not (tmp_path / "incomplete.nii.gz").exists()


def test_process_lines_are_parsed():
    from discvbr.extension.process import parse_line

    assert parse_line("PROGRESS 0.250 slices 2/8\n").fraction == 0.25
    assert parse_line("PROGRESS 7 done").fraction == 1.0  # clamped
    assert parse_line("WARNING L1L2 missing").kind == "warning"
    assert parse_line("RESULT /tmp/x/segmentation.json").text == "/tmp/x/segmentation.json"
    error = parse_line("discvbr: error: image.nii: looks axial", stream="stderr")
    assert (error.kind, error.text) == ("error", "image.nii: looks axial")
    assert parse_line("PROGRESS soon").kind == "log"
    assert parse_line("PROGRESS 0.5 x", stream="stderr").kind == "log"  # only stdout carries the protocol


def test_review_list_recomputes_only_the_segments_that_changed(session, monkeypatch):
    scene, logic, node, volume = _setup(session)
    output = logic.import_labels(node, session.labels)
    computed = []
    original = S._segment_size_and_centre
    monkeypatch.setattr(S, "_segment_size_and_centre", lambda seg, sid: computed.append(sid) or original(seg, sid))
    first = logic.review(output.segmentation)
    assert computed == []  # import_labels already filled the cache
    assert logic.review(output.segmentation) == first and computed == []
    # an edit of one disc: only its summary is computed again, and the list shows the edit
    labels = np.asarray(session.labels.array).copy()
    labels[labels == 2] = 0
    from discvbr.mrml.segmentations import segment_labelmap
    from discvbr.mrml.segmentations import _oriented

    segment = output.segmentation.GetSegmentation().GetSegment("L4L5")
    empty = _oriented(np.zeros(labels.shape, np.uint8), session.labels.affine)
    import slicer

    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        empty, output.segmentation, "L4L5", slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    assert segment_labelmap(output.segmentation, "L4L5") is None
    review = {item.level: item for item in logic.review(output.segmentation)}
    assert "L4L5" in computed and len(set(computed)) < len(DISC_LEVELS)
    assert review["L4L5"].missing and not review["L3L4"].missing
