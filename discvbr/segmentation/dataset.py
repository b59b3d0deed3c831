"""Training data: labelled sagittal slices from cohort manifests and training lists.

Two kinds of table are read:

* a DiscVBR cohort manifest (:mod:`discvbr.manifest`) whose ``mask`` column holds the
  reference labels: each row's first series (T1rho when present), echo 0, is the image;
* a training list, a CSV with columns ``subject``, ``image``, ``labels`` and optionally
  ``group`` (the unit kept out of training together in cross-validation; default
  ``<source>:<subject>``), ``source`` (a tag for the data's origin; default the file's
  stem) and ``echo`` (echo index of a 4D image; default 0). Paths are relative to the
  list's folder.

Every volume is brought to the canonical sagittal layout and cut into its sagittal
slices, each resampled to the network grid (:mod:`discvbr.segmentation.preprocess`).

Cross-validation folds are split by group, never by slice, stratified by the groups'
sources so each fold gets its share of every kind of data (with three real subjects
and three folds, each fold holds out one real subject: leave one subject out).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.io import Image, read_image, require_sagittal
from discvbr.segmentation.preprocess import GridMap, PreprocessConfig, check_slice_image, labels_to_network_grid, to_network_grid

__all__ = [
    "TrainingSlice",
    "DataSource",
    "read_training_table",
    "slices_from_volume",
    "load_training_slices",
    "assign_folds",
    "write_training_list",
]

N_CLASSES = 6


@dataclass
class TrainingSlice:
    """One labelled sagittal slice on the network grid.

    Attributes
    ----------
    image : ndarray (H, W) float32
        Raw intensities (before CLAHE), resampled and padded.
    labels : ndarray (H, W) uint8
        0 background, 1 = L5S1 ... 5 = L1L2.
    subject, group, source : str
    index : int
        Sagittal slice index in its volume.
    """

    image: np.ndarray
    labels: np.ndarray
    subject: str
    group: str
    source: str
    index: int


@dataclass(frozen=True)
class DataSource:
    """One row of a training table, before loading."""

    subject: str
    group: str
    source: str
    image: Path
    labels: Path
    echo: int = 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_training_table(path: str | os.PathLike) -> tuple[list[DataSource], dict]:
    """Rows of a training list or of a cohort manifest with masks.

    Returns
    -------
    rows : list of DataSource
    provenance : dict
        Path, kind, SHA-256 and row count of the table (for model metadata).

    Raises
    ------
    DiscVBRError
        A missing file, missing columns, or a manifest row without a mask.
    """
    path = Path(path)
    if not path.is_file():
        raise DiscVBRError(f"training data table not found: {path}")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:
        raise DiscVBRError(f"training data table {path} could not be read: {exc}") from None
    columns = {c.strip().lower(): c for c in table.columns}
    base = path.parent
    rows: list[DataSource] = []
    if "image" in columns and "labels" in columns:
        kind = "training-list"
        if "subject" not in columns:
            raise DiscVBRError(f"{path}: a training list needs a 'subject' column")
        default_source = path.stem
        for i, rec in table.iterrows():
            get = lambda name, default="": str(rec[columns[name]]).strip() if name in columns else default  # noqa: E731
            subject, image, labels = get("subject"), get("image"), get("labels")
            if not subject or not image or not labels:
                raise DiscVBRError(f"{path} row {i + 2}: subject, image and labels must all be filled")
            source = get("source") or default_source
            group = get("group") or f"{source}:{subject}"
            try:
                echo = int(get("echo") or 0)
            except ValueError:
                raise DiscVBRError(f"{path} row {i + 2} ({subject}): echo {get('echo')!r} is not an integer") from None
            rows.append(DataSource(subject, group, source, _resolve(base, image), _resolve(base, labels), echo))
    else:
        from discvbr.manifest import read_manifest

        kind = "cohort-manifest"
        cohort = read_manifest(path, check_images=False)
        source = path.parent.name or path.stem
        for entry in cohort:
            if entry.mask is None:
                raise DiscVBRError(f"{path}: {entry.key} has no mask; training needs reference labels in the 'mask' column")
            image = entry.first_series.paths[0]  # a 4D file, or the echo-0 file of a per-echo list
            rows.append(DataSource(f"{entry.subject}/{entry.session}", f"{source}:{entry.subject}", source, image, entry.mask, 0))
    if not rows:
        raise DiscVBRError(f"{path}: no rows")
    return rows, {"path": str(path), "kind": kind, "sha256": _sha256(path), "rows": len(rows)}


def _resolve(base: Path, text: str) -> Path:
    p = Path(text)
    return p if p.is_absolute() else base / p


def slices_from_volume(
    image: Image, labels: Image, *, config: PreprocessConfig, subject: str, group: str, source: str
) -> list[TrainingSlice]:
    """Cut a canonical sagittal volume and its labels into network-grid training slices."""
    spacing = image.spacing
    out = []
    for i in range(image.shape[0]):
        grid = GridMap.build(image.shape[1:3], (float(spacing[1]), float(spacing[2])), config)
        img = to_network_grid(image.array[i], grid)
        fractions = labels_to_network_grid(labels.array[i], grid, N_CLASSES)
        out.append(TrainingSlice(img, fractions.argmax(axis=0).astype(np.uint8), subject, group, source, i))
    return out


def _load_row(row: DataSource, config: PreprocessConfig) -> list[TrainingSlice]:
    img = read_image(row.image, what=f"training image of {row.subject}")
    arr = np.asarray(img.array)
    if arr.ndim == 4:
        if not 0 <= row.echo < arr.shape[3]:
            raise DiscVBRError(f"{row.image}: echo {row.echo} requested but the file has {arr.shape[3]} echoes")
        arr = arr[..., row.echo]
    if arr.ndim != 3:
        raise DiscVBRError(f"{row.image}: training image must be 3D (or 4D with echoes last), got shape {arr.shape}")
    arr = check_slice_image(arr, what=str(row.image))
    lab = read_image(row.labels, what=f"training labels of {row.subject}")
    if np.asarray(lab.array).ndim != 3:
        raise DiscVBRError(f"{row.labels}: labels must be 3D, got shape {lab.shape}")
    image = require_sagittal(Image(arr, img.affine), what=str(row.image))
    labels = require_sagittal(Image(np.asarray(lab.array), lab.affine), what=str(row.labels))
    if not image.same_grid(labels):
        raise DiscVBRError(f"{row.labels} is not on the grid of {row.image}")
    values = np.asarray(labels.array)
    if values.min() < 0 or values.max() > N_CLASSES - 1 or np.any(values != np.round(values)):
        raise DiscVBRError(f"{row.labels}: labels must be integers 0..5 (1 = L5S1 ... 5 = L1L2)")
    labels = Image(values.astype(np.uint8), labels.affine)
    return slices_from_volume(image, labels, config=config, subject=row.subject, group=row.group, source=row.source)


def load_training_slices(
    tables: list[str | os.PathLike], *, config: PreprocessConfig, progress=None
) -> tuple[list[TrainingSlice], list[dict]]:
    """Load every slice of every row of the given tables.

    Returns
    -------
    slices : list of TrainingSlice
    provenance : list of dict
        One entry per table (see :func:`read_training_table`).
    """
    rows: list[DataSource] = []
    provenance = []
    for table in tables:
        r, prov = read_training_table(table)
        rows.extend(r)
        provenance.append(prov)
    slices: list[TrainingSlice] = []
    for k, row in enumerate(rows):
        slices.extend(_load_row(row, config))
        if progress is not None:
            progress(k + 1, len(rows))
    return slices, provenance


def assign_folds(groups: list[str], sources: list[str], *, n_folds: int, seed: int) -> dict[str, int]:
    """Assign each group to a fold (1..n_folds), stratified by the sources it contains.

    Groups sharing the same set of sources are shuffled (with ``seed``) and dealt to the
    folds in turn, so every fold receives its share of each kind of data and a group is
    never split between training and validation.

    Parameters
    ----------
    groups, sources : list of str
        Per slice (or per row): its group and its source.
    n_folds : int
    seed : int

    Returns
    -------
    dict
        Group -> fold number.
    """
    if n_folds < 2:
        raise DiscVBRError(f"cross-validation needs at least 2 folds, got {n_folds}")
    signature: dict[str, set] = {}
    for g, s in zip(groups, sources):
        signature.setdefault(g, set()).add(s)
    unique = sorted(signature)
    if len(unique) < n_folds:
        raise DiscVBRError(f"{len(unique)} subject group(s) cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    by_signature: dict[tuple, list[str]] = {}
    for g in unique:
        by_signature.setdefault(tuple(sorted(signature[g])), []).append(g)
    folds: dict[str, int] = {}
    counts = np.zeros(n_folds, int)
    for sig in sorted(by_signature):
        members = [by_signature[sig][i] for i in rng.permutation(len(by_signature[sig]))]
        # start each stratum at the emptiest fold, so small strata do not pile on fold 1
        start = int(np.argmin(counts))
        for k, g in enumerate(members):
            fold = (start + k) % n_folds
            folds[g] = fold + 1
            counts[fold] += 1
    return folds


def write_training_list(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write a training list CSV (columns subject, image, labels, group, source, echo).

    Paths are written relative to the list's folder, so the list and its data can move together.
    """
    from discvbr.io import atomic_write

    path = Path(path)
    records = []
    for r in rows:
        rec = dict(r)
        for key in ("image", "labels"):
            rec[key] = os.path.relpath(Path(rec[key]).resolve(), path.parent.resolve())
        records.append(rec)
    frame = pd.DataFrame(records, columns=["subject", "image", "labels", "group", "source", "echo"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path
