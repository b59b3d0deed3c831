"""Network inference on sagittal stacks: one model or an ensemble (averaged logits).

Slices are prepared one by one (:mod:`discvbr.segmentation.preprocess`), run through
the network(s) in batches on CUDA when present (mixed precision there) or on the CPU,
and the class probabilities (softmax of the members' mean logits) are interpolated back
to the input grid.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.segmentation.model_store import ModelSet
from discvbr.segmentation.preprocess import from_network_grid, prepare_slice

__all__ = ["resolve_device", "use_mixed_precision", "autocast", "network_logits", "predict_volume"]


def resolve_device(device: str = "auto"):
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error.

    Returns
    -------
    torch.device
    """
    import torch

    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise DiscVBRError(f"device {device!r} is not understood; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DiscVBRError(f"device {device!r} requested but CUDA is not available on this machine; use --device cpu or auto")
    if resolved.type not in ("cpu", "cuda"):
        raise DiscVBRError(f"device {device!r} is not supported; use auto, cpu or cuda")
    return resolved


def use_mixed_precision(device, amp: bool | str = "auto") -> bool:
    """Whether to run in mixed precision: ``"auto"`` means on CUDA only.

    Raises
    ------
    DiscVBRError
        When mixed precision is forced on a device that is not CUDA.
    """
    if amp == "auto":
        return device.type == "cuda"
    if amp and device.type != "cuda":
        raise DiscVBRError(f"mixed precision needs a CUDA device; this run is on {device.type}")
    return bool(amp)


def autocast(device, enabled: bool):
    """float16 autocast on CUDA when ``enabled``, otherwise a no-op context."""
    import torch

    if enabled:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def network_logits(model: ModelSet, batch: np.ndarray, *, device, amp: bool = False) -> np.ndarray:
    """Mean logits of the model's members for a batch of prepared slices.

    Parameters
    ----------
    model : ModelSet
    batch : ndarray (N, H, W)
        Preprocessed slices on the network grid.
    device : torch.device
    amp : bool
        Mixed precision (CUDA only; see :func:`use_mixed_precision`).

    Returns
    -------
    ndarray (N, C, H, W), float32
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None].to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    total = None
    with torch.inference_mode(), autocast(device, amp):
        for member in model.members:
            logits = member.network(x).float()
            total = logits if total is None else total + logits
    return (total / len(model.members)).cpu().numpy()


def _softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def predict_volume(
    array: np.ndarray,
    spacing: tuple[float, float],
    model: ModelSet,
    *,
    device=None,
    batch_size: int = 8,
    amp: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Class probabilities for every sagittal slice of a canonical volume.

    Parameters
    ----------
    array : ndarray (X, Y, Z)
        Canonical sagittal layout (slices on axis 0), finite values.
    spacing : (float, float)
        In-plane pixel size (axis 1, axis 2), mm.
    model : ModelSet
    device : torch.device, optional
        Default: CPU.
    batch_size : int
        Slices per network call.
    amp : bool
        Mixed precision (CUDA only).
    progress : callable, optional
        ``progress(done, total)`` after each batch, in slices.

    Returns
    -------
    ndarray (C, X, Y, Z), float32
        Softmax of the members' mean logits, on the input grid; class 0 is background.
        Slices without any contrast (outside the body) are background with probability 1.
    """
    import torch

    if batch_size < 1:
        raise DiscVBRError(f"batch size must be at least 1, got {batch_size}")
    device = torch.device("cpu") if device is None else device
    n_slices = array.shape[0]
    out = np.zeros((model.n_classes,) + array.shape, np.float32)
    out[0] = 1.0
    prepared, grids, indices = [], [], []
    for i in range(n_slices):
        if float(array[i].max()) == float(array[i].min()):
            continue
        net_input, grid = prepare_slice(array[i], spacing, model.preprocess)
        prepared.append(net_input)
        grids.append(grid)
        indices.append(i)
    done = n_slices - len(indices)
    for start in range(0, len(indices), batch_size):
        stop = min(start + batch_size, len(indices))
        logits = network_logits(model, np.stack(prepared[start:stop]), device=device, amp=amp)
        for k in range(stop - start):
            probs = _softmax(logits[k], axis=0)
            out[:, indices[start + k]] = from_network_grid(probs, grids[start + k])
        done += stop - start
        if progress is not None:
            progress(done, n_slices)
    # interpolation keeps a partition of unity up to rounding; renormalise exactly
    out /= np.clip(out.sum(axis=0, keepdims=True), 1e-6, None)
    return out
