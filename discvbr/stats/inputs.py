"""Checking and aligning the inputs of the voxel-wise analyses.

A stack of maps is an array ``(n_subjects, *spatial)``: one registered map per
subject, NaN outside the disc and where a fit was invalid. Its rows are matched to
the rows of a table of subject variables by subject id. Everything here either
returns clean arrays or raises one :class:`~discvbr.DiscVBRError` that names the
subject, variable or voxel at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.naming import check_id
from discvbr.manifest import encode_variables

__all__ = ["Region", "prepare_maps", "align_subjects", "numeric_variables"]

MAX_LISTED = 10


@dataclass(frozen=True)
class Region:
    """Where the analysed voxels lie on their grid.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of one map (the grid the results are written on).
    indices : ndarray of int64, shape (V,)
        Flat (C-order) indices into ``shape`` of the analysed voxels, increasing.
    spatial : bool
        True when the voxels have neighbours on a grid (maps given as images, or as
        ``(subjects, voxels)`` together with a ``mask`` placing them); False for an
        unstructured list of voxels, where cluster and TFCE inference are undefined.
    """

    shape: tuple[int, ...]
    indices: np.ndarray
    spatial: bool

    @property
    def n_voxels(self) -> int:
        return int(self.indices.size)

    def unflatten(self, values: np.ndarray, *, fill: float = np.nan) -> np.ndarray:
        """Place per-voxel ``values`` (V,) on the grid; other voxels get ``fill``."""
        values = np.asarray(values)
        dtype = np.result_type(values.dtype, np.asarray(fill).dtype)
        out = np.full(int(np.prod(self.shape)), fill, dtype=dtype)
        out[self.indices] = values
        return out.reshape(self.shape)

    def coordinates(self) -> np.ndarray:
        """Voxel index coordinates ``(V, ndim)`` of the analysed voxels."""
        return np.stack(np.unravel_index(self.indices, self.shape), axis=1)


def prepare_maps(
    maps: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    what: str = "maps",
    subjects: Sequence[str] | None = None,
) -> tuple[np.ndarray, Region]:
    """Flatten a stack of maps to ``(n_subjects, n_voxels)`` over its analysable voxels.

    Parameters
    ----------
    maps : array_like, shape (n_subjects, *spatial) or (n_subjects, n_voxels)
        One map per subject; NaN outside the disc and for invalid fits.
    mask : array_like of bool, optional
        Of the maps' spatial shape: restrict the analysis to these voxels (one disc).
        Of another shape, with ``(n_subjects, n_voxels)`` maps: a grid mask with
        ``n_voxels`` True voxels that places the columns on the grid (C order), which
        enables cluster and TFCE inference. ``(n_subjects, n_voxels)`` maps without such
        a mask are an unstructured list of voxels.
    what : str
        Name of the stack in error messages.
    subjects : sequence of str, optional
        Subject ids of the rows, used in error messages.

    Returns
    -------
    values : ndarray of float64, shape (n_subjects, V)
        The voxels that are finite in at least one subject (inside ``mask``).
    region : Region
        Where these voxels lie.

    Raises
    ------
    DiscVBRError
        Non-numeric or infinite values, a mask that does not fit, no finite voxel, or
        voxels that have the same value in every subject (usually a fill value such as
        0 used instead of NaN).
    """
    try:
        arr = np.asarray(maps, dtype=np.float64)
    except (TypeError, ValueError):
        raise DiscVBRError(f"{what}: not a numeric array") from None
    if arr.ndim < 2:
        raise DiscVBRError(f"{what}: expected an array (subjects, voxels) or (subjects, *spatial), got shape {arr.shape}")
    n = arr.shape[0]
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise DiscVBRError(f"{what}: mask must be boolean (0/1), got values {np.unique(mask)[:5].tolist()}")
            mask = mask.astype(bool)
    if arr.ndim == 2 and mask is not None and mask.shape != arr.shape[1:]:
        if int(mask.sum()) != arr.shape[1]:
            raise DiscVBRError(
                f"{what}: {arr.shape[1]} voxel columns but the mask has {int(mask.sum())} voxels; "
                "the mask must have one True voxel per column"
            )
        shape = tuple(int(s) for s in mask.shape)
        placed = np.flatnonzero(mask.reshape(-1))
        flat = arr
        spatial = True
    else:
        shape = tuple(int(s) for s in arr.shape[1:])
        flat = arr.reshape(n, -1)
        spatial = arr.ndim >= 3
        if mask is not None and mask.shape != arr.shape[1:]:
            raise DiscVBRError(f"{what}: mask of shape {mask.shape} does not fit maps of spatial shape {arr.shape[1:]}")
        placed = np.arange(flat.shape[1]) if mask is None else np.flatnonzero(mask.reshape(-1))
        if mask is not None:
            flat = flat[:, placed]
    finite = np.isfinite(flat)
    if finite.all():
        # The usual case: one copy, so that later changes to the caller's array do not
        # reach the results' models.
        values = np.array(flat, dtype=np.float64, order="C")
        region = Region(shape, placed.astype(np.int64), spatial)
        _refuse_constant_voxels(values, region, what, finite=None)
        return values, region
    if np.isinf(flat).any():
        row = int(np.nonzero(np.isinf(flat).any(axis=1))[0][0])
        who = subjects[row] if subjects is not None else f"row {row}"
        raise DiscVBRError(f"{what}: infinite value in the map of subject {who}; mark invalid fits as NaN")
    keep = finite.any(axis=0)
    if not keep.any():
        raise DiscVBRError(f"{what}: no voxel has a finite value in any subject" + (" inside the mask" if mask is not None else ""))
    values = np.ascontiguousarray(flat[:, keep])
    region = Region(shape, placed[keep].astype(np.int64), spatial)
    _refuse_constant_voxels(values, region, what, finite=finite[:, keep])
    return values, region


def _refuse_constant_voxels(values: np.ndarray, region: Region, what: str, *, finite: np.ndarray | None) -> None:
    if finite is None:  # every value finite
        high, low = values.max(axis=0), values.min(axis=0)
        count = np.full(values.shape[1], values.shape[0])
    else:
        high = np.where(finite, values, -np.inf).max(axis=0)
        low = np.where(finite, values, np.inf).min(axis=0)
        count = finite.sum(axis=0)
    constant = (high == low) & (count >= 2)
    if constant.any():
        first = int(np.flatnonzero(constant)[0])
        where = tuple(int(c) for c in region.coordinates()[first])
        raise DiscVBRError(
            f"{what}: {int(constant.sum())} voxel(s) have the same value in every subject (e.g. voxel {where} = "
            f"{high[first]:g} in all {int(count[first])} subjects that have it); voxels outside the disc and invalid "
            "fits must be NaN, not a fill value"
        )


def align_subjects(
    n_rows: int,
    subjects: Sequence[str] | None,
    table: pd.DataFrame | None,
    *,
    what: str = "maps",
) -> tuple[tuple[str, ...], pd.DataFrame | None]:
    """Match the rows of a map stack to the rows of a variables table.

    Parameters
    ----------
    n_rows : int
        Number of maps (subjects) in the stack.
    subjects : sequence of str, optional
        Subject id of each map. Without it the maps are taken to be in the order of
        ``table.index`` (which must then have ``n_rows`` rows), or numbered ``"1"`` ...
        ``"n"`` when there is no table.
    table : DataFrame, optional
        Subject variables indexed by subject id (one row per subject).
    what : str
        Name of the stack in error messages.

    Returns
    -------
    ids : tuple of str
        Subject id per map row.
    rows : DataFrame or None
        ``table`` reordered to the map rows.

    Raises
    ------
    DiscVBRError
        Duplicate ids, a table indexed by (subject, session), maps whose subject is not
        in the table, or a row count that does not match.
    """
    if table is not None:
        if not isinstance(table, pd.DataFrame):
            raise DiscVBRError("variables must be a pandas DataFrame indexed by subject id")
        if isinstance(table.index, pd.MultiIndex):
            raise DiscVBRError(
                "variables table is indexed by " + ", ".join(str(n) for n in table.index.names)
                + "; select one session first (e.g. table.xs('1', level='session')) so that it is indexed by subject"
            )
        index = [str(s) for s in table.index]
        duplicated = sorted({s for s in index if index.count(s) > 1})
        if duplicated:
            raise DiscVBRError(f"variables table: subject id(s) appear more than once: {_listing(duplicated)}")
        table = table.copy()
        table.index = pd.Index(index, name=table.index.name or "subject")
    if subjects is None:
        if table is None:
            return tuple(str(i + 1) for i in range(n_rows)), None
        if len(table) != n_rows:
            raise DiscVBRError(
                f"{what}: {n_rows} maps but the variables table has {len(table)} rows; give the subject id of each "
                "map (subjects=...) so that rows can be matched"
            )
        return tuple(table.index), table
    ids = tuple(check_id(str(s), what=f"{what}, subject id") for s in subjects)
    if len(ids) != n_rows:
        raise DiscVBRError(f"{what}: {n_rows} maps but {len(ids)} subject ids")
    duplicated = sorted({s for s in ids if ids.count(s) > 1})
    if duplicated:
        raise DiscVBRError(f"{what}: subject id(s) given more than once: {_listing(duplicated)}")
    if table is None:
        return ids, None
    missing = [s for s in ids if s not in table.index]
    if missing:
        raise DiscVBRError(
            f"{what}: {len(missing)} subject(s) have maps but no row in the variables table: {_listing(missing)} "
            f"(table ids look like {_listing(list(table.index)[:3])})"
        )
    return ids, table.loc[list(ids)]


def numeric_variables(rows: pd.DataFrame, names: Sequence[str], *, analysis: str) -> pd.DataFrame:
    """Numeric coding of the named columns.

    Numeric columns are used as they are; text columns are coded by
    :func:`discvbr.manifest.encode_variables` (sex F/M -> 0/1, two-level labels -> 0/1).

    Raises
    ------
    DiscVBRError
        A column that is not in the table, or text with more than two levels.
    """
    absent = [n for n in names if n not in rows.columns]
    if absent:
        raise DiscVBRError(
            f"{analysis}: variable(s) {_listing(absent)} not in the table; its columns are {_listing(list(rows.columns))}"
        )
    selected = rows[list(names)]
    numeric = [n for n in names if pd.api.types.is_numeric_dtype(selected[n])]
    # Numeric columns pass as they are (a 0/1 sex column stays 0/1); text is coded.
    coded = encode_variables(selected[[n for n in names if n not in numeric]])
    for name in numeric:
        coded[name] = selected[name].astype(float)
    return coded[list(names)]


def _listing(items: Sequence[object]) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" ... ({len(items)} in all)" if len(items) > MAX_LISTED else "")
