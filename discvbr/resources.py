"""Where the data shipped with DiscVBR lie: models, elastix parameter files, atlases, Slicer requirements.

Paths and names only (standard library, nothing read at import), so the Slicer modules show
their choices before torch, itk or scipy are installed, and every part of the package finds
the shipped files in one place.
"""

from __future__ import annotations

from pathlib import Path

from discvbr.errors import DiscVBRError

__all__ = [
    "DATA_DIR",
    "MODELS_DIR",
    "DEFAULT_MODEL",
    "PARAMETER_DIR",
    "REGISTRATION_STAGES",
    "ATLAS_DIR",
    "DEFAULT_ATLAS",
    "SLICER_REQUIREMENTS",
    "default_model_path",
    "parameter_file_names",
    "atlas_base_names",
]

#: The package's data folder.
DATA_DIR = Path(__file__).resolve().parent / "data"
#: Folder of the shipped segmentation models (one sub-folder each).
MODELS_DIR = DATA_DIR / "models"
#: The model (ensemble) used when none is named.
DEFAULT_MODEL = "cfcm-compact"
#: The shipped elastix parameter files (``affine-2d.txt`` ... ``bspline-3d.txt``).
PARAMETER_DIR = DATA_DIR / "elastix"
#: Registration stages, in the order elastix runs them; each has one parameter file per dimension.
REGISTRATION_STAGES: tuple[str, ...] = ("affine", "bspline")
#: Folder of the shipped atlases (``<name>-2d`` / ``<name>-3d`` sub-folders with ``atlas.json``).
ATLAS_DIR = DATA_DIR / "atlas"
#: Atlas used when none is named: the healthy phantom spine (``-2d`` or ``-3d`` by the data).
DEFAULT_ATLAS = "phantom-healthy"
#: Python packages installed into 3D Slicer's Python (the package's dependencies less what Slicer ships).
SLICER_REQUIREMENTS = DATA_DIR / "slicer-requirements.txt"


def default_model_path() -> Path:
    """Folder of the shipped default model."""
    return MODELS_DIR / DEFAULT_MODEL


def parameter_file_names(ndim: int) -> tuple[str, ...]:
    """File names of the registration stages for 2D (single slice) or 3D (stack) registration.

    Raises
    ------
    DiscVBRError
        When ``ndim`` is neither 2 nor 3.
    """
    if ndim not in (2, 3):
        raise DiscVBRError(f"registration dimension must be 2 or 3, got {ndim}")
    return tuple(f"{stage}-{ndim}d.txt" for stage in REGISTRATION_STAGES)


def atlas_base_names() -> list[str]:
    """Names of the shipped atlases without their ``-2d``/``-3d`` suffix (the data's mode completes them)."""
    names = set()
    for meta in ATLAS_DIR.glob("*/atlas.json"):
        name = meta.parent.name
        names.add(name[:-3] if name.endswith(("-2d", "-3d")) else name)
    return sorted(names)
