"""End to end: a cohort through the pipeline, resumed after a kill, a corrupt subject, Dask."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from discvbr import DiscVBRError
from discvbr.io import read_image
from discvbr.phantom import PhantomConfig, write_cohort
from discvbr.pipeline import PipelineConfig, run_pipeline
from discvbr.pipeline.config import AnalysisSettings, FigureSettings, RegistrationSettings, StatisticsSettings



def _fast_config(figures: bool = False) -> PipelineConfig:
    return PipelineConfig(
        registration=RegistrationSettings(iterations=40),
        statistics=StatisticsSettings(
            permutations=99,
            analyses=[
                AnalysisSettings(name="odi_groups", kind="group", variable="odi", cut=40.0),
                AnalysisSettings(name="t1rho_vs_t2", kind="voxel"),
            ],
        ),
        figures=FigureSettings(enabled=figures, width=300, height=340),
    )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three 2D subjects at 128 x 128 with their true masks in the manifest (no segmentation needed)."""
    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, PhantomConfig(n_subjects=3, matrix=128, seed=5, followup_fraction=0.0, missing_fraction=0.0),
                 with_masks=True)
    return out


@pytest.fixture(scope="module")
def finished(cohort, tmp_path_factory):
    """One uninterrupted in-process run (with figures and the report)."""
    out = tmp_path_factory.mktemp("run")
    return run_pipeline(cohort / "manifest.csv", out, config=_fast_config(figures=True))


def _atlas_maps(out: Path) -> dict[str, np.ndarray]:
    maps = {}
    for path in sorted((out / "subjects").glob("*/*/maps/atlas/*_T.nii.gz")):
        maps[str(path.relative_to(out))] = np.asarray(read_image(path).array)
    for path in sorted((out / "stats").glob("*/p*.nii.gz")):
        maps[str(path.relative_to(out))] = np.asarray(read_image(path).array)
    return maps


def _assert_same_outputs(a: Path, b: Path) -> None:
    maps_a, maps_b = _atlas_maps(a), _atlas_maps(b)
    assert maps_a.keys() == maps_b.keys() and maps_a
    for name in maps_a:
        np.testing.assert_allclose(maps_a[name], maps_b[name], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)


@pytest.mark.slow
def test_end_to_end_outputs(finished, cohort):
    out = finished.out
    assert {s.status for s in finished.sessions} == {"ok"}
    n_sessions = len(pd.read_csv(cohort / "manifest.csv"))
    assert len(finished.sessions) == n_sessions
    session = out / "subjects" / "sub-01" / "baseline"
    for rel in ("masks/discs.nii.gz", "maps/native/t1rho_T.nii.gz", "maps/atlas/t2_T.nii.gz", "registered/t1rho.nii.gz",
                "transforms/L4L5/TransformParameters.1.txt", "session.json"):
        assert (session / rel).is_file(), rel
    atlas = np.asarray(read_image(out / "atlas" / "labels.nii.gz").array)
    t1rho = np.asarray(read_image(session / "maps" / "atlas" / "t1rho_T.nii.gz").array)
    assert t1rho.shape == atlas.shape
    # most atlas-disc voxels carry a fitted value, nothing outside the atlas discs
    assert np.isfinite(t1rho[atlas > 0]).mean() > 0.95 and not np.isfinite(t1rho[atlas == 0]).any()
    # registration keeps each disc's values: whole-disc means before and after agree within 5 %
    roi = pd.read_csv(out / "tables" / "roi_means.csv")
    wide = roi.pivot_table(index=["subject", "session", "level", "map"], columns="space", values="mean_T_ms")
    np.testing.assert_allclose(wide["atlas"], wide["native"], rtol=0.05)
    qc = pd.read_csv(out / "tables" / "registration_qc.csv")
    assert len(qc) == n_sessions * 5 and (qc["dice"] > 0.9).all() and (qc["folded_fraction"] == 0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["analyses"]["t1rho_vs_t2"]["status"] == "ok"
    assert (out / "stats" / "t1rho_vs_t2" / "r.nii.gz").is_file()
    provenance = json.loads((out / "provenance.json").read_text())
    assert len(provenance["inputs"]["files_sha256"]) == n_sessions * 3  # two series and a mask per session
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3


@pytest.mark.slow
def test_kill_then_rerun_gives_the_uninterrupted_outputs(cohort, finished, tmp_path, fast_run_settings):
    out = tmp_path / "run"
    config = tmp_path / "fast.toml"
    config.write_text(fast_run_settings)
    command = [sys.executable, "-m", "discvbr", "run", str(cohort / "manifest.csv"), "--out", str(out), "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = psutil.Process(process.pid)
    deadline = time.monotonic() + 240
    # killed while its disc workers run, once a session is complete
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(out.glob("subjects/*/*/session.json"))) >= 1 and run.children():
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    workers = run.children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # its disc workers end too (they held ~800 MB each, for ever, before they watched their parent)
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert workers and not alive, f"workers left behind: {[p.pid for p in alive]}"
    assert not (out / "summary.json").exists()
    resumed = run_pipeline(cohort / "manifest.csv", out, config=_fast_config())
    assert sum(bool(s.skipped_steps) for s in resumed.sessions) >= 1
    assert not list(out.rglob(".tmp-*")), "no half-written file survives"
    _assert_same_outputs(finished.out, out)


@pytest.mark.slow
def test_a_corrupt_subject_is_reported_and_the_others_finish(cohort, tmp_path):
    copy = tmp_path / "cohort"
    shutil.copytree(cohort, copy)
    broken = copy / "sub-02" / "ses-baseline" / "t2.nii.gz"
    # the header still reads (the manifest is checked from headers before any work); the voxels do not
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    result = run_pipeline(copy / "manifest.csv", tmp_path / "run", config=_fast_config())
    status = {(s.subject, s.session): s for s in result.sessions}
    failed = status[("sub-02", "baseline")]
    assert failed.status == "failed" and "t2.nii.gz" in failed.failures[0]["message"]
    assert all(s.status == "ok" for key, s in status.items() if key != ("sub-02", "baseline"))
    failures = pd.read_csv(tmp_path / "run" / "tables" / "failures.csv")
    assert (failures["subject"] == "sub-02").any()


@pytest.mark.slow
def test_two_dask_workers_give_the_in_process_results(cohort, finished, tmp_path):
    result = run_pipeline(cohort / "manifest.csv", tmp_path / "run", config=_fast_config(), workers=2)
    assert {s.status for s in result.sessions} == {"ok"}
    _assert_same_outputs(finished.out, tmp_path / "run")
    # what the sessions logged in the worker processes is in the run's log file
    run_log = (tmp_path / "run" / "discvbr.log").read_text()
    for session in result.sessions:
        assert f"[worker] {session.subject}/{session.session}: ok in" in run_log


def test_bad_manifest_and_unwritable_output_are_refused(tmp_path, cohort):
    garbage = tmp_path / "manifest.csv"
    garbage.write_bytes(b"\x00\xff\x10 not a table")
    with pytest.raises(DiscVBRError, match="manifest"):
        run_pipeline(garbage, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a refused manifest leaves no output folder behind"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DiscVBRError, match="not writable"):
        run_pipeline(cohort / "manifest.csv", blocker / "out")


@pytest.mark.slow
def test_demo_on_a_tiny_cohort_reports_against_the_truth(tmp_path):
    from discvbr.pipeline import run_demo

    config = _fast_config()
    # seed 1: two of the four subjects have ODI <= 40, so the ODI-groups comparison runs
    result = run_demo(tmp_path, subjects=4, seed=1, followup_fraction=0.0, config=config)
    summary = json.loads(result.summary_path.read_text())
    evaluation = summary["evaluation"]
    # the shipped model segments every disc of the phantom well, and the mean disc T1rho
    # from automatic masks agrees with the one from the true masks
    assert min(evaluation["segmentation_dice"].values()) > 0.85
    agreement = evaluation["biomarker_agreement"]["t1rho"]
    assert agreement["n"] == 4 * 5 and agreement["pearson_r"] > 0.95
    assert abs(evaluation["fit_error_t1rho_ms"]["median_error"]) < 1.0
    assert set(evaluation["effects"]) == {"odi_groups", "t1rho_vs_t2"}
    assert evaluation["effects"]["odi_groups"]["status"] == "ok"
    # the effect's strength where it was planted: the median |t| over the region of the saved t map
    from discvbr.io import read_image
    from discvbr.phantom import EFFECTS
    from discvbr.phantom.coordinates import effect_weight_map

    atlas_labels = read_image(tmp_path / "results" / "atlas" / "labels.nii.gz")
    region = effect_weight_map(atlas_labels, EFFECTS["odi"]) >= 0.5
    t = np.asarray(read_image(tmp_path / "results" / "stats" / "odi_groups" / "t.nii.gz").array)
    assert evaluation["effects"]["odi_groups"]["median_abs_t_in_region"] == pytest.approx(np.nanmedian(np.abs(t[region])), abs=0.005)
    assert (tmp_path / "results" / "report.html").is_file()
    assert (tmp_path / "results" / "tables" / "agreement_true_vs_automatic_masks.csv").is_file()


@pytest.mark.slow
def test_a_new_registration_method_redoes_the_registrations_only(cohort, finished, tmp_path, monkeypatch):
    # a cohort run again after DiscVBR's registration changed must not keep the old
    # transforms next to new ones: the method is part of each registration's record
    import discvbr.registration.disc as disc

    out = tmp_path / "run"
    shutil.copytree(finished.out, out)
    monkeypatch.setattr(disc, "REGISTRATION_METHOD", disc.REGISTRATION_METHOD + " (changed)")
    again = run_pipeline(cohort / "manifest.csv", out, config=_fast_config())
    for session in again.sessions:
        assert session.status == "ok"
        assert not any(step.startswith("register-") for step in session.skipped_steps), session.skipped_steps
        assert {"mask", "native"} <= set(session.skipped_steps), session.skipped_steps


@pytest.mark.slow
def test_own_parameter_files_are_used_and_an_edit_redoes_only_the_registrations(cohort, finished, tmp_path):
    from dataclasses import replace

    from discvbr.registration.params import PARAMETER_DIR

    params = tmp_path / "params"
    shutil.copytree(PARAMETER_DIR, params)
    fast = _fast_config()
    config = replace(fast, registration=replace(fast.registration, parameter_folder=str(params)))
    bad = replace(fast, registration=replace(fast.registration, parameter_folder=str(tmp_path / "nowhere")))
    with pytest.raises(DiscVBRError, match="registration.parameter_folder"):
        run_pipeline(cohort / "manifest.csv", tmp_path / "refused", config=bad)
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "run"
    shutil.copytree(finished.out, out)
    same_files = run_pipeline(cohort / "manifest.csv", out, config=config)
    # the shipped maps copied into a folder of one's own register exactly as the shipped ones
    _assert_same_outputs(finished.out, out)
    for session in same_files.sessions:
        assert not any(step.startswith("register-") for step in session.skipped_steps), session.skipped_steps

    affine = params / "affine-2d.txt"
    affine.write_text(affine.read_text().replace("(MaximumNumberOfIterations 250)", "(MaximumNumberOfIterations 20)"))
    edited = run_pipeline(cohort / "manifest.csv", out, config=config)
    for session in edited.sessions:
        assert session.status == "ok"
        assert not any(step.startswith("register-") for step in session.skipped_steps), session.skipped_steps
        # the mask and the native fits do not depend on registration settings
        assert {"mask", "native"} <= set(session.skipped_steps), session.skipped_steps
