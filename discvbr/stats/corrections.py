"""Corrections of p-values for multiple comparisons: Bonferroni, Holm, Benjamini-Hochberg.

The family is every voxel with a defined test: NaN p-values (untestable voxels) stay
NaN and do not count among the tests. Results equal ``statsmodels.stats.multitest.
multipletests`` with ``method="bonferroni"``, ``"holm"`` and ``"fdr_bh"`` on the
finite p-values.

References
----------
Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat 1979;6:65-70.
Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful
approach to multiple testing. J R Stat Soc B 1995;57:289-300.
"""

from __future__ import annotations

import numpy as np

from discvbr.errors import DiscVBRError

__all__ = ["CORRECTIONS", "adjust_pvalues"]

#: Corrections computed from p-values alone, by name.
CORRECTIONS: tuple[str, ...] = ("bonferroni", "holm", "fdr_bh")


def adjust_pvalues(p: np.ndarray, *, method: str) -> tuple[np.ndarray, int]:
    """Adjusted p-values for a family of tests.

    Parameters
    ----------
    p : array_like
        Uncorrected p-values, any shape; NaN marks an undefined test.
    method : {"bonferroni", "holm", "fdr_bh"}
        Family-wise error (Bonferroni, Holm's step-down) or false discovery rate
        (Benjamini-Hochberg step-up).

    Returns
    -------
    adjusted : ndarray of float64
        Same shape as ``p``; reject at level alpha where ``adjusted <= alpha``.
        NaN where ``p`` is NaN.
    n_tests : int
        Number of finite p-values (the size of the family).

    Raises
    ------
    DiscVBRError
        For an unknown method or p-values outside [0, 1].
    """
    if method not in CORRECTIONS:
        raise DiscVBRError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(p)
    values = p[finite]
    if values.size and (values.min() < 0 or values.max() > 1):
        raise DiscVBRError(f"p-values must lie in [0, 1]; got values from {values.min():g} to {values.max():g}")
    m = values.size
    out = np.full(p.shape, np.nan)
    if m == 0:
        return out, 0
    if method == "bonferroni":
        adjusted = np.minimum(values * m, 1.0)
    else:
        order = np.argsort(values, kind="mergesort")
        ranked = values[order]
        if method == "holm":
            stepped = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
        else:
            stepped = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
    out[finite] = adjusted
    return out, m
