"""Voxel-wise mono-exponential relaxometry fit: the public entry point.

:func:`fit_monoexp` checks the input, screens every voxel (mask, non-finite or negative
values, echoes above noise), cuts the voxels to fit into blocks, fits each block with the
backend's implementation of :mod:`discvbr.fitting.kernel` (numpy threads on the CPU, torch
on CUDA) and assembles the maps with one status code per voxel.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Iterator

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.fitting import kernel, numpy_backend
from discvbr.fitting.presets import FitPreset, get_preset
from discvbr.io import validate_times

__all__ = ["FitStatus", "FitResult", "fit_monoexp", "METHODS"]

#: Fitting methods: name -> one-line description.
METHODS: dict[str, str] = {
    "lm": "Levenberg-Marquardt least squares of S0 exp(-t/T), started from the weighted log-linear fit",
    "loglinear": "weighted log-linear least squares only (closed form; a fast preview, biased at low SNR)",
    "rician": "Levenberg-Marquardt on the Rician expected magnitude of S0 exp(-t/T) (low SNR, sigma known)",
}

#: Voxels per mask scan: the mask is turned into voxel indices this many voxels at a time,
#: so memory stays bounded for any volume.
_MASK_SCAN = 1 << 20


class FitStatus(IntEnum):
    """Outcome of the fit in one voxel (stored as uint8 in :attr:`FitResult.status`)."""

    #: Outside the mask: not fitted.
    NOT_FITTED = 0
    #: Fitted, converged, T within range: the only valid status.
    CONVERGED = 1
    #: NaN or infinite magnitude in at least one echo.
    NONFINITE_INPUT = 2
    #: Negative magnitude in at least one echo (magnitudes cannot be negative; often
    #: interpolation ringing or a signed image).
    NEGATIVE_INPUT = 3
    #: Fewer than ``min_echoes`` echoes above the noise floor (zeros count as below it).
    LOW_SIGNAL = 4
    #: Converged, but T is outside ``(t_min, t_max)`` (or negative, or unrepresentably short).
    T_OUT_OF_RANGE = 5
    #: The Levenberg-Marquardt iterations did not converge within ``max_iter``.
    NOT_CONVERGED = 6

    @property
    def description(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    FitStatus.NOT_FITTED: "not fitted (outside the mask)",
    FitStatus.CONVERGED: "converged, T in range",
    FitStatus.NONFINITE_INPUT: "NaN or infinite input",
    FitStatus.NEGATIVE_INPUT: "negative magnitude",
    FitStatus.LOW_SIGNAL: "too few echoes above noise",
    FitStatus.T_OUT_OF_RANGE: "T out of range",
    FitStatus.NOT_CONVERGED: "did not converge",
}


@dataclass(frozen=True)
class FitResult:
    """Maps from :func:`fit_monoexp`, each of the signal's spatial shape ``(...)``.

    Attributes
    ----------
    T : ndarray
        Relaxation time (ms): T1rho for spin-lock times, T2 for echo times. NaN where not valid.
    S0 : ndarray
        Signal extrapolated to t = 0 (signal units). NaN where not valid.
    r2 : ndarray
        Coefficient of determination of the fit, ``1 - RSS / sum (y - mean y)^2``. NaN where
        not valid.
    T_sd : ndarray
        Standard error of T (ms): ``sigma_hat^2 T^4 A / (S0^2 (A C - B^2))`` from the
        Jacobian at the optimum with ``sigma_hat^2 = RSS / (E - 2)`` (METHODS.md section 3).
        NaN where not valid, and everywhere with only 2 echoes (no residual degrees of freedom).
    status : ndarray of uint8
        :class:`FitStatus` code per voxel.
    params : dict
        The options the fit ran with (method, backend, device, thresholds...), for provenance.
    """

    T: np.ndarray
    S0: np.ndarray
    r2: np.ndarray
    T_sd: np.ndarray
    status: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        """Boolean map: fitted, converged and T in range."""
        return self.status == FitStatus.CONVERGED

    def status_counts(self) -> dict[str, int]:
        """Number of voxels per status, by status name (every status listed)."""
        counts = np.bincount(self.status.reshape(-1), minlength=len(FitStatus))
        return {status.name: int(counts[status]) for status in FitStatus}


def fit_monoexp(
    signal: np.ndarray,
    times,
    mask: np.ndarray | None = None,
    *,
    method: str = "lm",
    device: str = "auto",
    backend: str = "auto",
    preset: str | FitPreset | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
    noise_sigma: float | np.ndarray | None = None,
    min_snr: float = 2.0,
    min_echoes: int = 2,
    dtype: str = "float32",
    xtol: float | None = None,
    max_iter: int = 50,
    block_size: int | None = None,
    n_threads: int | None = None,
) -> FitResult:
    """Fit ``S(t) = S0 exp(-t / T)`` in every voxel of a multi-echo series.

    Two-parameter Levenberg-Marquardt (Marquardt damping, the 2x2 normal equations solved
    in closed form per voxel), started from the weighted log-linear fit and vectorised over
    voxels: the same least-squares optimum as ``scipy.optimize.curve_fit`` in each voxel,
    without a loop over voxels. See :mod:`discvbr.fitting.kernel` for the algorithm.

    Parameters
    ----------
    signal : array_like, shape (..., E)
        Magnitude images, echoes on the last axis (any real dtype; converted block by block).
    times : sequence of float, shape (E,)
        Echo times (T2) or spin-lock times (T1rho) in ms: finite, >= 0, strictly increasing.
    mask : array_like, shape (...), optional
        Voxels to fit (non-zero); a disc label map works as is. Default: every voxel.
    method : {"lm", "loglinear", "rician"}
        ``"lm"``: least squares of the exponential (Gaussian noise), the paper's method.
        ``"loglinear"``: weighted log-linear fit only; closed form, a preview, biased when
        the last echoes approach the noise floor.
        ``"rician"``: least squares of the Rician expected magnitude of the exponential
        (needs ``noise_sigma``). Use it when the last echoes are within a few sigma of the
        noise floor (SNR of the last echo below about 5), where the Gaussian fit
        overestimates T because magnitude noise never averages to zero; at high SNR it
        equals ``"lm"`` and costs more.
    device : str
        ``"auto"`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``.
    backend : {"auto", "numpy", "torch"}
        ``"auto"``: numpy on the CPU, torch on CUDA. ``"torch"`` with ``device="cpu"`` runs
        the torch code on the CPU.
    preset : str or FitPreset, optional
        The paper's T range for a kind of series, from :data:`discvbr.fitting.PRESETS`
        (e.g. ``"t1rho_b"``, ``"t2"``); explicit ``t_min``/``t_max`` override it.
    t_min, t_max : float, optional
        Valid T range in ms, exclusive: ``t_min < T < t_max``. Defaults: the preset's, else
        0 and infinity.
    noise_sigma : float or array_like of shape (...), optional
        Standard deviation of the Gaussian noise in each channel of the complex signal
        (the Rician sigma), scalar or per voxel. Sets the noise floor ``min_snr * sigma``
        below which an echo does not count as signal; required by ``"rician"``.
    min_snr : float
        An echo is above noise when its magnitude exceeds ``min_snr * noise_sigma`` (or 0
        when no sigma is given).
    min_echoes : int
        Echoes above noise that a voxel needs to be fitted (>= 2).
    dtype : {"float32", "float64"}
        Working precision. float32 (default) is about twice as fast and agrees with a
        float64 fit to about 1e-4 ms for T of 40-200 ms at SNR 100.
    xtol : float, optional
        Relative step below which a voxel has converged. Default 1e-5 in float32, 1e-9 in
        float64 (well above each precision's rounding).
    max_iter : int
        Levenberg-Marquardt iterations at most.
    block_size : int, optional
        Voxels per block (memory per block is a few dozen values per voxel and echo).
        Default: 262144 / E on numpy (32768 for 8 echoes), 65536 with torch on the CPU,
        4194304 on CUDA.
    n_threads : int, optional
        Worker threads for the numpy backend; default: the CPUs this process may use.

    Returns
    -------
    FitResult
        Maps ``T``, ``S0``, ``r2``, ``T_sd`` (working dtype) and ``status`` (uint8), of
        shape ``signal.shape[:-1]``.

    Raises
    ------
    DiscVBRError
        Invalid times (fewer than 2, negative, duplicate, not increasing), a signal whose last
        axis does not match the times, a mask of another shape, unknown options, a missing
        or non-positive ``noise_sigma`` where needed. Bad values inside voxels (NaN, inf,
        negative) are not errors: those voxels get their status and the rest are fitted.

    References
    ----------
    Marquardt DW. An algorithm for least-squares estimation of nonlinear parameters.
    J Soc Ind Appl Math 1963;11:431-441.
    Iriondo C, Pedoia V, Majumdar S, et al. Magn Reson Med 2020;84:1376-1390 (section 2.2).
    Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. Magn Reson Med
    1995;34:910-914.
    """
    signal = np.asarray(signal)
    options = check_options(
        times, signal.shape, method=method, preset=preset, t_min=t_min, t_max=t_max, noise_sigma=noise_sigma,
        min_snr=min_snr, min_echoes=min_echoes, dtype=dtype, xtol=xtol, max_iter=max_iter,
    )
    if not (np.issubdtype(signal.dtype, np.integer) or np.issubdtype(signal.dtype, np.floating)):
        raise DiscVBRError(f"signal must hold real magnitudes, got dtype {signal.dtype}")
    times, n_echoes, spatial = options.times, options.times.size, signal.shape[:-1]
    work_dtype, xtol, t_min, t_max = options.dtype, options.xtol, options.t_min, options.t_max

    mask_flat = _flat_mask(mask, spatial)
    sigma_flat = _flat_sigma(noise_sigma, spatial, mask_flat)

    backend_name, device_name = _resolve_backend(backend, device)
    axis = kernel.TimeAxis.from_times(times, work_dtype)
    if backend_name == "numpy":
        block_size = int(block_size or numpy_backend.default_block(n_echoes))

        def fit_block(y, *, sigma):
            return numpy_backend.fit_block(y, axis, method=method, sigma=sigma, xtol=xtol, max_iter=int(max_iter))

        workers = int(n_threads or _available_cpus())
    else:
        from discvbr.fitting import torch_backend

        fitter = torch_backend.TorchBlockFitter(axis, device_name, work_dtype)
        default = torch_backend.DEFAULT_BLOCK_CUDA if fitter.device.type == "cuda" else torch_backend.DEFAULT_BLOCK_CPU
        block_size = int(block_size or default)

        def fit_block(y, *, sigma):
            return fitter(y, method=method, sigma=sigma, xtol=xtol, max_iter=int(max_iter))

        # torch parallelises inside each operation (CPU threads or the GPU).
        workers = 1
    if block_size < 1:
        raise DiscVBRError(f"block_size must be positive, got {block_size}")

    n_voxels = int(np.prod(spatial, dtype=np.int64))
    flat_signal = signal.reshape(n_voxels, n_echoes)
    maps = {name: np.full(n_voxels, np.nan, dtype=work_dtype) for name in ("T", "S0", "r2", "T_sd")}
    status = np.full(n_voxels, FitStatus.NOT_FITTED, dtype=np.uint8)

    def fit_selection(selection) -> None:
        y = np.ascontiguousarray(flat_signal[selection].T, dtype=work_dtype)
        floor = 0.0 if sigma_flat is None else min_snr * (
            sigma_flat if np.ndim(sigma_flat) == 0 else sigma_flat[selection]
        )
        block_status = _screen(y, floor, int(min_echoes))
        todo = block_status == _PENDING
        if not todo.all():
            y = np.ascontiguousarray(y[:, todo])
        sigma = None
        if sigma_flat is not None:
            sigma = sigma_flat if np.ndim(sigma_flat) == 0 else sigma_flat[selection][todo].astype(work_dtype)
        values = {name: np.full(todo.shape, np.nan, dtype=work_dtype) for name in maps}
        if y.shape[1]:
            res = fit_block(y, sigma=sigma)
            with np.errstate(invalid="ignore"):
                fitted = fitted_status(np, res, t_min, t_max).astype(np.uint8)
            block_status[todo] = fitted
            keep = fitted == FitStatus.CONVERGED
            for name in maps:
                values[name][todo] = np.where(keep, res[name], np.nan)
        status[selection] = block_status
        for name in maps:
            maps[name][selection] = values[name]

    _run_parallel(fit_selection, _selections(mask_flat, n_voxels, block_size), workers)

    params = options.as_params(
        backend=backend_name, device=device_name,
        noise_sigma=None if sigma_flat is None else ("per-voxel" if np.ndim(sigma_flat) else float(sigma_flat)),
    )
    return FitResult(
        T=maps["T"].reshape(spatial),
        S0=maps["S0"].reshape(spatial),
        r2=maps["r2"].reshape(spatial),
        T_sd=maps["T_sd"].reshape(spatial),
        status=status.reshape(spatial),
        params=params,
    )


#: Internal status of a screened voxel that still has to be fitted.
_PENDING = 255


@dataclass(frozen=True)
class FitOptions:
    """Checked options of a fit (see :func:`fit_monoexp` for their meaning)."""

    times: np.ndarray
    method: str
    preset: FitPreset | None
    t_min: float
    t_max: float
    min_snr: float
    min_echoes: int
    dtype: np.dtype
    xtol: float
    max_iter: int

    def as_params(self, *, backend: str, device: str, noise_sigma) -> dict:
        """The provenance record stored with the maps."""
        return {
            "method": self.method,
            "backend": backend,
            "device": device,
            "dtype": self.dtype.name,
            "times_ms": self.times.tolist(),
            "preset": self.preset.name if self.preset else None,
            "t_min_ms": self.t_min,
            "t_max_ms": self.t_max,
            "noise_sigma": noise_sigma,
            "min_snr": self.min_snr,
            "min_echoes": self.min_echoes,
            "xtol": self.xtol,
            "max_iter": self.max_iter,
        }


def check_options(
    times, signal_shape: tuple[int, ...], *, method, preset, t_min, t_max, noise_sigma, min_snr, min_echoes, dtype,
    xtol, max_iter,
) -> FitOptions:
    """Validate the times, the signal's shape and the options shared by every fitting entry point.

    Raises
    ------
    DiscVBRError
        Naming the option that is out of range or unknown.
    """
    times = validate_times(times, what="times")
    n_echoes = times.size
    if len(signal_shape) < 1 or signal_shape[-1] != n_echoes:
        raise DiscVBRError(
            f"signal of shape {tuple(signal_shape)} does not match the {n_echoes} times given: "
            "echoes must be on the last axis, one per time"
        )
    if method not in METHODS:
        raise DiscVBRError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    preset_obj = get_preset(preset) if preset is not None else None
    t_min = float(t_min if t_min is not None else (preset_obj.t_min if preset_obj else 0.0))
    t_max = float(t_max if t_max is not None else (preset_obj.t_max if preset_obj else np.inf))
    if not (t_min >= 0 and t_max > t_min):
        raise DiscVBRError(f"T range must satisfy 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max} ms")
    if not 2 <= int(min_echoes) <= n_echoes:
        raise DiscVBRError(f"min_echoes must be between 2 and the number of echoes ({n_echoes}), got {min_echoes}")
    if not (np.isfinite(min_snr) and min_snr >= 0):
        raise DiscVBRError(f"min_snr must be a non-negative number, got {min_snr}")
    if int(max_iter) < 1:
        raise DiscVBRError(f"max_iter must be at least 1, got {max_iter}")
    try:
        work_dtype = np.dtype(dtype)
    except TypeError:
        raise DiscVBRError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if work_dtype not in kernel.DEFAULT_XTOL:
        raise DiscVBRError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    xtol = kernel.DEFAULT_XTOL[work_dtype] if xtol is None else float(xtol)
    if not 0 < xtol < 1:
        raise DiscVBRError(f"xtol must be in (0, 1), got {xtol}")
    if method == "rician" and noise_sigma is None:
        raise DiscVBRError(
            "method 'rician' needs noise_sigma (the Gaussian noise SD per channel); estimate it from a "
            "background region with discvbr.fitting.estimate_noise_sigma"
        )
    return FitOptions(times, method, preset_obj, t_min, t_max, float(min_snr), int(min_echoes), work_dtype, xtol, int(max_iter))


def fitted_status(xp, res: dict, t_min: float, t_max: float):
    """Status of fitted voxels from a kernel result: converged and in range, out of range, or not converged.

    ``xp`` is numpy or torch; returns an integer array of :class:`FitStatus` codes.
    """
    in_range = ~res["at_limit"] & (res["T"] > t_min) & (res["T"] < t_max)
    return xp.where(
        res["converged"],
        xp.where(in_range, int(FitStatus.CONVERGED), int(FitStatus.T_OUT_OF_RANGE)),
        int(FitStatus.NOT_CONVERGED),
    )


def _screen(y: np.ndarray, floor, min_echoes: int) -> np.ndarray:
    """Status per voxel of a block ``(E, n)`` before fitting (``_PENDING`` = fit it)."""
    status = np.full(y.shape[1], _PENDING, dtype=np.uint8)
    # min/max over echoes propagate NaN and carry +-inf: two passes instead of one per test.
    lowest = y.min(axis=0)
    highest = y.max(axis=0)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(lowest) & np.isfinite(highest)
        doubtful = ~(lowest > floor)  # some echo at or below the floor (or non-finite)
    if doubtful.any():
        columns = np.flatnonzero(doubtful)
        part = y[:, columns]
        floor_part = floor if np.ndim(floor) == 0 else floor[columns]
        with np.errstate(invalid="ignore"):
            above = (part > floor_part).sum(axis=0)
        status[columns[above < min_echoes]] = FitStatus.LOW_SIGNAL
        status[columns[lowest[columns] < 0]] = FitStatus.NEGATIVE_INPUT
    status[~finite] = FitStatus.NONFINITE_INPUT
    return status


def _flat_mask(mask, spatial: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != spatial:
        raise DiscVBRError(f"mask of shape {mask.shape} does not match the signal's spatial shape {spatial}")
    if np.issubdtype(mask.dtype, np.floating):
        return ((mask != 0) & ~np.isnan(mask)).reshape(-1)
    return (mask != 0).reshape(-1)


def _flat_sigma(noise_sigma, spatial: tuple[int, ...], mask_flat: np.ndarray | None):
    if noise_sigma is None:
        return None
    sigma = np.asarray(noise_sigma, dtype=np.float64)
    if sigma.ndim == 0:
        if not (np.isfinite(sigma) and sigma > 0):
            raise DiscVBRError(f"noise_sigma must be a positive number, got {noise_sigma}")
        return float(sigma)
    if sigma.shape != spatial:
        raise DiscVBRError(f"noise_sigma map of shape {sigma.shape} does not match the spatial shape {spatial}")
    sigma = sigma.reshape(-1)
    used = sigma if mask_flat is None else sigma[mask_flat]
    if not np.all(np.isfinite(used) & (used > 0)):
        raise DiscVBRError("noise_sigma map must be finite and positive in every voxel to fit")
    return sigma


def _resolve_backend(backend: str, device: str) -> tuple[str, str]:
    device = str(device).lower()
    if backend not in ("auto", "numpy", "torch"):
        raise DiscVBRError(f"unknown backend {backend!r}; choose 'auto', 'numpy' or 'torch'")
    if device == "auto":
        if backend == "numpy":
            device = "cpu"
        else:
            from discvbr.fitting.torch_backend import cuda_available

            device = "cuda" if cuda_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise DiscVBRError(f"unknown device {device!r}; choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if backend == "auto":
        backend = "numpy" if device == "cpu" else "torch"
    if backend == "numpy" and device != "cpu":
        raise DiscVBRError(f"the numpy backend runs on the CPU only, not on {device!r}; use backend='torch'")
    return backend, device


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _selections(mask_flat: np.ndarray | None, n_voxels: int, block_size: int) -> Iterator[slice | np.ndarray]:
    """Blocks of voxels to fit: slices without a mask, index arrays of masked voxels with one."""
    if mask_flat is None:
        for start in range(0, n_voxels, block_size):
            yield slice(start, min(start + block_size, n_voxels))
        return
    pending = np.empty(0, dtype=np.int64)
    for start in range(0, n_voxels, _MASK_SCAN):
        found = np.flatnonzero(mask_flat[start : start + _MASK_SCAN])
        found += start
        pending = np.concatenate([pending, found]) if pending.size else found
        while pending.size >= block_size:
            yield pending[:block_size]
            pending = pending[block_size:]
    if pending.size:
        yield pending


def _run_parallel(work: Callable, items: Iterator, n_workers: int) -> None:
    """Call ``work(item)`` for every item on ``n_workers`` threads, pulling items lazily."""
    if n_workers <= 1:
        for item in items:
            work(item)
        return
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                item = next(items, None)
            if item is None:
                return
            work(item)

    with ThreadPoolExecutor(n_workers) as pool:
        futures = [pool.submit(worker) for _ in range(n_workers)]
        for future in futures:
            future.result()
