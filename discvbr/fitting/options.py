"""Checked options of a voxel-wise fit, shared by every fitting entry point."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.fitting import kernel
from discvbr.fitting.presets import FitPreset, get_preset
from discvbr.io import validate_times

__all__ = ["METHODS", "FitOptions", "check_options", "flat_sigma"]

#: Fitting methods: name -> one-line description.
METHODS: dict[str, str] = {
    "lm": "Levenberg-Marquardt least squares of S0 exp(-t/T), started from the weighted log-linear fit",
    "loglinear": "weighted log-linear least squares only (closed form; a fast preview, biased at low SNR)",
    "rician": "Levenberg-Marquardt on the Rician expected magnitude of S0 exp(-t/T) (low SNR, sigma known)",
}


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


def flat_sigma(noise_sigma, spatial: tuple[int, ...], mask_flat: np.ndarray | None):
    """``noise_sigma`` checked: None, a positive float, or a flat per-voxel array (finite and positive where fitted)."""
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
