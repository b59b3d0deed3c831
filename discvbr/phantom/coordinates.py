"""Normalised disc coordinates of any disc label map, and planted-effect weights on it.

The phantom defines its discs' relaxation patterns and planted effects in normalised
coordinates: ``u`` posterior (-1) to anterior (+1) along the disc's long axis, ``v``
inferior (-1) to superior (+1) endplate across it, ``x`` across the disc's width. For a
label map whose geometry is not known analytically (a real anatomy, an atlas), the axes
come from the principal axes of each disc's voxels in the sagittal plane and the limits
from the disc's own extent at each position.
"""

from __future__ import annotations

import numpy as np

from discvbr.io import Image
from discvbr.levels import DISC_LEVELS, label_of

__all__ = ["disc_coordinates", "effect_weight_map"]


def disc_coordinates(labels: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised (u, v, x) of every disc voxel of a label map; NaN outside the discs.

    Parameters
    ----------
    labels : ndarray, shape (X, Y, Z)
        Disc labels 1 = L5S1 ... 5 = L1L2 in DiscVBR layout (axis 0 left-right, 1
        posterior-anterior, 2 inferior-superior).
    spacing : ndarray, shape (3,)
        Voxel size, mm.

    Returns
    -------
    u, v, x : ndarray, each shaped like ``labels``, values in [-1, 1]
    """
    spacing = np.asarray(spacing, dtype=float)
    coords = [np.full(labels.shape, np.nan, np.float32) for _ in range(3)]
    for label in range(1, len(DISC_LEVELS) + 1):
        idx = np.argwhere(labels == label)
        if idx.size == 0:
            continue
        pos = idx * spacing
        centre = pos.mean(axis=0)
        yz = pos[:, 1:] - centre[1:]
        if len(yz) > 2:
            _, vecs = np.linalg.eigh(np.cov(yz.T))
            e_u = vecs[:, 1] * np.sign(vecs[0, 1] or 1.0)  # major axis, pointing anterior
        else:
            e_u = np.array([1.0, 0.0])
        e_v = np.array([-e_u[1], e_u[0]])
        e_v *= np.sign(e_v[1] or 1.0)  # pointing superior
        u, v = yz @ e_u, yz @ e_v
        x = pos[:, 0] - centre[0]
        un, vn = np.empty_like(u), np.empty_like(v)
        for xi in np.unique(idx[:, 0]):
            sl = idx[:, 0] == xi
            lo, hi = u[sl].min(), u[sl].max()
            un[sl] = 2.0 * (u[sl] - lo) / max(hi - lo, 1e-6) - 1.0
            # local thickness: the disc's v extent within 2 mm of each u
            bins = np.round(u[sl] / 2.0).astype(int)
            vn_sl = np.empty(sl.sum())
            for b in np.unique(bins):
                col = bins == b
                vlo, vhi = v[sl][col].min() - 0.5 * spacing[2], v[sl][col].max() + 0.5 * spacing[2]
                vn_sl[col] = 2.0 * (v[sl][col] - vlo) / max(vhi - vlo, 1e-6) - 1.0
            vn[sl] = vn_sl
        half_width = max(np.abs(x).max(), 1e-6) + 0.5 * spacing[0]
        i, j, k = idx.T
        coords[0][i, j, k] = np.clip(un, -1, 1)
        coords[1][i, j, k] = np.clip(vn, -1, 1)
        coords[2][i, j, k] = np.clip(x / half_width, -1, 1)
    return coords[0], coords[1], coords[2]


def effect_weight_map(labels: Image, effect) -> np.ndarray:
    """Weight (0-1) of a planted effect on a label map (its disc only; 0 elsewhere).

    Parameters
    ----------
    labels : Image
        Disc labels (an atlas, or a subject's mask).
    effect : discvbr.phantom.PlantedEffect
    """
    values = np.asarray(labels.array)
    u, v, x = disc_coordinates(values, labels.spacing)
    weight = np.zeros(values.shape, np.float32)
    inside = values == label_of(effect.level)
    weight[inside] = effect.weight(u[inside], v[inside], x[inside])
    return weight
