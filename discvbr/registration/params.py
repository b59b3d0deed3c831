"""Elastix parameter maps: the shipped text files, reading, writing and per-run overrides.

The registration of every disc is driven by two plain elastix parameter files shipped in
``discvbr/data/elastix/`` (the paper's recipe in ``discvbr/data/elastix/paper/``) (``affine-2d.txt`` + ``bspline-2d.txt`` for single slices,
``affine-3d.txt`` + ``bspline-3d.txt`` for stacks). They are the same files a 3D Slicer user
loads into SlicerElastix. :class:`RegistrationParams` holds the few values a study tunes
(final grid spacing, iterations, rigidity weight; Iriondo et al., MRM 2020, section 2.2), and
an entry of the files (:data:`INPUT_IMAGE_ENTRY`) says whether elastix registers the disc
masks or their depth maps
and :func:`build_parameter_maps` writes them over the files' values for one run.

A parameter map is a ``dict`` from parameter name to a tuple of strings, the layout
itk-elastix's ``ParameterObject`` uses, so maps travel between processes as plain data.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import atomic_write
from discvbr.resources import PARAMETER_DIR, REGISTRATION_STAGES, parameter_file_names

__all__ = [
    "ParameterMap",
    "PARAMETER_DIR",
    "RegistrationParams",
    "INPUT_IMAGE_ENTRY",
    "INPUT_IMAGES",
    "input_image",
    "DEPTH_LIMIT_ENTRY",
    "depth_limit",
    "PRESETS",
    "registration_preset",
    "parameter_file_names",
    "read_parameter_file",
    "format_parameter_map",
    "write_parameter_file",
    "load_parameter_files",
    "pyramid_schedule",
    "build_parameter_maps",
    "write_parameter_files",
]

ParameterMap = dict[str, tuple[str, ...]]

#: Parameter-file entry saying what DiscVBR gives elastix for each disc (elastix ignores it):
#: ``"distance"`` the discs' depth maps (:func:`discvbr.registration.disc.distance_image`),
#: ``"mask"`` the 0/1 masks (the paper's; also assumed when a file has no such entry).
INPUT_IMAGE_ENTRY = "DiscVBRInputImage"
INPUT_IMAGES: tuple[str, ...] = ("distance", "mask")
#: Parameter-file entry (elastix ignores it): depth (mm) beyond which a depth map stays flat;
#: absent, depth keeps rising to the disc's centre.
DEPTH_LIMIT_ENTRY = "DiscVBRDepthLimit"

_ENTRY = re.compile(r"\(\s*([A-Za-z0-9_]+)((?:\s+(?:\"[^\"]*\"|[^\s()\"]+))*)\s*\)")
_TOKEN = re.compile(r"\"([^\"]*)\"|([^\s\"]+)")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class RegistrationParams:
    """The tunable values of the per-disc registration, written over the parameter files.

    Parameters
    ----------
    final_grid_spacing : float
        B-spline control-point spacing at the finest resolution, in voxels
        (``FinalGridSpacingInVoxels``). Default 8; paper: 2.
    iterations : int
        B-spline optimiser iterations per resolution (``MaximumNumberOfIterations``). Paper and
        default: 200.
    rigidity_weight : float
        Weight of ``TransformRigidityPenalty`` against the similarity metric (weight 1)
        (``Metric1Weight``). Default 4 (against mean squares of depth maps); paper: 0.77
        (against mutual information of masks).
    max_step_length : float or None
        B-spline ``MaximumStepLength`` (mm); ``None`` keeps the file's value (0.1 shipped).
    seed : int
        ``RandomSeed`` of elastix's random sampler, for both stages.
    auto_pyramid : bool
        Recompute the per-axis pyramid schedules from each crop's voxel size and shape
        (:func:`pyramid_schedule`); ``False`` runs the files' schedules as written.
    parameter_dir : str or None
        Folder with the user's own ``affine-{2d,3d}.txt`` and ``bspline-{2d,3d}.txt``;
        ``None`` uses the shipped files.
    """

    final_grid_spacing: float = 8.0
    iterations: int = 200
    rigidity_weight: float = 4.0
    max_step_length: float | None = None
    seed: int = 0
    auto_pyramid: bool = True
    parameter_dir: str | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.final_grid_spacing) and self.final_grid_spacing > 0):
            raise DiscVBRError(f"final grid spacing must be a positive number of voxels, got {self.final_grid_spacing}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise DiscVBRError(f"iterations must be a whole number of at least 1, got {self.iterations}")
        if not (np.isfinite(self.rigidity_weight) and self.rigidity_weight >= 0):
            raise DiscVBRError(f"rigidity weight must be zero or positive, got {self.rigidity_weight}")
        if self.max_step_length is not None and not self.max_step_length > 0:
            raise DiscVBRError(f"maximum step length must be positive (mm), got {self.max_step_length}")
        if self.parameter_dir is not None:
            object.__setattr__(self, "parameter_dir", str(self.parameter_dir))

    def to_dict(self) -> dict:
        """Plain values, for provenance files."""
        return asdict(self)

    def with_values(self, **values: object) -> "RegistrationParams":
        """A copy with some values replaced."""
        return replace(self, **values)


#: Named recipes. ``default``: what :class:`RegistrationParams` gives when nothing is set (the
#: shipped files: depth maps, mean squares, rigidity penalty on an 8-voxel grid). ``paper``:
#: Iriondo et al.'s (masks, mutual information, rigidity penalty 0.77 on a 2-voxel grid; files
#: in ``discvbr/data/elastix/paper``), DiscVBR's default until issue 17.
PRESETS: tuple[str, ...] = ("default", "paper")


def registration_preset(name: str) -> RegistrationParams:
    """The :class:`RegistrationParams` of a named recipe (see :data:`PRESETS`).

    Raises
    ------
    DiscVBRError
        On an unknown name.
    """
    if name == "default":
        return RegistrationParams()
    if name == "paper":
        return RegistrationParams(
            final_grid_spacing=2.0, iterations=200, rigidity_weight=0.77, parameter_dir=str(PARAMETER_DIR / "paper")
        )
    raise DiscVBRError(f"registration preset must be one of {', '.join(PRESETS)}, got {name!r}")


def read_parameter_file(path: str | os.PathLike) -> ParameterMap:
    """Read an elastix parameter (or transform parameter) text file.

    Parameters
    ----------
    path : path-like
        A file of ``(Name value ...)`` entries; ``//`` starts a comment.

    Returns
    -------
    dict of str to tuple of str
        Values as strings without quotes, in file order.

    Raises
    ------
    DiscVBRError
        When the file is missing or a line is not an elastix entry.
    """
    path = Path(path)
    if not path.is_file():
        raise DiscVBRError(f"elastix parameter file not found: {path}")
    result: ParameterMap = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        match = _ENTRY.fullmatch(line)
        if match is None:
            raise DiscVBRError(f"{path}, line {number}: not an elastix entry '(Name value ...)': {raw.strip()!r}")
        values = tuple(q if q or not b else b for q, b in _TOKEN.findall(match.group(2)))
        result[match.group(1)] = values
    return result


def format_parameter_map(parameter_map: Mapping[str, Sequence[str]], *, header: str = "") -> str:
    """Elastix text for a parameter map: numbers bare, everything else quoted."""
    lines = [f"// {line}" if line else "//" for line in header.splitlines()]
    for name, values in parameter_map.items():
        tokens = [v if _NUMBER.match(str(v)) else f'"{v}"' for v in values]
        lines.append(f"({name} {' '.join(tokens)})")
    return "\n".join(lines) + "\n"


def write_parameter_file(path: str | os.PathLike, parameter_map: Mapping[str, Sequence[str]], *, header: str = "") -> Path:
    """Write a parameter map as an elastix text file, atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(format_parameter_map(parameter_map, header=header))
    return path


def load_parameter_files(ndim: int, *, parameter_dir: str | os.PathLike | None = None) -> list[ParameterMap]:
    """The affine and B-spline maps for ``ndim`` from ``parameter_dir`` (default: shipped)."""
    folder = PARAMETER_DIR if parameter_dir is None else Path(parameter_dir)
    maps = [read_parameter_file(folder / name) for name in parameter_file_names(ndim)]
    for stage, pm in zip(REGISTRATION_STAGES, maps):
        transform = pm.get("Transform", ("",))[0]
        expected = {"affine": "AffineTransform", "bspline": "BSplineTransform"}[stage]
        if transform != expected:
            raise DiscVBRError(f"{folder / f'{stage}-{ndim}d.txt'}: Transform is {transform!r}; expected {expected!r}")
        kind = pm.get(INPUT_IMAGE_ENTRY, ("mask",))[0]
        if kind not in INPUT_IMAGES:
            raise DiscVBRError(
                f"{folder / f'{stage}-{ndim}d.txt'}: {INPUT_IMAGE_ENTRY} is {kind!r}; expected one of {', '.join(INPUT_IMAGES)}"
            )
        if DEPTH_LIMIT_ENTRY in pm:
            try:
                limit = depth_limit(pm)
            except ValueError:
                limit = None
            if limit is None or not limit > 0:
                raise DiscVBRError(
                    f"{folder / f'{stage}-{ndim}d.txt'}: {DEPTH_LIMIT_ENTRY} must be a positive number of mm, "
                    f"got {' '.join(pm[DEPTH_LIMIT_ENTRY])!r}"
                )
    if len({pm.get(DEPTH_LIMIT_ENTRY) for pm in maps}) > 1:
        raise DiscVBRError(
            f"{folder}: the affine and B-spline files of {ndim}D name different {DEPTH_LIMIT_ENTRY} values; both stages "
            "register the same depth maps"
        )
    if len({input_image(pm) for pm in maps}) > 1:
        raise DiscVBRError(
            f"{folder}: the affine and B-spline files of {ndim}D name different {INPUT_IMAGE_ENTRY} values; both stages "
            "register the same images"
        )
    return maps


def input_image(parameter_map: Mapping[str, Sequence[str]]) -> str:
    """What a parameter map registers: ``"distance"`` or ``"mask"`` (:data:`INPUT_IMAGE_ENTRY`; absent: mask)."""
    return str(parameter_map.get(INPUT_IMAGE_ENTRY, ("mask",))[0])


def depth_limit(parameter_map: Mapping[str, Sequence[str]]) -> float | None:
    """Depth (mm) at which a parameter map's depth maps level off (:data:`DEPTH_LIMIT_ENTRY`); ``None``: no limit."""
    value = parameter_map.get(DEPTH_LIMIT_ENTRY)
    return None if value is None else float(value[0])


def pyramid_schedule(spacing: Sequence[float], shape: Sequence[int], levels: int) -> np.ndarray:
    """Per-axis shrink factors of a multi-resolution pyramid for anisotropic voxels.

    At level ``l`` (0 = coarsest) the finest axes shrink by ``2**(levels - 1 - l)``; a
    coarser axis shrinks by that factor times ``min(spacing) / spacing[axis]`` (rounded),
    so coarse levels are about isotropic in mm. No axis shrinks below 3 voxels.

    Parameters
    ----------
    spacing : sequence of float
        Voxel size per axis, mm.
    shape : sequence of int
        Voxels per axis.
    levels : int
        Number of resolutions.

    Returns
    -------
    ndarray of int, shape (levels, ndim)
        Shrink factor per level and axis, coarsest first; the last row is all ones.
    """
    spacing = np.asarray(spacing, dtype=float)
    shape = np.asarray(shape, dtype=int)
    base = 2.0 ** np.arange(levels - 1, -1, -1)
    factors = np.rint(base[:, None] * spacing.min() / spacing[None, :])
    factors = np.minimum(factors, np.maximum(shape // 3, 1)[None, :])
    return np.maximum(factors, 1).astype(int)


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def build_parameter_maps(
    params: RegistrationParams,
    *,
    ndim: int,
    spacing: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
) -> list[ParameterMap]:
    """The affine and B-spline maps of one run: the files with ``params`` written over them.

    Parameters
    ----------
    params : RegistrationParams
    ndim : {2, 3}
        Single slice or stack.
    spacing, shape : sequence, optional
        Voxel size (mm) and shape of the fixed (atlas) crop in the registration frame; with
        ``params.auto_pyramid`` the pyramid schedules are recomputed from them.

    Returns
    -------
    list of dict
        ``[affine, bspline]``.
    """
    affine, bspline = load_parameter_files(ndim, parameter_dir=params.parameter_dir)
    bspline["FinalGridSpacingInVoxels"] = (_format_number(params.final_grid_spacing),)
    bspline["MaximumNumberOfIterations"] = (str(int(params.iterations)),)
    metrics = bspline.get("Metric", ())
    if "TransformRigidityPenalty" in metrics:
        bspline[f"Metric{metrics.index('TransformRigidityPenalty')}Weight"] = (_format_number(params.rigidity_weight),)
    if params.max_step_length is not None:
        bspline["MaximumStepLength"] = (_format_number(params.max_step_length),)
    for pm in (affine, bspline):
        pm["RandomSeed"] = (str(int(params.seed)),)
        if params.auto_pyramid and spacing is not None and shape is not None:
            levels = int(pm.get("NumberOfResolutions", ("4",))[0])
            schedule = tuple(str(f) for f in pyramid_schedule(spacing, shape, levels).ravel())
            pm["FixedImagePyramidSchedule"] = schedule
            pm["MovingImagePyramidSchedule"] = schedule
    return [affine, bspline]


def write_parameter_files(folder: str | os.PathLike, params: RegistrationParams, *, ndim: int, note: str = "") -> list[Path]:
    """Write the two parameter files of ``params`` (files' pyramid schedules kept) to ``folder``.

    The files are named as the shipped ones, so the folder can be passed back as
    ``RegistrationParams(parameter_dir=folder)`` or loaded into SlicerElastix.
    """
    folder = Path(folder)
    maps = build_parameter_maps(params.with_values(auto_pyramid=False), ndim=ndim)
    header = "DiscVBR registration parameters" + (f"\n{note}" if note else "")
    return [
        write_parameter_file(folder / name, pm, header=header) for name, pm in zip(parameter_file_names(ndim), maps)
    ]
