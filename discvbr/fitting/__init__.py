"""Voxel-wise mono-exponential T1rho/T2 fitting (METHODS.md section 3).

``fit_monoexp(signal, times, mask)`` fits ``S0 exp(-t / T)`` in every voxel by two-parameter
Levenberg-Marquardt started from a weighted log-linear fit, vectorised over voxels, on numpy
(threads over blocks of voxels) or torch (CUDA), and returns T, S0, r2, the standard error
of T and a status per voxel. Presets carry the paper's plausibility thresholds.
``fit_monoexp_tensor`` does the same on a torch tensor where it lives (a GPU), maps included.
"""

from discvbr.fitting.core import fit_monoexp
from discvbr.fitting.options import METHODS
from discvbr.fitting.status import FitResult, FitStatus
from discvbr.fitting.noise import cramer_rao_sd, estimate_noise_sigma, rician_mean
from discvbr.fitting.presets import PRESETS, FitPreset, get_preset
from discvbr.fitting.torch_backend import DeviceFitResult, fit_monoexp_tensor

__all__ = [
    "fit_monoexp",
    "fit_monoexp_tensor",
    "DeviceFitResult",
    "FitResult",
    "FitStatus",
    "METHODS",
    "PRESETS",
    "FitPreset",
    "get_preset",
    "estimate_noise_sigma",
    "rician_mean",
    "cramer_rao_sd",
]
