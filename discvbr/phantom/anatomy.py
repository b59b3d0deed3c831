"""Geometry of a synthetic lumbar spine and its rasterisation with partial volume.

The spine is built as a chain of segments (vertebral bodies and discs) between
endplates, from the sacrum up to T12, each endplate tilted so that the lumbar
lordosis comes from the wedge angles of discs and bodies (L5S1 the most wedged).
Soft tissue (canal, muscle, fat, viscera) is laid out in curvilinear coordinates
along a smooth curve through the segment centres. Everything is evaluated on
sub-voxel samples (``supersample`` per in-plane axis, ``through_samples`` across
each slice) so that edges carry partial volume.

Coordinates: the "spine frame" is a 2D sagittal frame in mm, ``y`` anterior and
``z`` superior, with the centre of the S1 superior endplate at the origin; the
third coordinate ``x`` (left-right, mm from the midline) only narrows structures
laterally. A placement (in-plane rotation + translation) maps the spine frame into
the image's RAS ``(y, z)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

from discvbr.levels import T12L1_LABEL, VERTEBRA_LABELS

__all__ = ["Tissue", "Endplate", "Segment", "SpineGeometry", "SampleGrid", "Samples", "build_spine", "rasterize"]


class Tissue(IntEnum):
    """Tissue classes painted by the phantom (values of the ``tissue`` truth map)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    VISCERA = 3
    CSF = 4
    CORD = 5
    ROOTS = 6
    LIGAMENT = 7
    CORTEX = 8
    MARROW = 9
    DISC = 10
    RUDIMENT = 11  # fused sacral discs
    FLUID = 12  # bowel fluid
    GAS = 13  # bowel gas
    IMAGE = 14  # semi-synthetic mode: properties taken from a real image


@dataclass(frozen=True)
class Endplate:
    """A line in the sagittal spine frame: centre ``(y, z)`` mm and tilt (rad).

    Positive tilt: the anterior edge is lower (the S1 endplate faces anterior-superiorly).
    """

    center: tuple[float, float]
    tilt: float

    @property
    def tangent(self) -> np.ndarray:
        """Unit vector along the endplate, pointing anterior."""
        return np.array([np.cos(self.tilt), -np.sin(self.tilt)])

    @property
    def normal(self) -> np.ndarray:
        """Unit vector normal to the endplate, pointing superior."""
        return np.array([np.sin(self.tilt), np.cos(self.tilt)])


@dataclass(frozen=True)
class Segment:
    """A vertebral body, a disc or a fused sacral disc between two endplates."""

    name: str
    kind: str  # "body", "disc" or "rudiment"
    lower: Endplate
    upper: Endplate
    depth: float  # antero-posterior depth at the midline, mm
    width: float  # left-right width, mm
    concavity: float  # endplate concavity, mm (bodies are carved, discs fill it)
    bulge: float = 0.0  # discs: outward bulge of the anterior/posterior walls, mm
    label: int = 0  # 1 = L5S1 ... 5 = L1L2 for the lumbar discs, 0 otherwise

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (np.asarray(self.lower.center) + np.asarray(self.upper.center))

    @property
    def tilt(self) -> float:
        """Tilt of the bisector frame."""
        return 0.5 * (self.lower.tilt + self.upper.tilt)

    @property
    def height(self) -> float:
        """Distance between the endplate centres, mm."""
        return float(np.linalg.norm(np.asarray(self.upper.center) - np.asarray(self.lower.center)))


@dataclass(frozen=True)
class SpineGeometry:
    """A complete synthetic spine in its own frame, plus its placement in the image."""

    segments: tuple[Segment, ...]  # inferior to superior
    curve: np.ndarray  # (N, 2) centre line through the segments, inferior to superior, 0.5 mm apart
    curve_depth: np.ndarray  # (N,) body depth along the curve
    curve_s_s1: float  # arc length at the S1 superior endplate
    curve_s_conus: float  # arc length of the conus tip (cord above)
    curve_s_sac_end: float  # arc length where the dural sac ends (S2)
    curve_s_bottom: float  # arc length of the lowest sacral endplate
    back_poly: tuple[float, float, float]  # back curve a(b) in the chord-aligned frame
    back_range: tuple[float, float]  # b range of the fit; straight beyond
    chord_angle: float  # rad
    muscle_thickness: float  # paraspinal muscle behind the laminae, mm
    fat_thickness: float  # subcutaneous fat, mm
    spinous_length: float  # mm
    rotation: float  # in-plane rotation of the placement, rad
    translation: tuple[float, float]  # spine frame origin in image RAS (y, z), mm

    def to_spine(self, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image RAS (y, z) -> spine frame."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        dy, dz = y - self.translation[0], z - self.translation[1]
        return c * dy + s * dz, -s * dy + c * dz

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Spine frame points (..., 2) -> image RAS (y, z)."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        rot = np.array([[c, -s], [s, c]])
        return np.asarray(points) @ rot.T + np.asarray(self.translation)

    def segment(self, name: str) -> Segment:
        for seg in self.segments:
            if seg.name == name:
                return seg
        raise KeyError(name)


# Per-level anatomy (adult, scale 1), inferior to superior. Heights and depths in mm, wedges in deg.
# Sources: typical morphometry of the lumbar spine (body height 24-27 mm, depth 32-37 mm,
# disc heights 8-12 mm, lordosis from disc wedging mostly at L4L5 and L5S1).
_BODIES = {  # name: (height, depth, width, wedge)
    "L5": (25.0, 37.0, 50.0, 5.0),
    "L4": (26.0, 36.0, 48.0, 2.0),
    "L3": (26.0, 35.0, 46.0, 0.0),
    "L2": (25.0, 33.0, 43.0, -1.0),
    "L1": (24.0, 32.0, 41.0, -2.0),
    "T12": (23.0, 31.0, 39.0, -3.0),
}
_DISCS = {  # name: (height, wedge, label)
    "L5S1": (10.5, 15.0, 1),
    "L4L5": (11.0, 11.0, 2),
    "L3L4": (10.0, 8.0, 3),
    "L2L3": (9.0, 5.0, 4),
    "L1L2": (8.0, 3.0, 5),
    "T12L1": (6.5, 0.0, 0),
}
_SACRUM = (("S1", 26.0, 40.0, 12.0), ("S2", 21.0, 33.0, 14.0), ("S3", 17.0, 26.0, 16.0))  # name, height, depth, kyphosis


def build_spine(
    *,
    scale: float = 1.0,
    lordosis: float = 1.0,
    l1_tilt_deg: float = -10.0,
    degeneration: dict[str, float] | None = None,
    disc_height_factor: dict[str, float] | None = None,
    muscle_thickness: float = 38.0,
    fat_thickness: float = 15.0,
    rotation_deg: float = 0.0,
    l3_position: tuple[float, float] = (25.0, 0.0),
) -> SpineGeometry:
    """Build a spine from a handful of morphological parameters.

    Parameters
    ----------
    scale : float
        Isotropic size factor (about 0.9-1.1 across adults).
    lordosis : float
        Multiplies every wedge angle (1 = typical lordosis, about 50 deg L1-S1).
    l1_tilt_deg : float
        Tilt of the L1 superior endplate, deg (positive: anterior edge lower).
    degeneration : dict, optional
        Continuous degeneration score 1-5 per lumbar disc name; lowers disc height and
        adds bulge. Missing discs are healthy (1).
    disc_height_factor : dict, optional
        Extra per-disc height factor (subject variation), default 1.
    muscle_thickness, fat_thickness : float
        Paraspinal muscle behind the laminae and subcutaneous fat, mm.
    rotation_deg : float
        In-plane rotation of the whole spine in the image, deg, relative to the position
        where the chord from the S1 endplate to the L1 superior endplate is vertical
        (positive: counter-clockwise seen with anterior to the right and superior up).
    l3_position : (float, float)
        Image RAS (y, z) of the L3 body centre, mm.

    Returns
    -------
    SpineGeometry
    """
    degeneration = degeneration or {}
    disc_height_factor = disc_height_factor or {}
    deg = np.deg2rad

    disc_wedges = {n: deg(w) * lordosis for n, (_, w, _) in _DISCS.items()}
    body_wedges = {n: deg(w) * lordosis for n, (_, _, _, w) in _BODIES.items()}
    # Tilt at the S1 endplate follows from L1's tilt plus the wedges between (lordosis).
    lumbar_discs = ("L5S1", "L4L5", "L3L4", "L2L3", "L1L2")
    lumbar_bodies = ("L5", "L4", "L3", "L2", "L1")
    tilt = deg(l1_tilt_deg) + sum(disc_wedges[n] for n in lumbar_discs) + sum(body_wedges[n] for n in lumbar_bodies)

    segments: list[Segment] = []
    s1_plate = Endplate((0.0, 0.0), tilt)

    # Sacrum, built downward from the S1 endplate (each segment tilts further: sacral kyphosis).
    upper = s1_plate
    sacral: list[Segment] = []
    for i, (name, height, depth, kyphosis) in enumerate(_SACRUM):
        height, depth = height * scale, depth * scale
        lower_tilt = upper.tilt + deg(kyphosis)
        mid = Endplate(upper.center, 0.5 * (upper.tilt + lower_tilt))
        lower_center = np.asarray(upper.center) - height * mid.normal
        lower = Endplate(tuple(lower_center), lower_tilt)
        sacral.append(Segment(name, "body", lower, upper, depth, depth * 1.3, 0.0))
        if i < len(_SACRUM) - 1:
            gap = 2.0 * scale
            below = Endplate(tuple(lower_center - gap * lower.normal), lower_tilt)
            sacral.append(Segment(f"{name}{_SACRUM[i + 1][0]}", "rudiment", below, lower, depth * 0.95, depth, 0.0))
            upper = below
    segments.extend(reversed(sacral))

    lower = s1_plate
    order = ("L5S1", "L5", "L4L5", "L4", "L3L4", "L3", "L2L3", "L2", "L1L2", "L1", "T12L1", "T12")
    depth_below = _SACRUM[0][2] * scale
    for name in order:
        if name in _DISCS:
            height, _, label = _DISCS[name]
            d = float(np.clip(degeneration.get(name, 1.0), 1.0, 5.0))
            height = height * scale * (1.0 - 0.12 * (d - 1.0)) * disc_height_factor.get(name, 1.0)
            wedge = disc_wedges[name]
            body_above = order[order.index(name) + 1]
            depth = 0.5 * (depth_below + _BODIES[body_above][1] * scale) + 1.0
            width = _BODIES[body_above][2] * scale
            upper_plate = _next_endplate(lower, height, wedge)
            segments.append(
                Segment(name, "disc", lower, upper_plate, depth, width, 1.2 * scale, bulge=0.8 + 0.6 * (d - 1.0), label=label)
            )
        else:
            height, depth, width, _ = _BODIES[name]
            height, depth, width = height * scale, depth * scale, width * scale
            upper_plate = _next_endplate(lower, height, body_wedges[name])
            segments.append(Segment(name, "body", lower, upper_plate, depth, width, 1.2 * scale))
            depth_below = depth
        lower = upper_plate

    centers = np.array([seg.center for seg in segments])
    depths = np.array([seg.depth for seg in segments])
    # Extend the curve along the end segments' axes so soft tissue covers the field of view.
    bottom, top = segments[0], segments[-1]
    centers = np.vstack([
        centers[0] - 40.0 * bottom.lower.normal,
        centers,
        centers[-1] + 150.0 * top.upper.normal,
    ])
    depths = np.concatenate([[depths[0] * 0.7], depths, [depths[-1]]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(centers, axis=0), axis=1))])
    spline = CubicSpline(arc, centers, bc_type="natural")
    s_dense = np.arange(0.0, arc[-1], 0.5)
    curve = spline(s_dense)
    curve_depth = np.interp(s_dense, arc, depths)

    tree = cKDTree(curve)
    s_of = lambda p: s_dense[tree.query(np.asarray(p))[1]]  # noqa: E731
    conus = segments[[seg.name for seg in segments].index("L1L2")].center
    sac_end = segments[[seg.name for seg in segments].index("S2")].center

    names = [seg.name for seg in segments]
    l3 = segments[names.index("L3")].center
    chord = np.asarray(segments[names.index("L1")].upper.center) - np.asarray(s1_plate.center)
    # rotate so that the S1-L1 chord is vertical, then by the subject's rotation
    rot = np.arctan2(chord[0], chord[1]) + deg(rotation_deg)
    c, s = np.cos(rot), np.sin(rot)
    translation = np.asarray(l3_position) - np.array([[c, -s], [s, c]]) @ l3
    # The back follows a gentle curve: a quadratic through the L1..S1 body centres in the
    # chord-aligned frame, continued along its end tangents.
    chord_angle = np.arctan2(chord[0], chord[1])
    lumbar = np.array([segments[names.index(n)].center for n in ("S1", "L5", "L4", "L3", "L2", "L1")])
    a, b = _rotate(lumbar, chord_angle).T
    back_poly = np.polyfit(b, a, 2)
    return SpineGeometry(
        segments=tuple(segments),
        curve=curve,
        curve_depth=curve_depth,
        curve_s_s1=float(s_of((0.0, 0.0))),
        curve_s_conus=float(s_of(conus)),
        curve_s_sac_end=float(s_of(sac_end)),
        curve_s_bottom=float(s_of(bottom.lower.center)),
        back_poly=tuple(float(c) for c in back_poly),
        back_range=(float(b.min()), float(b.max())),
        chord_angle=float(chord_angle),
        muscle_thickness=muscle_thickness * scale,
        fat_thickness=fat_thickness,
        spinous_length=28.0 * scale,
        rotation=rot,
        translation=(float(translation[0]), float(translation[1])),
    )


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (y, z) points clockwise by ``angle`` (so a chord at ``angle`` from vertical becomes vertical)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.asarray(points) @ np.array([[c, s], [-s, c]]).T


def _next_endplate(lower: Endplate, height: float, wedge: float) -> Endplate:
    upper_tilt = lower.tilt - wedge
    bisector = Endplate(lower.center, 0.5 * (lower.tilt + upper_tilt))
    return Endplate(tuple(np.asarray(lower.center) + height * bisector.normal), upper_tilt)


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SampleGrid:
    """Sub-voxel sample positions of an image grid (axis-aligned RAS grid).

    ``x``: (nxs,) left-right sample positions, ``y``: (nys,), ``z``: (nzs,) in mm.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    supersample: int
    through_samples: int

    @property
    def factors(self) -> tuple[int, int, int]:
        return (self.through_samples, self.supersample, self.supersample)

    def axis_samples(self, axis: int) -> np.ndarray:
        n, f = self.shape[axis], self.factors[axis]
        step = self.affine[axis, axis]
        offsets = (np.arange(f) + 0.5) / f - 0.5
        return self.affine[axis, 3] + step * (np.arange(n)[:, None] + offsets[None, :]).reshape(-1)


@dataclass
class Samples:
    """Tissue classes and disc coordinates on the sub-voxel samples, shape (nxs, nys, nzs)."""

    tissue: np.ndarray  # int8 Tissue
    disc: np.ndarray  # int8: 1..5 lumbar disc label, 6 T12L1, 0 otherwise
    disc_u: np.ndarray  # float32 normalised antero-posterior position in the disc, -1 posterior .. 1 anterior
    disc_v: np.ndarray  # float32 normalised inferior-superior position, -1 .. 1
    disc_x: np.ndarray  # float32 normalised left-right position, -1 .. 1
    part: np.ndarray  # int8 spine label (discvbr.levels: discs 1-6, vertebrae 10-16), 0 elsewhere
    curv_s: np.ndarray  # (nys, nzs) arc length along the spine curve, mm
    curv_d: np.ndarray  # (nys, nzs) signed distance from the curve, anterior positive, mm


T12L1_DISC_ID = T12L1_LABEL


def rasterize(geometry: SpineGeometry, grid: SampleGrid, *, rng: np.random.Generator) -> Samples:
    """Paint every structure of ``geometry`` onto the sub-voxel samples of ``grid``.

    Painting goes from the background to the bones and discs, each later structure
    overwriting earlier ones where they overlap.

    Parameters
    ----------
    geometry : SpineGeometry
    grid : SampleGrid
    rng : numpy.random.Generator
        Places the bowel fluid and gas pockets.
    """
    xs, ys, zs = (grid.axis_samples(a) for a in range(3))
    Y, Z = np.meshgrid(ys, zs, indexing="ij")
    py, pz = geometry.to_spine(Y, Z)
    tree = cKDTree(geometry.curve)
    _, idx = tree.query(np.stack([py.ravel(), pz.ravel()], axis=1))
    idx = idx.reshape(py.shape)
    tangents = np.gradient(geometry.curve, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    anterior = np.stack([tangents[:, 1], -tangents[:, 0]], axis=1)
    dy, dz = py - geometry.curve[idx, 0], pz - geometry.curve[idx, 1]
    curv_d = dy * anterior[idx, 0] + dz * anterior[idx, 1]
    curv_s = idx * 0.5 + dy * tangents[idx, 0] + dz * tangents[idx, 1]
    half = 0.5 * geometry.curve_depth[idx]

    nx = xs.size
    shape = (nx, ys.size, zs.size)
    tissue = np.zeros(shape, np.int8)
    disc = np.zeros(shape, np.int8)
    disc_u = np.full(shape, np.nan, np.float32)
    disc_v = np.full(shape, np.nan, np.float32)
    disc_x = np.full(shape, np.nan, np.float32)
    part = np.zeros(shape, np.int8)

    # Soft tissue layers (same on every sagittal plane near the midline): the back from a gentle
    # curve, the canal and the front of the column in curvilinear coordinates of the spine.
    back_d = _back_distance(geometry, py, pz)
    back = -(18.0 + 19.0 + geometry.muscle_thickness)
    layers = np.full(py.shape, Tissue.AIR, np.int8)
    layers[back_d > back - geometry.fat_thickness] = Tissue.FAT
    layers[back_d > back] = Tissue.MUSCLE
    column = curv_s > geometry.curve_s_bottom
    layers[(curv_d > -(half + 19.5)) & column] = Tissue.LIGAMENT  # ligamentum flavum
    layers[(curv_d > -(half + 17.0)) & column] = Tissue.FAT  # posterior epidural fat
    layers[(curv_d > half) & (back_d > back)] = Tissue.FAT  # prevertebral fat
    layers[(curv_d > half + 5.0) & (back_d > back)] = Tissue.VISCERA
    _bowel_pockets(layers, curv_d, half, rng)
    tissue[:] = layers[None]

    s_rel = curv_s
    sac_depth = np.where(s_rel < geometry.curve_s_s1, np.interp(s_rel, [geometry.curve_s_s1 - 60, geometry.curve_s_s1], [6.0, 14.0]), 14.0)
    for i, x in enumerate(xs):
        sac_half_width = 9.0
        in_canal = (curv_d > -(half + sac_depth)) & (curv_d < -half + 3.0) & (abs(x) <= sac_half_width) & column
        content = np.where(s_rel > geometry.curve_s_sac_end, Tissue.CSF, Tissue.FAT).astype(np.int8)
        roots = in_canal & (s_rel > geometry.curve_s_sac_end) & (curv_d < -(half + 0.7 * sac_depth))
        cord_half = np.clip((s_rel - geometry.curve_s_conus) / 25.0, 0.0, 1.0) * 4.5
        cord = in_canal & (np.abs(curv_d + half + 0.55 * sac_depth) < cord_half) & (abs(x) < cord_half + 1.5)
        plane = tissue[i]
        plane[in_canal] = content[in_canal]
        plane[roots] = Tissue.ROOTS
        plane[cord] = Tissue.CORD
        # longitudinal ligaments along the front and back of the column
        plane[(curv_d > half - 0.2) & (curv_d < half + 1.3) & column] = Tissue.LIGAMENT
        plane[(curv_d > -half - 1.3) & (curv_d < -half + 0.2) & (abs(x) <= 12.0) & column] = Tissue.LIGAMENT

    for seg in geometry.segments:
        if seg.kind == "body":
            _paint_posterior_elements(tissue, part, geometry, seg, xs, py, pz)
    for seg in geometry.segments:
        if seg.kind == "disc" or seg.kind == "rudiment":
            _paint_disc(tissue, disc, disc_u, disc_v, disc_x, part, seg, xs, py, pz)
    for seg in geometry.segments:
        if seg.kind == "body":
            _paint_body(tissue, part, seg, xs, py, pz)
    return Samples(tissue, disc, disc_u, disc_v, disc_x, part, curv_s.astype(np.float32), curv_d.astype(np.float32))


def _part_label(seg: Segment) -> int:
    """Spine label of a segment (discvbr.levels conventions)."""
    if seg.kind == "disc":
        return seg.label or T12L1_LABEL
    if seg.kind == "rudiment" or seg.name.startswith("S"):
        return VERTEBRA_LABELS["sacrum"]
    return VERTEBRA_LABELS[seg.name]


def _back_distance(geometry: SpineGeometry, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """Signed distance (anterior positive, mm) from the gentle back curve, in the spine frame."""
    c, s = np.cos(geometry.chord_angle), np.sin(geometry.chord_angle)
    a, b = c * py - s * pz, s * py + c * pz
    lo, hi = geometry.back_range
    poly = np.poly1d(geometry.back_poly)
    slope = np.polyder(poly)
    bc = np.clip(b, lo, hi)
    # beyond the lumbar range the back bends half as fast as the spine (buttocks, thorax)
    a_curve = poly(bc) + 0.5 * slope(bc) * (b - bc)
    return (a - a_curve) / np.sqrt(1.0 + slope(bc) ** 2)


def _bowel_pockets(layers: np.ndarray, curv_d: np.ndarray, half: np.ndarray, rng: np.random.Generator) -> None:
    viscera = np.argwhere(layers == Tissue.VISCERA)
    if viscera.size == 0:
        return
    for _ in range(int(rng.integers(6, 14))):
        cy, cz = viscera[rng.integers(len(viscera))]
        ry, rz = rng.uniform(4, 18, size=2)  # in samples
        kind = Tissue.FLUID if rng.random() < 0.6 else Tissue.GAS
        y0, y1 = int(max(cy - ry, 0)), int(min(cy + ry + 1, layers.shape[0]))
        z0, z1 = int(max(cz - rz, 0)), int(min(cz + rz + 1, layers.shape[1]))
        yy, zz = np.mgrid[y0:y1, z0:z1]
        inside = ((yy - cy) / ry) ** 2 + ((zz - cz) / rz) ** 2 <= 1.0
        block = layers[y0:y1, z0:z1]
        block[inside & (block == Tissue.VISCERA) & (curv_d[y0:y1, z0:z1] > half[y0:y1, z0:z1] + 8.0)] = kind


def _bbox(py: np.ndarray, pz: np.ndarray, center: np.ndarray, radius: float) -> tuple[slice, slice] | None:
    """Index box of the samples within ``radius`` (box metric) of ``center`` in the spine frame."""
    near = (np.abs(py - center[0]) <= radius) & (np.abs(pz - center[1]) <= radius)
    rows = np.flatnonzero(near.any(axis=1))
    cols = np.flatnonzero(near.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _endplate_coords(plate: Endplate, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(along, above) coordinates of points relative to an endplate line."""
    dy, dz = py - plate.center[0], pz - plate.center[1]
    t, n = plate.tangent, plate.normal
    return dy * t[0] + dz * t[1], dy * n[0] + dz * n[1]


def _lateral_extent(u_mid: np.ndarray, x: float, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
    """Posterior and anterior limits (bisector-frame u) of a segment at left-right position x.

    The axial cross-section is kidney-like: a flattish posterior wall and a convex front.
    """
    r = min(abs(x) / (0.5 * seg.width), 1.0)
    half = 0.5 * seg.depth
    posterior = -half + half * (1.0 - np.sqrt(max(1.0 - r**4, 0.0)))
    anterior = half - half * (1.0 - np.sqrt(max(1.0 - r**2, 0.0)))
    return posterior, anterior


def _segment_frame(seg: Segment, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """u (bisector, anterior), distance above the lower surface, below the upper surface (flat lines)."""
    mid = Endplate(tuple(seg.center), seg.tilt)
    u, _ = _endplate_coords(mid, py, pz)
    _, above = _endplate_coords(seg.lower, py, pz)
    _, below = _endplate_coords(seg.upper, py, pz)
    return u, above, -below, mid.tilt


def _concavity(u: np.ndarray, seg: Segment) -> np.ndarray:
    return seg.concavity * np.clip(1.0 - (2.0 * u / seg.depth) ** 2, 0.0, None)


def _paint_body(tissue: np.ndarray, part: np.ndarray, seg: Segment, xs: np.ndarray, py: np.ndarray, pz: np.ndarray) -> None:
    box = _bbox(py, pz, seg.center, 0.75 * max(seg.depth, seg.height) + 4)
    if box is None:
        return
    py, pz = py[box], pz[box]
    u, above, below, _ = _segment_frame(seg, py, pz)
    conc = _concavity(u, seg)
    above, below = above - conc, below - conc
    corner = 2.5
    for i, x in enumerate(xs):
        if abs(x) >= 0.5 * seg.width:
            continue
        post, ant = _lateral_extent(u, x, seg)
        wall = np.minimum(u - post, ant - u)
        for inset, value in ((0.0, Tissue.CORTEX), (1.1, Tissue.MARROW)):
            inside = _rounded_inside(above - inset, below - inset, wall - inset, corner)
            tissue[i][box][inside] = value
            part[i][box][inside] = _part_label(seg)


def _rounded_inside(a: np.ndarray, b: np.ndarray, w: np.ndarray, r: float) -> np.ndarray:
    """Inside a box given distances to its faces, with rounded corners of radius r."""
    inside = (a >= 0) & (b >= 0) & (w >= 0)
    e = np.minimum(a, b)
    corner = (e < r) & (w < r)
    inside &= ~corner | ((r - e) ** 2 + (r - w) ** 2 <= r * r)
    return inside


def _paint_disc(
    tissue: np.ndarray,
    disc: np.ndarray,
    disc_u: np.ndarray,
    disc_v: np.ndarray,
    disc_x: np.ndarray,
    part: np.ndarray,
    seg: Segment,
    xs: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
) -> None:
    box = _bbox(py, pz, seg.center, 0.75 * seg.depth + seg.bulge + 4)
    if box is None:
        return
    py, pz = py[box], pz[box]
    u, above, below, _ = _segment_frame(seg, py, pz)
    conc = _concavity(u, seg) if seg.kind == "disc" else 0.0
    above, below = above + conc, below + conc
    thickness = np.maximum(above + below, 1e-6)
    vn = np.clip(2.0 * above / thickness - 1.0, -1.0, 1.0)
    between = (above >= 0) & (below >= 0)
    disc_id = seg.label if seg.label else T12L1_DISC_ID
    for i, x in enumerate(xs):
        if abs(x) >= 0.5 * seg.width:
            continue
        post, ant = _lateral_extent(u, x, seg)
        bulge = seg.bulge * (1.0 - vn**2)
        inside = between & (u >= post - bulge) & (u <= ant + bulge)
        part[i][box][inside] = _part_label(seg)
        if seg.kind == "rudiment":
            tissue[i][box][inside] = Tissue.RUDIMENT
            continue
        tissue[i][box][inside] = Tissue.DISC
        disc[i][box][inside] = disc_id
        center, half_depth = 0.5 * (post + ant), max(0.5 * (ant - post), 1e-6)
        disc_u[i][box][inside] = np.clip((u[inside] - center) / half_depth, -1.0, 1.0)
        disc_v[i][box][inside] = vn[inside]
        disc_x[i][box][inside] = np.clip(x / (0.5 * seg.width), -1.0, 1.0)


def _paint_posterior_elements(
    tissue: np.ndarray, part: np.ndarray, geometry: SpineGeometry, seg: Segment, xs: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> None:
    """Laminae, spinous process and (off the midline) pedicles of one vertebra, in its frame."""
    sacral = seg.name.startswith("S")
    spinous = geometry.spinous_length * (0.3 if sacral else 1.0)
    half_depth = 0.5 * seg.depth
    reach = half_depth + 24.0 + spinous + 10.0
    box = _bbox(py, pz, seg.center, reach)
    if box is None:
        return
    py, pz = py[box], pz[box]
    mid = Endplate(tuple(seg.center), seg.tilt)
    u, v = _endplate_coords(mid, py, pz)
    h = seg.height
    lamina_front, lamina_back = -(half_depth + 19.0), -(half_depth + 24.0)
    for i, x in enumerate(xs):
        ax = abs(x)
        parts = []
        # lamina: a plate behind the canal, reaching down over the disc below
        if ax <= 20.0:
            parts.append((
                np.minimum(lamina_front - u, u - lamina_back),
                np.minimum(0.35 * h - v, v + 0.85 * h),
            ))
        # spinous process: a bar going posteriorly and downward
        if ax <= 4.0:
            along = lamina_front - 2.0 - u  # mm behind the lamina front
            centre_v = -0.15 * h - 0.3 * along
            half_h = 8.0 - 2.0 * np.clip(along / spinous, 0, 1)
            parts.append((np.minimum(along, spinous - along), half_h - np.abs(v - centre_v)))
        # pedicles join the body to the laminae, off the midline
        if 11.0 <= ax <= 18.0 and not sacral:
            parts.append((np.minimum(-(half_depth - 2.0) - u, u - lamina_front - 1.0), np.minimum(0.45 * h - v, v)))
        for dist_u, dist_v in parts:
            inside = (dist_u >= 0) & (dist_v >= 0)
            marrow = (dist_u >= 1.1) & (dist_v >= 1.1)
            plane = tissue[i][box]
            plane[inside] = Tissue.CORTEX
            plane[marrow] = Tissue.MARROW
            part[i][box][inside] = _part_label(seg)
