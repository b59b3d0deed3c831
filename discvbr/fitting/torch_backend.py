"""torch operations for the fitting kernel: CUDA (and CPU) backend.

The algorithm is :mod:`discvbr.fitting.kernel`, the same code as on numpy; this adapter
gives it torch, computes the sums over echoes as whole ``(E, n)`` tensors and small
matrix products with the powers of the times (few, large kernels suit a GPU), moves blocks
to the device and back, and picks the device.

torch is imported only when this backend is used.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.fitting import kernel
from discvbr.fitting.options import check_options, flat_sigma
from discvbr.fitting.status import PENDING, FitResult, FitStatus, fitted_status
from discvbr.fitting.presets import FitPreset

#: Voxels per block on a GPU: 4 Mi voxels amortise the kernel launches and keep memory
#: (a dozen ``(E, n)`` arrays in flight, ~1.6 GB in float32 for 8 echoes) far below a GPU's.
DEFAULT_BLOCK_CUDA = 1 << 22
#: Voxels per block for torch on the CPU (its own intra-op threads share the cores).
DEFAULT_BLOCK_CPU = 1 << 16


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device.

    Avoids importing torch (a second or more) on machines that cannot have CUDA: when torch
    is not installed, or on Linux when no NVIDIA driver is loaded.
    """
    if "torch" not in sys.modules:
        if importlib.util.find_spec("torch") is None:
            return False
        if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version"):
            return False
    import torch

    return bool(torch.cuda.is_available())


class TorchOps:
    """Array primitives for :mod:`discvbr.fitting.kernel` on torch tensors."""

    def __init__(self):
        import torch

        self.xp = torch
        self.i0e = torch.special.i0e
        self.i1e = torch.special.i1e

    def maximum(self, x, bound: float):
        return self.xp.clamp(x, min=bound)

    def minimum(self, x, bound: float):
        return self.xp.clamp(x, max=bound)

    def assign(self, target, values, where) -> None:
        """``target[where] = values[where]``, in place."""
        target.copy_(self.xp.where(where, values, target))

    @staticmethod
    def nonzero(mask):
        return mask.nonzero().squeeze(1)

    @staticmethod
    def count(mask) -> int:
        return int(mask.sum())

    def bools(self, like, value: bool):
        return self.xp.full(like.shape, value, dtype=self.xp.bool, device=like.device)

    def arange(self, like):
        return self.xp.arange(like.shape[0], device=like.device)

    @staticmethod
    def copy(array):
        return array.clone()

    def eps(self, like) -> float:
        return float(self.xp.finfo(like.dtype).eps)

    @staticmethod
    def column_sum_squares(y):
        return (y * y).sum(0)

    @staticmethod
    def centred_sum_squares(y):
        deviation = y - y.mean(0)
        return (deviation * deviation).sum(0)

    def loglinear_sums(self, z, axis: kernel.TimeAxis):
        """Weighted sums of the log-linear fit; see ``NumpyOps.loglinear_sums``."""
        weight = z * z
        log_z = self.xp.log(self.xp.clamp(z, min=self.xp.finfo(z.dtype).tiny))
        W, Wt, Wtt = (axis.powers @ weight).unbind(0)
        Wl, Wtl = (axis.powers[:2] @ (weight * log_z)).unbind(0)
        return W, Wt, Wtt, Wl, Wtl

    def evaluate(self, y, axis: kernel.TimeAxis, amplitude, rho, sigma=None):
        """Residual and Jacobian sums; see ``NumpyOps.evaluate`` for the definitions."""
        e = self.xp.exp(axis.tau[:, None] * -rho)
        if sigma is None:
            r = y - e * amplitude
        else:
            mean, slope = kernel.rician_mean_and_slope(self, e * amplitude, sigma)
            r = y - mean
            e = e * slope
        Q, Q1, Q2 = (axis.powers @ (e * e)).unbind(0)
        G0, G1, G2 = (axis.powers @ (r * e)).unbind(0)
        return (r * r).sum(0), Q, Q1, Q2, G0, G1, G2


def resolve_device(device: str):
    """The torch device for ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    Raises
    ------
    DiscVBRError
        torch missing, or a CUDA device asked for but not present.
    """
    if importlib.util.find_spec("torch") is None:
        raise DiscVBRError("the torch backend needs PyTorch; install it or use device='cpu' (numpy)")
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DiscVBRError(f"device {device!r} is not a torch device (use 'cpu', 'cuda' or 'cuda:N')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiscVBRError(f"device {device!r} asked for, but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DiscVBRError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise DiscVBRError(f"device {device!r} is not supported (use 'cpu', 'cuda' or 'cuda:N')")
    return dev


def axis_on_device(axis: kernel.TimeAxis, dtype, device) -> kernel.TimeAxis:
    """The normalised times as torch tensors of ``dtype`` on ``device``."""
    import torch

    return kernel.TimeAxis(
        torch.as_tensor(axis.tau, dtype=dtype, device=device),
        torch.as_tensor(axis.powers, dtype=dtype, device=device),
        axis.t_ref,
        axis.t_scale,
    )


class TorchBlockFitter:
    """Fits numpy blocks ``(E, n)`` on a torch device and returns numpy results.

    Parameters
    ----------
    axis : kernel.TimeAxis
        Normalised times (numpy).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    dtype : numpy dtype
        Working precision (float32 or float64).
    """

    def __init__(self, axis: kernel.TimeAxis, device: str, dtype: np.dtype):
        import torch

        self.device = resolve_device(device)
        self.dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
        self.axis = axis_on_device(axis, self.dtype, self.device)
        self.ops = TorchOps()

    def __call__(self, y: np.ndarray, *, method: str, sigma, xtol: float, max_iter: int) -> dict:
        import torch

        with torch.no_grad():
            y_t = torch.as_tensor(y, dtype=self.dtype).to(self.device, non_blocking=True)
            if isinstance(sigma, np.ndarray):
                sigma = torch.as_tensor(sigma, dtype=self.dtype).to(self.device, non_blocking=True)
            res = kernel.fit_block(self.ops, y_t, self.axis, method=method, sigma=sigma, xtol=xtol, max_iter=max_iter)
            return {key: value.cpu().numpy() for key, value in res.items()}


@dataclass(frozen=True)
class DeviceFitResult:
    """Maps from :func:`fit_monoexp_tensor`: torch tensors on the signal's device.

    The fields mean what they mean in :class:`discvbr.fitting.FitResult`; ``to_numpy``
    copies them to the host as one.
    """

    T: "torch.Tensor"
    S0: "torch.Tensor"
    r2: "torch.Tensor"
    T_sd: "torch.Tensor"
    status: "torch.Tensor"
    params: dict = field(default_factory=dict)

    @property
    def valid(self):
        """Boolean tensor: fitted, converged and T in range."""
        return self.status == int(FitStatus.CONVERGED)

    def to_numpy(self) -> FitResult:
        maps = {name: getattr(self, name).cpu().numpy() for name in ("T", "S0", "r2", "T_sd", "status")}
        return FitResult(**maps, params=dict(self.params))


def screen_tensor(y, floor, min_echoes: int):
    """Status per voxel of a block ``(E, n)`` before fitting, as ``core._screen`` on numpy.

    ``floor`` is a float or a tensor ``(n,)``; returns uint8 codes, 255 for voxels to fit.
    """
    import torch

    status = torch.full((y.shape[1],), PENDING, dtype=torch.uint8, device=y.device)
    above = (y > floor).sum(0)
    status[above < min_echoes] = int(FitStatus.LOW_SIGNAL)
    status[(y < 0).any(0)] = int(FitStatus.NEGATIVE_INPUT)
    status[~torch.isfinite(y).all(0)] = int(FitStatus.NONFINITE_INPUT)
    return status


def fit_monoexp_tensor(
    signal,
    times,
    mask=None,
    *,
    method: str = "lm",
    preset: str | FitPreset | None = None,
    t_min: float | None = None,
    t_max: float | None = None,
    noise_sigma: float | None = None,
    min_snr: float = 2.0,
    min_echoes: int = 2,
    xtol: float | None = None,
    max_iter: int = 50,
    block_size: int | None = None,
) -> DeviceFitResult:
    """:func:`discvbr.fitting.fit_monoexp` for a series already in a torch tensor, on its device.

    Screening, fitting and the status codes all run where the tensor lives (a GPU or the
    CPU) and the maps stay there, so nothing crosses the host bus: use it inside a torch
    pipeline, or to fit at the speed of the GPU rather than of the copies to and from it.
    Same algorithm, statuses and options as :func:`~discvbr.fitting.fit_monoexp`.

    Parameters
    ----------
    signal : torch.Tensor, shape (..., E)
        Magnitudes, float32 or float64 (the working precision; other dtypes become float32).
    times : sequence of float, shape (E,)
        Echo or spin-lock times, ms.
    mask : torch.Tensor, shape (...), optional
        Voxels to fit (non-zero); moved to the signal's device.
    method, preset, t_min, t_max, min_snr, min_echoes, xtol, max_iter
        As in :func:`~discvbr.fitting.fit_monoexp`.
    noise_sigma : float, optional
        Gaussian noise SD per channel (a scalar here).
    block_size : int, optional
        Voxels per block; default 4194304 on CUDA, 65536 on the CPU.

    Returns
    -------
    DeviceFitResult
        Tensors of shape ``signal.shape[:-1]`` on the signal's device.

    Raises
    ------
    DiscVBRError
        As :func:`~discvbr.fitting.fit_monoexp`, and when ``signal`` is not a torch tensor.
    """
    import torch

    if not isinstance(signal, torch.Tensor):
        raise DiscVBRError(f"signal must be a torch tensor here, got {type(signal).__name__}; use fit_monoexp for arrays")
    work = signal.dtype if signal.dtype in (torch.float32, torch.float64) else torch.float32
    options = check_options(
        times, tuple(signal.shape), method=method, preset=preset, t_min=t_min, t_max=t_max, noise_sigma=noise_sigma,
        min_snr=min_snr, min_echoes=min_echoes, dtype="float64" if work == torch.float64 else "float32", xtol=xtol,
        max_iter=max_iter,
    )
    if signal.is_complex() or signal.dtype == torch.bool:
        raise DiscVBRError(f"signal must hold real magnitudes, got dtype {signal.dtype}")
    if noise_sigma is not None and np.ndim(noise_sigma) != 0:
        raise DiscVBRError("noise_sigma must be one number here; fit_monoexp takes a map of it")
    spatial = tuple(signal.shape[:-1])
    noise_sigma = flat_sigma(noise_sigma, spatial, None)
    n_echoes = options.times.size
    device = signal.device
    flat = signal.reshape(-1, n_echoes)
    n_voxels = flat.shape[0]
    selected = None
    if mask is not None:
        mask = torch.as_tensor(mask, device=device)
        if tuple(mask.shape) != spatial:
            raise DiscVBRError(f"mask of shape {tuple(mask.shape)} does not match the signal's spatial shape {spatial}")
        selected = ((mask != 0) & ~torch.isnan(mask) if mask.is_floating_point() else mask != 0).reshape(-1)
    block = int(block_size or (DEFAULT_BLOCK_CUDA if device.type == "cuda" else DEFAULT_BLOCK_CPU))
    if block < 1:
        raise DiscVBRError(f"block_size must be positive, got {block}")

    axis = axis_on_device(kernel.TimeAxis.from_times(options.times, options.dtype), work, device)
    ops = TorchOps()
    floor = 0.0 if noise_sigma is None else options.min_snr * noise_sigma
    names = ("T", "S0", "r2", "T_sd")
    maps = {name: torch.full((n_voxels,), math.nan, dtype=work, device=device) for name in names}
    status = torch.full((n_voxels,), int(FitStatus.NOT_FITTED), dtype=torch.uint8, device=device)
    with torch.no_grad():
        for start in range(0, n_voxels, block):
            stop = min(start + block, n_voxels)
            y = flat[start:stop].to(work).T.contiguous()
            block_status = screen_tensor(y, floor, options.min_echoes)
            if selected is not None:
                block_status[~selected[start:stop]] = int(FitStatus.NOT_FITTED)
            todo = (block_status == PENDING).nonzero().squeeze(1)
            if todo.numel():
                res = kernel.fit_block(ops, y[:, todo], axis, method=method, sigma=noise_sigma,
                                       xtol=options.xtol, max_iter=options.max_iter)
                fitted = fitted_status(torch, res, options.t_min, options.t_max).to(torch.uint8)
                block_status[todo] = fitted
                keep = fitted == int(FitStatus.CONVERGED)
                for name in names:
                    maps[name][start + todo] = torch.where(keep, res[name], math.nan)
            status[start:stop] = block_status
    params = options.as_params(backend="torch", device=str(device), noise_sigma=noise_sigma)
    return DeviceFitResult(**{name: maps[name].reshape(spatial) for name in names}, status=status.reshape(spatial), params=params)
