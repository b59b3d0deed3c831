"""The mono-exponential fit itself, written once for numpy and torch.

Every function here takes an ``ops`` object (:class:`discvbr.fitting.numpy_backend.NumpyOps`
or :class:`discvbr.fitting.torch_backend.TorchOps`) that supplies the array module (``xp``,
numpy or torch, whose ``exp``, ``where``, ``abs``... agree), the few primitives spelled
differently, and the two hot loops in the form that is fastest on that hardware: the sums
over echoes of the residuals and the Jacobian (``ops.evaluate``) and of the log-linear fit
(``ops.loglinear_sums``). The log-linear start, the Levenberg-Marquardt iterations, the
acceptance rule, the convergence test and the precision of T are this one code, so both
backends run the same algorithm. From the log-linear start nearly every voxel converges
after two evaluations of the sums; the 2x2 normal equations are solved in closed form.

Parametrisation. Times are centred and scaled, ``tau = (t - t_ref) / t_scale`` with
``t_ref`` the mean time and ``t_scale = max |t - t_ref|``, and the model is
``S(tau) = A * exp(-rho * tau)`` with ``rho = t_scale / T`` and ``A`` the signal at
``t_ref``. This is the same least-squares problem as ``S0 * exp(-t / T)`` (same minimum),
but the amplitude and the rate are nearly uncorrelated and every quantity stays within a
few orders of magnitude, which lets the fit run in float32. Blocks of signal are laid out
``(E, n)``: echoes first, voxels contiguous.

Precision. The residuals are formed explicitly (never as ``sum y^2 - 2 A sum y e + ...``),
and a trial step counts as no worse when its residual sum of squares exceeds the current
one by less than its rounding error; with that, float32 lands on the float64 optimum to
about 1e-6 relative or better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Marquardt damping: start, factor on a rejected/accepted step, bounds.
LAMBDA_START = 1e-3
LAMBDA_UP = 10.0
LAMBDA_DOWN = 0.1
LAMBDA_MIN = 1e-9
LAMBDA_MAX = 1e9
#: |rho| is kept below this so that exp(-rho * tau) and its squared sums stay finite in
#: float32 (e**15 squared and summed is ~1e14); T below t_scale / RHO_LIMIT is reported
#: out of range.
RHO_LIMIT = 15.0
#: Scale of rho below which the convergence test on rho is absolute (T > 20 t_scale, far
#: above any plausible range): float32 rounding leaves rho uncertain by ~1e-7, so a relative
#: test could never pass for nearly flat signals.
RHO_FLOOR = 0.05
#: A trial step is accepted when its residual sum of squares is not larger than the current
#: one by more than this many units of the rounding error of that sum, eps * sqrt(rss * sum y^2).
#: Without it float32 rounding rejects good Gauss-Newton steps near the optimum.
ROUNDING_UNITS = 8.0
#: Fewer voxels than this fraction of the working set still iterating: drop the converged ones.
COMPACT_BELOW = 0.5
#: Default relative step tolerance per working precision.
DEFAULT_XTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-9}
SQRT_HALF_PI = math.sqrt(math.pi / 2.0)


@dataclass(frozen=True)
class TimeAxis:
    """Echo times in the kernel's normalised form.

    Attributes
    ----------
    tau : array, shape (E,)
        ``(t - t_ref) / t_scale``, within [-1, 1] (numpy array or torch tensor).
    powers : array, shape (3, E)
        ``[1, tau, tau^2]``, the weights of the sums over echoes.
    t_ref : float
        Reference time (ms), the mean of the times.
    t_scale : float
        Scale (ms), ``max |t - t_ref|``.
    """

    tau: object
    powers: object
    t_ref: float
    t_scale: float

    @classmethod
    def from_times(cls, times: np.ndarray, dtype: np.dtype) -> "TimeAxis":
        times = np.asarray(times, dtype=np.float64)
        t_ref = float(times.mean())
        t_scale = float(np.abs(times - t_ref).max())
        tau = (times - t_ref) / t_scale
        return cls(tau.astype(dtype), np.stack([np.ones_like(tau), tau, tau * tau]).astype(dtype), t_ref, t_scale)


def rician_mean_and_slope(ops, nu, sigma):
    """Expected magnitude of a Rician variable and its derivative with respect to ``nu``.

    ``E[M] = sigma sqrt(pi/2) [(1 + x) I0e(x/2) + x I1e(x/2)]`` with ``x = nu^2 / (2 sigma^2)``
    (Gudbjartsson and Patz, MRM 1995;34:910), and ``dE[M]/dnu = sqrt(pi/2) nu / (2 sigma)
    [I0e(x/2) + I1e(x/2)]``, written with the exponentially scaled Bessel functions so that
    nothing overflows at high SNR (where the mean tends to ``nu`` and the slope to 1).

    Parameters
    ----------
    ops : backend operations
    nu : array
        Noise-free magnitude (any shape), >= 0.
    sigma : array or float
        Gaussian noise standard deviation per channel, broadcastable to ``nu``.

    Returns
    -------
    mean, slope : arrays shaped like ``nu``
    """
    half_x = nu * nu / (4.0 * sigma * sigma)
    b0 = ops.i0e(half_x)
    b1 = ops.i1e(half_x)
    two_half_x = 2.0 * half_x
    mean = (SQRT_HALF_PI * sigma) * ((1.0 + two_half_x) * b0 + two_half_x * b1)
    slope = (SQRT_HALF_PI / 2.0) * (nu / sigma) * (b0 + b1)
    return mean, slope


def loglinear_start(ops, y, axis: TimeAxis, sigma=None):
    """Weighted log-linear fit, the starting point (and the ``"loglinear"`` method).

    Fits ``log z = log A - rho tau`` by least squares with weights ``z^2`` (the inverse
    variance of ``log z`` for Gaussian noise on ``z``), where ``z`` is the magnitude, or for
    the Rician model the noise-floor corrected magnitude ``sqrt(max(y^2 - 2 sigma^2, 0))``.
    Echoes with ``z <= 0`` get zero weight.

    Returns
    -------
    A, rho : arrays, shape (n,)
        Finite start values; ``rho`` clipped to ``[-RHO_LIMIT, RHO_LIMIT]``.
    sum_squares : array, shape (n,)
        ``sum y^2`` (a by-product when ``z = y``).
    """
    xp = ops.xp
    z = y if sigma is None else xp.sqrt(ops.maximum(y * y - 2.0 * sigma * sigma, 0.0))
    W, Wt, Wtt, Wl, Wtl = ops.loglinear_sums(z, axis)
    slope = (W * Wtl - Wt * Wl) / (W * Wtt - Wt * Wt)
    log_a = (Wl - slope * Wt) / W
    ok = xp.isfinite(slope) & xp.isfinite(log_a)
    rho = ops.minimum(ops.maximum(xp.where(ok, -slope, 1.0), -RHO_LIMIT), RHO_LIMIT)
    amplitude = xp.where(ok, xp.exp(ops.minimum(ops.maximum(log_a, -80.0), 80.0)), y.mean(0))
    return amplitude, rho, (W if sigma is None else ops.column_sum_squares(y))


def levenberg_marquardt(ops, y, axis: TimeAxis, amplitude, rho, sum_squares, *, sigma=None, xtol: float, max_iter: int):
    """Refine ``(A, rho)`` by Levenberg-Marquardt, all voxels of the block at once.

    Each iteration solves the damped 2x2 system in closed form,
    ``(H + lambda diag(J^T J)) delta = J^T r`` (Marquardt's scaling), with ``H`` Newton's
    Hessian of the residual sum of squares where it is positive definite and Gauss-Newton's
    ``J^T J`` elsewhere, evaluates the trial point, keeps it where the residual sum of
    squares did not grow (within rounding) and divides lambda by 10, or else multiplies
    lambda by 10. A voxel has converged when,
    coming from an accepted step, its next step changes ``A`` and ``rho`` by less than
    ``xtol`` relatively; the iteration of a block stops when all its voxels have converged.
    Converged voxels are dropped from the working set once they are the majority, so a few
    slow voxels do not keep the whole block iterating.

    Parameters
    ----------
    ops : backend operations
    y : array, shape (E, n)
        Magnitudes, echoes first.
    axis : TimeAxis
    amplitude, rho : arrays, shape (n,)
        Start values (from :func:`loglinear_start`).
    sum_squares : array, shape (n,)
        ``sum y^2`` per voxel, the scale of the rounding error of the residual sum of squares.
    sigma : array (n,) or float, optional
        Noise sigma: fit the Rician expected magnitude instead of the exponential itself.
    xtol : float
        Relative step tolerance.
    max_iter : int
        Iterations at most.

    Returns
    -------
    dict of arrays, shape (n,)
        ``A``, ``rho``, ``rss`` and the Jacobian sums ``Q, Q1, Q2`` at the solution, and
        ``converged`` (bool).
    """
    xp = ops.xp
    eps = ops.eps(amplitude)
    per_voxel_sigma = sigma is not None and getattr(sigma, "ndim", 0) > 0
    rss, Q, Q1, Q2, G0, G1, G2 = ops.evaluate(y, axis, amplitude, rho, sigma)
    work = {
        "A": amplitude,
        "rho": rho,
        "rss": rss,
        "Q": Q,
        "Q1": Q1,
        "Q2": Q2,
        "G0": G0,
        "G1": G1,
        "G2": G2,
        "Y2": sum_squares,
        "lam": xp.full_like(amplitude, LAMBDA_START),
        "last_ok": ops.bools(amplitude, True),
        "converged": ops.bools(amplitude, False),
    }
    if per_voxel_sigma:
        work["sigma"] = sigma
    keys_out = ("A", "rho", "rss", "Q", "Q1", "Q2", "converged")
    keys_trial = ("rss", "Q", "Q1", "Q2", "G0", "G1", "G2")
    out = None
    index = ops.arange(amplitude)
    rounding = ROUNDING_UNITS * eps

    for _ in range(max_iter):
        w = work
        n_work = w["A"].shape[0]
        damping = 1.0 + w["lam"]
        a = w["Q"] * damping
        # Newton's Hessian (J^T J minus the residual-weighted model curvature) where it is
        # positive definite, else Gauss-Newton's J^T J: quadratic convergence also when the
        # residuals are large (low SNR), where Gauss-Newton alone crawls. (For the Rician
        # model the curvature of the Rician mean itself is left out: it shapes the path only.)
        b = w["Q1"] - w["G1"] / w["A"]
        c = w["Q2"] * damping - w["G2"] / w["A"]
        det = a * c - b * b
        newton = (c > 0) & (det > 0)
        if ops.count(newton) < n_work:
            c = xp.where(newton, c, w["Q2"] * damping)
            b = xp.where(newton, b, w["Q1"])
            det = a * c - b * b
        d_amp = (c * w["G0"] - b * w["G1"]) / det
        d_rho = (b * w["G0"] - a * w["G1"]) / (det * w["A"])
        small = (
            (xp.abs(d_rho) <= xtol * ops.maximum(xp.abs(w["rho"]), RHO_FLOOR))
            & (xp.abs(d_amp) <= xtol * xp.abs(w["A"]))
            & w["last_ok"]
        )
        if ops.count(small):
            # The last (tiny, nearly undamped) step is taken without evaluating it:
            # convergence is quadratic here, so the point after it is exact to the step
            # squared. (A voxel is ``small`` once: its ``last_ok`` is False from then on.)
            ops.assign(w["A"], w["A"] + d_amp, small)
            ops.assign(w["rho"], w["rho"] + d_rho, small)
            w["converged"] |= small
        active = ~w["converged"]
        n_active = ops.count(active)
        if n_active == 0:
            break
        if n_active < COMPACT_BELOW * n_work:
            out = _store(ops, out, w, index, keys_out)
            keep = ops.nonzero(active)
            work = {key: value[keep] for key, value in w.items()}
            y, index, d_amp, d_rho = y[:, keep], index[keep], d_amp[keep], d_rho[keep]
            w, n_work = work, n_active
        trial_amp = w["A"] + d_amp
        trial_rho = ops.minimum(ops.maximum(w["rho"] + d_rho, -RHO_LIMIT), RHO_LIMIT)
        trial = ops.evaluate(y, axis, trial_amp, trial_rho, w["sigma"] if per_voxel_sigma else sigma)
        # NaN in a trial compares False: rejected like a step that increased the cost.
        ok = trial[0] <= w["rss"] + rounding * xp.sqrt(w["rss"] * w["Y2"])
        if n_active < n_work:
            ok &= active
        if ops.count(ok) == n_work:
            w["A"], w["rho"] = trial_amp, trial_rho
            w.update(zip(keys_trial, trial))
            w["lam"] = ops.maximum(w["lam"] * LAMBDA_DOWN, LAMBDA_MIN)
        else:
            ops.assign(w["A"], trial_amp, ok)
            ops.assign(w["rho"], trial_rho, ok)
            for key, value in zip(keys_trial, trial):
                ops.assign(w[key], value, ok)
            w["lam"] = xp.where(
                ok, ops.maximum(w["lam"] * LAMBDA_DOWN, LAMBDA_MIN), ops.minimum(w["lam"] * LAMBDA_UP, LAMBDA_MAX)
            )
        w["last_ok"] = ok
    if out is None:
        return {key: work[key] for key in keys_out}
    return _store(ops, out, work, index, keys_out)


def _store(ops, out: dict | None, work: dict, index, keys) -> dict:
    """Write the working set's values into the block-sized outputs (created on first use,
    while the working set is still the whole block, as copies the caller owns)."""
    if out is None:
        return {key: ops.copy(work[key]) for key in keys}
    for key in keys:
        out[key][index] = work[key]
    return out


def fit_block(ops, y, axis: TimeAxis, *, method: str, sigma=None, xtol: float, max_iter: int) -> dict:
    """Fit one block of voxels and derive T, S0, r2 and the standard error of T.

    Parameters
    ----------
    ops : backend operations
    y : array, shape (E, n)
        Magnitudes, already screened (finite, non-negative, enough echoes above noise).
    axis : TimeAxis
    method : {"lm", "loglinear", "rician"}
    sigma : array (n,) or float, optional
        Noise sigma, required by ``"rician"``.
    xtol, max_iter
        See :func:`levenberg_marquardt`.

    Returns
    -------
    dict of arrays, shape (n,)
        ``T`` (ms), ``S0``, ``r2``, ``T_sd`` (ms), ``converged`` (bool), ``at_limit`` (bool:
        the rate hit the representable bound, so T is out of any sensible range).
    """
    xp = ops.xp
    rician_sigma = sigma if method == "rician" else None
    amplitude, rho, sum_squares = loglinear_start(ops, y, axis, rician_sigma)
    if method == "loglinear":
        rss, Q, Q1, Q2, _, _, _ = ops.evaluate(y, axis, amplitude, rho)
        res = {"A": amplitude, "rho": rho, "rss": rss, "Q": Q, "Q1": Q1, "Q2": Q2, "converged": ops.bools(rho, True)}
    else:
        res = levenberg_marquardt(
            ops, y, axis, amplitude, rho, sum_squares, sigma=rician_sigma, xtol=xtol, max_iter=max_iter
        )
    amplitude, rho = res["A"], res["rho"]
    n_echoes = y.shape[0]
    # Cramer-Rao form: var(rho) = sigma_hat^2 [ (J^T J)^-1 ]_rho,rho, sigma_hat^2 = rss / (E - 2).
    dof = n_echoes - 2
    sigma2_hat = res["rss"] / dof if dof > 0 else res["rss"] * math.nan
    var_rho = sigma2_hat * res["Q"] / (amplitude * amplitude * (res["Q"] * res["Q2"] - res["Q1"] * res["Q1"]))
    total_sum_squares = ops.centred_sum_squares(y)
    T = axis.t_scale / rho
    return {
        "T": T,
        "S0": amplitude * xp.exp(rho * (axis.t_ref / axis.t_scale)),
        "r2": 1.0 - res["rss"] / total_sum_squares,
        "T_sd": axis.t_scale * xp.sqrt(var_rho) / (rho * rho),
        "converged": res["converged"],
        "at_limit": xp.abs(rho) >= RHO_LIMIT,
    }
