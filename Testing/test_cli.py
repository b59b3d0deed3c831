"""The discvbr command line: help everywhere, version, user errors on one line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from discvbr import __version__
from discvbr.cli import app, main
from discvbr.manifest import read_manifest


def _commands() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"discvbr {__version__}"


@pytest.mark.parametrize("command", _commands())
def test_every_subcommand_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and command in out


def _digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_phantom_command_writes_a_readable_deterministic_cohort(tmp_path):
    from discvbr.io import read_image, read_series

    for name in ("c", "again"):
        assert main(["phantom", "--subjects", "2", "--matrix", "96", "--out", str(tmp_path / name), "--seed", "3"]) == 0
    cohort = read_manifest(tmp_path / "c" / "manifest.csv")
    assert len(cohort.subjects) == 2
    for entry in cohort:
        series = read_series(entry.series["t1rho"].paths, entry.series["t1rho"].times)
        labels = read_image(Path(entry.series["t1rho"].paths[0]).parent / "discs.nii.gz")  # the true disc labels
        assert series.data.shape[:3] == labels.shape == (1, 96, 96)
        assert set(np.unique(labels.array)) == {0, 1, 2, 3, 4, 5}
    # the same seed writes the same bytes; only the cohort's run time may differ
    first, second = _digests(tmp_path / "c"), _digests(tmp_path / "again")
    assert first.keys() == second.keys()
    differ = [name for name in first if first[name] != second[name]]
    assert differ in ([], ["truth.json"]), differ
    truths = [json.loads((tmp_path / name / "truth.json").read_text()) for name in ("c", "again")]
    for truth in truths:
        truth.pop("seconds", None)
    assert truths[0] == truths[1]


def test_import_pulls_in_neither_slicer_nor_qt():
    code = ("import sys, discvbr, discvbr.cli, discvbr.mrml, discvbr.extension.segmentation, "
            "discvbr.extension.relaxometry, discvbr.extension.statistics; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'slicer', 'qt', 'ctk', 'PythonQt', 'vtkmodules'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_run_with_a_bad_manifest_is_one_line_and_writes_nothing(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject,session,t1rho,t1rho_times\nsub-01,baseline,missing.nii.gz,0;10;40;80\n")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "discvbr", "run", str(manifest), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "missing.nii.gz" in result.stderr and "sub-01" in result.stderr
    assert not out.exists()


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "discvbr", "phantom", "--out", str(tmp_path / "c"), "--t1rho-times", "0,10,ten"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["discvbr: error: --t1rho-times: 'ten' is not a number (times are in ms, separated by ',' or ';')"]
    assert not (tmp_path / "c").exists()


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["phantom", "--subjects", "1", "--out", str(blocker / "sub")])
    assert code == 2


def test_demo_passes_its_follow_up_share_and_defaults_to_the_apis(tmp_path, monkeypatch, capsys):
    # the demo's longitudinal check needs enough follow-ups for its sign-flip test; the command
    # line must give what it is asked for and, unasked, the same share as run_demo
    import inspect

    import discvbr.pipeline.demo as demo
    from discvbr.errors import DiscVBRError

    asked = []

    def fake_run_demo(out, **options):
        asked.append(options["followup_fraction"])
        raise DiscVBRError("stopped by the test")

    default = inspect.signature(demo.run_demo).parameters["followup_fraction"].default
    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path / "a"), "--followup-fraction", "0.25"]) == 2
    assert main(["demo", "--out", str(tmp_path / "b")]) == 2
    assert asked == [0.25, default]
    assert "stopped by the test" in capsys.readouterr().err
