"""The headless elastix engine (itk-elastix): images in, transform parameter maps out.

Everything that touches ITK lives here; the rest of :mod:`discvbr.registration` works on
numpy arrays and plain parameter maps.

Geometry. DiscVBR affines map voxel indices to RAS millimetres; ITK and elastix use LPS.
The conversion happens here only: the *registration frame* is LPS for stacks (3D) and, for
a single sagittal slice (2D), the slice's posterior and superior LPS coordinates (the
left-right axis of a ``(1, ny, nz)`` volume is dropped). Array axes map to ITK index axes
in the same order (ITK index ``(i, j, k)`` is numpy ``array[i, j, k]``).

Threads. itk-elastix 0.25.4 crashed with more than one thread in multi-metric
registration (mutual information + rigidity penalty), so every ITK filter here runs on one
thread with ITK's platform threader (no thread pool survives into forked workers);
throughput comes from running discs and subjects in separate processes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from discvbr.io import atomic_write
from discvbr.registration.params import ParameterMap

__all__ = [
    "LPS_FROM_RAS",
    "load_itk",
    "registration_ndim",
    "frame_geometry",
    "voxel_positions",
    "run_elastix",
    "transform_grid",
    "prepare_transform_maps",
]

#: RAS -> LPS (and back): flip the first two physical axes.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def load_itk():
    """Import itk with the elastix wrapping and set ITK's process defaults to one thread.

    Loading the elastix wrapping takes several seconds, so call this in a parent process
    before forking workers. The threader is set to ITK's platform threader and one thread
    (see the module notes); this is a per-process setting of ITK, applied on every call.
    """
    import itk

    threader = itk.MultiThreaderBase
    threader.SetGlobalDefaultThreader(threader.ThreaderTypeFromString("Platform"))
    threader.SetGlobalDefaultNumberOfThreads(1)
    itk.ParameterObject  # noqa: B018 - loads the elastix wrapping now rather than mid-run
    return itk


def registration_ndim(shape: Sequence[int]) -> int:
    """2 for a single sagittal slice (``shape[0] == 1``), 3 for a stack."""
    return 2 if int(shape[0]) == 1 else 3


def frame_geometry(affine: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Index -> registration-frame map of a grid: ``x = matrix @ index + origin``.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel -> RAS mm.
    ndim : {2, 3}
        Registration dimension; in 2D the index is ``(j, k)`` and the frame the (P, S) plane.

    Returns
    -------
    matrix : ndarray, shape (ndim, ndim)
    origin : ndarray, shape (ndim,)
    """
    lps = LPS_FROM_RAS @ np.asarray(affine, float)[:3, :]
    if ndim == 3:
        return lps[:, :3].copy(), lps[:, 3].copy()
    return lps[1:, 1:3].copy(), lps[1:, 3].copy()


def voxel_positions(shape: Sequence[int], affine: np.ndarray, ndim: int) -> np.ndarray:
    """Registration-frame coordinates (mm) of every voxel of a grid, shape ``grid + (ndim,)``.

    In 2D the grid is the slice, ``(ny, nz)``.
    """
    matrix, origin = frame_geometry(affine, ndim)
    axes = [np.arange(n, dtype=float) for n in (shape[1:3] if ndim == 2 else shape[:3])]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return index @ matrix.T + origin


def _to_itk(itk, array: np.ndarray, affine: np.ndarray, ndim: int):
    """A float32 ITK image of a (1, ny, nz) slice (2D) or a stack (3D), with its geometry."""
    data = np.asarray(array, dtype=np.float32)
    data = data[0] if ndim == 2 else data
    image = itk.image_from_array(np.ascontiguousarray(data.T))
    matrix, origin = frame_geometry(affine, ndim)
    spacing = np.linalg.norm(matrix, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(matrix / spacing)))
    return image


def _parameter_object(itk, maps: Sequence[ParameterMap]):
    obj = itk.ParameterObject.New()
    for pm in maps:
        obj.AddParameterMap({k: tuple(str(v) for v in values) for k, values in pm.items()})
    return obj


def run_elastix(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    parameter_maps: Sequence[ParameterMap],
    *,
    ndim: int,
    log_file: str | os.PathLike | None = None,
) -> list[ParameterMap]:
    """Register ``moving`` to ``fixed`` with elastix; return the transform parameter maps.

    Parameters
    ----------
    fixed, moving : ndarray
        Volumes in DiscVBR layout (a 2D slice as ``(1, ny, nz)``).
    fixed_affine, moving_affine : ndarray, shape (4, 4)
        Voxel -> RAS mm.
    parameter_maps : sequence of dict
        One map per stage, run in order, each starting from the previous result.
    ndim : {2, 3}
    log_file : path-like, optional
        Where to keep elastix's log; by default it is discarded.

    Returns
    -------
    list of dict
        The transform parameter maps, one per stage, in the registration frame; the
        transform maps fixed-frame points to moving-frame points.

    Raises
    ------
    RuntimeError
        When elastix fails (the message carries the end of its log).
    """
    itk = load_itk()
    maps = [dict(pm, WriteResultImage=("false",)) for pm in parameter_maps]
    with tempfile.TemporaryDirectory(prefix="discvbr-elastix-") as workdir:
        method = itk.ElastixRegistrationMethod.New(_to_itk(itk, fixed, fixed_affine, ndim), _to_itk(itk, moving, moving_affine, ndim))
        method.SetParameterObject(_parameter_object(itk, maps))
        method.SetNumberOfThreads(1)
        method.SetLogToConsole(False)
        method.SetOutputDirectory(workdir)
        method.SetLogToFile(True)
        method.SetLogFileName("elastix.log")
        log = Path(workdir) / "elastix.log"
        try:
            method.UpdateLargestPossibleRegion()
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
            raise RuntimeError(f"elastix failed: {exc}\n{tail}") from None
        finally:
            if log_file is not None and log.is_file():
                Path(log_file).parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(log_file) as tmp:
                    shutil.copyfile(log, tmp)
        result = method.GetTransformParameterObject()
        return [
            {k: tuple(v) for k, v in dict(result.GetParameterMap(i)).items()}
            for i in range(result.GetNumberOfParameterMaps())
        ]


def prepare_transform_maps(transform_maps: Sequence[ParameterMap]) -> list[ParameterMap]:
    """Transform maps ready to chain and save: each names the previous stage's file.

    elastix records its (temporary) output folder in ``InitialTransformParameterFileName``;
    here map ``i`` points to ``TransformParameters.{i-1}.txt`` beside it, so a saved folder
    can be used by command-line transformix from inside it. itk-elastix chains maps held in
    one parameter object by their order, whatever the file names say.
    """
    maps = []
    for i, pm in enumerate(transform_maps):
        pm = dict(pm)
        pm["InitialTransformParameterFileName"] = ("NoInitialTransform",) if i == 0 else (f"TransformParameters.{i - 1}.txt",)
        maps.append(pm)
    return maps


def transform_grid(
    transform_maps: Sequence[ParameterMap], *, shape: Sequence[int], affine: np.ndarray, ndim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where the transform sends every fixed-grid voxel, and its Jacobian determinant there.

    Parameters
    ----------
    transform_maps : sequence of dict
        Transform parameter maps from :func:`run_elastix` (chained in order).
    shape, affine : sequence of int, ndarray (4, 4)
        The fixed grid the registration ran on (DiscVBR layout, voxel -> RAS mm).
    ndim : {2, 3}

    Returns
    -------
    points : ndarray, shape grid + (ndim,)
        Moving-frame coordinates (mm) of each voxel of the fixed grid (in 2D the grid is
        the slice, ``(ny, nz)``), from transformix's deformation field.
    det_jacobian : ndarray, shape grid
        Determinant of the spatial Jacobian of the transform at each voxel
        (transformix ``ComputeDeterminantOfSpatialJacobian``): > 1 expansion,
        0..1 compression, <= 0 folding.
    """
    itk = load_itk()
    # the Jacobian comes back as a file; fix its format whatever the maps say
    maps = [dict(pm, ResultImageFormat=("nii",)) for pm in prepare_transform_maps(transform_maps)]
    positions = voxel_positions(shape, affine, ndim)
    size = tuple(int(s) for s in maps[-1]["Size"])
    if size != positions.shape[:-1]:
        raise ValueError(f"transform grid of size {size} does not match the fixed grid {positions.shape[:-1]}")
    # transformix needs an input image; one voxel is enough since only fields are used
    probe = itk.image_from_array(np.zeros((1,) * ndim, np.float32))
    with tempfile.TemporaryDirectory(prefix="discvbr-transformix-") as workdir:
        transformix = itk.TransformixFilter.New(probe)
        transformix.SetTransformParameterObject(_parameter_object(itk, maps))
        transformix.SetComputeDeformationField(True)
        transformix.SetComputeDeterminantOfSpatialJacobian(True)
        transformix.SetLogToConsole(False)
        transformix.SetOutputDirectory(workdir + os.sep)
        transformix.UpdateLargestPossibleRegion()
        displacement = np.asarray(itk.array_from_image(transformix.GetOutputDeformationField()), dtype=float)
        det = np.asarray(itk.array_from_image(itk.imread(os.path.join(workdir, "spatialJacobian.nii"), itk.F)), dtype=float)
    displacement = np.transpose(displacement, tuple(range(ndim - 1, -1, -1)) + (ndim,))
    return positions + displacement, det.T
