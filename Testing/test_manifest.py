"""The cohort manifest: validation names the row and field; missing values stay missing."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from discvbr import DiscVBRError
from discvbr.io import EchoSeries, Image, write_image, write_series
from discvbr.manifest import encode_variables, read_manifest, write_manifest


def _copy_cohort(src, dst):
    shutil.copytree(src, dst)
    return dst / "manifest.csv"


def _edit(manifest, edit):
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(manifest, index=False)


def test_phantom_manifest_reads_back(phantom_cohort_dir, phantom_config_2d):
    cohort = read_manifest(phantom_cohort_dir / "manifest.csv")
    assert len(cohort.subjects) == phantom_config_2d.n_subjects
    first = cohort.entries[0]
    assert set(first.series) == {"t1rho", "t2"}
    series = first.series["t1rho"].load()
    assert series.data.shape == (1, 128, 128, 4)
    np.testing.assert_array_equal(series.times, phantom_config_2d.t1rho_times)


def test_missing_values_stay_missing(phantom_cohort_dir):
    raw = pd.read_csv(phantom_cohort_dir / "manifest.csv", dtype=str, keep_default_na=False)
    variables = read_manifest(phantom_cohort_dir / "manifest.csv").variables()
    empty_cells = (raw.drop(columns=["subject", "session", "t1rho", "t2", "t1rho_times", "t2_times"]) == "").to_numpy()
    assert empty_cells.any(), "the fixture asks for 20% missing cells"
    assert variables.isna().to_numpy().sum() == empty_cells.sum()


def test_round_trip_is_identical(phantom_cohort_dir, tmp_path):
    cohort = read_manifest(phantom_cohort_dir / "manifest.csv")
    copy = write_manifest(phantom_cohort_dir / "copy.tsv", cohort)
    again = read_manifest(copy)
    pd.testing.assert_frame_equal(cohort.variables(), again.variables())
    assert [e.series["t2"].paths for e in again] == [e.series["t2"].paths for e in cohort]
    copy.unlink()


def test_missing_file_names_row_subject_and_field(phantom_cohort_dir, tmp_path):
    manifest = _copy_cohort(phantom_cohort_dir, tmp_path / "c")
    (tmp_path / "c" / "sub-02" / "ses-baseline" / "t2.nii.gz").unlink()
    with pytest.raises(DiscVBRError, match=r"subject sub-02\), field 't2': file not found: .*t2\.nii\.gz"):
        read_manifest(manifest)


def test_unknown_column_is_named(phantom_cohort_dir, tmp_path):
    manifest = _copy_cohort(phantom_cohort_dir, tmp_path / "c")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False).rename(columns={"age": "agee"})
    table.to_csv(manifest, index=False)
    with pytest.raises(DiscVBRError, match="unknown column 'agee'.*var_<name>"):
        read_manifest(manifest)


def test_non_numeric_times_are_named(phantom_cohort_dir, tmp_path):
    manifest = _copy_cohort(phantom_cohort_dir, tmp_path / "c")

    def edit(t):
        t.loc[1, "t1rho_times"] = "0;ten;40;80"

    _edit(manifest, edit)
    with pytest.raises(DiscVBRError, match=r"row 3 .*field 't1rho_times': 'ten' is not a number"):
        read_manifest(manifest)


def test_bad_clinical_value_is_named(phantom_cohort_dir, tmp_path):
    manifest = _copy_cohort(phantom_cohort_dir, tmp_path / "c")

    def edit(t):
        t.loc[0, "odi"] = "140"
        t.loc[0, "sex"] = "X"

    _edit(manifest, edit)
    with pytest.raises(DiscVBRError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert "2 problems" in message and "field 'odi'" in message and "field 'sex'" in message


def test_echo_files_on_different_grids_are_named(tmp_path):
    a = write_image(tmp_path / "e1.nii.gz", Image(np.ones((1, 8, 8)), np.diag([8.0, 1, 1, 1])))
    b = write_image(tmp_path / "e2.nii.gz", Image(np.ones((1, 8, 9)), np.diag([8.0, 1, 1, 1])))
    (tmp_path / "m.csv").write_text(f"subject,t1rho,t1rho_times\ns1,{a.name};{b.name},0;10\n")
    with pytest.raises(DiscVBRError, match=r"field 't1rho': echo 2 \(.*e2\.nii\.gz\) is not on the grid of echo 1"):
        read_manifest(tmp_path / "m.csv")


def test_fewer_than_two_echoes_is_refused(tmp_path):
    a = write_image(tmp_path / "e1.nii.gz", Image(np.ones((1, 8, 8)), np.diag([8.0, 1, 1, 1])))
    (tmp_path / "m.csv").write_text(f"subject,t1rho,t1rho_times\ns1,{a.name},0\n")
    with pytest.raises(DiscVBRError, match="t1rho_times.*1 echo time.*at least 2"):
        read_manifest(tmp_path / "m.csv")


def test_echo_count_must_match_times(tmp_path):
    write_series(tmp_path / "s.nii.gz", EchoSeries(np.ones((1, 4, 4, 3), np.float32), [0, 10, 40], np.eye(4)))
    (tmp_path / "m.tsv").write_text("subject\tt1rho\tt1rho_times\ns1\ts.nii.gz\t0;10;40;80\n")
    with pytest.raises(DiscVBRError, match="holds 3 echo.*gives 4"):
        read_manifest(tmp_path / "m.tsv")


def test_duplicate_session_is_refused(tmp_path):
    write_series(tmp_path / "s.nii.gz", EchoSeries(np.ones((1, 4, 4, 2), np.float32), [0, 10], np.eye(4)))
    (tmp_path / "m.csv").write_text("subject,session,t1rho,t1rho_times\ns1,1,s.nii.gz,0;10\ns1,1,s.nii.gz,0;10\n")
    with pytest.raises(DiscVBRError, match="row 3: subject s1, session 1 already given in row 2"):
        read_manifest(tmp_path / "m.csv")


def test_custom_variables_and_encoding(tmp_path):
    write_series(tmp_path / "s.nii.gz", EchoSeries(np.ones((1, 4, 4, 2), np.float32), [0, 10], np.eye(4)))
    (tmp_path / "m.csv").write_text(
        "subject,t1rho,t1rho_times,sex,group,var_smoker,var_score\n"
        "a,s.nii.gz,0;10,M,patient,yes,1.5\n"
        "b,s.nii.gz,0;10,f,control,,\n"
        "c,s.nii.gz,0;10,,patient,no,3\n"
    )
    variables = read_manifest(tmp_path / "m.csv").variables()
    assert variables["var_score"].tolist()[0] == 1.5 and np.isnan(variables["var_score"].tolist()[1])
    coded = encode_variables(variables)
    assert coded["sex"].tolist()[:2] == [1.0, 0.0] and np.isnan(coded["sex"].iloc[2])
    assert coded["group"].tolist() == [1.0, 0.0, 1.0]
    assert coded["var_smoker"].iloc[0] != coded["var_smoker"].iloc[2] and np.isnan(coded["var_smoker"].iloc[1])
    # an already numeric coding passes through unchanged
    recoded = encode_variables(coded)
    pd.testing.assert_frame_equal(recoded, coded)
