"""Bringing a subject's images into atlas space with a disc registration.

The transform found on the disc mask is applied to every echo of every series (Iriondo
et al., MRM 2020, section 2.2), so the mono-exponential fit runs in atlas space. Images are
interpolated with cubic B-splines, masks with nearest neighbour. transformix evaluates the
transform once per disc (:attr:`DiscRegistration.points`); every echo is then sampled there
with scipy's cubic B-spline, the interpolant of transformix's ``FinalBSplineInterpolator``
of order 3 (the test suite checks that both agree to float precision).

Outside values. An atlas-space voxel gets NaN when its source position lies outside the
subject's image and, by default, when it lies outside the atlas disc: only the disc is
registered, so values elsewhere are not meaningful, and NaN (never 0) keeps them out of
fits and statistics. :func:`paste_discs` assembles the per-disc results on the atlas's
full grid, NaN outside the atlas discs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, Image
from discvbr.registration.atlas import Atlas
from discvbr.registration.disc import DiscRegistration, check_same_grid
from discvbr.registration.qc import HistogramChange, histogram_change
from discvbr.registration.resample import sample

__all__ = ["warp_image", "warp_mask", "apply_registration", "paste_discs", "disc_histogram_change"]


def warp_image(reg: DiscRegistration, image: Image, *, order: int = 3, restrict_to_atlas_disc: bool = True) -> Image:
    """One subject image (or map) in atlas space, on ``reg.grid``.

    Parameters
    ----------
    reg : DiscRegistration
    image : Image
        On the grid of the mask the disc was registered from.
    order : int
        Interpolation order: 3 cubic B-spline (images), 1 linear, 0 nearest.
    restrict_to_atlas_disc : bool
        NaN outside the atlas disc (see the module notes).

    Raises
    ------
    DiscVBRError
        When ``image`` is not on the mask's grid (names subject and disc).
    """
    check_same_grid(image, reg.moving_shape, reg.moving_affine, where=reg.where, what="image")
    values = sample(np.asarray(image.array), image.affine, reg.points, ndim=reg.ndim, order=order).reshape(reg.grid.shape)
    if restrict_to_atlas_disc:
        values[~reg.grid.array] = np.nan
    return Image(values.astype(np.float32), reg.grid.affine)


def warp_mask(reg: DiscRegistration, mask: Image) -> Image:
    """A subject label map in atlas space (nearest neighbour; 0 outside the subject's image)."""
    check_same_grid(mask, reg.moving_shape, reg.moving_affine, where=reg.where, what="mask")
    values = sample(np.asarray(mask.array), mask.affine, reg.points, ndim=reg.ndim, order=0, cval=0.0)
    return Image(np.rint(values).astype(np.uint8).reshape(reg.grid.shape), reg.grid.affine)


def apply_registration(reg: DiscRegistration, series: EchoSeries, *, restrict_to_atlas_disc: bool = True) -> EchoSeries:
    """Every echo of a series in atlas space (cubic B-spline), ready for fitting.

    Parameters
    ----------
    reg : DiscRegistration
    series : EchoSeries
        On the grid of the mask the disc was registered from.
    restrict_to_atlas_disc : bool
        NaN outside the atlas disc (see the module notes).

    Returns
    -------
    EchoSeries
        Same times and kind, on ``reg.grid`` (float32; NaN where undefined).

    Raises
    ------
    DiscVBRError
        When the series is not on the mask's grid (names subject and disc).
    """
    check_same_grid(series.grid, reg.moving_shape, reg.moving_affine, where=reg.where, what=f"{series.kind} series")
    echoes = [
        warp_image(reg, series.echo(e), order=3, restrict_to_atlas_disc=restrict_to_atlas_disc).array
        for e in range(series.n_echoes)
    ]
    return EchoSeries(np.stack(echoes, axis=-1), series.times, reg.grid.affine, series.kind)


def disc_histogram_change(reg: DiscRegistration, image: Image, mask: Image, *, bins: int = 32) -> HistogramChange:
    """Values of ``image`` inside the subject's disc against the same image warped into the atlas disc."""
    check_same_grid(mask, reg.moving_shape, reg.moving_affine, where=reg.where, what="mask")
    before = np.asarray(image.array, dtype=float)[np.asarray(mask.array) == reg.label]
    after = warp_image(reg, image, restrict_to_atlas_disc=True).array[reg.grid.array]
    return histogram_change(before, after, bins=bins)


def _offset_in(atlas: Atlas, grid: Image) -> np.ndarray:
    """Integer index of ``grid``'s first voxel in the atlas grid (``grid`` is a crop of it)."""
    start = np.linalg.solve(atlas.labels.affine[:3, :3], grid.origin - atlas.labels.origin)
    rounded = np.rint(start)
    if np.abs(start - rounded).max() > 1e-3 or not np.allclose(grid.affine[:3, :3], atlas.labels.affine[:3, :3], atol=1e-6):
        raise DiscVBRError(f"a disc grid is not a crop of atlas {atlas.name!r}: registered with another atlas?")
    return rounded.astype(int)


def paste_discs(parts: Mapping[int, Image | EchoSeries], atlas: Atlas) -> Image | EchoSeries:
    """Assemble per-disc atlas-space results on the atlas's full grid.

    Parameters
    ----------
    parts : mapping of disc label to Image or EchoSeries
        Results of :func:`warp_image` or :func:`apply_registration` for this atlas (all of
        one kind).
    atlas : Atlas

    Returns
    -------
    Image or EchoSeries
        On the atlas grid; each disc's values inside its atlas disc, NaN elsewhere.
    """
    if not parts:
        raise DiscVBRError(f"no registered disc to place in atlas {atlas.name!r}")
    labels = np.asarray(atlas.labels.array)
    first = next(iter(parts.values()))
    series = isinstance(first, EchoSeries)
    extra = first.data.shape[3:] if series else np.asarray(first.array).shape[3:]
    out = np.full(labels.shape + tuple(extra), np.nan, dtype=np.float32)
    for label, part in parts.items():
        affine = part.affine
        values = part.data if series else np.asarray(part.array)
        start = _offset_in(atlas, Image(np.empty(values.shape[:3]), affine))
        box = tuple(slice(int(s), int(s) + n) for s, n in zip(start, values.shape[:3]))
        inside = labels[box] == int(label)
        out[box][inside] = values[inside]
    if series:
        return EchoSeries(out, first.times, atlas.labels.affine, first.kind)
    return Image(out, atlas.labels.affine)
