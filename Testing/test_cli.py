"""The discvbr command line: help everywhere, version, user errors on one line."""

from __future__ import annotations

import subprocess
import sys

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


def test_phantom_command_writes_a_readable_cohort(tmp_path):
    assert main(["phantom", "--subjects", "2", "--matrix", "96", "--out", str(tmp_path / "c"), "--seed", "3"]) == 0
    cohort = read_manifest(tmp_path / "c" / "manifest.csv")
    assert len(cohort.subjects) == 2


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "discvbr", "phantom", "--out", str(tmp_path / "c"), "--t1rho-times", "0,10,ten"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["discvbr: error: --t1rho-times: 'ten' is not a number (times are in ms, separated by ';')"]
    assert not (tmp_path / "c").exists()


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["phantom", "--subjects", "1", "--out", str(blocker / "sub")])
    assert code == 2
