"""Bad input, interruption and concurrent runs, through the command line (issue 16).

Each case asserts the exit status, one clear message without a traceback, that nothing
is written outside ``--out`` (or at all, for input refused before any work), and that no
partial output is presented as complete. The cohort is three 2D phantom subjects at
128 x 128 with their true masks in the manifest, so no segmentation runs.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from discvbr import DiscVBRError
from discvbr.cli import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USER_ERROR, main
from discvbr.io import Image, write_image
from discvbr.phantom import PhantomConfig, write_cohort
from discvbr.pipeline.lock import LOCK_NAME, output_lock

REPO = Path(__file__).resolve().parents[1]


#: Steps a session of the cohort records: mask, native maps, five discs, atlas maps.
STEPS_PER_SESSION = 8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, fast_run_settings) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, PhantomConfig(n_subjects=3, matrix=128, seed=5, followup_fraction=0.0, missing_fraction=0.0),
                 with_masks=True)
    (out / "fast.toml").write_text(fast_run_settings)
    return out


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory) -> Path:
    """One uninterrupted CLI run, with a relative --out from its own working directory."""
    work = tmp_path_factory.mktemp("reference")
    result = subprocess.run(
        [sys.executable, "-m", "discvbr", "run", str(cohort / "manifest.csv"), "--out", "results",
         "--config", str(cohort / "fast.toml")],
        cwd=work, capture_output=True, text=True, env=_env(),
    )
    assert result.returncode == 0, result.stderr
    return work / "results"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_clear_error(err: str, *expected: str) -> None:
    """One ``discvbr: error:`` message (it may list several rows), no traceback, naming ``expected``."""
    assert "Traceback" not in err
    assert err.count("discvbr: error:") == 1 and err.startswith("discvbr: error:"), err
    for text in expected:
        assert text in err, (text, err)


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _manifest_copy(cohort: Path, folder: Path, edit) -> Path:
    """A copy of the cohort's manifest in ``folder`` (paths made absolute), changed by ``edit(table)``
    in place, or replaced by what it returns."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    for column in ("t1rho", "t2", "mask"):
        table[column] = [str(cohort / p) for p in table[column]]
    edited = edit(table)
    table = table if edited is None else edited
    path = folder / "manifest.csv"
    table.to_csv(path, index=False)
    return path


def _with_voxel_size(source: Path, target: Path, value: float) -> Path:
    """``source`` (a NIfTI) copied to ``target`` (``.nii``) with voxel size ``value`` along
    its second axis, as a damaged header says it: in pixdim, the qform made from it, no sform."""
    image = nib.load(str(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), str(target))
    raw = bytearray(target.read_bytes())
    struct.pack_into("<f", raw, 76 + 4 * 2, value)  # pixdim[2]
    struct.pack_into("<hh", raw, 252, 1, 0)  # qform_code 1 (from pixdim), sform_code 0
    target.write_bytes(raw)
    return target


# --------------------------------------------------------------------------- 1. ids that would escape --out


@pytest.mark.parametrize("column, value", [("subject", "../../escaped"), ("session", "/tmp/escaped"), ("subject", "sub 01")])
def test_run_refuses_an_id_that_is_not_a_plain_name(cohort, tmp_path, capsys, column, value):
    def edit(table):
        table.loc[1, column] = value

    manifest = _manifest_copy(cohort, tmp_path / "in", edit)
    before = _tree(tmp_path)
    code, _, err = _cli(capsys, "run", manifest, "--out", tmp_path / "out" / "results", "--config", cohort / "fast.toml")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, f"row 3, field '{column}'", repr(value))
    assert _tree(tmp_path) == before, "nothing is written anywhere, --out included"
    assert not Path("/tmp/escaped").exists()


def test_a_cohort_built_in_python_is_checked_too(cohort, tmp_path):
    from dataclasses import replace

    from discvbr.manifest import Cohort, read_manifest
    from discvbr.pipeline import run_pipeline

    entries = list(read_manifest(cohort / "manifest.csv").entries)
    entries[0] = replace(entries[0], session="../../escaped")
    with pytest.raises(DiscVBRError, match=r"session of subject 'sub-01': '\.\./\.\./escaped' is not a valid id"):
        run_pipeline(Cohort(tuple(entries)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_register_refuses_a_subject_id_or_a_level_that_is_not_a_plain_name(cohort, tmp_path, capsys):
    mask = cohort / "sub-01" / "ses-baseline" / "discs.nii.gz"
    code, _, err = _cli(capsys, "register", "--mask", mask, "--subject", "../escaped", "--out", tmp_path / "out")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "--subject", "'../escaped'")
    # level names become folder names too (transforms/<LEVEL>): only the five disc names pass
    code, _, err = _cli(capsys, "register", "--mask", mask, "--levels", "L4L5,../../escaped", "--out", tmp_path / "out")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "unknown disc level '../../ESCAPED'")
    assert _tree(tmp_path) == set()


def test_analysis_and_atlas_names_from_the_settings_are_checked_before_any_work(cohort, tmp_path, capsys):
    analysis = tmp_path / "analysis.toml"
    analysis.write_text('[[statistics.analyses]]\nname = "../../escaped"\nkind = "voxel"\n')
    code, _, err = _cli(capsys, "run", cohort / "manifest.csv", "--out", tmp_path / "out", "--config", analysis)
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "statistics.analyses[0].name", "'../../escaped'")
    atlas = tmp_path / "atlas.toml"
    atlas.write_text('[registration]\natlas = "../../escaped"\n')
    code, _, err = _cli(capsys, "run", cohort / "manifest.csv", "--out", tmp_path / "out", "--config", atlas)
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "atlas", "'../../escaped'")
    assert not (tmp_path / "out").exists()


def test_build_atlas_refuses_a_name_that_is_not_a_plain_name(tmp_path, capsys):
    code, _, err = _cli(capsys, "build-atlas", "--phantom", "healthy", "--name", "../escaped", "--out", tmp_path / "atlas")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "--name", "'../escaped'")
    assert not (tmp_path / "atlas").exists()


def test_statistics_refuse_a_subject_id_that_is_not_a_plain_name():
    from discvbr.stats import analyze_discs

    maps = np.random.default_rng(0).normal(100, 5, (4, 1, 6, 6)).astype(np.float32)
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, 1:5, 1:5] = 1
    with pytest.raises(DiscVBRError, match=r"subject id: '\.\./s2' is not a valid id"):
        analyze_discs("voxel_by_time", maps, labels=labels, second_maps=maps + 1, subjects=["s1", "../s2", "s3", "s4"],
                      n_permutations=0)


# --------------------------------------------------------------------------- 2. resume from any working directory


def _image_times(out: Path) -> dict[Path, int]:
    """Modification times of the sessions' and the statistics' images (the atlas is copied every run)."""
    return {p: p.stat().st_mtime_ns for folder in ("subjects", "stats") for p in (out / folder).rglob("*.nii.gz")}


@pytest.mark.slow
def test_resume_works_with_relative_and_absolute_out_from_any_working_directory(
    cohort, reference, tmp_path, monkeypatch, capsys
):
    # the folder is moved too: its step records must not depend on where it was written
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(reference, moved)
    written = _image_times(moved)
    assert any("stats/t1rho_vs_t2" in str(p) for p in written)
    manifest = cohort / "manifest.csv"
    for cwd, out in ((tmp_path, Path("elsewhere") / "results"), (tmp_path / "elsewhere", Path("results")), (REPO, moved)):
        monkeypatch.chdir(cwd)
        code, _, err = _cli(capsys, "run", manifest, "--out", out, "--config", manifest.parent / "fast.toml")
        assert code == 0, err
        for session in moved.glob("subjects/*/*/session.json"):
            skipped = json.loads(session.read_text())["skipped_steps"]
            assert len(skipped) == STEPS_PER_SESSION, (cwd, out, skipped)
        # no image rewritten: neither a session's nor the statistics' maps
        assert _image_times(moved) == written, (cwd, out)


# --------------------------------------------------------------------------- 3. damaged geometry


@pytest.mark.parametrize("voxel_size", [0.0, float("nan")])
def test_zero_or_non_finite_voxel_size_is_refused_by_segment_fit_and_run(cohort, tmp_path, capsys, voxel_size):
    series = _with_voxel_size(cohort / "sub-01" / "ses-baseline" / "t1rho.nii.gz", tmp_path / "in" / "t1rho.nii", voxel_size)
    times = pd.read_csv(cohort / "manifest.csv")["t1rho_times"][0]
    expected = ("voxel size", str(series))
    code, out, err = _cli(capsys, "segment", series, "--out", tmp_path / "seg")
    assert code == EXIT_USER_ERROR and "PROGRESS" not in out
    _one_clear_error(err, *expected)
    code, _, err = _cli(capsys, "fit", "--series", series, "--times", times.replace(";", ","), "--out", tmp_path / "fit")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, *expected)

    def edit(table):
        table.loc[0, "t1rho"] = str(series)

    manifest = _manifest_copy(cohort, tmp_path / "in", edit)
    code, _, err = _cli(capsys, "run", manifest, "--out", tmp_path / "run", "--config", cohort / "fast.toml")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "row 2 (subject sub-01), field 't1rho'", *expected)
    assert _tree(tmp_path) == {"in", "in/t1rho.nii", "in/manifest.csv"}, "no output folder is left behind"


# --------------------------------------------------------------------------- 4. exit statuses


def test_run_exits_3_when_a_session_failed(cohort, tmp_path, capsys):
    # one session whose header reads (so the manifest is valid) but whose voxels do not
    broken = tmp_path / "in" / "t2.nii.gz"
    broken.parent.mkdir()
    data = (cohort / "sub-01" / "ses-baseline" / "t2.nii.gz").read_bytes()
    broken.write_bytes(data[: len(data) // 2])

    def edit(table):
        table.loc[0, "t2"] = str(broken)
        return table.iloc[:1]

    manifest = _manifest_copy(cohort, tmp_path / "in", edit)
    code, out, err = _cli(capsys, "run", manifest, "--out", tmp_path / "run", "--config", cohort / "fast.toml")
    assert code == EXIT_INCOMPLETE
    assert "Traceback" not in err and "1 of 1 session(s) failed" in err
    assert "sub-01/baseline input" in out and str(broken) in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sessions"]["failed"] == 1
    # DiscStatistics reports this status as a warning that points at files the run wrote.
    from discvbr.extension.statistics import DiscStatisticsLogic

    level, message = DiscStatisticsLogic.pipeline_outcome(code, None, tmp_path / "run")
    assert level == "warning"
    named = [Path(word.rstrip(".")) for word in message.split() if word.startswith(str(tmp_path))]
    assert len(named) == 3 and all(path.exists() for path in named), named
    assert DiscStatisticsLogic.pipeline_outcome(EXIT_USER_ERROR, "bad manifest", tmp_path)[0] == "error"


def test_fit_exits_3_with_a_warning_when_nothing_could_be_fitted(tmp_path, capsys):
    zeros = write_image(tmp_path / "zeros.nii.gz", Image(np.zeros((1, 8, 8, 4), np.float32), np.diag([4.0, 1, 1, 1])))
    code, _, err = _cli(capsys, "fit", "--series", zeros, "--times", "0,10,40,80", "--out", tmp_path / "maps")
    assert code == EXIT_INCOMPLETE
    assert "Traceback" not in err and "warning: no voxel could be fitted (LOW_SIGNAL 64)" in err
    assert json.loads((tmp_path / "maps" / "fit.json").read_text())["voxels"]["valid"] == 0


# --------------------------------------------------------------------------- 5. the whole manifest checked first


def test_every_bad_row_is_listed_before_any_work(cohort, tmp_path, capsys):
    def edit(table):
        table.loc[0, "t1rho_times"] = "0;10;40"  # the series has four echoes
        table.loc[2, "subject"] = "../x"
        table.loc[1, "mask"] = str(tmp_path)  # a folder

    manifest = _manifest_copy(cohort, tmp_path / "in", edit)
    code, _, err = _cli(capsys, "run", manifest, "--out", tmp_path / "out", "--config", cohort / "fast.toml")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "has 3 problems", "row 2 (subject sub-01), field 't1rho'", "holds 4 echo(es) but 't1rho_times' gives 3",
                     "row 3 (subject sub-02), field 'mask'", "is a folder, not a file", "row 4, field 'subject'")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 6. interruption


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


#: Outputs that carry times, durations or the output folder's own name, and the fields
#: that hold them: only these fields may differ between an uninterrupted and an
#: interrupted-then-resumed run; everything else must be byte-identical.
VARYING_JSON_FIELDS = {
    "provenance.json": ("created",),  # run and per-analysis provenance: the time of writing
    "summary.json": ("seconds", "out", "report"),  # the run's duration; where it wrote (the folder as given)
    "registration.json": ("seconds",),  # per disc: how long elastix took
    "session.json": ("log", "skipped_steps"),  # durations in the log; which steps a resumed run skipped
}


def _comparable(name: str, content: bytes) -> object:
    base = Path(name).name
    if "/.steps/" in f"/{name}":  # a step's record: its key and outputs must match; its duration may not
        record = json.loads(content)
        record.pop("seconds")
        return record
    if base in VARYING_JSON_FIELDS:
        value = json.loads(content)
        for key in VARYING_JSON_FIELDS[base]:
            value.pop(key, None)
        for row in value.get("registration_qc", []):  # session.json: elastix's duration per disc
            row.pop("seconds")
        return value
    if base == "registration_qc.csv":  # its 'seconds' column is elastix's duration
        return pd.read_csv(io.BytesIO(content)).drop(columns="seconds").to_csv(index=False)
    if base == "report.html":  # its provenance table says when it was written
        return re.sub(rb"<tr><th>created</th><td>[^<]*</td></tr>", b"", content)
    return content


@pytest.mark.slow
def test_sigint_at_a_random_step_then_rerun_gives_the_uninterrupted_outputs(cohort, reference, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    # what an earlier complete run left: it must not look complete next to this run's partial outputs
    for name in ("summary.json", "report.html"):
        (out / name).write_text("from an earlier run")
    sessions = len(pd.read_csv(cohort / "manifest.csv"))
    stop_after = int(np.random.default_rng(16).integers(1, sessions * STEPS_PER_SESSION))
    command = [sys.executable, "-m", "discvbr", "run", str(cohort / "manifest.csv"), "--out", str(out),
               "--config", str(cohort / "fast.toml")]
    # preexec_fn: a test run started in the background (nohup, &) hands its children SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler: the run would finish
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(out.glob("subjects/*/*/.steps/*.json"))) >= stop_after:
            break
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before step {stop_after}"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "interrupted" in err
    assert "run interrupted" in (out / "discvbr.log").read_text()
    assert not (out / "summary.json").exists() and not (out / "report.html").exists(), "a partial run never looks complete"
    assert not (out / LOCK_NAME).exists() and not list(out.rglob(".tmp-*"))

    rerun = subprocess.run(command, capture_output=True, text=True, env=_env())
    assert rerun.returncode == 0, rerun.stderr
    expected, resumed = _files(reference), _files(out)
    skip = {"discvbr.log"}  # a log of what happened, with times: two runs' worth here, by design
    assert set(expected) - skip == set(resumed) - skip
    different = [name for name in sorted(set(expected) - skip)
                 if _comparable(name, expected[name]) != _comparable(name, resumed[name])]
    assert not different, f"stopped after step {stop_after}; differ: {different}"


# --------------------------------------------------------------------------- 7. two runs into one folder


def test_a_second_run_into_a_folder_in_use_is_refused(cohort, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    with output_lock(out, command="discvbr run"):
        before = _tree(tmp_path)
        code, _, err = _cli(capsys, "run", cohort / "manifest.csv", "--out", out, "--config", cohort / "fast.toml")
        assert code == EXIT_USER_ERROR
        _one_clear_error(err, f"output folder {out} is in use by discvbr run (pid {os.getpid()}", str(out / LOCK_NAME))
        code, _, err = _cli(capsys, "demo", "--out", out)
        assert code == EXIT_USER_ERROR and "in use by discvbr run" in err
        assert _tree(tmp_path) == before
    assert not (out / LOCK_NAME).exists(), "the lock goes with its holder"


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    import socket

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "discvbr run"}))
    with caplog.at_level("WARNING", logger="discvbr"), output_lock(tmp_path, command="test") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"process {pid} is gone" in caplog.text
    # a lock whose owner cannot be told (another host) is never taken over
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": "another-host", "command": "discvbr run"}))
    with pytest.raises(DiscVBRError, match="in use by discvbr run"):
        with output_lock(tmp_path, command="test"):
            pass


# --------------------------------------------------------------------------- 8. smaller


def test_a_folder_given_for_a_file_is_named_as_such(tmp_path, capsys):
    code, _, err = _cli(capsys, "fit", "--series", tmp_path, "--times", "0,10", "--out", tmp_path / "maps")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, f"{tmp_path} is a folder, not a file")
    code, _, err = _cli(capsys, "run", tmp_path, "--out", tmp_path / "out")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, f"manifest {tmp_path} is a folder, not a file")


def test_a_times_typo_names_both_separators(tmp_path, capsys):
    series = write_image(tmp_path / "s.nii.gz", Image(np.ones((1, 4, 4, 3), np.float32), np.diag([4.0, 1, 1, 1])))
    code, _, err = _cli(capsys, "fit", "--series", series, "--times", "0,1O,20", "--out", tmp_path / "maps")
    assert code == EXIT_USER_ERROR
    _one_clear_error(err, "'1O' is not a number", "separated by ',' or ';'")


def test_a_checkpoint_with_pickled_objects_is_not_loaded(tmp_path):
    import torch

    from discvbr.segmentation.train import _load_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "history": [{"loss": 0.5}], "model": {"w": torch.zeros(2)}}, path)
    assert _load_checkpoint(path, "cpu")["history"] == [{"loss": 0.5}]
    torch.save({"epoch": 1, "hook": Path("anything")}, path)  # any class other than tensors and plain containers
    with pytest.raises(DiscVBRError, match="not loaded"):
        _load_checkpoint(path, "cpu")


# --------------------------------------------------------------------------- 9. the demo keeps its promises


@pytest.mark.parametrize("subjects, fraction", [(20, 0.3), (7, 0.5), (4, 0.0)])
def test_the_follow_up_fraction_is_exact(subjects, fraction):
    from discvbr.phantom.cohort import draw_subject

    for seed in range(4):
        config = PhantomConfig(n_subjects=subjects, followup_fraction=fraction, seed=seed)
        with_followup = sum(draw_subject(config, i).followup is not None for i in range(subjects))
        assert with_followup == int(np.floor(fraction * subjects + 0.5))


def test_the_documented_demo_permutations_are_what_it_runs():
    from discvbr.pipeline.config import StatisticsSettings

    permutations = f"{StatisticsSettings().permutations:,}"
    assert f"{permutations}-permutation" in (REPO / "BENCHMARKS.md").read_text()
    assert f"{permutations} permutations" in (REPO / "README.md").read_text()
