"""Spine surfaces of an atlas: lumbar vertebral bodies, the top of the sacrum and the discs.

The atlas label map may be

* a **spine label map** (``discvbr.levels``: discs 1-5, T12L1 6, sacrum 10, L5 11 ... L1 15,
  T12 16), as the phantom's ``truth/spine_labels``: the vertebrae are taken from it, cut to
  their bodies (the antero-posterior range of the neighbouring discs) and, for the sacrum,
  to its top (``sacrum_height_mm`` below the L5S1 disc); or
* a **disc label map** (1 = L5S1 ... 5 = L1L2), as real atlases have: the vertebral bodies
  are derived from the discs alone. Along each inferior-superior voxel column, the body
  between two consecutive discs fills the gap between the upper surface of the lower disc
  and the lower surface of the upper disc; the L1 body sits on L1L2 with the median height of
  the derived bodies, and a block of ``sacrum_height_mm`` lies under L5S1.

A single sagittal slice (2D atlas, 8 mm) or a thin stack cannot be meshed into a plausible
spine as it is, so such label maps are **extruded**: the mid-sagittal profile of every part
is swept left-right with an elliptical cross-section whose width is ``width_ratio`` times the
part's antero-posterior depth (lumbar discs and bodies are about 1.2-1.5 times wider than
deep; Zhou et al., Eur Spine J 2000;9:242), centred on the atlas' discs.

Surfaces come from marching cubes on each part's binary mask (VTK flying edges), are smoothed
with a windowed-sinc filter (Taubin et al., 1996) and decimated (quadric error metric,
Garland & Heckbert, 1997), and are returned in the atlas' physical RAS coordinates (mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.levels import DISC_LEVELS, T12L1_LABEL, VERTEBRA_LABELS

__all__ = [
    "SpineParts",
    "BODY_NAMES",
    "part_label",
    "spine_parts",
    "spine_mesh",
    "mask_surface",
]

#: Vertebrae shown on the mesh, inferior to superior (the sacrum is only its top).
BODY_NAMES: tuple[str, ...] = ("sacrum", "L5", "L4", "L3", "L2", "L1")
#: Width over antero-posterior depth of lumbar discs and vertebral bodies used to extrude
#: single slices (Zhou et al., Eur Spine J 2000;9:242: endplate width/depth about 1.3-1.5).
DEFAULT_WIDTH_RATIO = 1.35
# Below this lateral coverage (fraction of the discs' antero-posterior depth) a label map is a
# slab, not a spine: it is extruded. Real 3D discs cover more than their depth.
_EXTRUDE_BELOW_COVERAGE = 0.8
# Margin (mm) around the discs' antero-posterior range that still counts as vertebral body.
_BODY_MARGIN_MM = 3.0


def part_label(name: str) -> int:
    """Label value of a spine part in :class:`SpineParts` volumes (discs 1-5, vertebrae 10-15)."""
    if name in DISC_LEVELS:
        return DISC_LEVELS.index(name) + 1
    if name in VERTEBRA_LABELS:
        return VERTEBRA_LABELS[name]
    raise DiscVBRError(f"unknown spine part {name!r}; expected a disc level or one of {', '.join(BODY_NAMES)}")


@dataclass(frozen=True)
class SpineParts:
    """The labelled volume that the spine mesh is built from.

    Attributes
    ----------
    volume : Image
        uint8 labels (discs 1-5, sacrum 10, L5 11 ... L1 15) on a grid whose affine maps
        voxel indices to the atlas' RAS millimetres.
    derived_vertebrae : bool
        True when the vertebral bodies were derived from disc labels (no vertebra labels given).
    extruded : bool
        True when a single slice or a thin stack was extruded left-right.
    """

    volume: Image
    derived_vertebrae: bool
    extruded: bool

    @property
    def names(self) -> tuple[str, ...]:
        """Parts present, vertebrae then discs, inferior to superior."""
        present = set(np.unique(self.volume.array).tolist())
        return tuple(n for n in (*BODY_NAMES, *DISC_LEVELS) if part_label(n) in present)


def _validate_labels(labels: Image, what: str) -> tuple[np.ndarray, bool]:
    array = np.asarray(labels.array)
    if array.ndim != 3:
        raise DiscVBRError(f"{what}: a label map must be a 3D volume (X, Y, Z), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DiscVBRError(f"{what}: labels must be whole numbers")
    array = array.astype(np.int16)
    values = set(np.unique(array).tolist()) - {0}
    allowed = set(range(1, len(DISC_LEVELS) + 1)) | {T12L1_LABEL} | set(VERTEBRA_LABELS.values())
    unknown = sorted(values - allowed)
    if unknown:
        raise DiscVBRError(
            f"{what}: unknown label value(s) {unknown}; expected discs 1-5 (1 = L5S1 ... 5 = L1L2), "
            f"T12L1 {T12L1_LABEL} and vertebrae {sorted(VERTEBRA_LABELS.values())}"
        )
    if not values & set(range(1, len(DISC_LEVELS) + 1)):
        raise DiscVBRError(f"{what}: no lumbar disc label (1-5) in the label map")
    has_vertebrae = bool(values & set(VERTEBRA_LABELS.values()))
    return array, has_vertebrae


def _keep_lumbar(array: np.ndarray, spacing: np.ndarray, sacrum_height_mm: float) -> np.ndarray:
    """Lumbar discs, bodies (cut to the discs' AP range) and the top of the sacrum."""
    out = np.where((array >= 1) & (array <= len(DISC_LEVELS)), array, 0).astype(np.uint8)
    margin = int(np.ceil(_BODY_MARGIN_MM / spacing[1]))
    ny = array.shape[1]
    for name in BODY_NAMES:
        label = VERTEBRA_LABELS[name]
        mask = array == label
        if not mask.any():
            continue
        # the discs below and above this vertebra (sacrum: only L5S1 above)
        index = BODY_NAMES.index(name)
        neighbours = [d for d in (index, index + 1) if 1 <= d <= len(DISC_LEVELS)]
        disc_mask = np.isin(array, neighbours)
        if not disc_mask.any():
            continue
        ys = np.flatnonzero(disc_mask.any(axis=(0, 2)))
        lo, hi = max(ys.min() - margin, 0), min(ys.max() + margin, ny - 1)
        mask[:, :lo, :] = False
        mask[:, hi + 1 :, :] = False
        if name == "sacrum":
            z_low = np.flatnonzero((array == 1).any(axis=(0, 1))).min()
            z_cut = int(np.floor(z_low - sacrum_height_mm / spacing[2]))
            mask[:, :, : max(z_cut, 0)] = False
        out[mask] = label
    return out


def _column_surfaces(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest index along the last axis where ``mask`` is set (-1 where empty)."""
    nz = mask.shape[-1]
    any_ = mask.any(axis=-1)
    low = np.where(any_, np.argmax(mask, axis=-1), -1)
    high = np.where(any_, nz - 1 - np.argmax(mask[..., ::-1], axis=-1), -1)
    return low, high


def _fill_along_y(surface: np.ndarray) -> np.ndarray:
    """Fill undefined (-1) entries of per-column surface heights by holding the nearest defined value along y."""
    out = surface.astype(float)
    for i in range(out.shape[0]):
        row = out[i]
        defined = row >= 0
        if defined.sum() == 0:
            continue
        ys = np.arange(row.size)
        out[i] = np.interp(ys, ys[defined], row[defined])
    return out


def _derive_vertebrae(discs: np.ndarray, spacing: np.ndarray, sacrum_height_mm: float) -> np.ndarray:
    """Vertebral bodies from disc labels alone (see module docstring)."""
    out = discs.astype(np.uint8).copy()
    nz = discs.shape[2]
    zs = np.arange(nz)[None, None, :]
    heights = []
    for lower in range(1, len(DISC_LEVELS)):
        upper = lower + 1
        m_lo, m_hi = discs == lower, discs == upper
        if not m_lo.any() or not m_hi.any():
            continue
        _, top_lo = _column_surfaces(m_lo)
        bottom_hi, _ = _column_surfaces(m_hi)
        columns = (top_lo >= 0) | (bottom_hi >= 0)
        top_lo, bottom_hi = _fill_along_y(top_lo), _fill_along_y(bottom_hi)
        columns &= (top_lo >= 0) & (bottom_hi > top_lo + 1)
        inside = columns[..., None] & (zs > top_lo[..., None]) & (zs < bottom_hi[..., None]) & (out == 0)
        out[inside] = VERTEBRA_LABELS[f"L{len(DISC_LEVELS) + 1 - lower}"]
        heights.append(np.median((bottom_hi - top_lo - 1)[columns]))
    top_disc = discs == len(DISC_LEVELS)
    if top_disc.any():
        _, top = _column_surfaces(top_disc)
        height = float(np.median(heights)) if heights else 27.0 / spacing[2]
        columns = top >= 0
        inside = columns[..., None] & (zs > top[..., None]) & (zs <= top[..., None] + height) & (out == 0)
        out[inside] = VERTEBRA_LABELS["L1"]
    bottom_disc = discs == 1
    if bottom_disc.any():
        bottom, _ = _column_surfaces(bottom_disc)
        height = sacrum_height_mm / spacing[2]
        columns = bottom >= 0
        inside = columns[..., None] & (zs < bottom[..., None]) & (zs >= bottom[..., None] - height) & (out == 0)
        out[inside] = VERTEBRA_LABELS["sacrum"]
    return out


def _extrude(volume: np.ndarray, affine: np.ndarray, spacing: np.ndarray, width_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Sweep each part's mid-sagittal profile left-right with an elliptical cross-section."""
    discs = (volume >= 1) & (volume <= len(DISC_LEVELS))
    xs_disc = np.flatnonzero(discs.any(axis=(1, 2)))
    centre_index = 0.5 * (xs_disc.min() + xs_disc.max())
    # profile: the part present at (y, z) in the most slices, discs first where they meet
    profile = np.zeros(volume.shape[1:], np.uint8)
    best = np.zeros(volume.shape[1:], np.int32)
    for label in sorted(set(np.unique(volume).tolist()) - {0}, key=lambda v: (v > len(DISC_LEVELS), v)):
        count = (volume == label).sum(axis=0)
        take = count > best
        profile[take] = label
        best[take] = count[take]
    lateral = float(min(spacing[1], spacing[2]))
    depth_of = {}
    for label in np.unique(profile[profile > 0]):
        ys = np.flatnonzero((profile == label).any(axis=1))
        depth_of[int(label)] = (ys.max() - ys.min() + 1) * spacing[1]
    half_max = 0.5 * width_ratio * max(depth_of.values())
    n_lat = int(np.ceil(2 * half_max / lateral)) + 3
    x_mm = (np.arange(n_lat) - 0.5 * (n_lat - 1)) * lateral
    out = np.zeros((n_lat, *profile.shape), np.uint8)
    for label, depth in depth_of.items():
        mask = profile == label
        low, high = _column_surfaces(mask.T)  # per z row: lowest/highest y index
        rows = low >= 0
        ys = np.arange(profile.shape[0])[:, None]
        centre = 0.5 * (low + high)[None, :]
        half_depth = 0.5 * (high - low + 1)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(rows[None, :], (ys - centre) / half_depth, 2.0)
        half_width = 0.5 * width_ratio * depth * np.sqrt(np.clip(1.0 - t**2, 0.0, None))
        inside = mask[None] & (np.abs(x_mm)[:, None, None] <= np.maximum(half_width, 0.5 * lateral)[None])
        out[inside & (out == 0)] = label
    new_affine = affine.copy()
    direction_x = affine[:3, 0] / spacing[0]
    new_affine[:3, 0] = direction_x * lateral
    new_affine[:3, 3] = affine[:3, :3] @ np.array([centre_index, 0.0, 0.0]) + affine[:3, 3] + direction_x * x_mm[0]
    return out, new_affine


def spine_parts(
    labels: Image,
    *,
    sacrum_height_mm: float = 30.0,
    extrude: bool | None = None,
    width_ratio: float = DEFAULT_WIDTH_RATIO,
    what: str = "atlas labels",
) -> SpineParts:
    """Label volume of the lumbar spine parts to mesh (discs, bodies L1-L5, top of the sacrum).

    Parameters
    ----------
    labels : Image
        Atlas labels on its grid (canonical sagittal layout): a spine label map or a disc
        label map (see the module docstring).
    sacrum_height_mm : float
        Height of the top of the sacrum kept (or derived) under L5S1, mm.
    extrude : bool, optional
        Extrude the mid-sagittal profile left-right. By default, when the discs cover less
        than 0.8 times their antero-posterior depth left-right (one slice, a thin stack).
    width_ratio : float
        Left-right width over antero-posterior depth of an extruded part.
    what : str
        Name of the label map in error messages.

    Returns
    -------
    SpineParts

    Raises
    ------
    DiscVBRError
        Unknown label values, no disc label, not a 3D volume.
    """
    array, has_vertebrae = _validate_labels(labels, what)
    if sacrum_height_mm <= 0 or width_ratio <= 0:
        raise DiscVBRError(f"{what}: sacrum height and width ratio must be positive")
    spacing = labels.spacing
    if has_vertebrae:
        volume = _keep_lumbar(array, spacing, sacrum_height_mm)
    else:
        volume = _derive_vertebrae(np.where(array <= len(DISC_LEVELS), array, 0), spacing, sacrum_height_mm)
    discs = (volume >= 1) & (volume <= len(DISC_LEVELS))
    if extrude is None:
        xs = np.flatnonzero(discs.any(axis=(1, 2)))
        coverage = (xs.max() - xs.min() + 1) * spacing[0]
        extrude = coverage < _EXTRUDE_BELOW_COVERAGE * _mean_disc_depth(volume, spacing)
    affine = labels.affine
    if extrude:
        volume, affine = _extrude(volume, labels.affine, spacing, width_ratio)
    return SpineParts(Image(volume, affine), derived_vertebrae=not has_vertebrae, extruded=bool(extrude))


def _mean_disc_depth(volume: np.ndarray, spacing: np.ndarray) -> float:
    depths = []
    for label in range(1, len(DISC_LEVELS) + 1):
        ys = np.flatnonzero((volume == label).any(axis=(0, 2)))
        if ys.size:
            depths.append((ys.max() - ys.min() + 1) * spacing[1])
    return float(np.mean(depths))


def mask_surface(
    mask: np.ndarray,
    affine: np.ndarray,
    *,
    resolution_mm: float = 1.5,
    smoothing_iterations: int = 20,
    pass_band: float = 0.05,
    decimation: float = 0.3,
):
    """Smoothed, decimated surface of a binary mask, in RAS millimetres.

    The mask is resampled (linear interpolation of its 0/1 values) to ``resolution_mm``
    before the 0.5 iso-surface is extracted, which keeps the surface sub-voxel accurate on
    anisotropic grids and bounds the number of triangles.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS mm of the mask's grid.
    resolution_mm : float
        Grid step of the iso-surface extraction, mm.
    smoothing_iterations : int
        Windowed-sinc iterations (0: no smoothing).
    pass_band : float
        Windowed-sinc pass band (0..2; smaller smooths more).
    decimation : float
        Fraction of triangles removed (0: none).

    Returns
    -------
    vtkPolyData
        Triangles with consistent point normals; empty for an empty mask.
    """
    from scipy import ndimage
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPolyData
    from vtkmodules.vtkCommonMath import vtkMatrix4x4
    from vtkmodules.vtkCommonTransforms import vtkTransform
    from vtkmodules.vtkFiltersCore import (
        vtkFlyingEdges3D,
        vtkPolyDataNormals,
        vtkQuadricDecimation,
        vtkWindowedSincPolyDataFilter,
    )
    from vtkmodules.vtkFiltersGeneral import vtkTransformPolyDataFilter

    if resolution_mm <= 0:
        raise DiscVBRError(f"mesh resolution must be positive, got {resolution_mm} mm")
    objects = ndimage.find_objects(np.asarray(mask, dtype=np.uint8))
    if not objects or objects[0] is None:
        return vtkPolyData()
    box = objects[0]
    start = np.array([max(sl.start - 1, 0) for sl in box])
    stop = np.array([min(sl.stop + 1, n) for sl, n in zip(box, mask.shape)])
    crop = np.asarray(mask[tuple(slice(a, b) for a, b in zip(start, stop))], dtype=np.float32)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    shape = np.array(crop.shape)
    new_shape = np.maximum(np.round((shape - 1) * spacing / resolution_mm).astype(int) + 1, 2)
    zoomed = ndimage.zoom(crop, (new_shape - 1) / np.maximum(shape - 1, 1), order=1, mode="nearest", grid_mode=False)
    new_spacing = spacing * np.maximum(shape - 1, 1) / (np.array(zoomed.shape) - 1)
    # one empty layer all round so the surface closes
    zoomed = np.pad(zoomed, 1)
    origin = start * spacing - new_spacing

    image = vtkImageData()
    image.SetDimensions(*zoomed.shape)
    image.SetSpacing(*new_spacing)
    image.SetOrigin(*origin)
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(zoomed.ravel(order="F")), deep=True))

    contour = vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 0.5)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    current = contour
    if smoothing_iterations > 0:
        smooth = vtkWindowedSincPolyDataFilter()
        smooth.SetInputConnection(current.GetOutputPort())
        smooth.SetNumberOfIterations(int(smoothing_iterations))
        smooth.SetPassBand(float(pass_band))
        smooth.BoundarySmoothingOff()
        smooth.FeatureEdgeSmoothingOff()
        smooth.NonManifoldSmoothingOn()
        smooth.NormalizeCoordinatesOn()
        current = smooth
    if decimation > 0:
        decimate = vtkQuadricDecimation()
        decimate.SetInputConnection(current.GetOutputPort())
        decimate.SetTargetReduction(float(decimation))
        decimate.VolumePreservationOn()
        current = decimate
    # RAS = direction @ (spacing * index) + origin; the VTK image already carries the spacing
    matrix = np.eye(4)
    matrix[:3, :3] = affine[:3, :3] / spacing
    matrix[:3, 3] = affine[:3, 3]
    vtk_matrix = vtkMatrix4x4()
    vtk_matrix.DeepCopy(matrix.ravel().tolist())
    transform = vtkTransform()
    transform.SetMatrix(vtk_matrix)
    to_ras = vtkTransformPolyDataFilter()
    to_ras.SetInputConnection(current.GetOutputPort())
    to_ras.SetTransform(transform)
    normals = vtkPolyDataNormals()
    normals.SetInputConnection(to_ras.GetOutputPort())
    normals.SplittingOff()
    normals.ConsistencyOn()
    # a left-handed affine (flipped axis) turns the triangles inside out: flip them back
    normals.SetFlipNormals(bool(np.linalg.det(affine[:3, :3]) < 0))
    normals.Update()
    out = vtkPolyData()
    out.DeepCopy(normals.GetOutput())
    return out


def spine_mesh(
    labels: Image | SpineParts,
    *,
    sacrum_height_mm: float = 30.0,
    extrude: bool | None = None,
    width_ratio: float = DEFAULT_WIDTH_RATIO,
    resolution_mm: float = 1.5,
    smoothing_iterations: int = 20,
    pass_band: float = 0.05,
    decimation: float = 0.3,
    what: str = "atlas labels",
) -> dict[str, object]:
    """Surfaces of the lumbar spine of an atlas, one per part, in RAS millimetres.

    Parameters
    ----------
    labels : Image or SpineParts
        Atlas label map (spine or disc labels, see :func:`spine_parts`), or parts already built.
    sacrum_height_mm, extrude, width_ratio
        See :func:`spine_parts`.
    resolution_mm, smoothing_iterations, pass_band, decimation
        See :func:`mask_surface`.
    what : str
        Name of the label map in error messages.

    Returns
    -------
    dict of str to vtkPolyData
        Keyed by part name (``"sacrum"``, ``"L5"`` ... ``"L1"``, ``"L5S1"`` ... ``"L1L2"``),
        vertebrae then discs, inferior to superior; only the parts present.
    """
    parts = labels if isinstance(labels, SpineParts) else spine_parts(
        labels, sacrum_height_mm=sacrum_height_mm, extrude=extrude, width_ratio=width_ratio, what=what
    )
    volume = np.asarray(parts.volume.array)
    return {
        name: mask_surface(
            volume == part_label(name),
            parts.volume.affine,
            resolution_mm=resolution_mm,
            smoothing_iterations=smoothing_iterations,
            pass_band=pass_band,
            decimation=decimation,
        )
        for name in parts.names
    }
