"""Registration of one disc mask to the same-level atlas disc (mask-guided, elastix).

Per disc (Iriondo et al., MRM 2020, section 2.2): both masks are cropped to the disc's
bounding box plus a margin; the subject disc is translated so its centroid meets the atlas
disc's centroid (elastix ``CenterOfGravity`` initialisation of the affine stage); a
four-resolution recursive-pyramid affine registration scales, rotates and shears it; a
B-spline registration with a rigidity penalty deforms it. What elastix compares is named by
the parameter files (:data:`~discvbr.registration.params.INPUT_IMAGE_ENTRY`): by default each
disc's depth map (:func:`distance_image`, mean squares), so that the whole shape and not only
the voxelised edge drives the interior, the B-spline stage comparing the atlas disc's with
the subject disc's seen through the affine result (:func:`aligned_distance_image`); with the
paper's preset the 0/1 masks (mutual information), both stages in one elastix run. The fixed image is the atlas disc, so the transform maps atlas positions to
subject positions and pulls any subject image into atlas space
(:mod:`discvbr.registration.apply`).

A :class:`DiscRegistration` keeps the elastix transform parameter maps (saved as the usual
``TransformParameters.<i>.txt`` files, so a pipeline can resume from them), the parameter
maps that ran, the atlas-space grid, and the QC numbers.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import Image, atomic_write, read_image, write_image, write_json
from discvbr.levels import DISC_LEVELS, level_of
from discvbr.registration import engine
from discvbr.registration.atlas import Atlas
from discvbr.registration.crop import bounding_box, crop
from discvbr.registration.params import (
    ParameterMap,
    RegistrationParams,
    build_parameter_maps,
    depth_limit,
    input_image,
    read_parameter_file,
    write_parameter_file,
)
from discvbr.registration.qc import DiscQC, QCThresholds, dice, flag_disc, jacobian_summary
from discvbr.registration.resample import sample
from discvbr.resources import REGISTRATION_STAGES

__all__ = [
    "DEFAULT_MARGIN_MM",
    "REGISTRATION_METHOD",
    "MIN_DISC_VOXELS",
    "DiscRegistration",
    "ElastixRunner",
    "itk_elastix_runner",
    "register_disc",
    "disc_mask",
    "distance_image",
    "aligned_distance_image",
    "check_same_grid",
]

#: Margin around each disc's bounding box in the crops registered, mm.
DEFAULT_MARGIN_MM = 10.0
#: What :func:`register_disc` does with the parameter files, named for the pipeline's record
#: of each registration: change it whenever the code gives another result for the same files
#: and settings, so that a cohort run again redoes its registrations instead of mixing two methods.
REGISTRATION_METHOD = "depth maps; B-spline stage on the affinely aligned subject depth map (2026-12-05)"
#: Width of the band outside each disc where :func:`distance_image` is non-zero, mm.
DISTANCE_BAND_MM = 10.0
#: Fewest voxels a disc mask may have to be registered.
MIN_DISC_VOXELS = 20


@dataclass
class DiscRegistration:
    """One disc registered to its atlas disc.

    Attributes
    ----------
    subject : str
        Subject (and session) the disc belongs to, as named in messages and tables.
    label : int
        Disc label, 1 = L5S1 ... 5 = L1L2.
    atlas_name : str
    ndim : int
        2 (single slice) or 3 (stack).
    grid : Image
        The atlas-space grid (atlas disc crop): a bool array, True inside the atlas disc,
        with its affine. Everything warped by this registration lands on this grid.
    moving_shape, moving_affine : tuple of int, ndarray
        Grid of the subject mask the disc came from; images warped with this
        registration must share it.
    transform_maps : list of dict
        elastix transform parameter maps, atlas -> subject, in chain order (transformix
        applies the first to a point first): B-spline then affine with depth maps, affine
        then B-spline with masks (one elastix run).
    parameter_maps : list of dict
        elastix parameter maps that ran.
    params : RegistrationParams
    qc : DiscQC
    seconds : float
        Wall time of the registration.
    margin_mm : float
        Crop margin the registration ran with, mm.
    points : ndarray, shape grid + (ndim,)
        Subject-frame position of each atlas-grid voxel (in 2D the grid is the slice).
    det_jacobian : ndarray, shape grid
        Determinant of the spatial Jacobian on the atlas grid (3D layout).
    """

    subject: str
    label: int
    atlas_name: str
    ndim: int
    grid: Image
    moving_shape: tuple[int, ...]
    moving_affine: np.ndarray
    transform_maps: list[ParameterMap]
    parameter_maps: list[ParameterMap]
    params: RegistrationParams
    qc: DiscQC
    seconds: float
    margin_mm: float
    points: np.ndarray = field(repr=False)
    det_jacobian: np.ndarray = field(repr=False)

    @property
    def level(self) -> str:
        return level_of(self.label)

    @property
    def where(self) -> str:
        """``"subject X, disc L4L5"`` for messages."""
        return f"subject {self.subject}, disc {self.level}"

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the transform, the parameters that ran, QC and the atlas grid to ``folder``.

        Files: ``TransformParameters.0.txt`` and ``TransformParameters.1.txt``, an elastix chain
        (the second names the first as its initial transform; transformix applies ``.0``
        to an atlas point first): with depth maps (the default) ``.0`` is the B-spline stage
        and ``.1`` the affine one, with masks (the paper's preset) the other way round;
        ``parameters.affine.txt``
        and ``parameters.bspline.txt``, ``atlas_disc.nii.gz`` (the atlas-space grid),
        ``det_jacobian.nii.gz``, ``points.npy`` (the subject-frame position of every atlas-grid
        voxel, so that loading needs no transformix run) and ``registration.json`` (written
        last: its presence marks a complete folder).
        """
        folder = Path(folder)
        if not self.transform_maps:
            raise DiscVBRError(
                f"{self.where}: this registration has no elastix transform parameters (it was computed as a "
                "displacement field, e.g. by SlicerElastix) and cannot be saved as a transform folder"
            )
        for i, pm in enumerate(engine.prepare_transform_maps(self.transform_maps)):
            write_parameter_file(folder / f"TransformParameters.{i}.txt", pm)
        for stage, pm in zip(REGISTRATION_STAGES, self.parameter_maps):
            write_parameter_file(folder / f"parameters.{stage}.txt", pm, header=f"elastix parameters that ran: {stage} stage")
        write_image(folder / "atlas_disc.nii.gz", Image(self.grid.array.astype(np.uint8), self.grid.affine))
        write_image(folder / "det_jacobian.nii.gz", Image(self.det_jacobian.astype(np.float32), self.grid.affine))
        with atomic_write(folder / "points.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, self.points)
        write_json(folder / "registration.json", {
            "subject": self.subject,
            "label": self.label,
            "level": self.level,
            "atlas": self.atlas_name,
            "ndim": self.ndim,
            "moving_shape": list(self.moving_shape),
            "moving_affine": self.moving_affine,
            "params": self.params.to_dict(),
            "qc": self.qc.to_dict(),
            "seconds": round(self.seconds, 3),
            "margin_mm": self.margin_mm,
            "n_stages": len(self.transform_maps),
            "discvbr_version": __version__,
        })
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "DiscRegistration":
        """Read a folder written by :meth:`save` (recomputes the sampling points with transformix).

        Raises
        ------
        DiscVBRError
            When the folder is incomplete or its files cannot be read.
        """
        folder = Path(folder)
        meta_path = folder / "registration.json"
        if not meta_path.is_file():
            raise DiscVBRError(f"no saved registration in {folder} (registration.json missing)")
        try:
            meta = json.loads(meta_path.read_text())
            transform_maps = [read_parameter_file(folder / f"TransformParameters.{i}.txt") for i in range(int(meta["n_stages"]))]
            parameter_maps = [read_parameter_file(folder / f"parameters.{stage}.txt") for stage in REGISTRATION_STAGES]
            grid_image = read_image(folder / "atlas_disc.nii.gz", what="saved atlas disc")
            ndim = int(meta["ndim"])
            params = RegistrationParams(**meta["params"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DiscVBRError(f"saved registration in {folder} is incomplete or damaged: {exc}") from None
        grid = Image(np.asarray(grid_image.array) > 0, grid_image.affine)
        # Stored points avoid running transformix here: elastix results were seen to depend on
        # ITK work done in a process before it forks registration workers.
        points_file, det_file = folder / "points.npy", folder / "det_jacobian.nii.gz"
        if points_file.is_file() and det_file.is_file():
            points = np.load(points_file)
            det = np.asarray(read_image(det_file, what="saved Jacobian determinant").array, dtype=float)
        else:
            points, det = engine.transform_grid(transform_maps, shape=grid.shape, affine=grid.affine, ndim=ndim)
        return cls(
            subject=str(meta["subject"]),
            label=int(meta["label"]),
            atlas_name=str(meta["atlas"]),
            ndim=ndim,
            grid=grid,
            moving_shape=tuple(int(s) for s in meta["moving_shape"]),
            moving_affine=np.asarray(meta["moving_affine"], dtype=float),
            transform_maps=transform_maps,
            parameter_maps=parameter_maps,
            params=params,
            qc=DiscQC.from_dict(meta["qc"]),
            seconds=float(meta.get("seconds", float("nan"))),
            margin_mm=float(meta["margin_mm"]),
            points=points,
            det_jacobian=det.reshape(grid.shape),
        )


class ElastixRunner(Protocol):
    """Runs one elastix registration of a cropped disc pair (how :func:`register_disc` calls elastix).

    ``fixed`` and ``moving`` are what the parameter maps name: the discs' depth maps or their
    0/1 masks, already made by :func:`register_disc`, so a runner only runs elastix. The
    default runs itk-elastix in this process; the Slicer module passes one that runs the same
    parameter maps through SlicerElastix.
    """

    def __call__(
        self, fixed: Image, moving: Image, parameter_maps: Sequence[ParameterMap], *, ndim: int
    ) -> tuple[list[ParameterMap], np.ndarray, np.ndarray]:
        """Register ``moving`` to ``fixed``.

        Returns
        -------
        transform_maps : list of dict
            elastix transform parameter maps (empty when the engine gives only a field).
        points : ndarray, shape fixed grid + (ndim,) (in 2D the slice, ``(ny, nz, 2)``)
            Moving-frame position (mm) of every fixed voxel.
        det_jacobian : ndarray
            Jacobian determinant of the transform at every fixed voxel.

        Raises
        ------
        RuntimeError
            When the registration fails.
        """


def itk_elastix_runner(log_file: str | os.PathLike | None = None) -> ElastixRunner:
    """The default runner: itk-elastix and transformix in this process (elastix's log kept in ``log_file``)."""

    def run(fixed: Image, moving: Image, parameter_maps: Sequence[ParameterMap], *, ndim: int):
        transform_maps = engine.run_elastix(
            fixed.array, fixed.affine, moving.array, moving.affine, parameter_maps, ndim=ndim, log_file=log_file
        )
        points, det = engine.transform_grid(transform_maps, shape=fixed.shape, affine=fixed.affine, ndim=ndim)
        return transform_maps, points, det

    return run


def disc_mask(mask: Image, label: int, *, subject: str) -> np.ndarray:
    """Boolean mask of disc ``label`` in a label map, checked.

    Raises
    ------
    DiscVBRError
        When the label is not a disc, the map is not a 3D volume of whole numbers, or the
        disc is missing or smaller than :data:`MIN_DISC_VOXELS` voxels.
    """
    level = level_of(label)
    values = np.asarray(mask.array)
    if values.ndim != 3:
        raise DiscVBRError(f"subject {subject}, disc {level}: the mask must be a 3D label volume, got shape {values.shape}")
    if values.dtype.kind == "f" and (not np.all(np.isfinite(values)) or np.any(values != np.round(values))):
        raise DiscVBRError(f"subject {subject}, disc {level}: the mask holds non-integer values; expected disc labels 0-5")
    binary = values == label
    count = int(binary.sum())
    if count == 0:
        present = [level_of(v) for v in np.unique(values).astype(int) if 1 <= v <= len(DISC_LEVELS)]
        raise DiscVBRError(
            f"subject {subject}, disc {level}: the mask has no voxel labelled {label} ({level}); "
            f"labelled discs: {', '.join(present) or 'none'}"
        )
    if count < MIN_DISC_VOXELS:
        raise DiscVBRError(f"subject {subject}, disc {level}: only {count} voxels (at least {MIN_DISC_VOXELS} needed)")
    return binary


def check_same_grid(image: Image, shape: tuple[int, ...], affine: np.ndarray, *, where: str, what: str) -> None:
    """Raise a :class:`DiscVBRError` naming ``where`` unless ``image`` lies on ``(shape, affine)``."""
    reference = Image(np.empty(tuple(shape[:3]), dtype=np.uint8), affine)
    if not reference.same_grid(image):
        raise DiscVBRError(
            f"{where}: the {what} (shape {tuple(image.shape[:3])}, voxel {np.round(image.spacing, 3).tolist()} mm, "
            f"origin {np.round(image.origin, 2).tolist()}) is not on the grid of the mask (shape {tuple(shape[:3])}, "
            f"voxel {np.round(reference.spacing, 3).tolist()} mm, origin {np.round(reference.origin, 2).tolist()})"
        )


def distance_image(
    mask: Image, *, ndim: int, band_mm: float = DISTANCE_BAND_MM, depth_limit_mm: float | None = None
) -> Image:
    """The image elastix registers instead of a disc mask: depth in the disc, fading outside.

    Value ``band_mm + depth`` at a voxel ``depth`` mm inside the disc's edge, falling by 1
    per mm outside it to 0 at ``band_mm`` from the edge. Registered instead of the binary
    mask, it gives every interior voxel a value that says how deep in the disc it lies, so
    the whole shape drives the deformation and not only the voxelised edge; being positive
    with its mass on the disc, elastix's ``CenterOfGravity`` initialisation still finds the
    disc's centre. Distances are taken within the sagittal plane for a single slice and in
    3D for a stack; the edge lies half-way between the outermost inside and outside voxels.

    Parameters
    ----------
    mask : Image
        0/1 mask (values > 0.5 are inside), DiscVBR layout.
    ndim : {2, 3}
    band_mm : float
        Width of the band outside the disc with non-zero values, mm.
    depth_limit_mm : float, optional
        Depth beyond which values stay at ``band_mm + depth_limit_mm``. Depth in mm does not
        scale with the disc: the centre of a disc half as high is half as deep. Levelling
        off a few mm in keeps a thin disc's interior from being pulled towards the values
        of a thick one's, so edges and the regulariser place the centre.

    Returns
    -------
    Image
        float32 values (mm) on the mask's grid.
    """
    inside = np.asarray(mask.array) > 0.5
    plane = inside[0] if ndim == 2 else inside
    spacing = mask.spacing[1:] if ndim == 2 else mask.spacing
    outside_depth = ndimage.distance_transform_edt(~plane, sampling=spacing)
    inside_depth = ndimage.distance_transform_edt(plane, sampling=spacing)
    # half a voxel (along the finest axis) moves the zero level from voxel centres to the edge
    half = 0.5 * float(np.min(spacing))
    return _depth_map(plane, inside_depth - half, outside_depth - half, mask.affine, ndim=ndim,
                      band_mm=band_mm, depth_limit_mm=depth_limit_mm)


def aligned_distance_image(
    mask: Image,
    grid: Image,
    linear: np.ndarray,
    shift: np.ndarray,
    *,
    ndim: int,
    band_mm: float = DISTANCE_BAND_MM,
    depth_limit_mm: float | None = None,
) -> Image:
    """The depth map of a disc after an affine alignment, on the atlas grid.

    :func:`distance_image` of the disc in ``mask`` once pulled back through the affine map
    ``y = linear @ x + shift`` (atlas frame -> subject frame): at an atlas-grid point ``x``
    the disc's edge is measured in atlas millimetres, not in the subject's. A disc 25 %
    higher than the atlas disc then has the atlas disc's depth profile, not one 25 % deeper,
    so the B-spline stage registering it against the atlas disc's depth map is driven only by
    what the affine map leaves unexplained, and does not compress or stretch the interior to
    match depth ramps of the wrong slope.

    Parameters
    ----------
    mask : Image
        0/1 subject disc mask (values > 0.5 are inside), DiscVBR layout.
    grid : Image
        The atlas-side grid to compute the map on (its values are not used).
    linear : ndarray, shape (ndim, ndim)
    shift : ndarray, shape (ndim,)
        The affine map from atlas-frame mm to subject-frame mm (registration frame,
        :mod:`discvbr.registration.engine`).
    ndim : {2, 3}
    band_mm, depth_limit_mm : float
        As in :func:`distance_image`.

    Returns
    -------
    Image
        float32 values on ``grid``.
    """
    inside_subject = np.asarray(mask.array) > 0.5
    edges = _edge_points(inside_subject, mask.affine, ndim)
    if len(edges) == 0:
        raise DiscVBRError("the disc fills its whole crop, so it has no edge to measure depth from; use a crop margin above 0 mm")
    to_atlas = np.linalg.inv(linear)
    atlas_points = engine.voxel_positions(grid.shape, grid.affine, ndim)
    subject_points = atlas_points @ np.asarray(linear).T + shift
    inside = sample(inside_subject, mask.affine, subject_points, ndim=ndim, order=0, cval=0.0) > 0.5
    distance, _ = cKDTree((edges - shift) @ to_atlas.T).query(atlas_points.reshape(-1, ndim))
    distance = distance.reshape(inside.shape)
    return _depth_map(inside, distance, distance, grid.affine, ndim=ndim, band_mm=band_mm, depth_limit_mm=depth_limit_mm)


def _edge_points(inside: np.ndarray, affine: np.ndarray, ndim: int) -> np.ndarray:
    """Frame positions (mm) of a mask's edge: half-way between every inside voxel and its outside neighbours."""
    plane = inside[0] if ndim == 2 else inside
    index = []
    for axis in range(plane.ndim):
        crossing = np.argwhere(np.diff(plane.astype(np.int8), axis=axis) != 0).astype(float)
        crossing[:, axis] += 0.5
        index.append(crossing)
    matrix, origin = engine.frame_geometry(affine, ndim)
    return np.concatenate(index) @ matrix.T + origin


def _depth_map(
    inside: np.ndarray, depth: np.ndarray, outside_distance: np.ndarray, affine: np.ndarray, *,
    ndim: int, band_mm: float, depth_limit_mm: float | None,
) -> Image:
    """Values ``band_mm + depth`` (levelled at ``depth_limit_mm``) inside, ``band_mm - distance`` outside, >= 0."""
    if depth_limit_mm is not None:
        depth = np.minimum(depth, depth_limit_mm)
    values = np.maximum(band_mm - np.where(inside, -depth, outside_distance), 0.0)
    values = values[None] if ndim == 2 else values
    return Image(values.astype(np.float32), affine)


def _register_depth_maps(
    run: ElastixRunner, fixed: Image, moving: Image, maps: Sequence[ParameterMap], *, ndim: int
) -> tuple[list[ParameterMap], np.ndarray, np.ndarray]:
    """Both stages on depth maps: the affine stage on each disc's own, the B-spline stage after alignment.

    The B-spline stage compares the atlas disc's depth map with the subject disc's as seen
    through the affine result (:func:`aligned_distance_image`), in the atlas frame, so
    depth is in the same millimetres on both sides. The combined map is the affine one after
    the B-spline one; its elastix chain lists the B-spline stage first, since elastix applies
    a chain's transforms to a point in that order.
    """
    limit = depth_limit(maps[0])
    fixed_depth = distance_image(fixed, ndim=ndim, depth_limit_mm=limit)
    affine_maps, affine_points, _ = run(fixed_depth, distance_image(moving, ndim=ndim, depth_limit_mm=limit), maps[:1], ndim=ndim)
    linear, shift = _fit_affine(engine.voxel_positions(fixed.shape, fixed.affine, ndim), affine_points, ndim)
    aligned = aligned_distance_image(moving, fixed, linear, shift, ndim=ndim, depth_limit_mm=limit)
    bspline_maps, bspline_points, bspline_det = run(fixed_depth, aligned, maps[1:], ndim=ndim)
    points = np.asarray(bspline_points) @ linear.T + shift
    det = np.asarray(bspline_det) * np.linalg.det(linear)
    # an engine that gives only displacement fields gives no maps to chain
    transform_maps = [*bspline_maps, *affine_maps] if bspline_maps and affine_maps else []
    return transform_maps, points, det


def _fit_affine(positions: np.ndarray, points: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(linear, shift)`` with ``points = linear @ positions + shift`` (least squares; exact for an affine stage)."""
    design = np.column_stack([positions.reshape(-1, ndim), np.ones(positions.size // ndim)])
    coefficients, *_ = np.linalg.lstsq(design, np.asarray(points).reshape(-1, ndim), rcond=None)
    return coefficients[:ndim].T, coefficients[ndim]


def _centroid(mask: np.ndarray, affine: np.ndarray, ndim: int) -> np.ndarray:
    matrix, origin = engine.frame_geometry(affine, ndim)
    index = np.argwhere(mask).astype(float)
    index = index[:, 1:] if ndim == 2 else index
    return index.mean(axis=0) @ matrix.T + origin


def register_disc(
    mask: Image,
    label: int,
    atlas: Atlas,
    *,
    params: RegistrationParams = RegistrationParams(),
    subject: str = "subject",
    margin_mm: float = DEFAULT_MARGIN_MM,
    thresholds: QCThresholds = QCThresholds(),
    log_file: str | os.PathLike | None = None,
    runner: ElastixRunner | None = None,
) -> DiscRegistration:
    """Register disc ``label`` of a subject's mask to the atlas disc of the same level.

    Parameters
    ----------
    mask : Image
        The subject's disc label map (1 = L5S1 ... 5 = L1L2) in DiscVBR layout: a single
        slice ``(1, ny, nz)`` or a stack, matching the atlas's mode.
    label : int
        The disc to register.
    atlas : Atlas
    params : RegistrationParams
        Grid spacing, iterations, rigidity weight, seed, parameter files (default: the shipped
        default recipe; ``registration_preset("paper")`` for the paper's).
    subject : str
        Name used in messages, tables and saved files.
    margin_mm : float
        Margin around both discs' bounding boxes, mm.
    thresholds : QCThresholds
        Limits for the QC flags.
    log_file : path-like, optional
        Keep elastix's log there (default runner).
    runner : ElastixRunner, optional
        Runs elastix on the cropped discs; default: itk-elastix in this process.

    Returns
    -------
    DiscRegistration

    Raises
    ------
    DiscVBRError
        Naming subject and disc: a label that is not a disc, a disc missing from the mask
        or the atlas, a 2D mask against a 3D atlas (or the reverse), or a failed registration.
    """
    level = level_of(label)
    where = f"subject {subject}, disc {level}"
    if not atlas.has(label):
        have = ", ".join(level_of(v) for v in atlas.levels) or "none"
        raise DiscVBRError(f"{where}: atlas {atlas.name!r} has no {level} disc; it has: {have}")
    binary = disc_mask(mask, label, subject=subject)
    ndim = engine.registration_ndim(mask.shape)
    if ndim != atlas.ndim:
        kinds = {2: "a single slice (2D)", 3: "a stack of slices (3D)"}
        raise DiscVBRError(f"{where}: the mask is {kinds[ndim]} but atlas {atlas.name!r} is {kinds[atlas.ndim]}")
    fixed = atlas.disc(label, margin_mm=margin_mm)
    moving = crop(Image(binary.astype(np.float32), mask.affine), bounding_box(binary, mask.spacing, margin_mm=margin_mm))
    atlas_disc = np.asarray(fixed.array) > 0.5
    frame_shape = fixed.shape[1:] if ndim == 2 else fixed.shape
    frame_spacing = fixed.spacing[1:] if ndim == 2 else fixed.spacing
    maps = build_parameter_maps(params, ndim=ndim, spacing=frame_spacing, shape=frame_shape)
    run = runner if runner is not None else itk_elastix_runner(log_file)
    start = time.perf_counter()
    try:
        if input_image(maps[0]) == "distance":
            transform_maps, points, det = _register_depth_maps(run, fixed, moving, maps, ndim=ndim)
        else:
            transform_maps, points, det = run(fixed, moving, maps, ndim=ndim)
    except DiscVBRError as exc:
        raise DiscVBRError(f"{where}: {exc}") from None
    except RuntimeError as exc:
        raise DiscVBRError(f"{where}: elastix failed: {str(exc).splitlines()[0]}") from None
    seconds = time.perf_counter() - start
    if not (np.all(np.isfinite(points)) and np.all(np.isfinite(det))):
        raise DiscVBRError(f"{where}: the registration diverged (non-finite transform); try a smaller MaximumStepLength")

    warped = sample(binary, mask.affine, points, ndim=ndim, order=0, cval=0.0).reshape(fixed.shape) > 0.5
    det = det.reshape(fixed.shape)
    jac = jacobian_summary(det, atlas_disc)
    offset = _centroid(binary, mask.affine, ndim) - _centroid(atlas_disc, fixed.affine, ndim)
    qc = DiscQC(
        dice=dice(warped, atlas_disc),
        det_jacobian_mean=jac["mean"],
        det_jacobian_sd=jac["sd"],
        det_jacobian_min=jac["min"],
        det_jacobian_max=jac["max"],
        folded_fraction=jac["folded_fraction"],
        centroid_offset_mm=float(np.linalg.norm(offset)),
        subject_voxels=int(binary.sum()),
        atlas_voxels=int(atlas_disc.sum()),
    )
    qc.flags = flag_disc(qc, thresholds)
    return DiscRegistration(
        subject=subject,
        label=int(label),
        atlas_name=atlas.name,
        ndim=ndim,
        grid=Image(atlas_disc, fixed.affine),
        moving_shape=tuple(int(s) for s in mask.shape[:3]),
        moving_affine=np.asarray(mask.affine, dtype=float),
        transform_maps=transform_maps,
        parameter_maps=maps,
        params=params,
        qc=qc,
        seconds=seconds,
        margin_mm=float(margin_mm),
        points=points,
        det_jacobian=det,
    )
