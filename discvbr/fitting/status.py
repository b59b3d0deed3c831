"""Outcome of a voxel-wise fit: status codes and the result maps.

Shared by every fitting entry point (:func:`discvbr.fitting.fit_monoexp` on any backend and
:func:`discvbr.fitting.fit_monoexp_tensor`), so that a status means the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

__all__ = ["FitStatus", "FitResult", "PENDING", "fitted_status"]

#: Internal status of a screened voxel that still has to be fitted.
PENDING = 255


class FitStatus(IntEnum):
    """Outcome of the fit in one voxel (stored as uint8 in :attr:`FitResult.status`)."""

    #: Outside the mask: not fitted.
    NOT_FITTED = 0
    #: Fitted, converged, T within range: the only valid status.
    CONVERGED = 1
    #: NaN or infinite magnitude in at least one echo.
    NONFINITE_INPUT = 2
    #: Negative magnitude in at least one echo (magnitudes cannot be negative; often
    #: interpolation ringing or a signed image).
    NEGATIVE_INPUT = 3
    #: Fewer than ``min_echoes`` echoes above the noise floor (zeros count as below it).
    LOW_SIGNAL = 4
    #: Converged, but T is outside ``(t_min, t_max)`` (or negative, or unrepresentably short).
    T_OUT_OF_RANGE = 5
    #: The Levenberg-Marquardt iterations did not converge within ``max_iter``.
    NOT_CONVERGED = 6

    @property
    def description(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    FitStatus.NOT_FITTED: "not fitted (outside the mask)",
    FitStatus.CONVERGED: "converged, T in range",
    FitStatus.NONFINITE_INPUT: "NaN or infinite input",
    FitStatus.NEGATIVE_INPUT: "negative magnitude",
    FitStatus.LOW_SIGNAL: "too few echoes above noise",
    FitStatus.T_OUT_OF_RANGE: "T out of range",
    FitStatus.NOT_CONVERGED: "did not converge",
}


@dataclass(frozen=True)
class FitResult:
    """Maps from :func:`fit_monoexp`, each of the signal's spatial shape ``(...)``.

    Attributes
    ----------
    T : ndarray
        Relaxation time (ms): T1rho for spin-lock times, T2 for echo times. NaN where not valid.
    S0 : ndarray
        Signal extrapolated to t = 0 (signal units). NaN where not valid.
    r2 : ndarray
        Coefficient of determination of the fit, ``1 - RSS / sum (y - mean y)^2``. NaN where
        not valid.
    T_sd : ndarray
        Standard error of T (ms): ``sigma_hat^2 T^4 A / (S0^2 (A C - B^2))`` from the
        Jacobian at the optimum with ``sigma_hat^2 = RSS / (E - 2)`` (METHODS.md section 3).
        NaN where not valid, and everywhere with only 2 echoes (no residual degrees of freedom).
    status : ndarray of uint8
        :class:`FitStatus` code per voxel.
    params : dict
        The options the fit ran with (method, backend, device, thresholds...), for provenance.
    """

    T: np.ndarray
    S0: np.ndarray
    r2: np.ndarray
    T_sd: np.ndarray
    status: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        """Boolean map: fitted, converged and T in range."""
        return self.status == FitStatus.CONVERGED

    def status_counts(self) -> dict[str, int]:
        """Number of voxels per status, by status name (every status listed)."""
        counts = np.bincount(self.status.reshape(-1), minlength=len(FitStatus))
        return {status.name: int(counts[status]) for status in FitStatus}


def fitted_status(xp, res: dict, t_min: float, t_max: float):
    """Status of fitted voxels from a kernel result: converged and in range, out of range, or not converged.

    ``xp`` is numpy or torch; returns an integer array of :class:`FitStatus` codes.
    """
    in_range = ~res["at_limit"] & (res["T"] > t_min) & (res["T"] < t_max)
    return xp.where(
        res["converged"],
        xp.where(in_range, int(FitStatus.CONVERGED), int(FitStatus.T_OUT_OF_RANGE)),
        int(FitStatus.NOT_CONVERGED),
    )
