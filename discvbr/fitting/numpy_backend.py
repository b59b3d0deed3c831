"""numpy operations for the fitting kernel: the CPU backend.

:mod:`discvbr.fitting.kernel` holds the algorithm; this adapter gives it numpy, the few
primitives numpy spells differently from torch, and the sums over echoes. Those are
computed echo by echo on contiguous voxel vectors, into preallocated buffers (in the
residual sums, the three running sums weighted by ``1, tau, tau^2`` are stacked so that
one call updates all three). Measured on the development machine, this beats whole
``(E, n)`` arrays with ``einsum`` contractions: fewer and smaller temporaries, which stay
in cache and spare the allocator (page faults from freshly mapped memory cost as much as
the arithmetic). No BLAS is called, and numpy releases the GIL inside each operation,
so :func:`discvbr.fitting.fit_monoexp` runs blocks in parallel threads without
oversubscribing the cores.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from discvbr.fitting import kernel

#: Values per block (voxels x echoes): 256 Ki, 1 MiB of float32 signal, so that the block
#: and its working vectors stay in the CPU caches while numpy's per-call overhead and the
#: threads' waits for the GIL stay small.
BLOCK_VALUES = 1 << 18


def default_block(n_echoes: int) -> int:
    """Voxels per block for ``n_echoes`` echoes (at least 4096)."""
    return max(4096, BLOCK_VALUES // n_echoes)


class NumpyOps:
    """Array primitives for :mod:`discvbr.fitting.kernel` on numpy arrays."""

    xp = np
    i0e = staticmethod(special.i0e)
    i1e = staticmethod(special.i1e)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)

    @staticmethod
    def assign(target: np.ndarray, values: np.ndarray, where: np.ndarray) -> None:
        """``target[where] = values[where]``, in place."""
        np.copyto(target, values, where=where)

    @staticmethod
    def nonzero(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask)

    @staticmethod
    def count(mask: np.ndarray) -> int:
        return int(np.count_nonzero(mask))

    @staticmethod
    def bools(like: np.ndarray, value: bool) -> np.ndarray:
        return np.full(like.shape, value, dtype=bool)

    @staticmethod
    def arange(like: np.ndarray) -> np.ndarray:
        return np.arange(like.shape[0])

    @staticmethod
    def copy(array: np.ndarray) -> np.ndarray:
        return array.copy()

    @staticmethod
    def eps(like: np.ndarray) -> float:
        return float(np.finfo(like.dtype).eps)

    @staticmethod
    def column_sum_squares(y: np.ndarray) -> np.ndarray:
        """``sum_k y_k^2`` per voxel of an ``(E, n)`` block."""
        total = np.multiply(y[0], y[0])
        square = np.empty_like(total)
        for row in y[1:]:
            np.multiply(row, row, out=square)
            total += square
        return total

    @staticmethod
    def centred_sum_squares(y: np.ndarray) -> np.ndarray:
        """``sum_k (y_k - mean y)^2`` per voxel of an ``(E, n)`` block."""
        mean = y.mean(axis=0)
        total = np.zeros_like(mean)
        deviation = np.empty_like(mean)
        for row in y:
            np.subtract(row, mean, out=deviation)
            deviation *= deviation
            total += deviation
        return total

    @staticmethod
    def loglinear_sums(z: np.ndarray, axis: kernel.TimeAxis) -> tuple[np.ndarray, ...]:
        """Weighted sums of the log-linear fit, weights ``w = z^2``:
        ``sum w``, ``sum w tau``, ``sum w tau^2``, ``sum w log z``, ``sum w tau log z``."""
        n = z.shape[1]
        W, Wt, Wtt, Wl, Wtl = (np.zeros(n, z.dtype) for _ in range(5))
        weight = np.empty(n, z.dtype)
        log_z = np.empty(n, z.dtype)
        product = np.empty(n, z.dtype)
        tiny = np.finfo(z.dtype).tiny
        for row, t in zip(z, axis.tau):
            np.multiply(row, row, out=weight)
            # log of the smallest normal number where z = 0, so that weight * log stays 0
            np.maximum(row, tiny, out=log_z)
            np.log(log_z, out=log_z)
            W += weight
            np.multiply(weight, log_z, out=product)
            Wl += product
            product *= t
            Wtl += product
            weight *= t
            Wt += weight
            weight *= t
            Wtt += weight
        return W, Wt, Wtt, Wl, Wtl

    @staticmethod
    def evaluate(y, axis: kernel.TimeAxis, amplitude, rho, sigma=None):
        """Residual sum of squares and Jacobian sums at ``(A, rho)``, per voxel.

        With ``e_k = exp(-rho tau_k)``, model ``m_k = A e_k`` (Gaussian) or the Rician mean
        of ``A e_k`` (when ``sigma`` is given) with slope ``s_k = dm/dnu``, residuals
        ``r_k = y_k - m_k`` and Jacobian factor ``j_k = s_k e_k`` (``e_k`` when Gaussian),
        the Jacobian of the model with respect to ``(A, rho)`` is ``[j_k, -A tau_k j_k]``,
        so ``J^T J`` and ``J^T r`` follow from ``rss = sum r^2``, ``Q = sum j^2``,
        ``Q1 = sum tau j^2``, ``Q2 = sum tau^2 j^2``, ``G0 = sum r j``, ``G1 = sum tau r j``,
        and the curvature term of Newton's Hessian from ``G1`` and ``G2 = sum tau^2 r j``.

        Parameters
        ----------
        y : ndarray, shape (E, n)
        axis : kernel.TimeAxis
        amplitude, rho : ndarray, shape (n,)
        sigma : ndarray (n,) or float, optional

        Returns
        -------
        rss, Q, Q1, Q2, G0, G1, G2 : ndarray, shape (n,)
        """
        n = amplitude.shape[0]
        dtype = amplitude.dtype
        sums = np.empty((7, n), dtype)
        rss, squares, gradient = sums[0], sums[1:4], sums[4:7]
        e = np.empty(n, dtype)
        r = np.empty(n, dtype)
        product = np.empty(n, dtype)
        stacked = np.empty((3, n), dtype)
        for k, t in enumerate(axis.tau):
            np.multiply(rho, -t, out=e)
            np.exp(e, out=e)
            np.multiply(e, amplitude, out=r)
            if sigma is None:
                np.subtract(y[k], r, out=r)
            else:
                mean, slope = kernel.rician_mean_and_slope(NumpyOps, r, sigma)
                np.subtract(y[k], mean, out=r)
                e *= slope
            powers = axis.powers[:, k, None]
            if k == 0:
                np.multiply(r, r, out=rss)
                np.multiply(r, e, out=product)
                np.multiply(product, powers, out=gradient)
                np.multiply(e, e, out=product)
                np.multiply(product, powers, out=squares)
                continue
            np.multiply(r, r, out=product)
            rss += product
            np.multiply(r, e, out=product)
            np.multiply(product, powers, out=stacked)
            gradient += stacked
            np.multiply(e, e, out=product)
            np.multiply(product, powers, out=stacked)
            squares += stacked
        return tuple(sums)


def fit_block(y: np.ndarray, axis: kernel.TimeAxis, *, method: str, sigma, xtol: float, max_iter: int) -> dict:
    """Run :func:`discvbr.fitting.kernel.fit_block` on a numpy block ``(E, n)``."""
    with np.errstate(all="ignore"):
        return kernel.fit_block(NumpyOps, y, axis, method=method, sigma=sigma, xtol=xtol, max_iter=max_iter)
