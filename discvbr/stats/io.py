"""Reading the inputs of ``discvbr stats`` and writing its results.

Inputs: registered maps of the subjects on one grid (a folder of images, a list of
files, or one 4D stack with subjects on the last axis) and a table of subject
variables (a CSV/TSV with a ``subject`` column, or a DiscVBR cohort manifest).

Outputs, all written atomically: one NIfTI per map on the atlas grid (every disc in
the same image), CSV tables (``summary``, ``clusters``, ``peaks``, ``roi``,
``excluded``) and ``provenance.json`` with versions, options and subjects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import Image, atomic_write, read_image, write_image, write_json
from discvbr.manifest import SERIES_KINDS, read_manifest
from discvbr.stats.study import StudyResult

__all__ = ["read_map_stack", "read_variables", "save_study", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_map_stack(
    sources: Sequence[str | os.PathLike],
    *,
    subject_pattern: str | None = None,
    what: str = "maps",
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Read one map per subject into a stack ``(n_subjects, X, Y, Z)``.

    Parameters
    ----------
    sources : sequence of path
        A folder (every NIfTI/NRRD image in it, sorted by name), image files (one per
        subject), or a single 4D image with subjects on the last axis.
    subject_pattern : str, optional
        Regular expression applied to each file name (without its suffix) whose first
        group is the subject id, e.g. ``"(sub-\\w+)_t1rho"``; default: the whole name.
    what : str
        Name of the stack in messages.

    Returns
    -------
    stack : ndarray of float32, shape (n_subjects, X, Y, Z)
    affine : ndarray, shape (4, 4)
        Voxel -> RAS mm of the common grid.
    subjects : list of str or None
        Subject id per row; None for a 4D stack (rows then follow the variables table).

    Raises
    ------
    DiscVBRError
        Missing files, images on different grids, names the pattern does not match,
        duplicate subject ids.
    """
    paths = [Path(s) for s in sources]
    if not paths:
        raise DiscVBRError(f"{what}: no input given")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
        if not paths:
            raise DiscVBRError(f"{what}: folder {folder} holds no NIfTI or NRRD image")
    if len(paths) == 1:
        image = read_image(paths[0], what=what)
        if image.array.ndim != 4:
            raise DiscVBRError(
                f"{what}: {paths[0]} is a single {image.array.ndim}D image; give a 4D stack (subjects on the last axis), "
                "a folder, or one file per subject"
            )
        stack = np.moveaxis(np.asarray(image.array, dtype=np.float32), -1, 0)
        return np.ascontiguousarray(stack), image.affine, None
    images = []
    for p in paths:
        image = read_image(p, what=f"{what} file")
        if image.array.ndim != 3:
            raise DiscVBRError(f"{what}: {p} has shape {image.shape}; expected one 3D map per subject")
        if images and not image.same_grid(images[0][1]):
            raise DiscVBRError(
                f"{what}: {p} is not on the grid of {images[0][0]} (shape {image.shape} vs {images[0][1].shape}); "
                "maps must be registered to the same atlas"
            )
        images.append((p, image))
    subjects = [_subject_id(p, subject_pattern, what) for p, _ in images]
    duplicated = sorted({s for s in subjects if subjects.count(s) > 1})
    if duplicated:
        raise DiscVBRError(f"{what}: several files for subject(s) {', '.join(duplicated)}")
    stack = np.stack([np.asarray(img.array, dtype=np.float32) for _, img in images])
    return stack, images[0][1].affine, subjects


def _subject_id(path: Path, pattern: str | None, what: str) -> str:
    stem = _stem(path)
    if pattern is None:
        return stem
    try:
        match = re.search(pattern, stem)
    except re.error as exc:
        raise DiscVBRError(f"subject pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if match is None:
        raise DiscVBRError(f"{what}: file name {path.name} does not match the subject pattern {pattern!r}")
    return match.group(1) if match.groups() else match.group(0)


def read_variables(path: str | os.PathLike, *, session: str | None = None) -> pd.DataFrame:
    """Subject variables indexed by subject id, from a CSV/TSV table or a cohort manifest.

    Parameters
    ----------
    path : path-like
        A DiscVBR manifest (recognised by its series columns; see
        :mod:`discvbr.manifest`) or a table whose ``subject`` column (else its first
        column) holds the subject ids.
    session : str, optional
        For a manifest with several sessions per subject: the session whose variables
        are used.

    Returns
    -------
    DataFrame
        Indexed by subject id; missing values are NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise DiscVBRError(f"variables table not found: {path}")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        header = pd.read_csv(path, sep=sep, nrows=0)
    except Exception as exc:
        raise DiscVBRError(f"variables table {path} could not be read: {exc}") from None
    columns = [str(c).strip().lower() for c in header.columns]
    if "subject" in columns and any(k in columns for k in SERIES_KINDS):
        table = read_manifest(path, check_images=False, check_files=False).variables()
        sessions = table.index.get_level_values("session")
        if session is not None:
            if session not in set(sessions):
                raise DiscVBRError(f"manifest {path}: no session {session!r} (sessions: {', '.join(sorted(set(sessions)))})")
            return table.xs(session, level="session")
        if table.index.get_level_values("subject").duplicated().any():
            raise DiscVBRError(
                f"manifest {path} has several sessions per subject ({', '.join(sorted(set(sessions)))}); choose one"
            )
        return table.droplevel("session")
    id_column = header.columns[columns.index("subject")] if "subject" in columns else header.columns[0]
    table = pd.read_csv(path, sep=sep, dtype={id_column: str})  # ids such as 007 stay text
    table[id_column] = table[id_column].astype(str).str.strip()
    if table[id_column].duplicated().any():
        dup = sorted(set(table[id_column][table[id_column].duplicated()]))
        raise DiscVBRError(f"variables table {path}: subject(s) {', '.join(dup)} appear more than once")
    return table.set_index(id_column)


def save_study(out_dir: str | os.PathLike, study: StudyResult, *, affine: np.ndarray) -> list[Path]:
    """Write a study's maps (NIfTI on the atlas grid), tables (CSV) and provenance (JSON).

    Parameters
    ----------
    out_dir : path-like
        Output folder (created).
    study : StudyResult
        From :func:`discvbr.stats.analyze_discs`.
    affine : ndarray, shape (4, 4)
        Voxel -> RAS mm of the atlas grid (adds mm coordinates to the tables).

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names = [name for name in next(iter(study.regions.values())).values if all(name in r.values for r in study.regions.values())]
    for name in names:
        array = study.map(name)
        if array.dtype == np.int64:
            array = array.astype(np.int32)
        written.append(write_image(out / f"{name}.nii.gz", Image(array, affine)))
    tables = {
        "summary": study.summary_table(),
        "clusters": _with_mm(study.clusters_table(), affine, ("peak_index_", "centre_index_")),
        "peaks": _with_mm(study.peaks_table(), affine, ("index_",)),
        "roi": study.roi_table(),
        "excluded": study.excluded_table(),
    }
    for name, table in tables.items():
        path = out / f"{name}.csv"
        with atomic_write(path) as tmp:
            table.to_csv(tmp, index=name in ("summary", "roi"))
        written.append(path)
    written.append(write_json(out / "provenance.json", _provenance(study)))
    return written


def _with_mm(table: pd.DataFrame, affine: np.ndarray, prefixes: tuple[str, ...]) -> pd.DataFrame:
    if table.empty:
        return table
    table = table.copy()
    for prefix in prefixes:
        axes = [f"{prefix}{i}" for i in range(3)]
        if not all(a in table.columns for a in axes):
            continue
        ijk = table[axes].to_numpy(dtype=float)
        ras = ijk @ affine[:3, :3].T + affine[:3, 3]
        stem = prefix.replace("index_", "")
        for axis, letter in enumerate("RAS"):
            table[f"{stem}{letter}_mm"] = ras[:, axis]
    return table


def _provenance(study: StudyResult) -> dict:
    import numba
    import scipy

    return {
        "discvbr": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "pandas": pd.__version__,
        "parameters": study.parameters,
        "failures": study.failures,
        "regions": {
            level: {
                "description": result.description,
                "parameters": result.parameters,
                "subjects": list(result.subjects),
                "excluded": result.excluded,
                "n_tests": result.n_tests,
                "n_voxels": result.n_voxels,
            }
            for level, result in study.regions.items()
        },
    }
