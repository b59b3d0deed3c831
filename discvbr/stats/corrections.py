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

__all__ = ["CORRECTIONS", "adjust_pvalues", "adjust_all"]

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
    adjusted, n_tests = adjust_all(p, methods=(method,))
    return adjusted[method], n_tests


def adjust_all(p: np.ndarray, *, methods: tuple[str, ...] = CORRECTIONS) -> tuple[dict[str, np.ndarray], int]:
    """Several corrections of the same p-values at once (one sort); see :func:`adjust_pvalues`.

    Returns
    -------
    adjusted : dict of str to ndarray
        Adjusted p-values per method.
    n_tests : int
        Number of finite p-values.
    """
    unknown = [m for m in methods if m not in CORRECTIONS]
    if unknown:
        raise DiscVBRError(f"unknown correction {unknown[0]!r}; choose one of {', '.join(CORRECTIONS)}")
    p = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(p)
    every = bool(finite.all())
    values = p.reshape(-1) if every else p[finite]
    m = values.size
    out = {method: np.full(p.shape, np.nan) for method in methods}
    if m == 0:
        return out, 0
    if values.min() < 0 or values.max() > 1:
        raise DiscVBRError(f"p-values must lie in [0, 1]; got values from {values.min():g} to {values.max():g}")
    order = np.argsort(values) if any(method != "bonferroni" for method in methods) else None
    for method in methods:
        if method == "bonferroni":
            adjusted = np.minimum(values * m, 1.0)
        else:
            ranked = values[order]
            if method == "holm":
                stepped = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
            else:
                stepped = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
            adjusted = np.empty(m)
            adjusted[order] = np.minimum(stepped, 1.0)
        if every:
            out[method] = adjusted.reshape(p.shape)
        else:
            out[method][finite] = adjusted
    return out, m
