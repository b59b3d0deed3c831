"""torch operations for the fitting kernel: CUDA (and CPU) backend.

The algorithm is :mod:`discvbr.fitting.kernel`, the same as on numpy; only the echo sums
differ in form: on a GPU every separate operation is a kernel launch, so the block is
processed as whole ``(E, n)`` arrays and the six sums over echoes are one small matrix
product, ``M @ [r j; j^2; r^2]`` with ``M`` built from the times.

torch is imported only when this backend is used.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.fitting import kernel

#: Voxels per block on a GPU: ~4 M voxels keep a 80 GB card far from full for 8-16 echoes
#: (about 30 float32 values per voxel and echo in flight) and amortise launch overhead.
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
    """Array primitives and echo sums for :mod:`discvbr.fitting.kernel` on torch tensors.

    Parameters
    ----------
    tau : torch.Tensor, shape (E,)
        Normalised times on the working device and dtype.
    """

    def __init__(self, tau):
        import torch

        self.xp = torch
        self.i0e = torch.special.i0e
        self.i1e = torch.special.i1e
        n_echoes = tau.shape[0]
        ones = torch.ones_like(tau)
        zeros = torch.zeros_like(tau)
        # Rows: rss, Q, Q1, Q2, G0, G1 from the stacked blocks [r j; j^2; r^2].
        self.sums = torch.stack(
            [
                torch.cat([zeros, zeros, ones]),
                torch.cat([zeros, ones, zeros]),
                torch.cat([zeros, tau, zeros]),
                torch.cat([zeros, tau * tau, zeros]),
                torch.cat([ones, zeros, zeros]),
                torch.cat([tau, zeros, zeros]),
            ]
        )
        self.loglinear_matrix = torch.stack([ones, tau, tau * tau])
        self.n_echoes = n_echoes

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

    def eps(self, like) -> float:
        return float(self.xp.finfo(like.dtype).eps)

    def bools(self, like, value: bool):
        return self.xp.full(like.shape, value, dtype=self.xp.bool, device=like.device)

    def arange(self, like):
        return self.xp.arange(like.shape[0], device=like.device)

    @staticmethod
    def count(mask) -> int:
        return int(mask.sum())

    @staticmethod
    def copy(array):
        return array.clone()

    @staticmethod
    def column_mean(y):
        return y.mean(0)

    @staticmethod
    def column_sum_squares(y):
        return (y * y).sum(0)

    @staticmethod
    def column_centred_sum_squares(y):
        dev = y - y.mean(0)
        return (dev * dev).sum(0)

    def loglinear_sums(self, z, tau):
        """Weighted sums for the log-linear fit, weights ``z^2`` (zero where ``z = 0``)."""
        w = z * z
        log_z = self.xp.log(self.xp.clamp(z, min=self.xp.finfo(z.dtype).tiny))
        W, Wt, Wtt = (self.loglinear_matrix @ w).unbind(0)
        Wl, Wtl = (self.loglinear_matrix[:2] @ (w * log_z)).unbind(0)
        return W, Wt, Wtt, Wl, Wtl

    def evaluate(self, y, tau, amplitude, rho, sigma=None):
        """Residual sum of squares and Jacobian sums; see
        :meth:`discvbr.fitting.numpy_backend.NumpyOps.evaluate` for the definitions."""
        e = self.xp.exp(tau[:, None] * (-rho))
        nu = e * amplitude
        if sigma is None:
            r = y - nu
            j = e
        else:
            mean, slope = kernel.rician_mean_and_slope(self, nu, sigma)
            r = y - mean
            j = e * slope
        stacked = self.xp.cat([r * j, j * j, r * r])
        return tuple((self.sums @ stacked).unbind(0))


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
        tau = torch.as_tensor(axis.tau, dtype=self.dtype, device=self.device)
        self.axis = kernel.TimeAxis(tau, axis.t_ref, axis.t_scale)
        self.ops = TorchOps(tau)

    def __call__(self, y: np.ndarray, *, method: str, sigma, xtol: float, max_iter: int) -> dict:
        import torch

        with torch.no_grad():
            y_t = torch.as_tensor(y, dtype=self.dtype).to(self.device, non_blocking=True)
            if isinstance(sigma, np.ndarray):
                sigma = torch.as_tensor(sigma, dtype=self.dtype).to(self.device, non_blocking=True)
            res = kernel.fit_block(self.ops, y_t, self.axis, method=method, sigma=sigma, xtol=xtol, max_iter=max_iter)
            return {key: value.cpu().numpy() for key, value in res.items()}
