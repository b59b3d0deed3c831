"""Noise in magnitude images: the Rician mean, sigma from background, the precision limit.

A magnitude image is ``M = |nu + n|`` with complex Gaussian noise ``n`` of standard
deviation ``sigma`` in each channel: Rician distributed, Rayleigh where there is no
signal. These helpers estimate ``sigma`` from a signal-free background region, give the
expected magnitude the ``"rician"`` fit models, and the Cramer-Rao bound on T that the
Levenberg-Marquardt fit reaches at high SNR.
"""

from __future__ import annotations

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.fitting import kernel
from discvbr.fitting.numpy_backend import NumpyOps

__all__ = ["rician_mean", "estimate_noise_sigma", "cramer_rao_sd"]


def rician_mean(nu, sigma):
    """Expected magnitude ``E[|nu + n|]`` of a Rician variable.

    Parameters
    ----------
    nu : array_like
        Noise-free magnitude (>= 0).
    sigma : float or array_like
        Noise standard deviation per channel (> 0), broadcastable to ``nu``.

    Returns
    -------
    ndarray (float64)
        ``sigma sqrt(pi/2) L_{1/2}(-nu^2 / (2 sigma^2))``: ``sigma sqrt(pi/2)`` (the Rayleigh
        mean) at ``nu = 0``, tending to ``nu`` at high SNR.

    References
    ----------
    Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. Magn Reson Med
    1995;34:910-914.
    """
    nu = np.asarray(nu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    return kernel.rician_mean_and_slope(NumpyOps, nu, sigma)[0]


def estimate_noise_sigma(signal, background) -> float:
    """Rician ``sigma`` from a signal-free (air) background region.

    Maximum-likelihood estimate for Rayleigh-distributed magnitudes,
    ``sigma^2 = sum M^2 / (2 N)`` over all background voxels and echoes.

    Parameters
    ----------
    signal : array_like, shape (..., E) or (...)
        Magnitude images.
    background : array_like of bool, shape (...)
        Voxels with no signal (air outside the body; not tissue outside a disc mask).

    Returns
    -------
    float
        The noise standard deviation per channel, in signal units.

    Raises
    ------
    DiscVBRError
        Background of another shape, empty, or with non-finite values.

    Notes
    -----
    Valid for single-channel or adaptively combined magnitude data. Root-sum-of-squares
    multi-coil images are non-central chi rather than Rician in the background, and
    parallel imaging makes the noise vary in space; measure sigma another way there.
    """
    signal = np.asarray(signal)
    background = np.asarray(background)
    if background.shape not in (signal.shape, signal.shape[:-1]):
        raise DiscVBRError(f"background mask of shape {background.shape} does not fit the signal of shape {signal.shape}")
    values = signal[background.astype(bool)].astype(np.float64)
    if values.size == 0:
        raise DiscVBRError("background mask is empty: no voxel to estimate the noise from")
    if not np.all(np.isfinite(values)):
        raise DiscVBRError("background region contains NaN or infinite values")
    sigma = float(np.sqrt(np.mean(values * values) / 2.0))
    if sigma <= 0:
        raise DiscVBRError("background region is exactly zero: the noise cannot be estimated from it")
    return sigma


def cramer_rao_sd(T, S0, sigma, times) -> np.ndarray:
    """Cramer-Rao lower bound on the standard deviation of T for ``S0 exp(-t/T)``.

    ``var(T) >= sigma^2 T^4 A / (S0^2 (A C - B^2))`` with ``e_i = exp(-t_i/T)``,
    ``A = sum e_i^2``, ``B = sum t_i e_i^2``, ``C = sum t_i^2 e_i^2`` (METHODS.md section 3),
    for Gaussian noise of standard deviation ``sigma`` on every echo.

    Parameters
    ----------
    T : float or array_like
        Relaxation time (ms).
    S0 : float or array_like
        Signal at t = 0.
    sigma : float or array_like
        Noise standard deviation.
    times : array_like, shape (E,)
        Echo or spin-lock times (ms).

    Returns
    -------
    ndarray
        The bound on the standard deviation of T (ms), broadcast over the inputs.
    """
    T = np.asarray(T, dtype=np.float64)[..., None]
    times = np.asarray(times, dtype=np.float64)
    e2 = np.exp(-2.0 * times / T)
    A = e2.sum(-1)
    B = (times * e2).sum(-1)
    C = (times * times * e2).sum(-1)
    T = T[..., 0]
    S0 = np.asarray(S0, dtype=np.float64)
    return np.sqrt(np.asarray(sigma, dtype=np.float64) ** 2 * T**4 * A / (S0**2 * (A * C - B * B)))
