"""From class probabilities to labelled discs: threshold, components, levels, uncertainty.

Following Iriondo et al. (2020): the disc probability (1 - background) is thresholded
at 0.5, connected components (2D for a single slice, 3D for a stack) smaller than 125
voxels are dropped, and the rest are labelled from inferior to superior, L5S1 first.

Levels are assigned along the spine's curve, not along image rows: the components'
centroids (sagittal-plane coordinates, mm) are chained by the shortest path through
all of them, and the path is walked from its inferior end. Lordosis or an in-plane tilt
therefore cannot swap two levels. The distance between neighbours along the path
reveals a missing disc (a gap of about two inter-disc spacings), and, when the network
gives per-class probabilities, the components' level votes decide which levels a
partial set of discs belongs to (for example when L5S1 is missing, or when a T12L1 disc
was segmented too). Every such decision is reported as a warning; nothing is guessed
silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from discvbr.errors import DiscVBRError
from discvbr.levels import DISC_LEVELS

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_MIN_SIZE",
    "TYPICAL_DISC_SPACING_MM",
    "DiscFinding",
    "LevelAssignment",
    "connected_components",
    "order_along_spine",
    "assign_levels",
    "postprocess",
    "uncertainty_map",
    "per_disc_uncertainty",
]

DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SIZE = 125
#: Prior distance between neighbouring lumbar disc centres (vertebral body + disc), mm,
#: used when too few discs are found to measure it.
TYPICAL_DISC_SPACING_MM = 36.0
#: Components closer than this fraction of the inter-disc spacing are pieces of one disc.
SAME_DISC_FRACTION = 0.4
#: Log-probability charged for leaving a component unlabelled (when the votes decide).
_DROP_LOG_PROB = np.log(0.05)
_N_DISCS = len(DISC_LEVELS)


@dataclass
class DiscFinding:
    """One found disc (possibly in several pieces) or an unlabelled component.

    Attributes
    ----------
    label : int
        1 = L5S1 ... 5 = L1L2; 0 when the component was left unlabelled.
    voxels : int
    volume_mm3 : float
    centroid_mm : tuple of float
        RAS centroid.
    votes : dict or None
        Mean network probability of each level over the component (normalised over the
        disc classes), when probabilities were given.
    pieces : int
        Connected components merged into this disc.
    uncertainty : float
        Mean normalised entropy over the disc and a one-voxel rim (0 certain, 1 uniform);
        NaN until computed.
    """

    label: int
    voxels: int
    volume_mm3: float
    centroid_mm: tuple[float, float, float]
    votes: dict[str, float] | None = None
    pieces: int = 1
    uncertainty: float = float("nan")

    @property
    def level(self) -> str | None:
        return DISC_LEVELS[self.label - 1] if self.label else None

    def as_dict(self) -> dict:
        return {
            "level": self.level,
            "label": self.label,
            "voxels": self.voxels,
            "volume_mm3": round(self.volume_mm3, 3),
            "centroid_mm": [round(c, 2) for c in self.centroid_mm],
            "votes": None if self.votes is None else {k: round(v, 4) for k, v in self.votes.items()},
            "pieces": self.pieces,
            "uncertainty": None if not np.isfinite(self.uncertainty) else round(self.uncertainty, 4),
        }


@dataclass
class LevelAssignment:
    """Labelled discs of one image.

    Attributes
    ----------
    labels : ndarray (X, Y, Z) uint8
        0 background, 1 = L5S1 ... 5 = L1L2.
    findings : list of DiscFinding
        Labelled discs (inferior to superior), then unlabelled components.
    warnings : list of str
        Everything a reviewer should know: missing or extra discs, presumed levels,
        disagreement between position and network votes.
    uncertainty : ndarray (X, Y, Z) or None
        Normalised entropy map (set by :func:`postprocess`).
    per_disc_uncertainty : dict
        Level -> score (set by :func:`postprocess`; 1 for a missing disc).
    """

    labels: np.ndarray
    findings: list[DiscFinding]
    warnings: list[str] = field(default_factory=list)
    uncertainty: np.ndarray | None = None
    per_disc_uncertainty: dict[str, float] = field(default_factory=dict)

    @property
    def found(self) -> list[str]:
        return [f.level for f in self.findings if f.label]

    @property
    def missing(self) -> list[str]:
        found = set(self.found)
        return [lvl for lvl in DISC_LEVELS if lvl not in found]


def _structure(mode: str) -> np.ndarray:
    """3x3x3 face connectivity: 6-connected in 3D, 4-connected within the sagittal slice in 2D.

    Face connectivity keeps neighbouring discs apart even where they nearly touch at a corner.
    """
    structure = ndimage.generate_binary_structure(3, 1)
    if mode == "2d":
        structure[0] = structure[2] = False
    return structure


def connected_components(mask: np.ndarray, *, min_size: int = DEFAULT_MIN_SIZE, mode: str = "auto") -> tuple[np.ndarray, int]:
    """Connected components of a (X, Y, Z) mask with at least ``min_size`` voxels.

    Parameters
    ----------
    mask : ndarray of bool (X, Y, Z)
    min_size : int
        Smallest component kept, voxels (125 in the paper; 200 for weaker networks).
    mode : {"auto", "2d", "3d"}
        ``"2d"``: components within each sagittal slice; ``"3d"``: across slices;
        ``"auto"``: 2D for a single slice, 3D for a stack.

    Returns
    -------
    components : ndarray of int32 (X, Y, Z)
        0 background, 1..n components.
    n : int
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise DiscVBRError(f"mask must be 3D (X, Y, Z), got shape {mask.shape}")
    if min_size < 1:
        raise DiscVBRError(f"minimum component size must be at least 1 voxel, got {min_size}")
    mode = _resolve_mode(mode, mask.shape)
    out = np.zeros(mask.shape, np.int32)
    n = 0
    blocks = [(slice(i, i + 1),) for i in range(mask.shape[0])] if mode == "2d" else [(slice(None),)]
    for block in blocks:
        sub = mask[block]
        structure = _structure(mode)
        lab, count = ndimage.label(sub, structure=structure)
        if count == 0:
            continue
        sizes = np.bincount(lab.ravel(), minlength=count + 1)
        keep = np.flatnonzero(sizes >= min_size)
        keep = keep[keep > 0]
        lut = np.zeros(count + 1, np.int32)
        lut[keep] = np.arange(n + 1, n + 1 + keep.size)
        out[block] = lut[lab]
        n += keep.size
    return out, n


def _resolve_mode(mode: str, shape: tuple[int, ...]) -> str:
    if mode not in ("auto", "2d", "3d"):
        raise DiscVBRError(f"component mode must be auto, 2d or 3d, got {mode!r}")
    if mode == "auto":
        return "2d" if shape[0] == 1 else "3d"
    return mode


def order_along_spine(points: np.ndarray) -> np.ndarray:
    """Order points (disc centres) along the spine, inferior first.

    The order is the shortest open path through all points (exact for up to 10
    points, by dynamic programming; nearest-neighbour chaining from the most inferior
    point beyond), walked from whichever end is more inferior.

    Parameters
    ----------
    points : ndarray (n, 2)
        Sagittal-plane coordinates, mm: column 0 anterior, column 1 superior.

    Returns
    -------
    ndarray of int, shape (n,)
        Indices into ``points``.
    """
    points = np.asarray(points, dtype=float)
    n = len(points)
    if n <= 2:
        return np.argsort(points[:, 1], kind="stable") if n else np.zeros(0, int)
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    if n <= 10:
        path = _shortest_open_path(dist)
    else:
        start = int(np.argmin(points[:, 1]))
        path, left = [start], set(range(n)) - {start}
        while left:
            nxt = min(left, key=lambda j: dist[path[-1], j])
            path.append(nxt)
            left.remove(nxt)
    path = np.asarray(path)
    if points[path[-1], 1] < points[path[0], 1]:
        path = path[::-1]
    return path


def _shortest_open_path(dist: np.ndarray) -> list[int]:
    """Held-Karp dynamic programme for the shortest Hamiltonian path (any endpoints)."""
    n = len(dist)
    full = (1 << n) - 1
    cost = np.full((1 << n, n), np.inf)
    parent = np.full((1 << n, n), -1, dtype=int)
    for i in range(n):
        cost[1 << i, i] = 0.0
    for mask in range(1, full + 1):
        for last in range(n):
            c = cost[mask, last]
            if not np.isfinite(c) or not mask >> last & 1:
                continue
            for nxt in range(n):
                if mask >> nxt & 1:
                    continue
                m2 = mask | 1 << nxt
                c2 = c + dist[last, nxt]
                if c2 < cost[m2, nxt]:
                    cost[m2, nxt] = c2
                    parent[m2, nxt] = last
    last = int(np.argmin(cost[full]))
    path, mask = [], full
    while last >= 0:
        path.append(last)
        prev = parent[mask, last]
        mask &= ~(1 << last)
        last = prev
    return path[::-1]


def _component_stats(components: np.ndarray, n: int, affine: np.ndarray, probabilities: np.ndarray | None):
    index = np.arange(1, n + 1)
    voxels = ndimage.sum_labels(np.ones(components.shape), components, index).astype(int)
    centres_vox = np.array(ndimage.center_of_mass(np.ones(components.shape), components, index)).reshape(n, 3)
    centres_mm = centres_vox @ affine[:3, :3].T + affine[:3, 3]
    votes = None
    if probabilities is not None:
        disc_probs = probabilities[1:]
        sums = np.stack([ndimage.sum_labels(p, components, index) for p in disc_probs], axis=1).reshape(n, _N_DISCS)
        votes = sums / np.clip(sums.sum(axis=1, keepdims=True), 1e-12, None)
    return voxels, centres_mm, votes


def _sagittal_coordinates(centres_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centres projected on the sagittal plane: (anterior, superior) mm along the grid's in-plane axes.

    Using the image's own in-plane axes (canonical: axis 1 posterior -> anterior, axis 2
    inferior -> superior) makes lateral offsets between pieces of one disc irrelevant.
    """
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return centres_mm @ direction[:, 1:]


def assign_levels(
    components: np.ndarray,
    n: int,
    affine: np.ndarray,
    *,
    probabilities: np.ndarray | None = None,
    disc_spacing_mm: float | None = None,
    where: str = "image",
) -> LevelAssignment:
    """Label components as disc levels, inferior to superior along the spine.

    Parameters
    ----------
    components : ndarray of int (X, Y, Z)
        Components 1..n (from :func:`connected_components`).
    n : int
        Number of components.
    affine : ndarray (4, 4)
        Voxel -> RAS mm of the canonical grid (axis 1 anterior, axis 2 superior).
    probabilities : ndarray (6, X, Y, Z), optional
        Network class probabilities (background first); their per-component means
        ("votes") decide which levels a set of other than five discs covers.
    disc_spacing_mm : float, optional
        Distance between neighbouring disc centres; default: the median of the found
        neighbours' distances (with three or more discs), else 36 mm.
    where : str
        Names the image (subject) in warnings.

    Returns
    -------
    LevelAssignment

    Notes
    -----
    Components are chained along the shortest path through their centres
    (:func:`order_along_spine`). Neighbours closer than 0.4 spacings are pieces of one
    disc; a gap of ``k`` spacings skips ``k - 1`` levels. The chain of ``m`` positions is
    then placed on the five levels: without votes, its inferior end is L5S1 (the paper's
    rule); with votes, at the offset of highest summed log-vote (a component outside
    L5S1..L1L2 costs log 0.05). Components outside the five levels stay unlabelled.
    """
    spacing_vox = np.linalg.norm(affine[:3, :3], axis=0)
    voxel_volume = float(np.prod(spacing_vox))
    labels = np.zeros(components.shape, np.uint8)
    warnings: list[str] = []
    if n == 0:
        warnings.append(f"{where}: no disc found (0 of 5)")
        return LevelAssignment(labels, [], warnings)
    voxels, centres_mm, votes = _component_stats(components, n, affine, probabilities)
    plane = _sagittal_coordinates(centres_mm, affine)
    order = order_along_spine(plane)
    steps = np.linalg.norm(np.diff(plane[order], axis=0), axis=1)
    if disc_spacing_mm is None:
        apart = steps[steps > SAME_DISC_FRACTION * TYPICAL_DISC_SPACING_MM]
        disc_spacing_mm = float(np.median(apart)) if apart.size >= 2 else TYPICAL_DISC_SPACING_MM
    k = np.where(steps < SAME_DISC_FRACTION * disc_spacing_mm, 0, np.maximum(1, np.rint(steps / disc_spacing_mm))).astype(int)
    position = np.concatenate([[0], np.cumsum(k)])  # of each component in path order
    n_positions = int(position[-1]) + 1
    gaps = int(np.sum(np.maximum(k - 1, 0)))

    offsets = list(range(-(n_positions - 1), _N_DISCS))
    if votes is None:
        offset = 0
    else:
        log_votes = np.log(np.clip(votes[order], 1e-6, None))

        def score(o: int) -> float:
            lab = position + o
            inside = (lab >= 0) & (lab < _N_DISCS)
            return float(log_votes[inside, lab[inside]].sum() + _DROP_LOG_PROB * (~inside).sum())

        scores = {o: score(o) for o in offsets}
        offset = max(offsets, key=lambda o: (scores[o], -abs(o)))
    assigned = position + offset
    per_label: dict[int, list[int]] = {}
    for comp_pos, comp in zip(assigned, order):
        if 0 <= comp_pos < _N_DISCS:
            per_label.setdefault(int(comp_pos) + 1, []).append(int(comp))

    findings: list[DiscFinding] = []
    for label in sorted(per_label):
        comps = per_label[label]
        sel = np.isin(components, np.asarray(comps) + 1)
        labels[sel] = label
        vox = int(voxels[comps].sum())
        centre = tuple(float(c) for c in (centres_mm[comps] * voxels[comps, None]).sum(axis=0) / vox)
        vote = None
        if votes is not None:
            v = (votes[comps] * voxels[comps, None]).sum(axis=0) / vox
            vote = {lvl: float(p) for lvl, p in zip(DISC_LEVELS, v)}
        findings.append(DiscFinding(label, vox, vox * voxel_volume, centre, vote, pieces=len(comps)))
        if len(comps) > 1:
            warnings.append(f"{where}: {DISC_LEVELS[label - 1]} was found in {len(comps)} separate pieces (merged)")
    dropped = [int(c) for p, c in zip(assigned, order) if not 0 <= p < _N_DISCS]
    for comp in dropped:
        vote = None if votes is None else {lvl: float(p) for lvl, p in zip(DISC_LEVELS, votes[comp])}
        findings.append(
            DiscFinding(0, int(voxels[comp]), float(voxels[comp] * voxel_volume), tuple(float(c) for c in centres_mm[comp]), vote)
        )

    found = [DISC_LEVELS[lab - 1] for lab in sorted(per_label)]
    missing = [lvl for lvl in DISC_LEVELS if lvl not in found]
    basis = "network level votes" if votes is not None else "position only: the most inferior disc is taken as L5S1"
    if missing:
        msg = f"{where}: {len(found)} of 5 discs found; missing {', '.join(missing)}"
        if gaps:
            msg += f" (a gap along the spine shows {gaps} skipped level(s))"
        warnings.append(msg + f"; levels assigned by {basis}")
    if dropped:
        where_extra = ", ".join(
            f"{'above L1L2' if assigned[list(order).index(c)] >= _N_DISCS else 'below L5S1'} at "
            f"{np.round(centres_mm[c], 1).tolist()} mm ({int(voxels[c])} voxels)"
            for c in dropped
        )
        warnings.append(f"{where}: {len(dropped)} extra component(s) left unlabelled, {where_extra}; levels by {basis}")
    if votes is not None:
        for f in findings:
            if f.label and f.votes is not None:
                top = max(f.votes, key=f.votes.get)
                if top != f.level and f.votes[top] > 0.5:
                    warnings.append(
                        f"{where}: the disc labelled {f.level} by position looks like {top} to the network "
                        f"(vote {f.votes[top]:.2f}); check the levels"
                    )
    return LevelAssignment(labels, findings, warnings)


def uncertainty_map(probabilities: np.ndarray) -> np.ndarray:
    """Normalised predictive entropy, ``-sum p log p / log C``, per voxel (0 certain, 1 uniform).

    Parameters
    ----------
    probabilities : ndarray (C, ...)
        Class probabilities (for an ensemble: the softmax of the averaged logits).
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=0) / np.log(p.shape[0])
    return np.clip(entropy, 0.0, 1.0).astype(np.float32)


def per_disc_uncertainty(uncertainty: np.ndarray, labels: np.ndarray, *, mode: str = "auto") -> dict[str, float]:
    """Mean uncertainty over each labelled disc and a one-voxel rim around it.

    The rim takes in the boundary, where segmentation errors are; in-plane only for
    2D mode. Missing discs get 1 (most uncertain), so a review sorted by this score
    opens them first.

    Returns
    -------
    dict
        Level -> score in [0, 1].
    """
    mode = _resolve_mode(mode, labels.shape)
    structure = _structure(mode)
    scores = {}
    for label, level in enumerate(DISC_LEVELS, start=1):
        disc = labels == label
        if not disc.any():
            scores[level] = 1.0
            continue
        region = ndimage.binary_dilation(disc, structure=structure)
        scores[level] = float(uncertainty[region].mean())
    return scores


def postprocess(
    probabilities: np.ndarray,
    affine: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_size: int = DEFAULT_MIN_SIZE,
    mode: str = "auto",
    where: str = "image",
) -> LevelAssignment:
    """Threshold disc probability, keep large components, assign levels, score uncertainty.

    Parameters
    ----------
    probabilities : ndarray (6, X, Y, Z)
        Class probabilities on the canonical grid, background first.
    affine : ndarray (4, 4)
    threshold : float
        Disc probability (1 - background) above which a voxel is disc (0.5).
    min_size : int
        Smallest component kept, voxels (125).
    mode : {"auto", "2d", "3d"}
        Component connectivity (see :func:`connected_components`). In ``"2d"`` mode on a
        stack every slice is labelled on its own.
    where : str
        Names the image in warnings.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 4 or probabilities.shape[0] != _N_DISCS + 1:
        raise DiscVBRError(f"probabilities must be (6, X, Y, Z), got shape {probabilities.shape}")
    if not 0 < threshold < 1:
        raise DiscVBRError(f"probability threshold must be within (0, 1), got {threshold}")
    mode = _resolve_mode(mode, probabilities.shape[1:])
    mask = (1.0 - probabilities[0]) > threshold
    if mode == "3d" or probabilities.shape[1] == 1:
        components, n = connected_components(mask, min_size=min_size, mode=mode)
        result = assign_levels(components, n, affine, probabilities=probabilities, where=where)
    else:
        result = _per_slice(mask, probabilities, affine, min_size=min_size, where=where)
    result.uncertainty = uncertainty_map(probabilities)
    result.per_disc_uncertainty = per_disc_uncertainty(result.uncertainty, result.labels, mode=mode)
    for f in result.findings:
        if f.label:
            f.uncertainty = result.per_disc_uncertainty[f.level]
    return result


def _per_slice(mask, probabilities, affine, *, min_size, where) -> LevelAssignment:
    labels = np.zeros(mask.shape, np.uint8)
    warnings: list[str] = []
    merged: dict[int, list[DiscFinding]] = {}
    extra: list[DiscFinding] = []
    for i in range(mask.shape[0]):
        comps, n = connected_components(mask[i : i + 1], min_size=min_size, mode="2d")
        if n == 0:
            continue
        slice_affine = affine.copy()
        slice_affine[:3, 3] = affine[:3, :3] @ np.array([i, 0, 0]) + affine[:3, 3]
        res = assign_levels(comps, n, slice_affine, probabilities=probabilities[:, i : i + 1], where=f"{where} slice {i}")
        labels[i] = res.labels[0]
        warnings.extend(res.warnings)
        for f in res.findings:
            (merged.setdefault(f.label, []) if f.label else extra).append(f)
    findings = []
    for label in sorted(merged):
        parts = merged[label]
        vox = sum(p.voxels for p in parts)
        centre = tuple(float(c) for c in np.sum([np.multiply(p.centroid_mm, p.voxels) for p in parts], axis=0) / vox)
        votes = None
        if all(p.votes is not None for p in parts):
            votes = {lvl: float(sum(p.votes[lvl] * p.voxels for p in parts) / vox) for lvl in DISC_LEVELS}
        findings.append(DiscFinding(label, vox, sum(p.volume_mm3 for p in parts), centre, votes, pieces=len(parts)))
    return LevelAssignment(labels, findings + extra, warnings)
