"""Writing fitted maps and their summary (shared by ``discvbr fit`` and the pipeline)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from discvbr.fitting.status import FitResult, FitStatus
from discvbr.io import Image, write_image
from discvbr.levels import DISC_LEVELS

__all__ = ["MAP_FILES", "write_fit_maps", "fit_summary", "is_label_map"]

#: Result attribute -> file name of its map.
MAP_FILES = {"T": "T.nii.gz", "S0": "S0.nii.gz", "r2": "r2.nii.gz", "T_sd": "T_sd.nii.gz", "status": "status.nii.gz"}


def write_fit_maps(folder: str | os.PathLike, grid: Image, result: FitResult, *, prefix: str = "") -> dict[str, Path]:
    """Write the T, S0, r2, T_sd and status maps on ``grid`` as ``<prefix><name>.nii.gz``."""
    folder = Path(folder)
    return {
        name: write_image(folder / f"{prefix}{filename}", grid.with_array(getattr(result, name)))
        for name, filename in MAP_FILES.items()
    }


def _median(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def fit_summary(result: FitResult, mask: np.ndarray | None = None) -> dict:
    """Voxel counts per status, median T overall and, for a label-map mask, per disc label."""
    counts = result.status_counts()
    fitted = int(result.status.size - counts[FitStatus.NOT_FITTED.name])
    valid = result.valid
    summary = {
        "voxels": {"total": int(result.status.size), "fitted": fitted, "valid": int(valid.sum())},
        "status_counts": counts,
        "status_codes": {int(s): f"{s.name}: {s.description}" for s in FitStatus},
        "median_T_ms": _median(result.T[valid]),
    }
    if mask is not None and is_label_map(mask):
        labels = {}
        for label in np.unique(mask[mask != 0]):
            inside = mask == label
            in_valid = inside & valid
            key = int(label)
            labels[str(key)] = {
                "level": DISC_LEVELS[key - 1] if 1 <= key <= len(DISC_LEVELS) else None,
                "voxels": int(inside.sum()),
                "valid": int(in_valid.sum()),
                "median_T_ms": _median(result.T[in_valid]),
                "mean_T_ms": float(np.mean(result.T[in_valid])) if in_valid.any() else None,
                "median_T_sd_ms": _median(result.T_sd[in_valid]),
                "median_S0": _median(result.S0[in_valid]),
                "median_r2": _median(result.r2[in_valid]),
            }
        summary["labels"] = labels
    return summary


def is_label_map(mask: np.ndarray) -> bool:
    """Integer-valued with some non-zero value other than 1 (a binary mask is not one)."""
    values = np.unique(mask[np.isfinite(mask)] if np.issubdtype(mask.dtype, np.floating) else mask)
    values = values[values != 0]
    return bool(values.size) and bool(np.all(values == np.round(values))) and bool(np.any(values != 1))
