"""Colour scales of the maps, the same in the 3D scenes, the matplotlib figures and Slicer.

One :class:`ColourScale` says how a map's values become colours: a table of RGBA entries
spread evenly over ``[vmin, vmax]`` (or over ``[log10 vmin, log10 vmax]`` for p values),
values outside clamped to the end colours, exactly as ``vtkLookupTable`` maps scalars.

* relaxation times and group means (``"T"``): sequential (viridis), range from the data's
  2nd-98th percentiles unless given;
* correlation coefficients (``"r"``), t statistics (``"t"``) and differences
  (``"delta"``): diverging blue-white-red centred on 0 (0 is white whatever the range, so
  a range of 0.5..1, as the paper shows T1rho-T2 correlations, is all shades of red);
* p values (``"p"``): log10 scale; values under ``alpha`` run from yellow (most
  significant) to red (just significant), values at or over ``alpha`` are grey, and the
  colour bar marks ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from discvbr.errors import DiscVBRError

__all__ = ["ColourScale", "colour_scale", "MAP_KINDS"]

#: Map kinds and what they hold.
MAP_KINDS: dict[str, str] = {
    "T": "relaxation time or group mean, ms",
    "r": "correlation coefficient",
    "t": "t statistic",
    "delta": "difference of relaxation times, ms",
    "p": "p value (log scale, alpha marked)",
}
_TABLE_SIZE = 256
_NONSIGNIFICANT_GREY = (0.80, 0.80, 0.80)


@dataclass(frozen=True)
class ColourScale:
    """How map values become colours.

    Attributes
    ----------
    kind : str
        One of :data:`MAP_KINDS`.
    title : str
        Colour-bar title with units, e.g. ``"T1rho (ms)"``.
    vmin, vmax : float
        Range of the table (values beyond take the end colours).
    log : bool
        Entries are spread evenly in log10 of the value (p maps).
    table : ndarray, shape (N, 4)
        RGBA entries in 0..1.
    alpha : float or None
        Significance level marked on p scales.
    """

    kind: str
    title: str
    vmin: float
    vmax: float
    log: bool
    table: np.ndarray
    alpha: float | None = None

    def index(self, values: np.ndarray) -> np.ndarray:
        """Table entry of each value (the rule of ``vtkLookupTable``)."""
        values = np.asarray(values, dtype=float)
        lo, hi = self.vmin, self.vmax
        if self.log:
            values = np.log10(np.clip(values, self.vmin, None))
            lo, hi = np.log10(lo), np.log10(hi)
        n = self.table.shape[0]
        position = (values - lo) / (hi - lo) * n
        return np.clip(np.floor(position), 0, n - 1).astype(int)

    def rgba(self, values: np.ndarray) -> np.ndarray:
        """RGBA (0..1) of each value; NaN gets a transparent entry."""
        values = np.asarray(values, dtype=float)
        out = self.table[self.index(np.nan_to_num(values, nan=self.vmin))]
        out = np.where(np.isfinite(values)[..., None], out, 0.0)
        return out

    def lookup_table(self):
        """The scale as a ``vtkLookupTable`` (log10 scale for p maps, alpha annotated)."""
        from vtkmodules.vtkCommonCore import vtkLookupTable

        lut = vtkLookupTable()
        lut.SetNumberOfTableValues(self.table.shape[0])
        if self.log:
            lut.SetScaleToLog10()
        lut.SetTableRange(self.vmin, self.vmax)
        for i, rgba in enumerate(self.table):
            lut.SetTableValue(i, *map(float, rgba))
        lut.SetNanColor(0.0, 0.0, 0.0, 0.0)
        if self.alpha is not None:
            # vtkScalarBarActor places annotations linearly in the table range even on a log
            # scale: annotate the value whose linear place is alpha's place on the log bar
            where = (np.log10(self.alpha) - np.log10(self.vmin)) / (np.log10(self.vmax) - np.log10(self.vmin))
            lut.SetAnnotation(float(self.vmin + where * (self.vmax - self.vmin)), f"alpha {self.alpha:g}")
        lut.Build()
        return lut

    def matplotlib(self):
        """``(cmap, norm)`` for matplotlib that give the same colours."""
        from matplotlib.colors import ListedColormap, LogNorm, Normalize

        cmap = ListedColormap(self.table, name=f"discvbr-{self.kind}").with_extremes(bad=(0, 0, 0, 0))
        norm = LogNorm(self.vmin, self.vmax, clip=True) if self.log else Normalize(self.vmin, self.vmax, clip=True)
        return cmap, norm


def _sample(name: str, positions: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return np.asarray(colormaps[name](positions), dtype=float)


def colour_scale(
    kind: str,
    *,
    values: np.ndarray | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.05,
    quantity: str = "T1rho",
) -> ColourScale:
    """The colour scale of a map kind.

    Parameters
    ----------
    kind : {"T", "r", "t", "delta", "p"}
        See :data:`MAP_KINDS`.
    values : ndarray, optional
        The map's values, to choose a default range (NaN ignored).
    vmin, vmax : float, optional
        Range. Defaults: T 2nd-98th percentile of ``values``; r -1..1; t and delta
        symmetric about 0 at the largest absolute value; p from min(1e-4, smallest p) to 1.
    alpha : float
        Significance level marked on p scales.
    quantity : str
        Relaxation time named in titles (``"T1rho"``, ``"T2"``).

    Returns
    -------
    ColourScale

    Raises
    ------
    DiscVBRError
        Unknown kind, empty range, non-positive p range, alpha outside (0, 1).
    """
    if kind not in MAP_KINDS:
        raise DiscVBRError(f"unknown map kind {kind!r}; expected one of {', '.join(MAP_KINDS)}")
    finite = np.asarray(values, dtype=float)[np.isfinite(values)] if values is not None else np.empty(0)
    if kind == "p":
        if not 0.0 < alpha < 1.0:
            raise DiscVBRError(f"alpha must be within (0, 1), got {alpha}")
        smallest = float(finite[finite > 0].min()) if np.any(finite > 0) else 1e-4
        lo = float(vmin) if vmin is not None else min(1e-4, smallest)
        hi = float(vmax) if vmax is not None else 1.0
        if lo <= 0 or hi <= lo:
            raise DiscVBRError(f"p colour range must satisfy 0 < min < max, got {lo}..{hi}")
        logs = np.linspace(np.log10(lo), np.log10(hi), _TABLE_SIZE + 1)
        centres = 10 ** (0.5 * (logs[:-1] + logs[1:]))
        ramp = np.clip((np.log10(centres) - np.log10(lo)) / max(np.log10(alpha) - np.log10(lo), 1e-12), 0, 1)
        significant = _sample("autumn_r", 0.15 + 0.85 * ramp)
        table = np.where((centres < alpha)[:, None], significant, [*_NONSIGNIFICANT_GREY, 1.0])
        return ColourScale("p", "p", lo, hi, True, table, alpha)
    if kind == "T":
        if vmin is None or vmax is None:
            if finite.size == 0 and (vmin is None or vmax is None):
                raise DiscVBRError("relaxation map has no finite value: give the colour range (vmin, vmax)")
            lo_default, hi_default = np.percentile(finite, [2, 98]) if finite.size else (vmin, vmax)
            if lo_default == hi_default:  # a constant map: a range of +-1 ms around it
                lo_default, hi_default = lo_default - 1.0, hi_default + 1.0
            vmin = float(lo_default) if vmin is None else vmin
            vmax = float(hi_default) if vmax is None else vmax
        if not vmax > vmin:
            raise DiscVBRError(f"colour range must satisfy min < max, got {vmin}..{vmax}")
        table = _sample("viridis", np.linspace(0, 1, _TABLE_SIZE))
        return ColourScale("T", f"{quantity} (ms)", float(vmin), float(vmax), False, table)
    # diverging kinds, centred on 0
    if vmin is None or vmax is None:
        if kind == "r":
            reach = 1.0
        else:
            if finite.size == 0:
                raise DiscVBRError(f"{kind} map has no finite value: give the colour range (vmin, vmax)")
            reach = float(np.abs(finite).max()) or 1.0
        vmin = -reach if vmin is None else vmin
        vmax = reach if vmax is None else vmax
    if not vmax > vmin:
        raise DiscVBRError(f"colour range must satisfy min < max, got {vmin}..{vmax}")
    half = max(abs(vmin), abs(vmax))
    edges = np.linspace(vmin, vmax, _TABLE_SIZE + 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    table = _sample("RdBu_r", 0.5 + 0.5 * centres / half)
    title = {"r": "r", "t": "t", "delta": f"\u0394 {quantity} (ms)"}[kind]
    return ColourScale(kind, title, float(vmin), float(vmax), False, table)
