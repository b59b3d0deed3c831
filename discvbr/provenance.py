"""Provenance: the software and machine an output was made with."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from typing import Iterable

from discvbr import __version__

__all__ = ["environment", "now"]

#: Packages whose versions change results.
CORE_PACKAGES = ("numpy", "scipy", "nibabel", "scikit-image", "pandas", "torch", "itk-elastix", "vtk", "numba")


def environment(packages: Iterable[str] = CORE_PACKAGES) -> dict:
    """Versions of DiscVBR, Python, the given packages (installed ones) and the platform."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "discvbr": __version__,
        "python": platform.python_version(),
        "packages": versions,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def now() -> str:
    """UTC time stamp, seconds resolution."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
