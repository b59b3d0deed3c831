"""Tests of ``discvbr fit``: maps on the input grid, the JSON summary, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from discvbr.cli import main
from discvbr.fitting import FitStatus, fit_monoexp
from discvbr.io import Image, write_image
from discvbr.levels import DISC_LEVELS

TIMES = [0.0, 10.0, 40.0, 80.0]
SHAPE = (2, 24, 40)
#: T (ms) of the tissue (label 0) and of discs 1..5; disc 5 is beyond the T2 preset's 150 ms.
DISC_T = (300.0, 60.0, 80.0, 100.0, 120.0, 220.0)
AIR_ROWS = slice(21, None)
SIGMA = 10.0


@pytest.fixture()
def study(tmp_path):
    """Four echoes (3D NIfTIs and one 4D file) of a volume with five discs of known T, tissue
    around them and a band of air (no signal) at the top rows."""
    rng = np.random.default_rng(30)
    affine = np.array([[0.0, 0.0, 0.6, -12.0], [0.0, 0.6, 0.0, 4.0], [4.0, 0.0, 0.0, -3.0], [0, 0, 0, 1]])
    labels = np.zeros(SHAPE, np.int16)
    for label in range(1, 6):
        labels[:, 4:20, 1 + 8 * (label - 1) : 7 + 8 * (label - 1)] = label
    T = np.choose(labels, DISC_T)
    nu = 1000.0 * np.exp(-np.array(TIMES) / T[..., None])
    nu[:, AIR_ROWS] = 0.0
    data = np.hypot(nu + rng.normal(size=nu.shape) * SIGMA, rng.normal(size=nu.shape) * SIGMA).astype(np.float32)
    data[0, 10, 10, 2] = np.nan  # a damaged voxel inside disc 2
    echoes = []
    for i in range(len(TIMES)):
        echoes.append(tmp_path / f"echo{i + 1}.nii.gz")
        write_image(echoes[-1], Image(data[..., i], affine))
    write_image(tmp_path / "series.nii.gz", Image(data, affine))
    write_image(tmp_path / "labels.nii.gz", Image(labels, affine))
    return {"dir": tmp_path, "echoes": echoes, "data": data, "labels": labels, "affine": affine}


def test_fit_writes_maps_on_the_input_grid_and_a_summary(study, capsys):
    out = study["dir"] / "maps"
    argv = ["fit", "--series", *map(str, study["echoes"]), "--times", "0,10,40,80"]
    argv += ["--mask", str(study["dir"] / "labels.nii.gz"), "--preset", "t2", "--out", str(out)]
    assert main(argv) == 0
    assert "valid" in capsys.readouterr().out
    expected = fit_monoexp(study["data"], TIMES, study["labels"], preset="t2")
    for name in ("T", "S0", "r2", "T_sd", "status"):
        image = nib.load(str(out / f"{name}.nii.gz"))
        np.testing.assert_allclose(image.affine, study["affine"], atol=1e-5)
        np.testing.assert_array_equal(np.asarray(image.dataobj), getattr(expected, name))
    summary = json.loads((out / "fit.json").read_text())
    assert summary["voxels"] == {
        "total": int(np.prod(SHAPE)),
        "fitted": int((study["labels"] > 0).sum()),
        "valid": int(expected.valid.sum()),
    }
    assert summary["status_counts"]["NONFINITE_INPUT"] == 1
    assert summary["status_counts"] == expected.status_counts()
    # T2 preset (< 150 ms): disc 5 (T = 220 ms) is out of range, the others valid.
    assert summary["status_counts"]["T_OUT_OF_RANGE"] == int((study["labels"] == 5).sum())
    for label in range(1, 6):
        entry = summary["labels"][str(label)]
        assert entry["level"] == DISC_LEVELS[label - 1]
        inside = (study["labels"] == label) & expected.valid
        assert entry["valid"] == int(inside.sum())
        if label < 5:
            assert entry["median_T_ms"] == pytest.approx(float(np.median(expected.T[inside])))
            assert abs(entry["median_T_ms"] - DISC_T[label]) < 1.0  # ground truth
        else:
            assert entry["median_T_ms"] is None
    assert summary["parameters"]["t_max_ms"] == 150.0 and summary["parameters"]["method"] == "lm"
    assert summary["provenance"]["discvbr"] == summary["discvbr_version"]


def test_fit_accepts_one_4d_file_and_repeated_series_flags(study):
    out4d, outrep = study["dir"] / "a", study["dir"] / "b"
    assert main(["fit", "--series", str(study["dir"] / "series.nii.gz"), "--times", "0;10;40;80", "--out", str(out4d)]) == 0
    repeated = [a for p in study["echoes"] for a in ("--series", str(p))]
    assert main(["fit", *repeated, "--times", "0,10,40,80", "--out", str(outrep)]) == 0
    a = np.asarray(nib.load(str(out4d / "T.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(outrep / "T.nii.gz")).dataobj)
    np.testing.assert_array_equal(a, b)
    summary = json.loads((out4d / "fit.json").read_text())
    assert "labels" not in summary  # no mask, no per-label medians
    status = np.asarray(nib.load(str(out4d / "status.nii.gz")).dataobj)
    assert status[0, 10, 10] == FitStatus.NONFINITE_INPUT


def test_rician_with_noise_estimated_from_background(study):
    argv = ["fit", "--series", str(study["dir"] / "series.nii.gz"), "--times", "0,10,40,80", "--method", "rician"]
    air = np.zeros(SHAPE, np.uint8)
    air[:, AIR_ROWS] = 1
    write_image(study["dir"] / "air.nii.gz", Image(air, study["affine"]))
    mask = ["--mask", str(study["dir"] / "labels.nii.gz")]
    out = study["dir"] / "rician"
    assert main([*argv, *mask, "--background", str(study["dir"] / "air.nii.gz"), "--out", str(out)]) == 0
    summary = json.loads((out / "fit.json").read_text())
    # 2 x 3 x 40 x 4 = 960 Rayleigh samples: the estimate's relative SE is ~1.6 %.
    assert abs(summary["parameters"]["noise_sigma"] / SIGMA - 1) < 0.06
    assert abs(summary["labels"]["1"]["median_T_ms"] - DISC_T[1]) < 1.0
    write_image(study["dir"] / "none.nii.gz", Image(np.zeros(SHAPE, np.uint8), study["affine"]))
    assert main([*argv, "--background", str(study["dir"] / "none.nii.gz"), "--out", str(out / "x")]) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--times", "0,10,40"], "4 echo(es) but 3 times"),
        (["--times", "0,40,10,80"], "increasing"),
        (["--times", "0,10,40,80", "--preset", "t3"], "unknown fit preset"),
        (["--times", "0,10,40,80", "--method", "rician"], "noise_sigma"),
    ],
)
def test_user_errors_print_one_line_and_write_nothing(study, capsys, extra, message):
    out = study["dir"] / "bad"
    code = main(["fit", "--series", *map(str, study["echoes"]), *extra, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("discvbr: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_mask_on_another_grid_is_refused(study, capsys):
    write_image(study["dir"] / "small.nii.gz", Image(np.ones((2, 24, 39), np.uint8), study["affine"]))
    code = main(
        ["fit", "--series", str(study["dir"] / "series.nii.gz"), "--times", "0,10,40,80"]
        + ["--mask", str(study["dir"] / "small.nii.gz"), "--out", str(study["dir"] / "x")]
    )
    assert code == 2 and "not on the grid" in capsys.readouterr().err
