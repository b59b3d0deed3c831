"""Vectorised test statistics of the four analyses, for the data and under permutation.

Each model is built once from ``(subjects, voxels)`` arrays with NaN for missing
values. It computes the observed maps (``observed``) and, for a batch of
permutations, the t statistic of every voxel under each permutation
(:meth:`permuted_t`) with a few matrix products per batch.

Permutations are given as ``keys``: one uniform random number per permutation and
subject, ``(n_permutations, n_subjects)``. A permutation of the model's subjects is
the order of their keys (``argsort``), a sign flip is ``key < 0.5``; because the keys
belong to subjects, analyses of different discs relabel whole subjects alike (joint
correction). Group labels and sign flips apply to every voxel as they are (exact
with missing values). A correlation voxel that misses some subjects is permuted by
the permutation induced on the subjects it has, splicing the others out of the
permutation's cycles (uniform on the subset, and equal to the full permutation
wherever possible, which keeps the spatial dependence of permuted maps).

Missing values are handled exactly: voxels are grouped by their pattern of missing
subjects and each group is solved on its own subjects (correlation models), or the
missing entries are masked out of the sums (two-group and paired models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

__all__ = [
    "CorrelationModel",
    "TwoGroupModel",
    "PairedModel",
    "induced_permutation",
    "missingness_patterns",
    "t_to_p",
]

# A residual sum of squares this small relative to the centred one means the voxel is
# (numerically) a linear function of the covariates: its correlation is undefined.
_DEGENERATE_RELATIVE_SS = 1e-20
# Covariate design columns whose QR pivot falls below this (relative, on standardised
# columns) are collinear on that voxel's subjects.
_RANK_TOLERANCE = 1e-8
# Largest (rows x voxels x permutations) block gathered at once in voxel-by-voxel models.
_GATHER_BLOCK = 1 << 22


def t_to_p(t: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    """Two-sided p-value ``2 P(T_df > |t|)`` of Student t statistics (NaN where ``t`` or ``df`` is NaN).

    Integer degrees of freedom up to 120 use the closed-form finite series of the
    t distribution (Abramowitz & Stegun 26.7.3-4), an order of magnitude faster than
    ``scipy.special.stdtr``; p-values below 1e-4, where ``1 - A`` would lose relative
    precision, and other degrees of freedom use ``stdtr``. Agrees with scipy to
    about 1e-15 absolute.
    """
    t = np.asarray(t, dtype=np.float64)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape)
    flat_t, flat_df = t.reshape(-1), df.reshape(-1)
    with np.errstate(invalid="ignore"):
        defined = np.isfinite(flat_t) & (flat_df > 0) & np.isfinite(flat_df)
    if defined.all():
        values, dfs = flat_t, flat_df
    else:
        values, dfs = flat_t[defined], flat_df[defined]
    out = np.empty(values.size)
    if values.size:
        low, high = dfs.min(), dfs.max()
        levels = [low] if low == high else np.unique(dfs)
        done = np.zeros(values.size, bool)
        for level in levels:
            if level != round(level) or level > _SERIES_MAX_DF:
                continue
            chosen = slice(None) if len(levels) == 1 else dfs == level
            out[chosen] = _series_p(values[chosen], int(level))
            done[chosen] = True
        refine = ~done
        refine |= out < _SERIES_REFINE_BELOW
        out[refine] = 2.0 * special.stdtr(dfs[refine], -np.abs(values[refine]))
    p = np.full(flat_t.size, np.nan)
    p[defined] = out
    with np.errstate(invalid="ignore"):
        p[np.isinf(flat_t) & (flat_df > 0)] = 0.0
    return p.reshape(t.shape)


_SERIES_MAX_DF = 120
_SERIES_REFINE_BELOW = 1e-4


def _series_p(t: np.ndarray, nu: int) -> np.ndarray:
    """``1 - A(t | nu)`` from the finite series of the t distribution for integer ``nu``."""
    t2 = t * t
    c2 = nu / (nu + t2)  # cos^2 of theta = arctan(|t| / sqrt(nu))
    if nu % 2 == 0:
        coefficients = np.cumprod(np.r_[1.0, (2.0 * np.arange(1, nu // 2) - 1) / (2.0 * np.arange(1, nu // 2))])
        total = np.full(t.shape, coefficients[-1])
        for a in coefficients[-2::-1]:
            total *= c2
            total += a
        inside = np.sqrt(t2 / (nu + t2)) * total
    else:
        theta = np.arctan(np.abs(t) / np.sqrt(nu))
        inside = theta
        if nu > 1:
            coefficients = np.cumprod(np.r_[1.0, 2.0 * np.arange(1, (nu - 1) // 2) / (2.0 * np.arange(1, (nu - 1) // 2) + 1)])
            total = np.full(t.shape, coefficients[-1])
            for b in coefficients[-2::-1]:
                total *= c2
                total += b
            inside = theta + np.sqrt(t2 * nu) / (nu + t2) * total
        inside = inside * (2.0 / np.pi)
    p = 1.0 - inside
    return np.maximum(p, 0.0, out=p)


def missingness_patterns(valid: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group voxels by which subjects they have.

    Parameters
    ----------
    valid : ndarray of bool, shape (n_subjects, V)

    Returns
    -------
    list of (rows, voxels)
        For each distinct column of ``valid``: the subject rows it has and the voxel
        columns that share it.
    """
    n, n_vox = valid.shape
    packed = np.packbits(valid, axis=0)
    keys = np.ascontiguousarray(packed.T).view(np.dtype((np.void, packed.shape[0]))).reshape(n_vox)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse))[:-1]
    return [(np.flatnonzero(valid[:, first[g]]), cols) for g, cols in enumerate(np.split(order, bounds))]


def _standardised_design(covariates: np.ndarray) -> np.ndarray | None:
    """Orthonormal basis ``(m, k + 1)`` of [1, covariates], or None when rank-deficient."""
    m, k = covariates.shape
    if k == 0:
        return np.full((m, 1), 1.0 / np.sqrt(m))
    centred = covariates - covariates.mean(axis=0)
    scale = np.sqrt((centred**2).sum(axis=0))
    if np.any(scale == 0):
        return None
    design = np.column_stack([np.ones(m) / np.sqrt(m), centred / scale])
    q, r = np.linalg.qr(design)
    if np.abs(np.diag(r)).min() < _RANK_TOLERANCE:
        return None
    return q


def _rank_columns(a: np.ndarray) -> np.ndarray:
    return stats.rankdata(a, axis=0)


@dataclass
class _CorrelationGroup:
    rows: np.ndarray  # subject rows of this missingness pattern
    cols: np.ndarray  # voxel columns (only those with a defined statistic)
    values: np.ndarray  # (m, Vg) response values (ranks for Spearman)
    x_residuals: np.ndarray  # (m,) or (m, Vg) tested-variable residuals on [1, covariates]
    basis: np.ndarray  # (m, k + 1) orthonormal basis of [1, covariates]
    sxx: np.ndarray  # scalar or (Vg,)
    syy: np.ndarray  # (Vg,)
    df: int
    _residuals: np.ndarray | None = None

    @property
    def residuals(self) -> np.ndarray:
        """Response residuals on [1, covariates] (computed on first use, for permutations)."""
        if self._residuals is None:
            self._residuals = self.values - self.basis @ (self.basis.T @ self.values)
        return self._residuals


class CorrelationModel:
    """Pearson / Spearman (partial) correlation of each voxel with a variable or a second map.

    The response ``y`` is each voxel's value; ``x`` is one value per subject (a
    variable) or a second map. With covariates Z, both are residualised on
    [1, Z] on the subjects the voxel has and the partial correlation is the
    correlation of the residuals; its t statistic has ``n - 2 - k`` degrees of
    freedom. Spearman ranks ``y``, ``x`` and Z on those subjects first (as
    pingouin does).

    Permutations follow Freedman & Lane (1983): the residuals of ``y`` on [1, Z]
    are permuted and the full model refitted. With no covariates this is the
    plain permutation of ``y`` against ``x``.

    Parameters
    ----------
    y : ndarray, shape (n, V)
        Voxel values, NaN where missing.
    x : ndarray, shape (n,) or (n, V)
        Tested variable (finite) or second map (NaN where missing).
    covariates : ndarray, shape (n, k)
        Finite covariate values (``k`` may be 0).
    method : {"pearson", "spearman"}

    Attributes
    ----------
    observed : dict of ndarray (V,)
        ``r``, ``t``, ``p``, ``df``, ``n``.
    """

    def __init__(self, y: np.ndarray, x: np.ndarray, covariates: np.ndarray, *, method: str = "pearson") -> None:
        if method not in ("pearson", "spearman"):
            raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
        n, n_vox = y.shape
        k = covariates.shape[1]
        self.n_subjects, self.n_voxels, self.n_covariates = n, n_vox, k
        self.voxelwise_x = x.ndim == 2
        valid = np.isfinite(y)
        if self.voxelwise_x:
            valid &= np.isfinite(x)
        complete = bool(valid.all())
        r = np.full(n_vox, np.nan)
        df = np.full(n_vox, np.nan)
        count = np.full(n_vox, float(n)) if complete else np.count_nonzero(valid, axis=0).astype(float)
        self.groups: list[_CorrelationGroup] = []
        patterns = [(np.arange(n), np.arange(n_vox))] if complete else missingness_patterns(valid)
        for rows, cols in patterns:
            m = rows.size
            if m < k + 3:
                continue
            yg = y if m == n and cols.size == n_vox else y[np.ix_(rows, cols)]
            xg = x[np.ix_(rows, cols)] if self.voxelwise_x else x[rows]
            zg = covariates[rows]
            if method == "spearman":
                yg, xg = _rank_columns(yg), _rank_columns(xg)
                zg = _rank_columns(zg) if k else zg
            q = _standardised_design(zg)
            if q is None:  # a covariate is constant or collinear on these subjects
                continue
            xr = xg - q @ (q.T @ xg)
            if self.voxelwise_x:
                e = yg - q @ (q.T @ yg)
                syy = np.einsum("ij,ij->j", e, e)
                sxx = np.einsum("ij,ij->j", xr, xr)
                ok = _non_degenerate(yg, syy) & _non_degenerate(xg, sxx)
                sxy = np.einsum("ij,ij->j", e, xr)
            else:
                sxx = float(xr @ xr)
                if not _non_degenerate(xg[:, None], np.array([sxx]))[0]:
                    continue
                syy, sxy, ok = _projected_sums(yg, q, xr)
            if not ok.any():
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                rg = np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0)
            r[cols[ok]] = rg[ok]
            df[cols[ok]] = m - 2 - k
            every = ok.all()
            self.groups.append(
                _CorrelationGroup(
                    rows=rows,
                    cols=cols if every else cols[ok],
                    values=yg if every else yg[:, ok],
                    x_residuals=(xr if every else xr[:, ok]) if self.voxelwise_x else xr,
                    basis=q,
                    sxx=(sxx if every else sxx[ok]) if self.voxelwise_x else sxx,
                    syy=syy if every else syy[ok],
                    df=m - 2 - k,
                    _residuals=(e if every else e[:, ok]) if self.voxelwise_x else None,
                )
            )
        t = _r_to_t(r, df)
        self.observed = {"r": r, "t": t, "p": t_to_p(t, df), "df": df, "n": count}

    def permuted_t(self, keys: np.ndarray) -> np.ndarray:
        """t statistic of every voxel under each permutation of the response residuals.

        Parameters
        ----------
        keys : ndarray, shape (B, n_subjects)
            One uniform key per permutation and subject: subject ``i`` receives the
            residual of the subject with the ``i``-th smallest key; a voxel missing
            some subjects uses the permutation induced on the subjects it has.

        Returns
        -------
        ndarray of float64, shape (B, V)
            NaN where the statistic is undefined.
        """
        n_perm = keys.shape[0]
        whole = len(self.groups) == 1 and self.groups[0].cols.size == self.n_voxels
        out = None if whole else np.full((n_perm, self.n_voxels), np.nan)
        permutation = np.argsort(keys, axis=1)
        for g in self.groups:
            local = induced_permutation(permutation, g.rows)
            # rank[b, j]: where subject j's residual lands; sum_i e[local_i] w_i = sum_j e_j w[rank_j]
            rank = np.empty_like(local)
            np.put_along_axis(rank, local, np.arange(local.shape[1])[None, :], axis=1)
            basis = g.basis[:, 1:][rank]  # (B, m, k): the intercept direction is orthogonal to residuals
            k = basis.shape[2]
            if self.voxelwise_x:
                num = _gathered_products(g.x_residuals, rank, g.residuals)
                projections = np.einsum("bmk,mv->kbv", basis, g.residuals)
            else:
                rows = np.concatenate([g.x_residuals[rank][None], np.moveaxis(basis, 2, 0)], axis=0)
                products = (rows.reshape((k + 1) * n_perm, -1) @ g.residuals).reshape(k + 1, n_perm, -1)
                num, projections = products[0], products[1:]
            # In place on (B, V) arrays: r = num / sqrt(sxx (syy - |Q_c^T y*|^2)), then t.
            denominator = np.einsum("kbv,kbv->bv", projections, projections) if k else np.zeros_like(num)
            np.subtract(g.syy, denominator, out=denominator)
            denominator *= g.sxx
            np.sqrt(denominator, out=denominator)
            with np.errstate(invalid="ignore", divide="ignore"):
                np.divide(num, denominator, out=num)
                np.clip(num, -1.0, 1.0, out=num)
                np.multiply(num, num, out=denominator)
                np.subtract(1.0, denominator, out=denominator)
                np.divide(g.df, denominator, out=denominator)
                np.sqrt(denominator, out=denominator)
                num *= denominator
            if whole:
                return num
            out[:, g.cols] = num
        return out


def induced_permutation(permutation: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The permutations of a subset of subjects induced by permutations of all of them.

    Each member's partner is followed along its cycle until it is a member again
    (the other subjects are spliced out of the cycles). This keeps a uniform
    permutation uniform on the subset and agrees with the full permutation
    wherever it can, so voxels that miss a few subjects are permuted almost
    exactly like their complete neighbours and permuted maps keep the spatial
    dependence of the data.

    Parameters
    ----------
    permutation : ndarray of int, shape (B, n)
        ``permutation[b, i]``: the subject whose value lands on subject ``i``.
    members : ndarray of int, shape (m,)
        The subset, increasing.

    Returns
    -------
    ndarray of int, shape (B, m)
        The same for the subset, in positions within ``members``.
    """
    position = np.full(permutation.shape[1], -1)
    position[members] = np.arange(members.size)
    partner = permutation[:, members]
    outside = position[partner] < 0
    while outside.any():
        b, i = np.nonzero(outside)
        partner[b, i] = permutation[b, partner[b, i]]
        outside[b, i] = position[partner[b, i]] < 0
    return position[partner]


def _projected_sums(values: np.ndarray, basis: np.ndarray, x_residuals: np.ndarray):
    """Residual sum of squares and cross-product with ``x_residuals`` from one matrix product.

    With Q orthonormal, ``|e|^2 = |y|^2 - |Q^T y|^2``, and ``x_residuals`` (orthogonal to
    Q) gives ``x_r . e = x_r . y``. Where the subtraction would cancel more than 4 of
    the 16 digits (residual spread under 1% of the values' magnitude, constant voxels)
    the residuals are formed explicitly instead.

    Returns
    -------
    syy, sxy : ndarray (V,)
    ok : ndarray of bool (V,)
        Voxels with a defined correlation.
    """
    projections = np.concatenate([basis, x_residuals[:, None]], axis=1).T @ values
    total = np.einsum("ij,ij->j", values, values)
    syy = total - np.einsum("ij,ij->j", projections[:-1], projections[:-1])
    sxy = projections[-1]
    ok = syy > 1e-4 * total
    exact = np.flatnonzero(~ok)
    if exact.size:
        subset = values[:, exact]
        residuals = subset - basis @ (basis.T @ subset)
        syy[exact] = np.einsum("ij,ij->j", residuals, residuals)
        sxy[exact] = x_residuals @ residuals
        ok[exact] = _non_degenerate(subset, syy[exact])
    return syy, sxy, ok


def _non_degenerate(values: np.ndarray, residual_ss: np.ndarray) -> np.ndarray:
    centred_ss = ((values - values.mean(axis=0)) ** 2).sum(axis=0)
    return (np.ptp(values, axis=0) > 0) & (residual_ss > _DEGENERATE_RELATIVE_SS * centred_ss)


def _gathered_products(x_residuals: np.ndarray, rank: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """``out[b, v] = sum_j residuals[j, v] * x_residuals[rank[b, j], v]`` in memory-bounded blocks."""
    n_perm, m = rank.shape
    n_vox = residuals.shape[1]
    out = np.empty((n_perm, n_vox))
    step = max(1, _GATHER_BLOCK // max(1, m * n_vox))
    for start in range(0, n_perm, step):
        block = x_residuals[rank[start : start + step]]  # (b, m, V)
        out[start : start + step] = np.einsum("bmv,mv->bv", block, residuals)
    return out


def _r_to_t(r: np.ndarray, df: np.ndarray | float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))


class TwoGroupModel:
    """Unpaired t-test between two groups of subjects at each voxel.

    Parameters
    ----------
    y : ndarray, shape (n, V)
        Voxel values, NaN where missing.
    in_b : ndarray of bool, shape (n,)
        True for subjects of the second group (``b``), False for the reference (``a``).
    equal_var : bool
        True: Student's t with pooled variance (``df = n_a + n_b - 2``); False:
        Welch's t with Welch-Satterthwaite degrees of freedom. The statistic is for
        ``mean_b - mean_a`` (``scipy.stats.ttest_ind(b, a)``).

    Attributes
    ----------
    observed : dict of ndarray (V,)
        ``mean_a``, ``mean_b``, ``difference`` (b - a), ``t``, ``p``, ``df``, ``n``,
        ``n_a``, ``n_b``.

    Notes
    -----
    Undefined (NaN) where a group has no subject (Student) or fewer than two (Welch)
    at that voxel, or the variance estimate is zero. Permutations relabel subjects
    (the group sizes stay those of the analysis); sums are taken over the subjects
    each voxel has.
    """

    def __init__(self, y: np.ndarray, in_b: np.ndarray, *, equal_var: bool = True) -> None:
        self.n_subjects, self.n_voxels = y.shape
        self.equal_var = equal_var
        self.in_b = np.asarray(in_b, dtype=bool)
        valid = np.isfinite(y)
        self.complete = bool(valid.all())
        stats_ = {}
        for name, members in (("a", ~self.in_b), ("b", self.in_b)):
            sel = valid & members[:, None]
            count = sel.sum(axis=0).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(sel, y, 0.0).sum(axis=0) / count
            ss = np.where(sel, (y - mean) ** 2, 0.0).sum(axis=0)
            stats_[name] = (count, mean, ss)
        (na, ma, ssa), (nb, mb, ssb) = stats_["a"], stats_["b"]
        t, df = self._t(na, ma, ssa, nb, mb, ssb)
        self.observed = {
            "mean_a": ma,
            "mean_b": mb,
            "difference": mb - ma,
            "t": t,
            "p": t_to_p(t, df),
            "df": df,
            "n": na + nb,
            "n_a": na,
            "n_b": nb,
        }
        # Permutation sums are taken on data centred per voxel, for precision.
        with np.errstate(invalid="ignore"):
            centre = np.nanmean(np.where(valid, y, np.nan), axis=0)
        self._centred = np.where(valid, y - centre, 0.0)
        self._squared = self._centred**2
        self._valid = valid.astype(float)
        self._total = (self._centred.sum(axis=0), self._squared.sum(axis=0), self._valid.sum(axis=0))

    def _t(self, na, ma, ssa, nb, mb, ssb):
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.equal_var:
                df = na + nb - 2.0
                pooled = (ssa + ssb) / df
                se2 = pooled * (1.0 / na + 1.0 / nb)
                ok = (na >= 1) & (nb >= 1) & (df >= 1) & (se2 > 0)
            else:
                va, vb = ssa / (na - 1.0) / na, ssb / (nb - 1.0) / nb
                se2 = va + vb
                df = se2**2 / (va**2 / (na - 1.0) + vb**2 / (nb - 1.0))
                ok = (na >= 2) & (nb >= 2) & (se2 > 0)
            t = (mb - ma) / np.sqrt(se2)
        return np.where(ok, t, np.nan), np.where(ok, df, np.nan)

    def permuted_t(self, keys: np.ndarray) -> np.ndarray:
        """t statistic of every voxel under each relabelling of the subjects.

        Parameters
        ----------
        keys : ndarray, shape (B, n_subjects)
            The group labels are reassigned in the order of each row's keys.

        Returns
        -------
        ndarray of float64, shape (B, V)
        """
        labels = self.in_b[np.argsort(keys, axis=1)].astype(float)  # (B, n)
        s_total, q_total, n_total = self._total
        sb = labels @ self._centred
        qb = labels @ self._squared
        nb = labels @ self._valid if not self.complete else np.broadcast_to(labels.sum(axis=1)[:, None], sb.shape)
        sa, qa, na = s_total - sb, q_total - qb, n_total - nb
        with np.errstate(invalid="ignore", divide="ignore"):
            ma, mb = sa / na, sb / nb
            ssa = np.maximum(qa - sa * ma, 0.0)
            ssb = np.maximum(qb - sb * mb, 0.0)
        t, _ = self._t(na, ma, ssa, nb, mb, ssb)
        return t


class PairedModel:
    """Paired t-test of follow-up against baseline at each voxel.

    Parameters
    ----------
    baseline, followup : ndarray, shape (n, V)
        The two visits of the same subjects, NaN where missing; a voxel uses the
        subjects that have both.

    Attributes
    ----------
    observed : dict of ndarray (V,)
        ``mean_baseline``, ``mean_followup`` (over the pairs), ``difference``
        (mean of follow-up - baseline), ``t``, ``p``, ``df`` (= n - 1), ``n``.

    Notes
    -----
    Permutations flip the sign of each subject's difference (Nichols & Holmes 2002):
    valid when the differences are symmetric about zero under the null hypothesis.
    """

    def __init__(self, baseline: np.ndarray, followup: np.ndarray) -> None:
        self.n_subjects, self.n_voxels = baseline.shape
        diff = followup - baseline
        valid = np.isfinite(diff)
        count = valid.sum(axis=0).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(valid, diff, 0.0).sum(axis=0) / count
            ss = np.where(valid, (diff - mean) ** 2, 0.0).sum(axis=0)
            df = count - 1.0
            t = mean / np.sqrt(ss / df / count)
            ok = (count >= 2) & (ss > 0)
            mean_base = np.where(valid, baseline, 0.0).sum(axis=0) / count
            mean_follow = np.where(valid, followup, 0.0).sum(axis=0) / count
        t = np.where(ok, t, np.nan)
        df = np.where(ok, df, np.nan)
        self.observed = {
            "mean_baseline": mean_base,
            "mean_followup": mean_follow,
            "difference": mean,
            "t": t,
            "p": t_to_p(t, df),
            "df": df,
            "n": count,
        }
        self._diff = np.where(valid, diff, 0.0)
        self._count = count
        self._ok = ok
        self._sum_squares = (self._diff**2).sum(axis=0)

    def permuted_t(self, keys: np.ndarray) -> np.ndarray:
        """t statistic of every voxel under each sign flip (``key < 0.5`` flips a subject).

        Returns
        -------
        ndarray of float64, shape (B, V)
        """
        signs = np.where(keys < 0.5, -1.0, 1.0)
        total = signs @ self._diff
        m = self._count
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / m
            ss = np.maximum(self._sum_squares - total * mean, 0.0)
            t = mean / np.sqrt(ss / (m - 1.0) / m)
        return np.where(self._ok & (ss > 0), t, np.nan)
