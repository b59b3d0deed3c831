"""The paper's 2D figures with matplotlib (Iriondo et al., MRM 2020, figures 2-7).

* :func:`plot_agreement`: manual versus automatic mean disc relaxation times, one scatter
  plot of all discs and one Bland-Altman plot per disc (bias and 95% limits of agreement,
  Bland & Altman, Lancet 1986); numbers from :func:`agreement_table`.
* :func:`plot_registration_qc`: each disc's map before and after registration, with the
  histograms (density) and Gaussian kernel density estimates of its values.
* :func:`plot_segmentation`: an image with the network's disc probabilities and their
  uncertainty (normalised entropy) overlaid.
* :func:`plot_group_comparison`: two groups' mean maps next to the p map of their difference.
* :func:`plot_voxel_correlation`: r and p maps of a voxel-by-voxel (T1rho versus T2) or
  voxel-by-variable correlation.

Maps are shown as sagittal slices with anterior on the left and superior up, at their true
aspect ratio, each disc outlined in its colour (:data:`discvbr.levels.DISC_COLOURS`); colours
of values come from :func:`discvbr.render.colours.colour_scale`, as on the spine mesh.
Functions return a ``matplotlib.figure.Figure`` (no pyplot state); :func:`save_figure` writes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import Image, atomic_write
from discvbr.levels import DISC_COLOURS, DISC_LEVELS
from discvbr.render.colours import ColourScale, colour_scale

__all__ = [
    "agreement_table",
    "plot_agreement",
    "plot_registration_qc",
    "plot_segmentation",
    "normalised_entropy",
    "plot_group_comparison",
    "plot_voxel_correlation",
    "save_figure",
]

_PANEL_INCHES = 3.2


def _figure(n_rows: int, n_cols: int, *, width: float | None = None, height: float | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width or _PANEL_INCHES * n_cols, height or _PANEL_INCHES * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def save_figure(figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write a figure (PNG, SVG or PDF by the suffix), atomically."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise DiscVBRError(f"{path}: figures are written as .png, .svg or .pdf")
    with atomic_write(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=fmt)
    return path


# --------------------------------------------------------------------------- agreement


def _paired(manual: Mapping[str, Sequence[float]], automatic: Mapping[str, Sequence[float]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    unknown = sorted((set(manual) | set(automatic)) - set(DISC_LEVELS))
    if unknown:
        raise DiscVBRError(f"unknown disc level(s) {unknown}; expected {', '.join(DISC_LEVELS)}")
    pairs = {}
    for level in DISC_LEVELS:
        if level not in manual and level not in automatic:
            continue
        if level not in manual or level not in automatic:
            raise DiscVBRError(f"{level}: values from both manual and automatic masks are needed")
        m = np.asarray(manual[level], dtype=float).ravel()
        a = np.asarray(automatic[level], dtype=float).ravel()
        if m.shape != a.shape:
            raise DiscVBRError(f"{level}: {m.size} manual values but {a.size} automatic values (one per subject each)")
        keep = np.isfinite(m) & np.isfinite(a)
        pairs[level] = (m[keep], a[keep])
    if not pairs:
        raise DiscVBRError("no disc values to compare")
    return pairs


def agreement_table(manual: Mapping[str, Sequence[float]], automatic: Mapping[str, Sequence[float]]):
    """Agreement of manual and automatic mean disc values, per disc and over all discs.

    Parameters
    ----------
    manual, automatic : mapping of str to sequence of float
        Per disc level, one value per subject (same order in both); NaN pairs are dropped.

    Returns
    -------
    pandas.DataFrame
        Index: disc levels then ``"all"``. Columns: ``n``; ``r`` and ``p`` (Pearson);
        ``bias`` (mean of automatic - manual); ``loa_low`` and ``loa_high`` (bias -/+ 1.96
        SD of the differences, ddof 1: the 95% limits of agreement of Bland & Altman).
    """
    import pandas as pd
    from scipy import stats

    pairs = _paired(manual, automatic)
    pairs["all"] = (np.concatenate([m for m, _ in pairs.values()]), np.concatenate([a for _, a in pairs.values()]))
    rows = {}
    for level, (m, a) in pairs.items():
        diff = a - m
        r, p = stats.pearsonr(m, a) if m.size >= 3 and np.ptp(m) > 0 and np.ptp(a) > 0 else (np.nan, np.nan)
        sd = diff.std(ddof=1) if diff.size > 1 else np.nan
        bias = diff.mean() if diff.size else np.nan
        rows[level] = {"n": int(m.size), "r": r, "p": p, "bias": bias, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_agreement(
    manual: Mapping[str, Sequence[float]],
    automatic: Mapping[str, Sequence[float]],
    *,
    quantity: str = "T1rho",
    unit: str = "ms",
):
    """Scatter plot of all discs and one Bland-Altman plot per disc (figure 3 of the paper).

    Parameters
    ----------
    manual, automatic : mapping of str to sequence of float
        Mean disc value per subject from manual and from automatic masks, per disc level.
    quantity, unit : str
        Axis labels.

    Returns
    -------
    matplotlib.figure.Figure
        Axes: the scatter plot (identity line, r), then one Bland-Altman plot per disc, in
        :data:`~discvbr.levels.DISC_LEVELS` order (mean on x, automatic - manual on y, bias
        and limits of agreement as horizontal lines).
    """
    pairs = _paired(manual, automatic)
    table = agreement_table(manual, automatic)
    fig, axes = _figure(1, 1 + len(pairs), height=_PANEL_INCHES)
    scatter = axes[0, 0]
    for level, (m, a) in pairs.items():
        scatter.scatter(m, a, s=14, color=DISC_COLOURS[level], label=level)
    both = np.concatenate([np.concatenate(v) for v in pairs.values()])
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        scatter.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="identity")
    scatter.set_xlabel(f"manual {quantity} ({unit})")
    scatter.set_ylabel(f"automatic {quantity} ({unit})")
    scatter.set_title(f"all discs: r = {table.loc['all', 'r']:.3f}")
    scatter.legend(fontsize="small", frameon=False)
    for ax, (level, (m, a)) in zip(axes[0, 1:], pairs.items()):
        row = table.loc[level]
        ax.scatter((m + a) / 2, a - m, s=14, color=DISC_COLOURS[level])
        ax.axhline(row["bias"], color=DISC_COLOURS[level], lw=1.5, label=f"bias {row['bias']:.2f}")
        for key in ("loa_low", "loa_high"):
            ax.axhline(row[key], color="0.3", lw=1, ls="--")
        ax.set_title(f"{level}: bias {row['bias']:.2f} ({row['loa_low']:.2f}, {row['loa_high']:.2f}) {unit}", fontsize="small")
        ax.set_xlabel(f"mean {quantity} ({unit})")
        ax.set_ylabel(f"automatic - manual ({unit})")
    return fig


# --------------------------------------------------------------------------- sagittal maps


def _sagittal(data: Image | np.ndarray, *, what: str) -> tuple[np.ndarray, tuple[float, float]]:
    """Central slice with data (ny, nz) and the in-plane spacing (mm)."""
    if isinstance(data, Image):
        array, spacing = np.asarray(data.array, dtype=float), data.spacing[1:]
    else:
        array, spacing = np.asarray(data, dtype=float), np.ones(2)
    if array.ndim == 2:
        return array, (float(spacing[0]), float(spacing[1]))
    if array.ndim != 3:
        raise DiscVBRError(f"{what}: a sagittal map must be 2D (Y, Z) or 3D (X, Y, Z), got shape {array.shape}")
    counts = np.isfinite(array).sum(axis=(1, 2)) if np.isnan(array).any() else np.ones(array.shape[0])
    if counts.sum() == 0:
        raise DiscVBRError(f"{what}: no finite value to show")
    present = np.flatnonzero(counts)
    centre = int(present[np.argmin(np.abs(present - np.average(present, weights=counts[present])))])
    return array[centre], (float(spacing[0]), float(spacing[1]))


def _extent(shape: tuple[int, int], spacing: tuple[float, float]) -> list[float]:
    """imshow extent (mm) of a (Y, Z) slice shown transposed: y along x, z up."""
    ny, nz = shape
    return [-0.5 * spacing[0], (ny - 0.5) * spacing[0], -0.5 * spacing[1], (nz - 0.5) * spacing[1]]


def _anterior_left(ax, extent: list[float]) -> None:
    """Radiological sagittal orientation, as on the spine mesh: anterior (high y) left, superior up."""
    ax.set_xlim(extent[1], extent[0])
    ax.set_ylim(extent[2], extent[3])


def _show(ax, values: np.ndarray, spacing, scale: ColourScale, *, crop=None):
    cmap, norm = scale.matplotlib()
    if crop is not None:
        values = values[crop]
    extent = _extent(values.shape, spacing)
    im = ax.imshow(np.ma.masked_invalid(values.T), origin="lower", cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
    _anterior_left(ax, extent)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _finite_crop(*arrays: np.ndarray, pad: int = 3):
    finite = np.zeros(arrays[0].shape, bool)
    for a in arrays:
        finite |= np.isfinite(a)
    ys, zs = np.nonzero(finite)
    if ys.size == 0:
        return None
    ny, nz = finite.shape
    return (slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, ny)), slice(max(zs.min() - pad, 0), min(zs.max() + pad + 1, nz)))


def _outline_discs(ax, labels: np.ndarray, spacing, crop=None) -> None:
    if crop is not None:
        labels = labels[crop]
    extent = _extent(labels.shape, spacing)
    for label, level in enumerate(DISC_LEVELS, start=1):
        mask = (labels == label).astype(float)
        if mask.any():
            ax.contour(mask.T, levels=[0.5], colors=[DISC_COLOURS[level]], linewidths=1.2, origin="lower", extent=extent)


def plot_registration_qc(
    before: Mapping[str, Image | np.ndarray],
    after: Mapping[str, Image | np.ndarray],
    *,
    quantity: str = "T1rho",
    vmin: float | None = None,
    vmax: float | None = None,
    bins: int = 30,
):
    """Each disc's map before and after registration, with histograms and kernel densities (figure 4).

    Parameters
    ----------
    before, after : mapping of str to Image or ndarray
        Per disc level, the map in subject space and in atlas space (ms), NaN outside the
        disc; 3D maps show their central slice, histograms use every finite voxel.
    quantity : str
        Name of the relaxation time.
    vmin, vmax : float, optional
        Colour range shared by all maps (default: 2nd-98th percentile of all values).
    bins : int
        Histogram bins (shared edges for before and after).

    Returns
    -------
    matplotlib.figure.Figure
        One row per disc: map before, map after, histogram (density) with Gaussian kernel
        density estimates (Scott's bandwidth) of before (disc colour) and after (black).
    """
    from scipy.stats import gaussian_kde

    levels = [lvl for lvl in DISC_LEVELS if lvl in before or lvl in after]
    missing = [lvl for lvl in levels if lvl not in before or lvl not in after]
    if missing:
        raise DiscVBRError(f"{missing[0]}: maps before and after registration are both needed")
    if not levels:
        raise DiscVBRError("no disc map to show")

    def values_of(data):
        array = np.asarray(data.array if isinstance(data, Image) else data, dtype=float)
        return array[np.isfinite(array)]

    all_values = np.concatenate([values_of(d[lvl]) for d in (before, after) for lvl in levels])
    scale = colour_scale("T", values=all_values, vmin=vmin, vmax=vmax, quantity=quantity)
    fig, axes = _figure(len(levels), 3, width=3 * _PANEL_INCHES)
    for row, level in zip(axes, levels):
        for ax, data, name in ((row[0], before[level], "before"), (row[1], after[level], "after")):
            slice_, spacing = _sagittal(data, what=f"{level} map {name} registration")
            image = _show(ax, slice_, spacing, scale, crop=_finite_crop(slice_))
            ax.set_title(f"{level} {name}", color=DISC_COLOURS[level], fontsize="small")
        fig.colorbar(image, ax=row[1], label=scale.title, shrink=0.8)
        ax = row[2]
        b, a = values_of(before[level]), values_of(after[level])
        edges = np.histogram_bin_edges(np.concatenate([b, a]), bins=bins)
        grid = np.linspace(edges[0], edges[-1], 200)
        for values, colour, name in ((b, DISC_COLOURS[level], "before"), (a, "0.15", "after")):
            ax.hist(values, bins=edges, density=True, color=colour, alpha=0.35, label=name)
            if values.size > 1 and np.ptp(values) > 0:
                ax.plot(grid, gaussian_kde(values)(grid), color=colour, lw=1.5)
        ax.set_xlabel(scale.title)
        ax.set_ylabel("density")
        ax.legend(fontsize="small", frameon=False)
    return fig


def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of class probabilities over the class axis (0), divided by log(C): 0 certain .. 1 uniform.

    A single foreground probability map (no class axis) is treated as two classes.
    """
    p = np.asarray(probabilities, dtype=float)
    if p.ndim == 2:
        p = np.stack([1.0 - p, p])
    p = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=0) / np.log(p.shape[0])


def plot_segmentation(
    image: Image | np.ndarray,
    probabilities: np.ndarray,
    *,
    uncertainty: np.ndarray | None = None,
    threshold: float = 0.5,
):
    """An image with the disc probabilities and their uncertainty overlaid (figure 2).

    Parameters
    ----------
    image : Image or ndarray
        The segmented sagittal slice (first T1rho echo), 2D (Y, Z) or one-slice 3D.
    probabilities : ndarray
        Softmax output: (C, Y, Z) with background first and then the discs L5S1..L1L2
        (C = 6), or (2, Y, Z) background/disc, or a (Y, Z) disc probability.
    uncertainty : ndarray, optional
        (Y, Z) uncertainty to show; default :func:`normalised_entropy` of ``probabilities``.
    threshold : float
        Probability contoured on both overlays (the paper's 0.5).

    Returns
    -------
    matplotlib.figure.Figure
        Three axes: the image; the probability of the most likely disc class as the alpha of
        that disc's colour; the uncertainty (0..1) as a heat map.
    """
    base, spacing = _sagittal(image, what="segmented image")
    p = np.asarray(probabilities, dtype=float)
    if p.ndim == 4 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 2:
        p = np.stack([1.0 - p, p])
    if p.ndim != 3 or p.shape[1:] != base.shape or p.shape[0] not in (2, len(DISC_LEVELS) + 1):
        raise DiscVBRError(
            f"probabilities of shape {np.shape(probabilities)} do not fit the image slice {base.shape}: expected "
            f"(C, Y, Z) with C = 2 or {len(DISC_LEVELS) + 1} (background first)"
        )
    entropy = normalised_entropy(p) if uncertainty is None else np.asarray(uncertainty, dtype=float)
    if entropy.shape != base.shape:
        raise DiscVBRError(f"uncertainty of shape {entropy.shape} does not fit the image slice {base.shape}")
    fg = p[1:]
    best = fg.argmax(axis=0)
    best_p = np.take_along_axis(fg, best[None], axis=0)[0]
    colours = np.array([DISC_COLOURS[lvl] for lvl in DISC_LEVELS]) if fg.shape[0] > 1 else np.array([[0.85, 0.1, 0.1]])
    overlay = np.zeros((*base.shape, 4))
    overlay[..., :3] = colours[best]
    overlay[..., 3] = best_p
    fig, axes = _figure(1, 3, height=_PANEL_INCHES * 1.1)
    extent = _extent(base.shape, spacing)
    vmin, vmax = np.nanpercentile(base, [1, 99.5])
    for ax in axes[0]:
        ax.imshow(base.T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image")
    axes[0, 1].imshow(np.transpose(overlay, (1, 0, 2)), origin="lower", extent=extent, interpolation="nearest")
    axes[0, 1].set_title("disc probability")
    heat = axes[0, 2].imshow(np.ma.masked_less(entropy.T, 0.02), origin="lower", cmap="inferno", vmin=0, vmax=1, extent=extent, alpha=0.85, interpolation="nearest")
    axes[0, 2].set_title("uncertainty (normalised entropy)")
    fig.colorbar(heat, ax=axes[0, 2], shrink=0.8)
    for ax in axes[0, 1:]:
        ax.contour((1.0 - p[0]).T, levels=[threshold], colors=["white"], linewidths=0.8, origin="lower", extent=extent)
    for ax in axes[0]:
        _anterior_left(ax, extent)
    return fig


def _maps_panel(fig, ax, data, scale: ColourScale, title: str, *, labels: np.ndarray | None, crop) -> None:
    slice_, spacing = _sagittal(data, what=title)
    image = _show(ax, slice_, spacing, scale, crop=crop)
    if labels is not None:
        _outline_discs(ax, labels, spacing, crop)
    ax.set_title(title, fontsize="small")
    fig.colorbar(image, ax=ax, label=scale.title, shrink=0.8)


def _labels_slice(labels: Image | None, reference) -> np.ndarray | None:
    if labels is None:
        return None
    slice_, _ = _sagittal(Image(np.where(labels.array > 0, labels.array, np.nan), labels.affine), what="atlas labels")
    ref, _ = _sagittal(reference, what="map")
    if slice_.shape != ref.shape:
        raise DiscVBRError(f"atlas labels slice {slice_.shape} does not match the maps' slice {ref.shape}")
    return np.nan_to_num(slice_, nan=0.0).astype(int)


def plot_group_comparison(
    mean_a: Image | np.ndarray,
    mean_b: Image | np.ndarray,
    p: Image | np.ndarray,
    *,
    names: tuple[str, str] = ("group A", "group B"),
    quantity: str = "T1rho",
    alpha: float = 0.05,
    vmin: float | None = None,
    vmax: float | None = None,
    labels: Image | None = None,
):
    """Two groups' mean maps next to the p map of their voxel-wise comparison (figure 6).

    Parameters
    ----------
    mean_a, mean_b : Image or ndarray
        Group mean maps (ms) on the atlas grid, NaN outside the discs.
    p : Image or ndarray
        p values of the voxel-wise test, same grid.
    names : (str, str)
        Group names (e.g. ``("ODI 0-40", "ODI > 40")``).
    quantity : str
        Relaxation time named on the colour bar.
    alpha : float
        Significance level marked on the p scale.
    vmin, vmax : float, optional
        Colour range of both means (default: 2nd-98th percentile of both).
    labels : Image, optional
        Atlas disc labels to outline each disc in its colour.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes: mean of group A, mean of group B (one colour scale), p (log scale).
    """
    a_slice, _ = _sagittal(mean_a, what=f"{names[0]} mean")
    b_slice, _ = _sagittal(mean_b, what=f"{names[1]} mean")
    p_slice, _ = _sagittal(p, what="p map")
    scale = colour_scale("T", values=np.concatenate([a_slice[np.isfinite(a_slice)], b_slice[np.isfinite(b_slice)]]), vmin=vmin, vmax=vmax, quantity=quantity)
    p_scale = colour_scale("p", values=p_slice, alpha=alpha)
    crop = _finite_crop(a_slice, b_slice, p_slice)
    outline = _labels_slice(labels, mean_a)
    fig, axes = _figure(1, 3, height=_PANEL_INCHES * 1.4)
    _maps_panel(fig, axes[0, 0], mean_a, scale, f"mean {quantity}: {names[0]}", labels=outline, crop=crop)
    _maps_panel(fig, axes[0, 1], mean_b, scale, f"mean {quantity}: {names[1]}", labels=outline, crop=crop)
    _maps_panel(fig, axes[0, 2], p, p_scale, f"p ({names[0]} vs {names[1]}; alpha {alpha:g})", labels=outline, crop=crop)
    return fig


def plot_voxel_correlation(
    r: Image | np.ndarray,
    p: Image | np.ndarray,
    *,
    title: str = "T1rho vs T2",
    r_range: tuple[float, float] = (0.5, 1.0),
    p_range: tuple[float, float] | None = None,
    alpha: float = 0.05,
    labels: Image | None = None,
):
    """r and p maps of a voxel-wise correlation (figure 7; figure 5 with another ``r_range``).

    Parameters
    ----------
    r, p : Image or ndarray
        Correlation coefficient and p value per voxel on the atlas grid, NaN outside discs.
    title : str
        What was correlated.
    r_range : (float, float)
        Colour range of r (the paper shows T1rho-T2 correlations from 0.5 to 1; use
        (-1, 1) for voxel-by-variable maps). The colour map stays centred on 0.
    p_range : (float, float), optional
        Colour range of p (log scale); default from the data.
    alpha : float
        Significance level marked on the p scale.
    labels : Image, optional
        Atlas disc labels to outline each disc in its colour.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: r, p.
    """
    r_slice, _ = _sagittal(r, what="r map")
    p_slice, _ = _sagittal(p, what="p map")
    r_scale = colour_scale("r", vmin=r_range[0], vmax=r_range[1])
    p_scale = colour_scale("p", values=p_slice, alpha=alpha, vmin=None if p_range is None else p_range[0], vmax=None if p_range is None else p_range[1])
    crop = _finite_crop(r_slice, p_slice)
    outline = _labels_slice(labels, r)
    fig, axes = _figure(1, 2, height=_PANEL_INCHES * 1.4)
    _maps_panel(fig, axes[0, 0], r, r_scale, f"r: {title}", labels=outline, crop=crop)
    _maps_panel(fig, axes[0, 1], p, p_scale, f"p: {title}", labels=outline, crop=crop)
    return fig
