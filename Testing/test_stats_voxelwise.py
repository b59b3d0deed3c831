"""The four voxel-wise analyses against pingouin and scipy, voxel by voxel, with missing data.

Tolerance: 1e-10 absolute on r, t and p (the issue's acceptance); n must be equal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from discvbr import DiscVBRError
from discvbr.stats import voxel_by_group, voxel_by_time, voxel_by_variable, voxel_by_voxel

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:Sample size is too small:UserWarning")

TOL = 1e-10
N_SUBJECTS = 28
N_VOXELS = 60


@pytest.fixture(scope="module")
def cohort():
    """Random maps with 12% missing voxels, and variables with missing cells."""
    rng = np.random.default_rng(20)
    ids = [f"sub-{i:02d}" for i in range(N_SUBJECTS)]
    table = pd.DataFrame(
        {
            "odi": rng.uniform(0, 80, N_SUBJECTS),
            "age": rng.normal(50, 12, N_SUBJECTS),
            "sex": rng.choice(["M", "F"], N_SUBJECTS),
            "bmi": rng.normal(26, 4, N_SUBJECTS),
            "group": rng.choice(["control", "patient"], N_SUBJECTS),
        },
        index=ids,
    )
    table.loc["sub-02", "odi"] = np.nan
    table.loc["sub-05", "age"] = np.nan
    table.loc["sub-09", "sex"] = None
    maps = rng.normal(110, 15, (N_SUBJECTS, N_VOXELS))
    maps += 0.3 * table["odi"].fillna(40).to_numpy()[:, None] * rng.uniform(0, 1, N_VOXELS)
    maps[rng.random(maps.shape) < 0.12] = np.nan
    maps[:, 7] = np.nan
    maps[:4, 7] = rng.normal(100, 10, 4)  # only four subjects: untestable with three covariates
    second = 0.6 * maps + rng.normal(0, 8, maps.shape)
    second[rng.random(maps.shape) < 0.08] = np.nan
    return maps, second, table


def _coded(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["sex"] = table["sex"].map({"F": 0.0, "M": 1.0})
    out["group"] = (table["group"] == "patient").astype(float)
    return out


def _assert_close(ours: float, reference: float, what: str) -> None:
    if np.isnan(reference):
        assert np.isnan(ours), what
    else:
        assert abs(ours - reference) <= TOL, f"{what}: {ours!r} vs {reference!r}"


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_correlation_equals_pingouin_corr(cohort, method):
    maps, _, table = cohort
    result = voxel_by_variable(maps, table, variable="odi", method=method)
    assert result.excluded == {"sub-02": "missing odi"}
    odi = table["odi"].to_numpy()
    for v in range(N_VOXELS):
        ok = np.isfinite(maps[:, v]) & np.isfinite(odi)
        ref = pg.corr(maps[ok, v], odi[ok], method=method)
        assert result.values["n"][v] == ref["n"].iloc[0]
        _assert_close(result.values["r"][v], ref["r"].iloc[0], f"r voxel {v}")
        _assert_close(result.values["p"][v], ref["p_val"].iloc[0], f"p voxel {v}")
        assert result.values["df"][v] == ok.sum() - 2


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_partial_correlation_equals_pingouin_partial_corr(cohort, method):
    maps, _, table = cohort
    covariates = ["age", "sex", "bmi", "group"]
    result = voxel_by_variable(maps, table, variable="odi", covariates=covariates, method=method)
    assert set(result.excluded) == {"sub-02", "sub-05", "sub-09"}
    assert result.excluded["sub-09"] == "missing sex"
    coded = _coded(table)
    tested = 0
    for v in range(N_VOXELS):
        frame = coded[["odi", *covariates]].assign(y=maps[:, v]).dropna()
        if len(frame) < len(covariates) + 3:
            assert np.isnan(result.values["p"][v]) and result.values["n"][v] == len(frame)
            continue
        ref = pg.partial_corr(frame, x="odi", y="y", covar=covariates, method=method)
        assert result.values["n"][v] == ref["n"].iloc[0]
        _assert_close(result.values["r"][v], ref["r"].iloc[0], f"r voxel {v}")
        _assert_close(result.values["p"][v], ref["p_val"].iloc[0], f"p voxel {v}")
        assert result.values["df"][v] == len(frame) - 2 - len(covariates)
        tested += 1
    assert tested == N_VOXELS - 1  # voxel 7 has four subjects


@pytest.mark.parametrize("equal_var", [True, False])
def test_group_t_test_equals_scipy_ttest_ind(cohort, equal_var):
    maps, _, table = cohort
    result = voxel_by_group(maps, table, variable="odi", cut=40, equal_var=equal_var)
    assert result.parameters["group_a"] == "odi<=40" and result.parameters["group_b"] == "odi>40"
    assert result.parameters["test"] == ("Student" if equal_var else "Welch")
    odi = table["odi"].to_numpy()
    for v in range(N_VOXELS):
        ok = np.isfinite(maps[:, v]) & np.isfinite(odi)
        a, b = maps[ok & (odi <= 40), v], maps[ok & (odi > 40), v]
        with np.errstate(all="ignore"):
            ref = stats.ttest_ind(b, a, equal_var=equal_var)
        _assert_close(result.values["t"][v], ref.statistic, f"t voxel {v}")
        _assert_close(result.values["p"][v], ref.pvalue, f"p voxel {v}")
        if np.isfinite(ref.statistic):
            _assert_close(result.values["df"][v], ref.df, f"df voxel {v}")
            _assert_close(result.values["difference"][v], b.mean() - a.mean(), f"difference voxel {v}")
        assert (result.values["n_a"][v], result.values["n_b"][v]) == (a.size, b.size)


def test_group_from_a_two_level_text_variable(cohort):
    maps, _, table = cohort
    result = voxel_by_group(maps, table, variable="group")
    assert (result.parameters["group_a"], result.parameters["group_b"]) == ("control", "patient")
    patient = (table["group"] == "patient").to_numpy()
    for v in (0, 11, 42):
        ok = np.isfinite(maps[:, v])
        ref = stats.ttest_ind(maps[ok & patient, v], maps[ok & ~patient, v])
        _assert_close(result.values["t"][v], ref.statistic, f"t voxel {v}")
        _assert_close(result.values["mean_a"][v], maps[ok & ~patient, v].mean(), "mean of controls")


def test_voxel_by_voxel_equals_pingouin(cohort):
    maps, second, table = cohort
    plain = voxel_by_voxel(maps, second, map_names=("T1rho", "T2"))
    partial = voxel_by_voxel(maps, second, table, covariates=["age", "bmi"])
    for v in range(N_VOXELS):
        ok = np.isfinite(maps[:, v]) & np.isfinite(second[:, v])
        ref = pg.corr(maps[ok, v], second[ok, v])
        _assert_close(plain.values["r"][v], ref["r"].iloc[0], f"r voxel {v}")
        _assert_close(plain.values["p"][v], ref["p_val"].iloc[0], f"p voxel {v}")
        frame = table[["age", "bmi"]].assign(x=maps[:, v], y=second[:, v]).dropna()
        if len(frame) >= 5:
            ref = pg.partial_corr(frame, x="x", y="y", covar=["age", "bmi"])
            _assert_close(partial.values["r"][v], ref["r"].iloc[0], f"partial r voxel {v}")
            _assert_close(partial.values["p"][v], ref["p_val"].iloc[0], f"partial p voxel {v}")


def test_voxel_by_time_equals_scipy_ttest_rel(cohort):
    maps, second, _ = cohort
    followup = maps + np.random.default_rng(4).normal(-2, 6, maps.shape)
    followup[::5, ::3] = np.nan
    result = voxel_by_time(maps, followup)
    for v in range(N_VOXELS):
        ok = np.isfinite(maps[:, v]) & np.isfinite(followup[:, v])
        with np.errstate(all="ignore"):
            ref = stats.ttest_rel(followup[ok, v], maps[ok, v])
        _assert_close(result.values["t"][v], ref.statistic, f"t voxel {v}")
        _assert_close(result.values["p"][v], ref.pvalue, f"p voxel {v}")
        assert result.values["n"][v] == ok.sum()
        if ok.sum():
            _assert_close(result.values["difference"][v], (followup[ok, v] - maps[ok, v]).mean(), "mean difference")


def test_untestable_voxels_are_nan_and_left_out_of_the_corrections(cohort):
    maps, _, table = cohort
    result = voxel_by_variable(maps, table, variable="odi", covariates=["age", "sex", "bmi"])
    p = result.values["p"]
    assert np.isnan(p[7]) and result.values["n"][7] <= 4
    assert np.isfinite(np.delete(p, 7)).all()
    assert result.n_tests["bonferroni"] == N_VOXELS - 1
    np.testing.assert_allclose(np.delete(result.values["p_bonferroni"], 7), np.minimum(np.delete(p, 7) * (N_VOXELS - 1), 1))
    assert np.isnan(result.values["p_bonferroni"][7])


def test_voxels_constant_on_the_analysed_subjects_are_untested():
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"odi": rng.uniform(0, 80, 10)}, index=[f"s{i}" for i in range(10)])
    maps = rng.normal(100, 10, (10, 3))
    maps[:9, 2] = 42.0
    maps[9, 2] = 43.0
    table.loc["s9", "odi"] = np.nan  # the only subject where voxel 2 varies is not analysed
    result = voxel_by_variable(maps, table, variable="odi")
    assert np.isnan(result.values["r"][2]) and np.isfinite(result.values["r"][:2]).all()


def test_flat_maps_with_a_placing_mask_equal_image_maps(cohort):
    maps, _, table = cohort
    grid = np.zeros((1, 9, 10), bool)
    grid.reshape(-1)[np.random.default_rng(1).choice(90, N_VOXELS, replace=False)] = True
    images = np.full((N_SUBJECTS, 1, 9, 10), np.nan)
    images[:, grid] = maps
    from_images = voxel_by_variable(images, table, variable="odi")
    from_columns = voxel_by_variable(maps, table, variable="odi", mask=grid)
    assert from_columns.region.spatial and not voxel_by_variable(maps, table, variable="odi").region.spatial
    np.testing.assert_array_equal(from_images.map("r"), from_columns.map("r"))
    np.testing.assert_array_equal(from_images.region.indices, np.flatnonzero(grid))


def test_subjects_are_matched_by_id_not_by_position(cohort):
    maps, _, table = cohort
    order = np.random.default_rng(2).permutation(N_SUBJECTS)
    shuffled = voxel_by_variable(maps[order], table, variable="odi", subjects=list(table.index[order]))
    plain = voxel_by_variable(maps, table, variable="odi")
    np.testing.assert_allclose(shuffled.values["r"], plain.values["r"], atol=1e-12)


# --------------------------------------------------------------------------- bad input


def _small(n=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"s{i}" for i in range(n)]
    table = pd.DataFrame({"odi": rng.uniform(0, 80, n), "age": rng.normal(50, 9, n), "sex": ["M", "F"] * (n // 2)}, index=ids)
    return rng.normal(100, 10, (n, 5)), table


@pytest.mark.parametrize(
    "change, call, message",
    [
        (lambda m, t: t.assign(odi=30.0), dict(variable="odi"), "variable 'odi' has the same value"),
        (lambda m, t: t.assign(age=50.0), dict(variable="odi", covariates=["age"]), "covariate 'age' has the same value"),
        (lambda m, t: t.assign(bmi=2 * t["age"] + 1), dict(variable="odi", covariates=["age", "bmi"]), "collinear"),
        (lambda m, t: t.assign(odi=[1, 2, np.nan, np.nan, np.nan, np.nan, np.nan, 3]), dict(variable="odi", covariates=["age"]),
         r"3 subjects with every variable; the test needs at least 4 = covariates \(1\) \+ 3"),
        (lambda m, t: t, dict(variable="weight"), "variable\\(s\\) weight not in the table"),
        (lambda m, t: t, dict(variable="odi", covariates=["odi"]), "both the tested variable and a covariate"),
        (lambda m, t: t.assign(site=list("abcabcab")), dict(variable="site"), "3 levels"),
    ],
)
def test_bad_variables_raise_clear_errors(change, call, message):
    maps, table = _small()
    table = change(maps, table)
    with pytest.raises(DiscVBRError, match=message):
        voxel_by_variable(maps, table, **call)


def test_mismatched_subject_ids_are_named():
    maps, table = _small()
    with pytest.raises(DiscVBRError, match=r"2 subject\(s\) have maps but no row in the variables table: S0, S1"):
        voxel_by_variable(maps, table, variable="odi", subjects=["S0", "S1"] + list(table.index[2:]))
    with pytest.raises(DiscVBRError, match="8 maps but the variables table has 7 rows"):
        voxel_by_variable(maps, table.iloc[:7], variable="odi")
    with pytest.raises(DiscVBRError, match="select one session"):
        voxel_by_variable(maps, table.set_index(pd.MultiIndex.from_product([table.index, ["1"]])), variable="odi")


def test_group_with_one_member_is_refused():
    maps, table = _small()
    table["odi"] = [10, 20, 30, 35, 12, 18, 25, 70]
    with pytest.raises(DiscVBRError, match=r"group odi>40 has 1 subject\(s\) \(s7\)"):
        voxel_by_group(maps, table, variable="odi", cut=40)
    with pytest.raises(DiscVBRError, match="give a cut"):
        voxel_by_group(maps, table, variable="odi")


def test_fill_values_and_infinite_values_are_refused():
    maps, table = _small()
    maps[:, 2] = 0.0
    with pytest.raises(DiscVBRError, match=r"1 voxel\(s\) have the same value in every subject .*must be NaN"):
        voxel_by_variable(maps, table, variable="odi")
    maps[:, 2] = np.arange(8.0)
    maps[3, 4] = np.inf
    with pytest.raises(DiscVBRError, match="infinite value in the map of subject s3"):
        voxel_by_variable(maps, table, variable="odi")


def test_time_needs_two_subjects_with_both_visits():
    rng = np.random.default_rng(0)
    base = rng.normal(100, 5, (3, 4))
    follow = base + 1
    follow[1:] = np.nan
    with pytest.raises(DiscVBRError, match="1 subjects with both visits"):
        voxel_by_time(base, follow)


def test_small_spread_on_a_large_value_keeps_full_precision(cohort):
    """Voxels whose spread is tiny against their mean (1000 +- 0.05) take the exact residual path."""
    _, _, table = cohort
    rng = np.random.default_rng(9)
    maps = np.concatenate(
        [1000 + 0.05 * rng.standard_normal((N_SUBJECTS, 6)), 100 + 15 * rng.standard_normal((N_SUBJECTS, 6))], axis=1
    )
    result = voxel_by_variable(maps, table, variable="odi", covariates=["age", "bmi"])
    frame_base = table[["odi", "age", "bmi"]]
    for v in range(12):
        ref = pg.partial_corr(frame_base.assign(y=maps[:, v]).dropna(), x="odi", y="y", covar=["age", "bmi"])
        _assert_close(result.values["r"][v], ref["r"].iloc[0], f"r voxel {v}")
        _assert_close(result.values["p"][v], ref["p_val"].iloc[0], f"p voxel {v}")
