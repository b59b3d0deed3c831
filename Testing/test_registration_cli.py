"""The registration commands: discvbr register, build-atlas, tune-registration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from discvbr.cli import main
from discvbr.io import read_image
from discvbr.phantom import PhantomConfig, write_cohort
from discvbr.registration import load_atlas


@pytest.fixture(scope="module")
def cohort_with_masks(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg-cohort")
    return write_cohort(out, PhantomConfig(n_subjects=1, seed=11, followup_fraction=0.0), with_masks=True)


def test_register_writes_atlas_space_series_and_qc_and_resumes(cohort_with_masks, tmp_path, capsys):
    out = tmp_path / "reg"
    args = ["register", "-m", str(cohort_with_masks), "-o", str(out), "--levels", "L4L5", "--iterations", "20"]
    assert main(args) == 0
    session = out / "sub-01" / "baseline"
    assert (session / "L4L5" / "TransformParameters.1.txt").is_file()
    qc = pd.read_csv(out / "registration_qc.csv")
    assert list(qc["level"]) == ["L4L5"] and qc["status"].item() in ("ok", "flagged")
    assert 0.0 <= qc["ks_distance"].item() <= 1.0 and qc["dice"].item() > 0.9
    atlas = load_atlas(out / "atlas" / "2d")
    t1rho = read_image(session / "t1rho_atlas.nii.gz")
    assert t1rho.shape == atlas.labels.shape + (4,)
    np.testing.assert_allclose(t1rho.affine, atlas.labels.affine, atol=1e-4)
    # echoes only inside the atlas's L4L5 disc, NaN elsewhere
    finite = np.isfinite(t1rho.array[..., 0])
    np.testing.assert_array_equal(finite, atlas.labels.array == 2)
    mask = read_image(session / "mask_atlas.nii.gz").array
    assert set(np.unique(mask)) <= {0, 2}
    capsys.readouterr()
    assert main(args) == 0
    assert "1 resumed" in capsys.readouterr().out


def test_register_reports_a_missing_disc_and_exits_3(cohort_with_masks, tmp_path, capsys):
    # an atlas without L3L4: that disc fails with a message, L4L5 is registered, status 3 (finished with failures)
    from discvbr.io import Image
    from discvbr.registration import build_atlas, save_atlas

    labels = load_atlas("phantom-healthy", mode="2d").labels
    values = np.asarray(labels.array).copy()
    values[values == 3] = 0
    save_atlas(build_atlas(Image(values, labels.affine), name="no-l3l4"), tmp_path / "no-l3l4")
    out = tmp_path / "reg"
    args = ["register", "-m", str(cohort_with_masks), "-o", str(out), "--atlas", str(tmp_path / "no-l3l4"),
            "--levels", "L3L4,L4L5", "--iterations", "10", "--jobs", "2"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "subject sub-01/baseline, disc L3L4: atlas 'no-l3l4' has no L3L4 disc" in err
    qc = pd.read_csv(out / "registration_qc.csv")
    assert dict(zip(qc["level"], qc["status"]))["L3L4"] == "failed"
    assert dict(zip(qc["level"], qc["status"]))["L4L5"] in ("ok", "flagged")


def test_build_atlas_from_labels(tmp_path, cohort_with_masks, capsys):
    labels = cohort_with_masks.parent / "sub-01" / "ses-baseline" / "discs.nii.gz"
    assert main(["build-atlas", "--labels", str(labels), "--out", str(tmp_path / "mine"), "--description", "volunteer"]) == 0
    atlas = load_atlas(tmp_path / "mine")
    assert atlas.name == "mine" and atlas.levels == (1, 2, 3, 4, 5) and atlas.description == "volunteer"
    assert main(["build-atlas", "--list"]) == 0
    assert "phantom-healthy-2d" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["register", "-o", str(tmp_path), "--atlas", "phantom-healthy"]) == 2
    assert capsys.readouterr().err.strip() == "discvbr: error: give either --manifest (a cohort) or --mask (one subject)"
    assert main(["build-atlas", "--out", str(tmp_path / "a"), "--phantom", "wobbly"]) == 2
    assert "phantom atlas kind must be one of healthy, degenerated" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_registration_in_two_processes_resumes_and_writes_runnable_best_maps(cohort_with_masks, tmp_path, capsys):
    import json

    from discvbr.registration.params import read_parameter_file

    out = tmp_path / "tune"
    args = ["tune-registration", "-m", str(cohort_with_masks), "-o", str(out), "--levels", "L4L5,L3L4",
            "--iterations-range", "10", "20", "--jobs", "2", "--seed", "4"]
    assert main(args + ["--trials", "2"]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and np.isfinite(trials["value"]).all()
    # trials ran two at a time in worker processes and still each got its own parameters
    assert trials[["params_final_grid_spacing", "params_iterations", "params_rigidity_weight"]].drop_duplicates().shape[0] == 2
    assert main(args + ["--trials", "3"]) == 0  # resumes: one more trial, the first two kept
    resumed = pd.read_csv(out / "trials.csv")
    assert len(resumed) == 3
    np.testing.assert_array_equal(resumed["value"][:2], trials["value"])
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == pytest.approx(resumed["value"].min(), abs=1e-12)
    bspline = read_parameter_file(out / "best" / "bspline-2d.txt")
    assert 10 <= int(bspline["MaximumNumberOfIterations"][0]) <= 20
    # the best maps run as the user's parameter files
    capsys.readouterr()
    reg = tmp_path / "reg"
    assert main(["register", "-m", str(cohort_with_masks), "-o", str(reg), "--levels", "L4L5",
                 "--parameters", str(out / "best")]) == 0
    qc = pd.read_csv(reg / "registration_qc.csv")
    assert qc["dice"].item() > 0.9
