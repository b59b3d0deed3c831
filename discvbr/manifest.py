"""The cohort manifest: one row per subject and session.

A manifest is a CSV (``.csv``) or TSV (``.tsv``) file that users fill in by hand
or that :mod:`discvbr.phantom` writes. Columns (header names are case-insensitive):

============================  ==========================================================
``subject``                   subject identifier (required; a plain name, see
                              :mod:`discvbr.naming`: it becomes a folder name)
``session``                   session identifier (optional; default ``"1"``; a plain name)
``t1rho``, ``t2``             the series: one 4D image, or one 3D image per echo
                              separated by ``;``. Paths are relative to the manifest's
                              folder. At least one series per row.
``t1rho_times``, ``t2_times`` spin-lock / echo times in ms, separated by ``;``
                              (required with their series; ``,`` also works)
``mask``                      optional disc label map on the grid of the first series
                              (1 = L5S1 ... 5 = L1L2), e.g. manual or corrected masks
``age``                       years
``sex``                       ``M`` or ``F``
``bmi``                       kg/m^2
``group``                     a label, e.g. ``patient`` / ``control``
``odi``                       Oswestry Disability Index, 0-100
``fat_fraction``              paraspinal muscle fat fraction, percent
``pfirrmann_<LEVEL>``         Pfirrmann grade 1-5 of that disc (e.g. ``pfirrmann_L4L5``)
``mpfirrmann_<LEVEL>``        modified Pfirrmann grade 1-8
``var_<name>``                any other variable of the user's (numeric when every
                              non-empty value is a number, text otherwise)
============================  ==========================================================

Empty cells are missing values: they stay missing (NaN), never filled. A column not
in this list is refused, so a typo cannot silently drop a variable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, atomic_write, check_file, parse_times, read_geometry, read_series
from discvbr.levels import DISC_LEVELS
from discvbr.naming import check_id

__all__ = [
    "SERIES_KINDS",
    "SeriesRef",
    "SessionEntry",
    "Cohort",
    "read_manifest",
    "write_manifest",
    "encode_variables",
]

SERIES_KINDS: tuple[str, ...] = ("t1rho", "t2")
MAX_PROBLEMS_LISTED = 12


def _number(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        if integer and value != int(value):
            raise ValueError(f"{text!r} is not a whole number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{text!r} is outside {lo:g}..{hi:g}")
        return value

    return parse


def _sex(text: str) -> str:
    value = text.strip().upper()
    aliases = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}
    if value not in aliases:
        raise ValueError(f"{text!r} is not M or F")
    return aliases[value]


def _label(text: str) -> str:
    return text.strip()


#: Parser per known clinical column (canonical name -> text -> value).
CLINICAL_COLUMNS: dict[str, Callable[[str], object]] = {
    "age": _number(0, 130),
    "sex": _sex,
    "bmi": _number(8, 90),
    "group": _label,
    "odi": _number(0, 100),
    "fat_fraction": _number(0, 100),
    **{f"pfirrmann_{lvl}": _number(1, 5, integer=True) for lvl in DISC_LEVELS},
    **{f"mpfirrmann_{lvl}": _number(1, 8, integer=True) for lvl in DISC_LEVELS},
}
_STRUCTURE_COLUMNS = ("subject", "session", "mask") + SERIES_KINDS + tuple(f"{k}_times" for k in SERIES_KINDS)


def _canonical_column(name: str) -> str | None:
    """Canonical spelling of a header, or None when it is not a known column."""
    low = name.strip().lower()
    if low in _STRUCTURE_COLUMNS:
        return low
    for canonical in CLINICAL_COLUMNS:
        if low == canonical.lower():
            return canonical
    if low.startswith("var_") and len(low) > 4:
        return "var_" + name.strip()[4:]
    return None


@dataclass(frozen=True)
class SeriesRef:
    """Where one multi-echo series lives and its times, before it is loaded."""

    kind: str
    paths: tuple[Path, ...]
    times: np.ndarray

    def load(self) -> EchoSeries:
        """Read the images (see :func:`discvbr.io.read_series`)."""
        return read_series(self.paths, self.times, kind=self.kind)


@dataclass(frozen=True)
class SessionEntry:
    """One manifest row: a subject's session with its series, mask and variables."""

    subject: str
    session: str
    series: dict[str, SeriesRef]
    mask: Path | None = None
    variables: dict[str, object] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``"<subject>/<session>"``, unique within a cohort."""
        return f"{self.subject}/{self.session}"

    @property
    def first_series(self) -> SeriesRef:
        """The series segmentation runs on: T1rho when present, as in the paper."""
        for kind in SERIES_KINDS:
            if kind in self.series:
                return self.series[kind]
        raise DiscVBRError(f"subject {self.subject}, session {self.session}: no series")


@dataclass(frozen=True)
class Cohort:
    """All sessions of a study, in manifest order."""

    entries: tuple[SessionEntry, ...]
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(e.subject for e in self.entries))

    def variables(self) -> pd.DataFrame:
        """Clinical variables, one row per session, index ``(subject, session)``.

        Missing values are NaN (numeric) or None (text); nothing is filled in.
        """
        columns = sorted({k for e in self.entries for k in e.variables}, key=_variable_order)
        rows = [[e.variables.get(c, np.nan) for c in columns] for e in self.entries]
        index = pd.MultiIndex.from_tuples([(e.subject, e.session) for e in self.entries], names=["subject", "session"])
        return pd.DataFrame(rows, index=index, columns=columns)


def _variable_order(name: str) -> tuple[int, str]:
    known = list(CLINICAL_COLUMNS)
    return (known.index(name), name) if name in known else (len(known), name)


def read_manifest(path: str | os.PathLike, *, check_images: bool = True, check_files: bool = True) -> Cohort:
    """Read and validate a cohort manifest.

    Parameters
    ----------
    path : path-like
        ``.csv`` or ``.tsv`` file (see the module documentation for its columns).
    check_images : bool
        Also check that every image exists, that each series has as many echoes as
        times and that all echoes (and the mask) share one grid, from the file headers.
    check_files : bool
        With ``check_images=False``: still check that every file exists (the pipeline
        stops on a missing file, but reports a damaged one for its subject only).

    Returns
    -------
    Cohort

    Raises
    ------
    DiscVBRError
        Listing every problem found (up to a dozen), each naming the row, the subject
        and the field at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise DiscVBRError(f"manifest {path} is a folder, not a file" if path.is_dir() else f"manifest not found: {path}")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:
        raise DiscVBRError(f"manifest {path} could not be read as {'TSV' if sep == chr(9) else 'CSV'}: {exc}") from None

    problems: list[str] = []
    rename: dict[str, str] = {}
    for column in table.columns:
        canonical = _canonical_column(str(column))
        if canonical is None:
            problems.append(
                f"unknown column {str(column)!r}; known columns: {', '.join(_STRUCTURE_COLUMNS)}, "
                f"{', '.join(c for c in CLINICAL_COLUMNS if not c.startswith('mpf'))}, mpfirrmann_<LEVEL>; "
                "put other variables in columns named var_<name>"
            )
        elif canonical in rename.values():
            problems.append(f"column {canonical!r} appears twice")
        else:
            rename[column] = canonical
    if "subject" not in rename.values():
        problems.append("no 'subject' column")
    if not any(k in rename.values() for k in SERIES_KINDS):
        problems.append(f"no series column; give at least one of {', '.join(SERIES_KINDS)}")
    for kind in SERIES_KINDS:
        if kind in rename.values() and f"{kind}_times" not in rename.values():
            problems.append(f"column {kind!r} needs a column {kind + '_times'!r} with its times in ms")
    if problems:
        raise DiscVBRError(_format_problems(path, problems))
    table = table.rename(columns=rename)
    if table.empty:
        raise DiscVBRError(f"manifest {path} has no rows")

    base = path.parent
    custom_numeric = {
        c: _all_numeric(table[c]) for c in table.columns if c.startswith("var_")
    }
    entries: list[SessionEntry] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(table.to_dict("records")):
        line = i + 2  # the header is line 1
        entry = _parse_row(row, line, base, custom_numeric, check_images, check_files, problems)
        if entry is None:
            continue
        if entry.key in seen:
            problems.append(f"row {line}: subject {entry.subject}, session {entry.session} already given in row {seen[entry.key]}")
        seen[entry.key] = line
        entries.append(entry)
    if problems:
        raise DiscVBRError(_format_problems(path, problems))
    return Cohort(tuple(entries), path)


def _all_numeric(values: Iterable[str]) -> bool:
    for v in values:
        if v.strip() == "":
            continue
        try:
            float(v)
        except ValueError:
            return False
    return True


def _parse_row(
    row: dict[str, str],
    line: int,
    base: Path,
    custom_numeric: dict[str, bool],
    check_images: bool,
    check_files: bool,
    problems: list[str],
) -> SessionEntry | None:
    subject = row.get("subject", "").strip()
    where = f"row {line}" + (f" (subject {subject})" if subject else "")
    if not subject:
        problems.append(f"{where}, field 'subject': empty")
        return None
    session = row.get("session", "").strip() or "1"
    n_before = len(problems)
    for name, value in (("subject", subject), ("session", session)):
        try:
            check_id(value, what=f"row {line}, field '{name}'")
        except DiscVBRError as exc:
            problems.append(str(exc))

    series: dict[str, SeriesRef] = {}
    for kind in SERIES_KINDS:
        text = row.get(kind, "").strip()
        times_text = row.get(f"{kind}_times", "").strip()
        if not text:
            if times_text:
                problems.append(f"{where}, field '{kind}_times': times given but no {kind} series")
            continue
        paths = tuple(_resolve(base, p) for p in text.split(";") if p.strip())
        try:
            times = parse_times(times_text, what=f"{where}, field '{kind}_times'")
        except DiscVBRError as exc:
            problems.append(str(exc) if times_text else f"{where}, field '{kind}_times': empty")
            continue
        ref = SeriesRef(kind, paths, times)
        if check_images:
            _check_series(ref, where, problems)
        elif check_files:
            problems.extend(f"{where}, field '{kind}': {_file_problem(p)}" for p in paths if not p.is_file())
        series[kind] = ref
    if not series and len(problems) == n_before:
        problems.append(f"{where}: no series; fill in {' or '.join(SERIES_KINDS)}")

    mask = None
    mask_text = row.get("mask", "").strip()
    if mask_text:
        mask = _resolve(base, mask_text)
        if check_images and series and len(problems) == n_before:
            _check_mask(mask, next(iter(series.values())), where, problems)
        elif check_files and not mask.is_file():
            problems.append(f"{where}, field 'mask': {_file_problem(mask)}")

    variables: dict[str, object] = {}
    for column, text in row.items():
        if column in _STRUCTURE_COLUMNS:
            continue
        text = text.strip()
        if column.startswith("var_"):
            if not text:
                variables[column] = np.nan if custom_numeric[column] else None
            else:
                variables[column] = float(text) if custom_numeric[column] else text
            continue
        if not text:
            variables[column] = None if column in ("sex", "group") else np.nan
            continue
        try:
            variables[column] = CLINICAL_COLUMNS[column](text)
        except ValueError as exc:
            problems.append(f"{where}, field '{column}': {exc}")
    if len(problems) > n_before:
        return None
    return SessionEntry(subject, session, series, mask, variables)


def _file_problem(path: Path) -> str:
    try:
        check_file(path, what="")
    except DiscVBRError as exc:
        return str(exc)
    return ""


def _resolve(base: Path, text: str) -> Path:
    p = Path(text.strip()).expanduser()
    return p if p.is_absolute() else base / p


def _check_series(ref: SeriesRef, where: str, problems: list[str]) -> None:
    field_name = f"{where}, field '{ref.kind}'"
    geometries = []
    for i, p in enumerate(ref.paths):
        if not p.is_file():
            problems.append(f"{field_name}: {_file_problem(p)}")
            return
        try:
            geometries.append(read_geometry(p, what=f"{ref.kind} echo {i + 1}"))
        except DiscVBRError as exc:
            problems.append(f"{field_name}: {exc}")
            return
    if len(ref.paths) == 1:
        shape = geometries[0][0]
        n_echoes = shape[3] if len(shape) == 4 else 1
        if len(shape) not in (3, 4):
            problems.append(f"{field_name}: {ref.paths[0]} has shape {shape}; expected 3D echoes or one 4D file")
        elif n_echoes != ref.times.size:
            problems.append(
                f"{field_name}: {ref.paths[0]} holds {n_echoes} echo(es) but '{ref.kind}_times' gives {ref.times.size}"
            )
        return
    if len(ref.paths) != ref.times.size:
        problems.append(f"{field_name}: {len(ref.paths)} echo files but '{ref.kind}_times' gives {ref.times.size} times")
        return
    shape0, affine0 = geometries[0]
    for i, (shape, affine) in enumerate(geometries[1:], start=2):
        if shape[:3] != shape0[:3] or not np.allclose(affine, affine0, atol=1e-3):
            problems.append(
                f"{field_name}: echo {i} ({ref.paths[i - 1]}) is not on the grid of echo 1 ({ref.paths[0]}): "
                f"shape {shape[:3]} vs {shape0[:3]}"
                + ("" if shape[:3] != shape0[:3] else ", different spacing/origin/direction")
            )
            return


def _check_mask(mask: Path, ref: SeriesRef, where: str, problems: list[str]) -> None:
    try:
        shape, affine = read_geometry(mask, what="mask")
        shape0, affine0 = read_geometry(ref.paths[0], what=ref.kind)
    except DiscVBRError as exc:
        problems.append(f"{where}, field 'mask': {exc}")
        return
    if shape[:3] != shape0[:3] or not np.allclose(affine, affine0, atol=1e-3):
        problems.append(f"{where}, field 'mask': {mask} is not on the grid of the {ref.kind} series ({ref.paths[0]})")


def _format_problems(path: Path, problems: list[str]) -> str:
    head = f"manifest {path}: " if len(problems) == 1 else f"manifest {path} has {len(problems)} problems:\n  "
    shown = problems[:MAX_PROBLEMS_LISTED]
    more = len(problems) - len(shown)
    return head + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")


def write_manifest(path: str | os.PathLike, cohort: Cohort | Iterable[SessionEntry]) -> Path:
    """Write a manifest (CSV or TSV by suffix), atomically, with paths relative to its folder."""
    path = Path(path)
    entries = list(cohort.entries if isinstance(cohort, Cohort) else cohort)
    base = path.parent.resolve()
    rows = []
    for e in entries:
        row: dict[str, object] = {"subject": e.subject, "session": e.session}
        for kind in SERIES_KINDS:
            if kind in e.series:
                ref = e.series[kind]
                row[kind] = ";".join(_relative(p, base) for p in ref.paths)
                row[f"{kind}_times"] = ";".join(f"{t:g}" for t in ref.times)
        if e.mask is not None:
            row["mask"] = _relative(e.mask, base)
        for k, v in e.variables.items():
            row[k] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else _format_value(v)
        rows.append(row)
    table = pd.DataFrame(rows)
    ordered = [c for c in _STRUCTURE_COLUMNS if c in table.columns]
    ordered += sorted((c for c in table.columns if c not in ordered), key=_variable_order)
    with atomic_write(path) as tmp:
        table[ordered].to_csv(tmp, sep="\t" if path.suffix.lower() == ".tsv" else ",", index=False)
    return path


def _relative(p: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(Path(p).resolve(), base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(p)


def _format_value(v: object) -> str:
    if isinstance(v, float) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def encode_variables(table: pd.DataFrame) -> pd.DataFrame:
    """Numeric coding of a variables table for statistics.

    ``sex`` becomes 0 (F) / 1 (M); ``group`` with two levels becomes 0/1, ``control``
    being 0 when present (otherwise the alphabetically first level); text ``var_``
    columns with two levels likewise. Missing values stay NaN.

    Raises
    ------
    DiscVBRError
        For a text column with more than two levels (it has no single numeric coding).
    """
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        values = table[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if column == "sex" and numeric.notna().sum() < values.notna().sum():
            out[column] = values.map({"F": 0.0, "M": 1.0}).astype(float)
            continue
        if numeric.notna().sum() == values.notna().sum():
            out[column] = numeric.astype(float)
            continue
        levels = sorted({v for v in values if isinstance(v, str) and v})
        if len(levels) > 2:
            raise DiscVBRError(
                f"variable {column!r} has {len(levels)} levels ({', '.join(levels)}); "
                "code it as numbers or split it into two-level columns"
            )
        zero = "control" if "control" in levels else levels[0] if levels else None
        out[column] = values.map(lambda v: np.nan if pd.isna(v) or v == "" else float(v != zero)).astype(float)
    return out
