"""Cropping a volume to a disc: bounding box plus a margin, with the matching affine."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from discvbr.io import Image

__all__ = ["bounding_box", "crop"]


def bounding_box(mask: np.ndarray, spacing: Sequence[float], *, margin_mm: float) -> tuple[slice, ...] | None:
    """Index box around the ``True`` voxels of ``mask`` grown by ``margin_mm`` on every side.

    The margin is converted to voxels per axis (rounded up) and the box is clipped to the
    volume, so thick slices get fewer margin voxels than the fine in-plane axes.

    Parameters
    ----------
    mask : ndarray of bool, 3D
    spacing : sequence of float
        Voxel size per axis, mm.
    margin_mm : float
        Margin, mm.

    Returns
    -------
    tuple of slice, or None
        One slice per axis; ``None`` when the mask is empty.
    """
    index = np.argwhere(mask)
    if index.size == 0:
        return None
    pad = np.ceil(margin_mm / np.asarray(spacing, dtype=float) - 1e-9).astype(int)
    lo = np.maximum(index.min(axis=0) - pad, 0)
    hi = np.minimum(index.max(axis=0) + pad + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def crop(image: Image, box: Sequence[slice]) -> Image:
    """The part of ``image`` inside ``box``, with its origin moved so positions are kept."""
    start = np.array([s.start for s in box], dtype=float)
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ start + image.affine[:3, 3]
    return Image(np.asarray(image.array[tuple(box)]), affine)
