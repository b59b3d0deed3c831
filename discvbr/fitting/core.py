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
from typing import Callable, Iterator

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.fitting import kernel, numpy_backend
from discvbr.fitting.options import check_options, flat_sigma
from discvbr.fitting.presets import FitPreset
from discvbr.fitting.status import PENDING, FitResult, FitStatus, fitted_status

__all__ = ["fit_monoexp"]

#: Voxels per mask scan: the mask is turned into voxel indices this many voxels at a time,
#: so memory stays bounded for any volume.
_MASK_SCAN = 1 << 20


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
    sigma_flat = flat_sigma(noise_sigma, spatial, mask_flat)

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
        todo = block_status == PENDING
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


def _screen(y: np.ndarray, floor, min_echoes: int) -> np.ndarray:
    """Status per voxel of a block ``(E, n)`` before fitting (``PENDING`` = fit it)."""
    status = np.full(y.shape[1], PENDING, dtype=np.uint8)
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
