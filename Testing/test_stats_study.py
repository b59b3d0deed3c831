"""A study over the five discs: planted effect, per-disc failures, ROI means, files, and the CLI."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import ndimage, stats

from discvbr import DiscVBRError
from discvbr.cli import main
from discvbr.io import Image, write_image
from discvbr.levels import DISC_LEVELS
from discvbr.stats import analyze_discs, read_map_stack, read_variables, save_study

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

GRID = (1, 14, 64)
AFFINE = np.array([[0.0, 0, 8, -4], [0.6, 0, 0, -20], [0, 0.6, 0, 30], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def study_data():
    """Five discs side by side on one sagittal slice; T1rho falls with ODI in a block of L4L5."""
    rng = np.random.default_rng(12)
    n = 24
    labels = np.zeros(GRID, np.uint8)
    for label in range(1, 6):
        labels[0, 2:12, 2 + 12 * (label - 1) : 12 + 12 * (label - 1)] = label
    ids = [f"sub{i:02d}" for i in range(n)]
    table = pd.DataFrame(
        {
            "odi": rng.uniform(0, 80, n),
            "age": rng.normal(45, 12, n),
            "sex": rng.choice(["F", "M"], n),
            **{f"pfirrmann_{lvl}": rng.integers(1, 6, n).astype(float) for lvl in DISC_LEVELS[:4]},
        },
        index=ids,
    )
    table.loc["sub04", "odi"] = np.nan
    noise = ndimage.gaussian_filter(rng.standard_normal((n, *GRID)), (0, 0, 1.0, 1.0)) * 25
    maps = 100.0 + noise
    planted = np.zeros(GRID, bool)
    planted[0, 4:9, 16:21] = True  # inside L4L5 (label 2)
    z = (table["odi"].fillna(40).to_numpy() - 40) / 20
    maps[:, planted] -= 12 * z[:, None]
    maps[:, labels == 0] = np.nan
    maps[rng.random(maps.shape) < 0.02] = np.nan
    return maps, labels, table, planted


def test_planted_effect_is_found_where_planted_and_nowhere_else(study_data):
    maps, labels, table, planted = study_data
    study = analyze_discs(
        "voxel_by_variable", maps, labels=labels, variables=table, variable="odi", covariates=["age", "sex"],
        n_permutations=300, seed=3,
    )
    assert list(study.regions) == list(DISC_LEVELS) and not study.failures
    found = study.significant("fwe_voxel_joint", alpha=0.05)
    assert found[planted].mean() > 0.9 and not found[~planted].any()
    assert not study.significant("fwe_tfce_joint")[labels != 2].any()
    assert study.map("r")[planted].max() < 0
    excluded = study.excluded_table()
    assert set(excluded["subject"]) == {"sub04"} and set(excluded["reason"]) == {"missing odi"}
    clusters = study.clusters_table()
    top = clusters.sort_values("p_fwe_cluster").iloc[0]
    assert top["disc"] == "L4L5" and top["sign"] == "negative" and top["p_fwe_cluster"] <= 0.05


def test_roi_means_equal_pingouin_on_disc_means(study_data):
    maps, labels, table, _ = study_data
    study = analyze_discs(
        "voxel_by_variable", maps, labels=labels, variables=table, variable="odi", n_permutations=0
    )
    roi = study.roi_table()
    for label, level in enumerate(DISC_LEVELS, start=1):
        means = np.nanmean(maps[:, labels == label], axis=1)
        ok = np.isfinite(table["odi"].to_numpy())
        ref = pg.corr(means[ok], table["odi"].to_numpy()[ok])
        assert roi.loc[level, "r"] == pytest.approx(ref["r"].iloc[0], abs=1e-10)
        assert roi.loc[level, "p"] == pytest.approx(ref["p_val"].iloc[0], abs=1e-10)
    np.testing.assert_allclose(roi["p_bonferroni"], np.minimum(roi["p"] * 5, 1))
    assert "p_fwe_voxel" not in study.regions["L5S1"].values


def test_a_disc_without_its_variable_fails_alone(study_data):
    maps, labels, table, _ = study_data
    study = analyze_discs(
        "voxel_by_variable", maps, labels=labels, variables=table, variable="pfirrmann_{level}",
        method="spearman", n_permutations=20, tfce=False,
    )
    assert set(study.regions) == set(DISC_LEVELS[:4])
    assert "pfirrmann_L1L2 not in the table" in study.failures["L1L2"]
    assert study.regions["L4L5"].parameters["variable"] == "pfirrmann_L4L5"
    with pytest.raises(DiscVBRError, match="no disc could be analysed; L5S1: .*weight"):
        analyze_discs("voxel_by_variable", maps, labels=labels, variables=table, variable="weight", n_permutations=0)


def test_group_and_time_studies_run_on_every_disc(study_data):
    maps, labels, table, planted = study_data
    group = analyze_discs(
        "voxel_by_group", maps, labels=labels, variables=table, variable="odi", cut=40, equal_var=False,
        n_permutations=100,
    )
    assert group.regions["L4L5"].parameters["test"] == "Welch"
    assert np.nanmean(group.map("difference")[planted]) < 0  # high ODI, lower T1rho
    followup = maps + np.random.default_rng(0).normal(0, 3, maps.shape)
    followup[:, planted] -= 8
    time = analyze_discs("voxel_by_time", maps, second_maps=followup, labels=labels, n_permutations=100)
    found = time.significant("fwe_voxel_joint")
    assert found[planted].mean() > 0.9 and not found[~planted].any()
    inside = labels == 2
    both = np.isfinite(maps) & np.isfinite(followup)
    base_mean = np.nanmean(np.where(both, maps, np.nan)[:, inside], axis=1)
    follow_mean = np.nanmean(np.where(both, followup, np.nan)[:, inside], axis=1)
    reference = stats.ttest_rel(follow_mean, base_mean)
    assert time.roi_table().loc["L4L5", "t"] == pytest.approx(reference.statistic, abs=1e-10)
    assert time.roi_table().loc["L4L5", "p"] == pytest.approx(reference.pvalue, abs=1e-10)


def test_bad_study_options_are_refused(study_data):
    maps, labels, table, _ = study_data
    with pytest.raises(DiscVBRError, match="label map of shape"):
        analyze_discs("voxel_by_variable", maps, labels=labels[0], variables=table, variable="odi")
    with pytest.raises(DiscVBRError, match=r"label map holds \[7\]"):
        analyze_discs("voxel_by_variable", maps, labels=np.where(labels == 5, 7, labels), variables=table, variable="odi")
    with pytest.raises(DiscVBRError, match="voxel_by_time needs second maps"):
        analyze_discs("voxel_by_time", maps, labels=labels)
    with pytest.raises(DiscVBRError, match="unknown analysis"):
        analyze_discs("voxel_by_age", maps)


def test_saved_study_round_trips(study_data, tmp_path):
    maps, labels, table, _ = study_data
    study = analyze_discs(
        "voxel_by_variable", maps, labels=labels, variables=table, variable="odi", n_permutations=50, seed=1
    )
    written = save_study(tmp_path / "out", study, affine=AFFINE)
    names = {p.name for p in written}
    assert {"r.nii.gz", "p.nii.gz", "n.nii.gz", "p_fwe_voxel_joint.nii.gz", "p_fdr_bh.nii.gz", "cluster.nii.gz"} <= names
    assert {"summary.csv", "clusters.csv", "peaks.csv", "roi.csv", "excluded.csv", "provenance.json"} <= names
    image = nib.load(tmp_path / "out" / "r.nii.gz")
    np.testing.assert_allclose(image.affine, AFFINE)
    np.testing.assert_allclose(np.asarray(image.dataobj), study.map("r"), rtol=1e-6, equal_nan=True)
    assert np.isnan(np.asarray(image.dataobj)[labels == 0]).all()
    peaks = pd.read_csv(tmp_path / "out" / "peaks.csv")
    ijk = peaks[["index_0", "index_1", "index_2"]].to_numpy(float)
    np.testing.assert_allclose(peaks[["R_mm", "A_mm", "S_mm"]].to_numpy(), ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3])
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", index_col=0)
    assert list(summary.index) == list(DISC_LEVELS) and (summary["n_subjects"] == 23).all()
    assert not list((tmp_path / "out").glob(".tmp-*"))


# --------------------------------------------------------------------------- files and command line


def _write_inputs(folder, maps, labels, table, *, drop=()):
    (folder / "maps").mkdir(parents=True)
    for subject, volume in zip(table.index, maps):
        if subject not in drop:
            write_image(folder / "maps" / f"{subject}_t1rho.nii.gz", Image(volume.astype(np.float32), AFFINE))
    write_image(folder / "labels.nii.gz", Image(labels, AFFINE))
    table.rename_axis("subject").reset_index().to_csv(folder / "variables.csv", index=False)


def test_read_map_stack_from_a_folder_files_and_a_4d_stack(study_data, tmp_path):
    maps, labels, table, _ = study_data
    _write_inputs(tmp_path, maps[:3], labels, table.iloc[:3])
    stack, affine, ids = read_map_stack([tmp_path / "maps"], subject_pattern=r"(sub\d+)_t1rho")
    assert ids == list(table.index[:3]) and stack.shape == (3, *GRID)
    np.testing.assert_allclose(affine, AFFINE)
    np.testing.assert_allclose(stack, maps[:3].astype(np.float32), equal_nan=True)
    files = sorted((tmp_path / "maps").iterdir())[:2]
    assert read_map_stack(files)[2] == ["sub00_t1rho", "sub01_t1rho"]
    write_image(tmp_path / "stack.nii.gz", Image(np.moveaxis(maps[:3], 0, -1).astype(np.float32), AFFINE))
    four_d, _, none = read_map_stack([tmp_path / "stack.nii.gz"])
    assert none is None and np.allclose(four_d, stack, equal_nan=True)
    write_image(tmp_path / "other.nii.gz", Image(maps[0].astype(np.float32), AFFINE * 2))
    with pytest.raises(DiscVBRError, match="is not on the grid of"):
        read_map_stack([files[0], tmp_path / "other.nii.gz"])
    with pytest.raises(DiscVBRError, match="does not match the subject pattern"):
        read_map_stack([tmp_path / "maps"], subject_pattern=r"(patient\d+)")


def test_read_variables_from_a_manifest_picks_a_session(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "subject,session,t1rho,t1rho_times,age,sex,odi\n"
        "A,1,a1.nii.gz,0;10;40;80,50,M,30\n"
        "A,2,a2.nii.gz,0;10;40;80,51,M,\n"
        "B,1,b1.nii.gz,0;10;40;80,40,F,60\n"
    )
    with pytest.raises(DiscVBRError, match="several sessions per subject"):
        read_variables(manifest)
    table = read_variables(manifest, session="1")
    assert list(table.index) == ["A", "B"] and table.loc["B", "odi"] == 60 and table.loc["A", "sex"] == "M"
    assert np.isnan(read_variables(manifest, session="2").loc["A", "odi"])


def test_cli_variable_analysis_end_to_end(study_data, tmp_path):
    maps, labels, table, planted = study_data
    _write_inputs(tmp_path, maps, labels, table)
    out = tmp_path / "results"
    code = main([
        "stats", "variable", "--maps", str(tmp_path / "maps"), "--subject-pattern", r"(sub\d+)_",
        "--variables", str(tmp_path / "variables.csv"), "--variable", "odi", "--covariate", "age",
        "--labels", str(tmp_path / "labels.nii.gz"), "--permutations", "100", "--seed", "2", "--out", str(out),
    ])
    assert code == 0
    found = np.asarray(nib.load(out / "p_fwe_voxel_joint.nii.gz").dataobj) <= 0.05
    assert found[planted].mean() > 0.9 and not found[~planted].any()
    provenance = (out / "provenance.json").read_text()
    assert '"seed": 2' in provenance and '"covariates": [\n      "age"' in provenance


def test_cli_time_analysis_pairs_subjects_by_id(study_data, tmp_path):
    maps, labels, table, planted = study_data
    _write_inputs(tmp_path / "base", maps, labels, table)
    followup = maps + 0.5
    followup[:, planted] -= 10
    _write_inputs(tmp_path / "follow", followup, labels, table, drop=("sub03",))
    out = tmp_path / "results"
    code = main([
        "stats", "time", "--maps", str(tmp_path / "base" / "maps"), "--second-maps", str(tmp_path / "follow" / "maps"),
        "--subject-pattern", r"(sub\d+)_", "--labels", str(tmp_path / "base" / "labels.nii.gz"),
        "--permutations", "50", "--no-tfce", "--cluster-threshold", "0", "--out", str(out),
    ])
    assert code == 0
    n_map = np.asarray(nib.load(out / "n.nii.gz").dataobj)
    assert np.nanmax(n_map) == 23  # sub03 has no follow-up
    assert not (out / "tfce.nii.gz").exists()


def test_cli_user_error_is_one_line(study_data, tmp_path):
    maps, labels, table, _ = study_data
    _write_inputs(tmp_path, maps[:6], labels, table.iloc[:6])
    table.iloc[:6].rename(index=lambda s: s.upper()).rename_axis("subject").reset_index().to_csv(
        tmp_path / "other.csv", index=False
    )
    result = subprocess.run(
        [sys.executable, "-m", "discvbr", "stats", "variable", "--maps", str(tmp_path / "maps"),
         "--subject-pattern", r"(sub\d+)_", "--variables", str(tmp_path / "other.csv"), "--variable", "odi",
         "--out", str(tmp_path / "results")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "6 subject(s) have maps but no row in the variables table: sub00" in lines[0]
    assert not (tmp_path / "results").exists()


def test_read_variables_keeps_text_ids_from_any_column(tmp_path):
    table = tmp_path / "clinical.tsv"
    table.write_text("age\tsubject\todi\n50\t007\t30\n41\t012\t\n")
    read = read_variables(table)
    assert list(read.index) == ["007", "012"] and np.isnan(read.loc["012", "odi"]) and read.loc["007", "age"] == 50
