"""DiscStatistics' logic and the scene demo on a small phantom study, headless (slicer-core)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import slicer.util
from scipy import stats

from discvbr import DiscVBRError
from discvbr.mrml.scene import ROLE_ATTRIBUTE, iter_nodes, load_scene, new_scene, save_scene
from discvbr.mrml.tables import dataframe_from_table
from discvbr.mrml.volumes import image_from_volume
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
    scene = new_scene()
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
    r = image_from_volume(output.volumes["r"])
    p = image_from_volume(output.volumes["p"])
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
    summary = dataframe_from_table(output.tables["summary"])
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
    job = logic.start_pipeline(manifest, tmp_path / "out", config=tmp_path / "missing.toml")
    assert job.wait(timeout=120) == 2
    assert "missing.toml" in job.process.error  # the command's one-line message
    job.close()


@pytest.mark.slow
def test_demo_scene_bundle(study, tmp_path):
    """The README's script: a headless scene with the segmentation, registered maps and the r mesh, saved as .mrb."""
    manifest, folder = study
    demo = _demo_module()
    scene, summary = demo.build_scene(manifest, folder, iterations=10)
    path = save_scene(scene, tmp_path / "demo.mrb")
    loaded = load_scene(path)

    def by_role(cls, role):
        return [n for n in iter_nodes(loaded, cls) if n.GetAttribute(ROLE_ATTRIBUTE) == role]

    segmentations = by_role("vtkMRMLSegmentationNode", "disc segmentation")
    assert len(segmentations) == 1
    segmentation = segmentations[0].GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == list(DISC_LEVELS)
    atlas_maps = by_role("vtkMRMLScalarVolumeNode", "t1rho T atlas")
    assert len(atlas_maps) == 1
    atlas_t = image_from_volume(atlas_maps[0])
    atlas = T.read_study(folder).atlas
    assert atlas_t.same_grid(atlas) and np.isfinite(atlas_t.array[np.asarray(atlas.array) > 0]).mean() > 0.9
    correlation = [m for m in by_role("vtkMRMLModelNode", "map") if m.GetPolyData().GetCellData().GetArray("r") is not None]
    assert correlation, "no model with correlation scalars"
    r_volume = next(v for v in iter_nodes(loaded, "vtkMRMLScalarVolumeNode") if v.GetAttribute(ROLE_ATTRIBUTE) == "statistics r")
    r = image_from_volume(r_volume).array
    drawn = np.concatenate([slicer.util.arrayFromModelCellData(m, "r") for m in correlation])
    np.testing.assert_allclose(np.sort(drawn), np.sort(r[np.isfinite(r)]), atol=1e-6)
    assert loaded.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") >= 1
    assert summary["registration"].startswith("registered 5 of 5 discs")


def _watch(job, *, lines: int, seconds: float) -> list[tuple[float, object]]:
    """The job's events with the time each was seen, polled every 20 ms until ``lines`` progress lines came
    (or ``seconds`` passed, or the job ended)."""
    import time

    seen, start = [], time.monotonic()
    while time.monotonic() - start < seconds and job.running and sum(e.kind == "progress" for _, e in seen) < lines:
        seen += [(time.monotonic(), e) for e in job.poll()]
        time.sleep(0.02)
    return seen


def test_permutation_job_returns_at_once_reports_progress_and_cancels(study):
    """1000 permutations with TFCE in a child process: start returns while it runs, progress comes, cancel stops it.

    Timings are measured and printed (``benchmarks/bench_slicer_jobs.py`` measures them on
    their own, see BENCHMARKS.md), not asserted: CI machines vary. What is asserted: the job
    is still running when ``start_analysis`` returns (control came back before the work),
    progress lines arrive while it runs, the child is gone when ``cancel`` returns, and a
    cancelled analysis adds nothing to the scene or to the study.
    """
    import time

    manifest, folder = study
    scene, logic, node = _logic(folder, **{T.NAME: "cancelled_tfce", T.PERMUTATIONS: 1000, T.TFCE: "true", T.CORRECTION: "fwe_tfce_joint"})
    nodes_before = scene.GetNumberOfNodes()
    started = time.monotonic()
    job = logic.start_analysis(node)
    returned = time.monotonic() - started
    assert job.running
    events = _watch(job, lines=2, seconds=60.0)  # "starting", then the first step of the analysis
    progress = [t for t, e in events if e.kind == "progress"]
    assert len(progress) >= 2 and job.running
    cancel_started = time.monotonic()
    job.cancel()
    cancel_s = time.monotonic() - cancel_started
    assert job.process.returncode is not None and job.process.cancelled
    assert not job.folder.exists()  # its scratch folder is gone
    with pytest.raises(DiscVBRError, match="cancelled"):
        logic.finish_analysis(job, node)
    assert scene.GetNumberOfNodes() == nodes_before
    assert "cancelled_tfce" not in T.study_analyses(folder)
    print(f"\nstart_analysis returned in {returned:.3f} s; first progress lines after "
          f"{', '.join(f'{t - started:.2f}' for t in progress)} s; cancel ended the child in {cancel_s:.3f} s")


def test_analysis_job_loads_what_the_in_process_run_computes(study):
    manifest, folder = study
    scene, logic, node = _logic(folder, **{T.NAME: "job_odi", T.PERMUTATIONS: 0, T.CORRECTION: "fdr_bh_joint"})
    job = logic.start_analysis(node)
    fractions = []
    assert job.wait(progress=lambda fraction, text: fractions.append(fraction), timeout=300) == 0
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    output = logic.finish_analysis(job, node)
    assert output.name == "job_odi" and "job_odi" in T.study_analyses(folder)
    # the same settings run in this process give the same maps
    scene2, logic2, node2 = _logic(folder, **{T.NAME: "inline_odi", T.PERMUTATIONS: 0, T.CORRECTION: "fdr_bh_joint"})
    inline = read_image(logic2.run_analysis(node2) / "r.nii.gz").array
    np.testing.assert_array_equal(image_from_volume(output.volumes["r"]).array, inline)


def test_results_are_referenced_by_the_parameter_node_and_survive_a_scene_reload(study, tmp_path):
    """Saved and reopened, the scene still knows the loaded results; loading them again replaces, never duplicates."""
    from discvbr.mrml.scene import load_scene, save_scene

    manifest, folder = study
    scene, logic, node = _logic(folder)
    output = logic.load_results(node, name="odi")
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    tables = scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    models = scene.GetNumberOfNodesByClass("vtkMRMLModelNode")
    bundle = save_scene(scene, tmp_path / "stats.mrb")

    reloaded = load_scene(bundle, cache=tmp_path / "cache")
    logic2 = DiscStatisticsLogic(reloaded)
    node2 = logic2.parameter_node()
    restored = logic2.current_output(node2)
    assert restored is not None and restored.name == "odi" and restored.shown == output.shown
    assert set(restored.volumes) == set(output.volumes) and set(restored.tables) == set(output.tables)
    np.testing.assert_array_equal(image_from_volume(restored.volumes["r"]).array, image_from_volume(output.volumes["r"]).array)
    assert restored.models is not None and len(restored.models.maps()) == len(output.models.maps())
    assert logic2.export_tables(restored, tmp_path / "tables")  # the export buttons have what they need
    logic2.load_results(node2, name="odi")
    assert reloaded.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes
    assert reloaded.GetNumberOfNodesByClass("vtkMRMLTableNode") == tables
    assert reloaded.GetNumberOfNodesByClass("vtkMRMLModelNode") == models


def test_statistics_maps_have_colour_legends_with_units(study):
    manifest, folder = study
    scene, logic, node = _logic(folder)
    output = logic.load_results(node, name="odi")
    from discvbr.mrml.legends import colour_legend

    titled = {stem: colour_legend(v).GetTitleText() for stem, v in output.volumes.items() if colour_legend(v) is not None}
    assert set(titled) == {stem for stem in output.volumes if T.map_kind(stem) is not None}
    assert titled["r"] == "r (correlation, no unit)"
    assert titled["p"] == "p (p value, no unit)"
    means = [stem for stem in titled if stem.startswith("mean_")]
    assert all(titled[stem].endswith("(ms)") for stem in means)
    for stem, volume in output.volumes.items():
        if stem in titled:  # the legend shows the colours the volume is drawn with
            assert colour_legend(volume).GetPrimaryDisplayNode().GetID() == volume.GetDisplayNode().GetID()
