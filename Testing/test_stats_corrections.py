"""Bonferroni, Holm and Benjamini-Hochberg against statsmodels' multipletests (tolerance 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from discvbr import DiscVBRError
from discvbr.stats import adjust_pvalues


@pytest.mark.parametrize("method", ["bonferroni", "holm", "fdr_bh"])
def test_equals_statsmodels_on_the_finite_p_values(method):
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 1, 400), rng.uniform(0, 1e-3, 40), [0.0, 1.0, 0.02, 0.02, 0.02]])
    p = rng.permutation(p)
    p[rng.choice(p.size, 30, replace=False)] = np.nan
    grid = p.reshape(5, 89)
    adjusted, n_tests = adjust_pvalues(grid, method=method)
    finite = np.isfinite(p)
    reject, reference, _, _ = multipletests(p[finite], alpha=0.05, method=method)
    assert n_tests == finite.sum() == 415
    assert adjusted.shape == grid.shape
    np.testing.assert_allclose(adjusted.reshape(-1)[finite], reference, rtol=0, atol=1e-12)
    assert np.isnan(adjusted.reshape(-1)[~finite]).all()
    np.testing.assert_array_equal(adjusted.reshape(-1)[finite] <= 0.05, reject)


def test_no_finite_p_value_gives_no_tests():
    adjusted, n_tests = adjust_pvalues(np.full(4, np.nan), method="fdr_bh")
    assert n_tests == 0 and np.isnan(adjusted).all()


def test_bad_input_is_refused():
    with pytest.raises(DiscVBRError, match="unknown correction 'fdr'"):
        adjust_pvalues([0.1], method="fdr")
    with pytest.raises(DiscVBRError, match=r"must lie in \[0, 1\]"):
        adjust_pvalues([0.1, 1.5], method="holm")


def test_t_distribution_p_values_equal_the_exact_incomplete_beta():
    """Two-sided p = I_{df/(df+t^2)}(df/2, 1/2), evaluated by mpmath at 30 digits; relative 1e-11."""
    import mpmath

    from discvbr.stats.models import t_to_p

    mpmath.mp.dps = 30
    rng = np.random.default_rng(1)
    t = np.concatenate([[0.0, 1e-9, -0.3, 2.0, 5.0, -12.0, 40.0], rng.standard_normal(12) * 3])
    for df in (1, 2, 3, 4, 7, 10, 25, 46, 47, 120, 121, 300, 7.6):
        ours = t_to_p(t, np.full(t.shape, float(df)))
        exact = np.array([float(mpmath.betainc(df / 2, 0.5, 0, df / (df + mpmath.mpf(v) ** 2), regularized=True)) for v in t])
        np.testing.assert_allclose(ours, exact, rtol=1e-11, atol=0, err_msg=f"df={df}")
    np.testing.assert_array_equal(t_to_p(np.array([np.inf, np.nan, 1.0]), np.array([5.0, 5.0, np.nan])), [0.0, np.nan, np.nan])
