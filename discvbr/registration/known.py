"""Known smooth deformations of an atlas: subjects whose every voxel's true position is known.

The accuracy of the per-disc registration is measured where it matters for voxel-based
relaxometry: does each atlas-disc voxel land on the same anatomical point of the subject's
disc, not only do the warped masks overlap? A subject label map is made by pushing an atlas
through a known smooth map ``phi`` (atlas position -> subject position: rotation in the
sagittal plane, anisotropic scaling, a shift and a smooth displacement field) and sampling
it on a subject grid with its own voxel size, origin and axis directions. The registration
(atlas -> subject) should reproduce ``phi`` at every atlas-disc voxel, and its Jacobian
determinant ``det(D phi)``.

Everything is in the registration frame of :mod:`discvbr.registration.engine` (LPS mm for
stacks; the (posterior, superior) plane for single slices). Used by the tests and by
``benchmarks/bench_registration_accuracy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.registration.disc import DiscRegistration
from discvbr.registration.engine import LPS_FROM_RAS, frame_geometry, voxel_positions
from discvbr.registration.resample import sample

__all__ = [
    "FAMILIES",
    "KnownDeformation",
    "draw_deformation",
    "deform_labels",
    "subject_grid",
    "point_errors",
]

#: Displacement fields on top of the affine part, all of which move the disc's outline:
#: none; a wave that bends the disc along its length; a wave of its height along its length
#: (compressed in some parts, expanded in others). A displacement tangent to the outline,
#: such as a stretch varying along the disc's length, leaves a mask unchanged and cannot be
#: recovered by registering masks, so it is not among them.
FAMILIES: tuple[str, ...] = ("affine", "wave", "squeeze")

#: Depth (mm) over which the ``squeeze`` displacement grows from the disc's mid-plane.
SQUEEZE_DEPTH_MM = 4.0
_MAX_INVERSION_STEPS = 60


@dataclass(frozen=True)
class KnownDeformation:
    """A smooth map ``phi``: atlas -> subject, ``phi(x) = shift + c + A (x - c) + u(x - c)``.

    Parameters
    ----------
    ndim : {2, 3}
    centre : ndarray, shape (ndim,)
        Point the linear part turns and scales about (frame mm; the atlas's disc centre).
    linear : ndarray, shape (ndim, ndim)
        ``A``: rotation in the sagittal plane times an anisotropic scaling.
    shift : ndarray, shape (ndim,)
        Translation, mm.
    family : str
        One of :data:`FAMILIES`: the displacement field ``u``.
    amplitude_mm : float
        Peak of each sinusoidal displacement component, mm.
    wavelength_mm : float
        Wavelength of the sinusoids, mm.
    phase : float
        Phase of the sinusoids, radians.
    """

    ndim: int
    centre: np.ndarray
    linear: np.ndarray
    shift: np.ndarray
    family: str
    amplitude_mm: float
    wavelength_mm: float
    phase: float

    def _displacement(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``u(d)`` and its Jacobian ``Du(d)`` (shape ``(..., ndim, ndim)``) at offsets ``d`` from the centre."""
        u = np.zeros_like(d)
        du = np.zeros(d.shape + (self.ndim,))
        if self.family == "affine":
            return u, du
        # in-plane axes of the frame: posterior and superior (the last two)
        p, s = self.ndim - 2, self.ndim - 1
        k = 2 * np.pi / self.wavelength_mm
        a = self.amplitude_mm
        arg = k * d[..., p] + self.phase
        if self.family == "wave":
            # superior displacement varying along the anteroposterior axis (the disc's length)
            u[..., s] = a * np.sin(arg)
            du[..., s, p] = a * k * np.cos(arg)
        elif self.family == "squeeze":
            # endplates pushed apart or together by up to ``a``, varying along the disc's length
            depth = np.tanh(d[..., s] / SQUEEZE_DEPTH_MM)
            u[..., s] = a * depth * np.sin(arg)
            du[..., s, p] = a * k * depth * np.cos(arg)
            du[..., s, s] = a * (1.0 - depth**2) / SQUEEZE_DEPTH_MM * np.sin(arg)
        if self.ndim == 3:
            # and a left-right modulation of the superior displacement, so slices differ
            arg = k * d[..., 0] + self.phase
            u[..., s] += 0.5 * a * np.sin(arg)
            du[..., s, 0] += 0.5 * a * k * np.cos(arg)
        return u, du

    def forward(self, points: np.ndarray) -> np.ndarray:
        """``phi``: subject position (mm) of atlas positions ``points`` (shape ``(..., ndim)``)."""
        d = np.asarray(points, dtype=float) - self.centre
        u, _ = self._displacement(d)
        return self.centre + self.shift + d @ self.linear.T + u

    def det_jacobian(self, points: np.ndarray) -> np.ndarray:
        """``det(D phi)`` at atlas positions ``points``."""
        d = np.asarray(points, dtype=float) - self.centre
        _, du = self._displacement(d)
        return np.linalg.det(self.linear + du)

    def inverse(self, points: np.ndarray) -> np.ndarray:
        """``phi^-1``: atlas position of subject positions ``points``.

        Solved by the fixed-point iteration ``d <- A^-1 (y - c - shift - u(d))``, a
        contraction while ``|A^-1| |Du| < 1`` (checked by :func:`draw_deformation`'s ranges).

        Raises
        ------
        DiscVBRError
            When the iteration does not converge to 1e-6 mm.
        """
        y = np.asarray(points, dtype=float) - self.centre - self.shift
        inv = np.linalg.inv(self.linear)
        d = y @ inv.T
        for _ in range(_MAX_INVERSION_STEPS):
            u, _ = self._displacement(d)
            new = (y - u) @ inv.T
            step = np.abs(new - d).max(initial=0.0)
            d = new
            if step < 1e-6:
                return self.centre + d
        raise DiscVBRError(f"known deformation ({self.family}) could not be inverted: it is not a smooth one-to-one map")


def _rotation_scale(ndim: int, angle_deg: float, scale: np.ndarray) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    linear = np.eye(ndim)
    linear[ndim - 2:, ndim - 2:] = turn
    return linear @ np.diag(scale)


def draw_deformation(
    atlas_labels: Image,
    label: int,
    *,
    family: str,
    seed: int,
    angle_deg: tuple[float, float] = (6.0, 9.0),
    scale: tuple[float, float] = (0.85, 1.25),
    amplitude_mm: tuple[float, float] = (1.0, 1.5),
    wavelength_mm: tuple[float, float] = (30.0, 45.0),
    shift_mm: float = 5.0,
) -> KnownDeformation:
    """A random deformation of one family about the centre of one atlas disc.

    The issue's ranges: a rotation of 6-9 degrees (either sign) in the sagittal plane,
    in-plane scale factors 0.85-1.25 drawn per axis, a displacement of 1-1.5 mm, a shift of
    up to ``shift_mm`` per axis. Stacks keep the left-right scale at 1: the atlas holds
    only a slab of slices, so a subject cannot be made from outside it.

    Parameters
    ----------
    atlas_labels : Image
        The atlas label map.
    label : int
        The disc (1 = L5S1 ... 5 = L1L2) whose centroid is the deformation's centre.
    family : str
        One of :data:`FAMILIES`.
    seed : int
        Seed of every random draw.
    angle_deg, scale, amplitude_mm, wavelength_mm : tuple of float
        Ranges (low, high) the values are drawn from uniformly.
    shift_mm : float
        Largest translation per in-plane axis, mm.

    Returns
    -------
    KnownDeformation

    Raises
    ------
    DiscVBRError
        On an unknown family or ranges under which ``phi`` could fold.
    """
    if family not in FAMILIES:
        raise DiscVBRError(f"deformation family must be one of {', '.join(FAMILIES)}, got {family!r}")
    ndim = 2 if atlas_labels.shape[0] == 1 else 3
    # |Du| bound (in-plane wave or squeeze plus the stacks' left-right wave) against the
    # smallest scale: below 1 the inversion in KnownDeformation.inverse contracts
    wavenumber = 2 * np.pi / wavelength_mm[0]
    if amplitude_mm[1] * (max(wavenumber, 1.0 / SQUEEZE_DEPTH_MM) + 0.5 * wavenumber) >= 0.9 * scale[0]:
        raise DiscVBRError("known deformation: amplitude too large for the wavelength (the map could fold)")
    rng = np.random.default_rng(seed)
    positions = voxel_positions(atlas_labels.shape, atlas_labels.affine, ndim)
    disc = np.asarray(atlas_labels.array)[0 if ndim == 2 else slice(None)] == int(label)
    if not disc.any():
        raise DiscVBRError(f"known deformation: the atlas has no disc labelled {label}")
    centre = positions[disc].mean(axis=0)
    factors = np.ones(ndim)
    factors[ndim - 2:] = rng.uniform(*scale, size=2)
    angle = rng.uniform(*angle_deg) * rng.choice([-1.0, 1.0])
    shift = np.zeros(ndim)
    shift[ndim - 2:] = rng.uniform(-shift_mm, shift_mm, size=2)
    return KnownDeformation(
        ndim=ndim,
        centre=centre,
        linear=_rotation_scale(ndim, angle, factors),
        shift=shift,
        family=family,
        amplitude_mm=float(rng.uniform(*amplitude_mm)),
        wavelength_mm=float(rng.uniform(*wavelength_mm)),
        phase=float(rng.uniform(0, 2 * np.pi)),
    )


def subject_grid(
    atlas_labels: Image,
    label: int,
    deformation: KnownDeformation,
    *,
    in_plane_mm: float = 0.7,
    slice_mm: float | None = None,
    n_slices: int | None = None,
    tilt_deg: float = 4.0,
    flip_anteroposterior: bool = True,
    margin_mm: float = 12.0,
) -> tuple[tuple[int, ...], np.ndarray]:
    """A subject grid around the deformed atlas disc ``label`` that differs from the atlas grid.

    Voxel size ``in_plane_mm`` in the sagittal plane, the in-plane axes turned by
    ``tilt_deg`` and the anteroposterior axis optionally reversed, origin wherever the
    deformed atlas lies. Single slices keep the atlas's slice position and thickness;
    stacks get ``n_slices`` slices of ``slice_mm`` centred on the atlas slab.

    Parameters
    ----------
    atlas_labels : Image
        The atlas label map.
    label : int
        The disc the grid is placed around.
    deformation : KnownDeformation
    in_plane_mm : float
        Voxel size in the sagittal plane, mm.
    slice_mm, n_slices : float, int, optional
        Stacks: slice thickness (mm) and number of slices (default: the atlas's).
    tilt_deg : float
        Angle between the grid's in-plane axes and the atlas's, degrees.
    flip_anteroposterior : bool
        Reverse the grid's anteroposterior axis.
    margin_mm : float
        Margin around the deformed disc, mm.

    Returns
    -------
    shape : tuple of int
        DiscVBR layout ``(n_lr, n_ap, n_si)``.
    affine : ndarray, shape (4, 4)
        Voxel -> RAS mm.
    """
    ndim = deformation.ndim
    lab = atlas_labels
    positions = voxel_positions(lab.shape, lab.affine, ndim)
    inside = np.asarray(lab.array)[0 if ndim == 2 else slice(None)] == int(label)
    moved = deformation.forward(positions[inside])
    # RAS in-plane directions: j along anterior (or posterior when flipped), k along superior, tilted
    t = np.deg2rad(tilt_deg)
    ap = np.array([0.0, np.cos(t), np.sin(t)]) * (-1.0 if flip_anteroposterior else 1.0)
    si = np.array([0.0, -np.sin(t), np.cos(t)])
    # subject-frame extent of the deformed discs, in RAS in-plane coordinates
    if ndim == 2:
        ras = np.column_stack([np.zeros(len(moved)), -moved[:, 0], moved[:, 1]])
        lr_centre = float(lab.affine[0, 3])
        lr_spacing, lr_count = float(lab.spacing[0]), 1
    else:
        ras = moved @ LPS_FROM_RAS.T
        lr_spacing = float(slice_mm if slice_mm is not None else lab.spacing[0])
        lr_count = int(n_slices if n_slices is not None else lab.shape[0])
        lr_centre = float(np.mean(voxel_positions(lab.shape, lab.affine, 3)[..., 0]) * -1.0)
    coords_ap, coords_si = ras @ ap, ras @ si
    lo = np.array([coords_ap.min(), coords_si.min()]) - margin_mm
    hi = np.array([coords_ap.max(), coords_si.max()]) + margin_mm
    counts = np.ceil((hi - lo) / in_plane_mm).astype(int) + 1
    affine = np.eye(4)
    affine[:3, 0] = [lr_spacing, 0.0, 0.0]
    affine[:3, 1] = ap * in_plane_mm
    affine[:3, 2] = si * in_plane_mm
    lr_first = lr_centre - lr_spacing * (lr_count - 1) / 2.0
    affine[:3, 3] = np.array([lr_first, 0.0, 0.0]) + lo[0] * ap + lo[1] * si
    return (lr_count, int(counts[0]), int(counts[1])), affine


def deform_labels(atlas_labels: Image, deformation: KnownDeformation, shape: tuple[int, ...], affine: np.ndarray) -> Image:
    """The subject label map: every subject voxel takes the atlas label at ``phi^-1`` of its centre.

    Nearest-neighbour sampling, so the subject's disc edges are voxelised on its own grid
    as a segmentation would be.

    Parameters
    ----------
    atlas_labels : Image
        The atlas label map.
    deformation : KnownDeformation
    shape, affine : tuple of int, ndarray (4, 4)
        The subject grid (:func:`subject_grid`).

    Returns
    -------
    Image
        uint8 labels on the subject grid.
    """
    ndim = deformation.ndim
    positions = voxel_positions(shape, affine, ndim)
    in_atlas = deformation.inverse(positions)
    values = sample(np.asarray(atlas_labels.array), atlas_labels.affine, in_atlas, ndim=ndim, order=0, cval=0.0)
    return Image(np.rint(values).astype(np.uint8).reshape(shape), affine)


def point_errors(registration: DiscRegistration, deformation: KnownDeformation) -> dict[str, np.ndarray]:
    """Per atlas-disc voxel: registration's subject position against the true one, and det J.

    Parameters
    ----------
    registration : DiscRegistration
        A disc of a subject made with ``deformation`` registered to its atlas disc.
    deformation : KnownDeformation

    Returns
    -------
    dict
        ``error_mm`` (distance from the registered to the true subject position),
        ``in_plane_error_mm`` (its part within the sagittal plane: in a stack the left-right
        position is seen only where the disc ends inside the slab, often nowhere),
        ``centroid_error_mm`` (the same for the atlas disc translated onto the subject
        disc's centroid: the baseline a registration must beat), ``det_jacobian`` and
        ``det_jacobian_true``; all 1D over the atlas disc's voxels.
    """
    ndim = deformation.ndim
    grid = registration.grid
    disc = np.asarray(grid.array)[0] if ndim == 2 else np.asarray(grid.array)
    positions = voxel_positions(grid.shape, grid.affine, ndim)[disc]
    truth = deformation.forward(positions)
    found = np.asarray(registration.points)[disc]
    translated = positions - positions.mean(axis=0) + truth.mean(axis=0)
    det = np.asarray(registration.det_jacobian).reshape(grid.shape)
    det = det[0][disc] if ndim == 2 else det[disc]
    return {
        "error_mm": np.linalg.norm(found - truth, axis=-1),
        "in_plane_error_mm": np.linalg.norm((found - truth)[:, ndim - 2:], axis=-1),
        "centroid_error_mm": np.linalg.norm(translated - truth, axis=-1),
        "det_jacobian": det,
        "det_jacobian_true": deformation.det_jacobian(positions),
    }
