"""DiscStatistics' logic and the scene demo on a small phantom study, headless (slicer-core)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import slicer.util
from scipy import stats

from discvbr import DiscVBRError, mrml
from discvbr.extension import statistics as T
from discvbr.extension.statistics import DiscStatisticsLogic
from discvbr.io import read_image
from discvbr.levels import DISC_LEVELS

REPO = Path(__file__).resolve().parents[1]


def _demo_module():
    spec = importlib.util.spec_from_file_location("slicer_scene_demo", REPO / "scripts" / "slicer_scene_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 3-subject 2D phantom cohort run through the pipeline (few iterations, no permutations)."""
    out = tmp_path_factory.mktemp("slicer-study")
    manifest, folder = _demo_module().make_study(out, subjects=3, seed=4, iterations=10)
    return manifest, folder


def _logic(folder, **settings):
    scene = mrml.new_scene()
    logic = DiscStatisticsLogic(scene)
    node = logic.parameter_node()
    node.SetParameter(T.STUDY, str(folder))
    for key, value in settings.items():
        node.SetParameter(key, str(value))
    return scene, logic, node


def test_apply_explains_why_it_is_disabled(study, tmp_path):
    manifest, folder = study
    scene, logic, node = _logic(folder, **{T.PERMUTATIONS: 0, T.CORRECTION: "fdr_bh_joint"})
    assert logic.disabled_reason(node) is None
    node.SetParameter(T.CORRECTION, "fwe_tfce_joint")
    assert "needs permutations" in logic.disabled_reason(node)
    node.SetParameter(T.CORRECTION, "holm")
    node.SetParameter(T.VARIABLE, "")
    assert logic.disabled_reason(node).startswith("a variable analysis needs a variable")
    node.SetParameter(T.VARIABLE, "odi")
    node.SetParameter(T.NAME, "../elsewhere")
    assert "must be a plain folder name" in logic.disabled_reason(node)
    node.SetParameter(T.NAME, "ok")
    node.SetParameter(T.STUDY, str(tmp_path))
    assert "is not a study folder written by discvbr run" in logic.disabled_reason(node)
    node.SetParameter(T.STUDY, "")
    assert logic.disabled_reason(node).startswith("Choose a study folder")
    node.SetParameter(T.STUDY, str(folder))
    node.SetParameter(T.MANIFEST, str(tmp_path / "missing.csv"))
    assert logic.disabled_reason(node) == f"manifest not found: {tmp_path / 'missing.csv'}"


def test_correlation_maps_match_scipy(study):
    """r and p of a voxel-by-variable analysis run by the module equal scipy's Pearson test."""
    from discvbr.manifest import read_manifest

    manifest, folder = study
    scene, logic, node = _logic(folder, **{T.NAME: "slicer_odi", T.KIND: "variable", T.VARIABLE: "odi", T.PERMUTATIONS: 0, T.CORRECTION: "fdr_bh_joint"})
    logic.run_analysis(node)
    output = logic.load_results(node, show="r")
    r = mrml.image_from_volume(output.volumes["r"])
    p = mrml.image_from_volume(output.volumes["p"])
    info = T.read_study(folder)
    assert r.same_grid(info.atlas)
    cohort = read_manifest(manifest)
    subjects = [e.subject for e in cohort]
    odi = np.array([float(e.variables["odi"]) for e in cohort])
    maps = np.stack([read_image(folder / "subjects" / s / "baseline" / "maps" / "atlas" / "t1rho_T.nii.gz").array for s in subjects])
    labels = np.asarray(info.atlas.array)
    checked = 0
    for label in range(1, len(DISC_LEVELS) + 1):
        voxels = np.argwhere((labels == label) & np.isfinite(maps).all(axis=0))
        for ijk in voxels[:: max(1, len(voxels) // 5)][:5]:
            expected = stats.pearsonr(maps[(slice(None), *ijk)], odi)
            assert r.array[tuple(ijk)] == pytest.approx(expected.statistic, abs=1e-5)
            assert p.array[tuple(ijk)] == pytest.approx(expected.pvalue, rel=1e-4)
            checked += 1
    assert checked >= 20
    # tables are the analysis's CSV files
    summary = mrml.dataframe_from_table(output.tables["summary"])
    on_disk = pd.read_csv(output.folder / "summary.csv")
    assert list(summary.columns) == list(on_disk.columns) and summary["disc"].tolist() == on_disk["disc"].tolist()
    # the r map on the spine mesh: cell scalars are the r values of the drawn voxels
    maps_models = output.models.maps()
    assert maps_models and output.models.legend is not None
    drawn = np.concatenate([slicer.util.arrayFromModelCellData(m, "r") for m in maps_models])
    finite = r.array[np.isfinite(r.array)]
    assert set(np.round(drawn, 5)) <= set(np.round(finite, 5)) and drawn.size == finite.size  # one quad per voxel (2D data)
    display = maps_models[0].GetDisplayNode()
    assert display.GetColorNodeID() == output.models.colour_node.GetID() and tuple(display.GetScalarRange()) == (-1.0, 1.0)


def test_results_switch_export_and_errors(study, tmp_path):
    manifest, folder = study
    scene, logic, node = _logic(folder)
    with pytest.raises(DiscVBRError, match="has no results of analysis 'nothing'.*odi"):
        logic.load_results(node, name="nothing")
    output = logic.load_results(node, name="odi")  # written by the pipeline (discvbr run)
    assert output.shown == "r" and {"r", "p", "p_fdr_bh_joint"} <= set(output.volumes)
    models_before = scene.GetNumberOfNodesByClass("vtkMRMLModelNode")
    logic.show_map_on_mesh(node, output, "p_fdr_bh_joint")
    assert output.shown == "p_fdr_bh_joint"
    assert scene.GetNumberOfNodesByClass("vtkMRMLModelNode") == models_before  # replaced, not added
    drawn = slicer.util.arrayFromModelCellData(output.models.maps()[0], "p")
    assert np.all((drawn >= 0) & (drawn <= 1))
    with pytest.raises(DiscVBRError, match="has no map 'q'"):
        logic.show_map_on_mesh(node, output, "q")
    written = logic.export_tables(output, tmp_path / "tables")
    assert sorted(p.name for p in written) == sorted(f"odi_{t}.csv" for t in output.tables)
    exported = pd.read_csv(tmp_path / "tables" / "odi_roi.csv")
    pd.testing.assert_frame_equal(exported, pd.read_csv(output.folder / "roi.csv"), check_dtype=False)


def test_pipeline_on_a_manifest_runs_in_a_child_process(study, tmp_path):
    manifest, folder = study
    scene, logic, node = _logic(folder)
    with pytest.raises(DiscVBRError, match="manifest not found"):
        logic.start_pipeline(tmp_path / "none.csv", tmp_path / "out")
    process = logic.start_pipeline(manifest, tmp_path / "out", config=tmp_path / "missing.toml")
    assert process.wait(timeout=120) == 2
    assert "missing.toml" in process.error  # the command's one-line message


@pytest.mark.slow
def test_demo_scene_bundle(study, tmp_path):
    """The README's script: a headless scene with the segmentation, registered maps and the r mesh, saved as .mrb."""
    manifest, folder = study
    demo = _demo_module()
    scene, summary = demo.build_scene(manifest, folder, iterations=10)
    path = mrml.save_scene(scene, tmp_path / "demo.mrb")
    loaded = mrml.load_scene(path)

    def by_role(cls, role):
        return [n for n in mrml.iter_nodes(loaded, cls) if n.GetAttribute(mrml.ROLE_ATTRIBUTE) == role]

    segmentations = by_role("vtkMRMLSegmentationNode", "disc segmentation")
    assert len(segmentations) == 1
    segmentation = segmentations[0].GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == list(DISC_LEVELS)
    atlas_maps = by_role("vtkMRMLScalarVolumeNode", "t1rho T atlas")
    assert len(atlas_maps) == 1
    atlas_t = mrml.image_from_volume(atlas_maps[0])
    atlas = T.read_study(folder).atlas
    assert atlas_t.same_grid(atlas) and np.isfinite(atlas_t.array[np.asarray(atlas.array) > 0]).mean() > 0.9
    correlation = [m for m in by_role("vtkMRMLModelNode", "map") if m.GetPolyData().GetCellData().GetArray("r") is not None]
    assert correlation, "no model with correlation scalars"
    r_volume = next(v for v in mrml.iter_nodes(loaded, "vtkMRMLScalarVolumeNode") if v.GetAttribute(mrml.ROLE_ATTRIBUTE) == "statistics r")
    r = mrml.image_from_volume(r_volume).array
    drawn = np.concatenate([slicer.util.arrayFromModelCellData(m, "r") for m in correlation])
    np.testing.assert_allclose(np.sort(drawn), np.sort(r[np.isfinite(r)]), atol=1e-6)
    assert loaded.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") >= 1
    assert summary["registration"].startswith("registered 5 of 5 discs")
