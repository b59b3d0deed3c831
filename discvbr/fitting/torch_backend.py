"""torch operations for the fitting kernel: CUDA (and CPU) backend.

The algorithm is :mod:`discvbr.fitting.kernel`, the same code as on numpy; this adapter
gives it torch, computes the sums over echoes as whole ``(E, n)`` tensors and small
matrix products with the powers of the times (few, large kernels suit a GPU), moves blocks
to the device and back, and picks the device.

torch is imported only when this backend is used.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.fitting import kernel

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
        self.axis = kernel.TimeAxis(
            torch.as_tensor(axis.tau, dtype=self.dtype, device=self.device),
            torch.as_tensor(axis.powers, dtype=self.dtype, device=self.device),
            axis.t_ref,
            axis.t_scale,
        )
        self.ops = TorchOps()

    def __call__(self, y: np.ndarray, *, method: str, sigma, xtol: float, max_iter: int) -> dict:
        import torch

        with torch.no_grad():
            y_t = torch.as_tensor(y, dtype=self.dtype).to(self.device, non_blocking=True)
            if isinstance(sigma, np.ndarray):
                sigma = torch.as_tensor(sigma, dtype=self.dtype).to(self.device, non_blocking=True)
            res = kernel.fit_block(self.ops, y_t, self.axis, method=method, sigma=sigma, xtol=xtol, max_iter=max_iter)
            return {key: value.cpu().numpy() for key, value in res.items()}
