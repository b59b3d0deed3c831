"""Permutation inference: permuted statistics equal explicit refits, FWE under the null, joint correction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import ndimage, stats

from discvbr import DiscVBRError
from discvbr.stats import (
    fwe_pvalues,
    joint_inference,
    permutation_inference,
    subject_keys,
    voxel_by_group,
    voxel_by_time,
    voxel_by_variable,
    voxel_by_voxel,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _data(n=18, shape=(1, 5, 6), seed=0, missing=0.06):
    rng = np.random.default_rng(seed)
    ids = [f"p{i:02d}" for i in range(n)]
    table = pd.DataFrame(
        {
            "odi": rng.uniform(0, 80, n),
            "age": rng.normal(50, 10, n),
            "sex": rng.choice([0.0, 1.0], n),
        },
        index=ids,
    )
    maps = ndimage.gaussian_filter(rng.standard_normal((n, *shape)), (0, 0, 0.8, 0.8)) * 30 + 100
    maps[rng.random(maps.shape) < missing] = np.nan
    return maps, table


# --------------------------------------------------------------------------- exact permuted statistics


def _induced(keys_row: np.ndarray, have: np.ndarray) -> np.ndarray:
    """Reference: permutation of the subjects ``have`` induced by the order of all keys.

    Subject i receives the value of the subject with the i-th smallest key; subjects not
    in ``have`` are skipped by following the permutation's cycle (plain Python loops).
    """
    full = np.argsort(keys_row)
    members = set(int(h) for h in have)
    out = []
    for i in have:
        j = int(full[i])
        while j not in members:
            j = int(full[j])
        out.append(list(have).index(j))
    return np.array(out)


def test_freedman_lane_statistics_equal_ols_refits_with_missing_voxels():
    maps, table = _data(missing=0.15)
    table.loc["p03", "age"] = np.nan
    result = voxel_by_variable(maps, table, variable="odi", covariates=["age", "sex"])
    keys = subject_keys(result.subjects, 6, seed=11)
    permuted = result.model.permuted_t(keys)
    y_all = maps.reshape(len(table), -1)[:, result.region.indices]
    rows = [table.index.get_loc(s) for s in result.subjects]
    y_all = y_all[rows]
    design_all = table.loc[list(result.subjects), ["odi", "age", "sex"]].to_numpy()
    checked = 0
    for v in range(result.n_voxels):
        have = np.flatnonzero(np.isfinite(y_all[:, v]))
        if not np.isfinite(result.values["t"][v]):
            assert np.isnan(permuted[:, v]).all()
            continue
        y, design = y_all[have, v], design_all[have]
        reduced = sm.add_constant(design[:, 1:])
        fit = sm.OLS(y, reduced).fit()
        for b in range(keys.shape[0]):
            order = _induced(keys[b], have)
            assert sorted(order) == list(range(have.size))
            y_star = fit.fittedvalues + fit.resid[order]
            full = sm.OLS(y_star, sm.add_constant(design)).fit()
            assert abs(full.tvalues[1] - permuted[b, v]) <= 1e-8 * max(1.0, abs(full.tvalues[1]))
        checked += 1
    assert checked > 20


def test_voxel_by_voxel_permutations_permute_the_second_maps_residuals():
    maps, table = _data(seed=3)
    second = maps * 0.5 + np.random.default_rng(8).normal(0, 10, maps.shape)
    result = voxel_by_voxel(maps, second, table, covariates=["age"])
    keys = subject_keys(result.subjects, 4, seed=2)
    permuted = result.model.permuted_t(keys)
    x_all = maps.reshape(len(table), -1)[:, result.region.indices]
    y_all = second.reshape(len(table), -1)[:, result.region.indices]
    age = table["age"].to_numpy()
    for v in range(0, result.n_voxels, 3):
        have = np.flatnonzero(np.isfinite(x_all[:, v]) & np.isfinite(y_all[:, v]))
        fit = sm.OLS(y_all[have, v], sm.add_constant(age[have])).fit()
        for b in range(keys.shape[0]):
            y_star = fit.fittedvalues + fit.resid[_induced(keys[b], have)]
            full = sm.OLS(y_star, sm.add_constant(np.column_stack([x_all[have, v], age[have]]))).fit()
            assert abs(full.tvalues[1] - permuted[b, v]) <= 1e-8 * max(1.0, abs(full.tvalues[1]))


@pytest.mark.parametrize("equal_var", [True, False])
def test_group_permutations_equal_ttest_on_relabelled_subjects(equal_var):
    maps, table = _data(missing=0.1, seed=5)
    result = voxel_by_group(maps, table, variable="odi", cut=40, equal_var=equal_var)
    keys = subject_keys(result.subjects, 5, seed=3)
    permuted = result.model.permuted_t(keys)
    y = maps.reshape(len(table), -1)[:, result.region.indices]
    in_b = table["odi"].to_numpy() > 40
    for b in range(keys.shape[0]):
        labels = in_b[np.argsort(keys[b])]
        for v in range(result.n_voxels):
            ok = np.isfinite(y[:, v])
            ref = stats.ttest_ind(y[ok & labels, v], y[ok & ~labels, v], equal_var=equal_var).statistic
            if np.isfinite(ref):
                assert abs(ref - permuted[b, v]) <= 1e-9 * max(1.0, abs(ref))
            else:
                assert np.isnan(permuted[b, v])


def test_sign_flips_equal_one_sample_t_of_flipped_differences():
    maps, _ = _data(missing=0.1, seed=6)
    followup = maps + np.random.default_rng(1).normal(1, 5, maps.shape)
    result = voxel_by_time(maps, followup)
    keys = subject_keys(result.subjects, 5, seed=9)
    permuted = result.model.permuted_t(keys)
    diff = (followup - maps).reshape(maps.shape[0], -1)[:, result.region.indices]
    for b in range(keys.shape[0]):
        signs = np.where(keys[b] < 0.5, -1.0, 1.0)
        for v in range(result.n_voxels):
            ok = np.isfinite(diff[:, v])
            ref = stats.ttest_1samp(signs[ok] * diff[ok, v], 0.0).statistic
            assert abs(ref - permuted[b, v]) <= 1e-9 * max(1.0, abs(ref))


# --------------------------------------------------------------------------- family-wise error under the null


def _null_study(analysis: str, seed: int):
    maps, table = _data(seed=seed)
    if analysis == "variable":
        return voxel_by_variable(maps, table, variable="odi", covariates=["age", "sex"])
    if analysis == "group":
        return voxel_by_group(maps, table, variable="odi", cut=40, equal_var=False)
    if analysis == "voxel":
        other, _ = _data(seed=seed + 10_000)
        return voxel_by_voxel(maps, other, table, covariates=["age"])
    other = maps + ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(maps.shape), (0, 0, 1, 1)) * 20
    return voxel_by_time(maps, other)


@pytest.mark.parametrize("analysis", ["variable", "group", "voxel", "time"])
def test_family_wise_error_rate_under_the_null_is_at_most_alpha(analysis):
    """300 null data sets with 6% missing voxels, 99 permutations each: FWE of max-T, cluster mass, TFCE.

    Group relabelling and sign flipping are exact; correlations are exact without missing
    voxels and use induced permutations where voxels miss subjects. The target is alpha = 0.05;
    Monte-Carlo SD sqrt(0.05 * 0.95 / 300) = 0.0126. Bounds: at most 0.05 + 2.58 SD = 0.083
    (not anti-conservative), at least 0.01 (not trivially conservative).
    """
    n_sets = 300
    hits = {"fwe_voxel": 0, "fwe_cluster": 0, "fwe_tfce": 0}
    for seed in range(n_sets):
        result = permutation_inference(
            _null_study(analysis, seed), n_permutations=99, seed=seed, cluster_threshold=0.05
        )
        for name in hits:
            hits[name] += bool(np.nanmin(result.values[f"p_{name}"]) <= 0.05)
    rates = {name: count / n_sets for name, count in hits.items()}
    for name, rate in rates.items():
        assert 0.01 <= rate <= 0.083, f"{analysis} {name}: FWE rate {rate:.3f}"


def test_a_strong_effect_is_found_at_fwe_0_05():
    maps, table = _data(n=30, shape=(1, 8, 8), seed=2, missing=0.0)
    effect = np.zeros((1, 8, 8), bool)
    effect[0, 2:5, 3:6] = True
    z = (table["odi"].to_numpy() - 40) / 20
    maps[:, effect] += 25 * z[:, None]
    result = permutation_inference(
        voxel_by_variable(maps, table, variable="odi", covariates=["age"]), n_permutations=200, seed=1
    )
    for correction in ("fwe_voxel", "fwe_tfce", "fwe_cluster"):
        found = result.significant(correction)
        assert found[effect].all(), correction
    assert not result.significant("fwe_voxel")[~effect].any()
    assert result.clusters.iloc[0]["sign"] == "positive" and result.clusters.iloc[0]["size_voxels"] >= effect.sum()
    top = result.peaks.iloc[0]
    assert effect[0, int(top["index_1"]), int(top["index_2"])]


# --------------------------------------------------------------------------- p-values, keys, joint


def test_fwe_p_values_count_the_data_once():
    null = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    observed = np.array([0.5, 2.0, 2.5, 6.0, np.nan])
    expected = [(1 + 5) / 6, (1 + 4) / 6, (1 + 2) / 6, 1 / 6, np.nan]
    np.testing.assert_array_equal(fwe_pvalues(observed, null), expected)


def test_subject_keys_depend_on_id_seed_and_nothing_else():
    a = subject_keys(["x", "y", "z"], 50, seed=4)
    b = subject_keys(["z", "x"], 80, seed=4)
    np.testing.assert_array_equal(a[:, 2], b[:50, 0])
    np.testing.assert_array_equal(a[:, 0], b[:50, 1])
    assert not np.array_equal(a, subject_keys(["x", "y", "z"], 50, seed=5))
    assert ((a > 0) & (a < 1)).all()
    with pytest.raises(DiscVBRError, match="seed must be a non-negative integer"):
        subject_keys(["x"], 3, seed=-1)


def test_same_seed_same_results_and_joint_correction_over_discs():
    maps, table = _data(n=20, shape=(1, 6, 12), seed=4, missing=0.0)
    left = np.zeros((1, 6, 12), bool)
    left[..., :6] = True
    table.loc["p02", "age"] = np.nan  # the right disc uses age: its subjects differ from the left's
    disc_a = voxel_by_variable(maps, table, variable="odi", mask=left)
    disc_b = voxel_by_variable(maps, table, variable="odi", covariates=["age"], mask=~left)
    options = dict(n_permutations=150, seed=7, cluster_threshold=0.05)
    a = permutation_inference(disc_a, **options)
    b = permutation_inference(disc_b, **options)
    np.testing.assert_array_equal(a.null["tfce"], permutation_inference(disc_a, **options).null["tfce"])
    joint = joint_inference({"A": a, "B": b})
    for kind in ("voxel", "cluster", "tfce"):
        np.testing.assert_array_equal(joint["A"].null[f"{kind}_joint"], np.maximum(a.null[kind], b.null[kind]))
        for name, single in (("A", a), ("B", b)):
            both = joint[name].values[f"p_fwe_{kind}_joint"]
            tested = np.isfinite(single.values[f"p_fwe_{kind}"])
            assert (both[tested] >= single.values[f"p_fwe_{kind}"][tested]).all()
    assert joint["A"].n_tests["fwe_voxel_joint"] == a.n_voxels + b.n_voxels
    assert joint["A"].n_tests["bonferroni_joint"] == a.n_tests["bonferroni"] + b.n_tests["bonferroni"]
    np.testing.assert_allclose(
        joint["B"].values["p_bonferroni_joint"], np.minimum(b.values["p"] * (a.n_voxels + b.n_voxels), 1)
    )
    with pytest.raises(DiscVBRError, match=r"B was permuted with other options than A \(seed\)"):
        joint_inference({"A": a, "B": permutation_inference(disc_b, **{**options, "seed": 8})})


def test_spatial_inference_needs_a_grid_and_options_are_checked():
    maps, table = _data()
    flat = maps.reshape(len(table), -1)
    result = voxel_by_variable(flat, table, variable="odi")
    with pytest.raises(DiscVBRError, match="need voxels on a grid"):
        permutation_inference(result, n_permutations=10)
    only_voxels = permutation_inference(result, n_permutations=10, tfce=False, cluster_threshold=None)
    assert set(only_voxels.null) == {"voxel"} and "p_fwe_voxel" in only_voxels.values
    with pytest.raises(DiscVBRError, match="n_permutations must be a positive integer"):
        permutation_inference(result, n_permutations=0)
    with pytest.raises(DiscVBRError, match="cluster_threshold is a p-value"):
        permutation_inference(voxel_by_variable(maps, table, variable="odi"), n_permutations=5, cluster_threshold=2.0)


def test_induced_permutations_splice_out_missing_subjects_and_stay_uniform():
    from discvbr.stats.models import induced_permutation

    rng = np.random.default_rng(0)
    keys = rng.random((300, 9))
    members = np.array([0, 2, 3, 5, 8])
    induced = induced_permutation(np.argsort(keys, axis=1), members)
    for b in range(keys.shape[0]):
        np.testing.assert_array_equal(induced[b], _induced(keys[b], members))
    # Uniform on the subset: 24,000 draws over the 6 permutations of 3 of 4 subjects, chi-square test.
    keys = rng.random((24_000, 4))
    induced = induced_permutation(np.argsort(keys, axis=1), np.array([0, 1, 3]))
    counts = np.unique(induced @ np.array([9, 3, 1]), return_counts=True)[1]
    assert counts.size == 6 and stats.chisquare(counts).pvalue > 0.001
