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
