"""numpy operations for the fitting kernel: the CPU backend.

The hot part of the fit is the sums over echoes of the residuals and the Jacobian
(:meth:`NumpyOps.evaluate`). They are computed echo by echo on contiguous voxel vectors,
writing into preallocated buffers: about 15 passes over a vector of the block per echo,
no ``(E, n)`` temporaries and no BLAS call (so worker threads never oversubscribe the
cores through a BLAS thread pool). numpy releases the GIL inside each pass, so blocks
run in parallel threads (see :func:`discvbr.fitting.fit_monoexp`).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from discvbr.fitting import kernel

#: Voxels per block: large enough that numpy's per-call overhead is small and that threads
#: spend little time waiting for the GIL, small enough that a block's working vectors
#: (a dozen of them) stay in the L2/L3 cache.
DEFAULT_BLOCK = 32768


class NumpyOps:
    """Array primitives and echo sums for :mod:`discvbr.fitting.kernel` on numpy arrays."""

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
    def eps(like: np.ndarray) -> float:
        return float(np.finfo(like.dtype).eps)

    @staticmethod
    def bools(like: np.ndarray, value: bool) -> np.ndarray:
        return np.full(like.shape, value, dtype=bool)

    @staticmethod
    def arange(like: np.ndarray) -> np.ndarray:
        return np.arange(like.shape[0])

    @staticmethod
    def count(mask: np.ndarray) -> int:
        return int(np.count_nonzero(mask))

    @staticmethod
    def copy(array: np.ndarray) -> np.ndarray:
        return array.copy()

    @staticmethod
    def column_mean(y: np.ndarray) -> np.ndarray:
        return y.mean(axis=0)

    @staticmethod
    def column_sum_squares(y: np.ndarray) -> np.ndarray:
        total = np.multiply(y[0], y[0])
        for row in y[1:]:
            total += row * row
        return total

    @staticmethod
    def column_centred_sum_squares(y: np.ndarray) -> np.ndarray:
        mean = y.mean(axis=0)
        total = np.zeros_like(mean)
        dev = np.empty_like(mean)
        for row in y:
            np.subtract(row, mean, out=dev)
            dev *= dev
            total += dev
        return total

    @staticmethod
    def loglinear_sums(z: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, ...]:
        """Weighted sums for the log-linear fit, weights ``z^2`` (zero where ``z = 0``)."""
        n = z.shape[1]
        W, Wt, Wtt, Wl, Wtl = (np.zeros(n, z.dtype) for _ in range(5))
        w = np.empty(n, z.dtype)
        log_z = np.empty(n, z.dtype)
        tmp = np.empty(n, z.dtype)
        tiny = np.finfo(z.dtype).tiny
        for row, t in zip(z, tau):
            np.multiply(row, row, out=w)
            # log of the smallest normal number where z = 0, so that 0 * log stays 0
            np.maximum(row, tiny, out=log_z)
            np.log(log_z, out=log_z)
            W += w
            np.multiply(w, log_z, out=tmp)
            Wl += tmp
            tmp *= t
            Wtl += tmp
            w *= t
            Wt += w
            w *= t
            Wtt += w
        return W, Wt, Wtt, Wl, Wtl

    @staticmethod
    def evaluate(y, tau, amplitude, rho, sigma=None):
        """Residual sum of squares and Jacobian sums at ``(A, rho)``.

        With ``e_k = exp(-rho tau_k)``, model ``m_k = A e_k`` (Gaussian) or the Rician mean
        of ``A e_k`` (when ``sigma`` is given) with slope ``s_k = dm/dnu``, residuals
        ``r_k = y_k - m_k`` and Jacobian factor ``j_k = s_k e_k`` (``e_k`` when Gaussian):

        ``rss = sum r^2``, ``Q = sum j^2``, ``Q1 = sum tau j^2``, ``Q2 = sum tau^2 j^2``,
        ``G0 = sum r j``, ``G1 = sum tau r j``.
        The Jacobian of the model is ``[j, -A tau j]``, so ``J^T J`` and ``J^T r`` follow.

        Returns
        -------
        rss, Q, Q1, Q2, G0, G1 : ndarray, shape (n,)
        """
        n = amplitude.shape[0]
        dtype = amplitude.dtype
        rss, Q, Q1, Q2, G0, G1 = (np.empty(n, dtype) for _ in range(6))
        e = np.empty(n, dtype)
        r = np.empty(n, dtype)
        tmp = np.empty(n, dtype)
        for k, t in enumerate(tau):
            np.multiply(rho, -t, out=e)
            np.exp(e, out=e)
            np.multiply(e, amplitude, out=r)
            if sigma is None:
                np.subtract(y[k], r, out=r)
            else:
                mean, slope = kernel.rician_mean_and_slope(NumpyOps, r, sigma)
                np.subtract(y[k], mean, out=r)
                e *= slope
            if k == 0:
                np.multiply(r, r, out=rss)
                np.multiply(r, e, out=G0)
                np.multiply(G0, t, out=G1)
                np.multiply(e, e, out=Q)
                np.multiply(Q, t, out=Q1)
                np.multiply(Q1, t, out=Q2)
                continue
            np.multiply(r, r, out=tmp)
            rss += tmp
            np.multiply(r, e, out=tmp)
            G0 += tmp
            tmp *= t
            G1 += tmp
            np.multiply(e, e, out=tmp)
            Q += tmp
            tmp *= t
            Q1 += tmp
            tmp *= t
            Q2 += tmp
        return rss, Q, Q1, Q2, G0, G1


def fit_block(y: np.ndarray, axis: kernel.TimeAxis, *, method: str, sigma, xtol: float, max_iter: int) -> dict:
    """Run :func:`discvbr.fitting.kernel.fit_block` on a numpy block ``(E, n)``."""
    with np.errstate(all="ignore"):
        return kernel.fit_block(NumpyOps, y, axis, method=method, sigma=sigma, xtol=xtol, max_iter=max_iter)
