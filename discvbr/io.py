"""Images with geometry, multi-echo series, and atomic writing.

Conventions used throughout DiscVBR:

* An :class:`Image` is a voxel array plus a 4x4 ``affine`` that maps voxel indices
  ``(i, j, k)`` to physical RAS coordinates in millimetres (the NIfTI and 3D Slicer
  convention; ITK's LPS is derived where needed).
* Sagittal lumbar data are stored with axis 0 = left-right (the sagittal slice index),
  axis 1 = posterior -> anterior, axis 2 = inferior -> superior. A single-slice (2D)
  acquisition is a volume of shape ``(1, ny, nz)``.
* An :class:`EchoSeries` keeps its echoes on the last axis, ``(..., E)``, with the
  echo or spin-lock times in milliseconds: the layout :func:`discvbr.fitting.fit_monoexp`
  takes.
* Every file is written through :func:`atomic_write`: to a temporary file in the same
  folder, renamed over the target only once complete, so a crash never leaves a
  half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from discvbr.errors import DiscVBRError

__all__ = [
    "Image",
    "EchoSeries",
    "atomic_write",
    "ensure_writable",
    "check_file",
    "check_geometry",
    "write_json",
    "read_image",
    "read_geometry",
    "write_image",
    "read_series",
    "write_series",
    "parse_times",
    "validate_times",
    "to_canonical",
    "slice_axis",
    "require_sagittal",
]

GEOMETRY_ATOL_MM = 1e-3
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_NRRD_SUFFIXES = (".nrrd", ".nhdr")
# LPS <-> RAS: flip the first two physical axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Image:
    """A voxel array on a physical grid.

    Parameters
    ----------
    array : ndarray
        Voxel values, indexed ``(i, j, k)`` (extra trailing axes allowed).
    affine : ndarray, shape (4, 4)
        Voxel index -> RAS millimetres.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4):
            raise DiscVBRError(f"affine must be 4x4, got shape {affine.shape}")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along the three index axes."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the index axes."""
        return self.affine[:3, :3] / self.spacing

    def with_array(self, array: np.ndarray) -> "Image":
        """The same grid with other voxel values (spatial shape must match)."""
        array = np.asarray(array)
        if array.shape[:3] != self.array.shape[:3]:
            raise DiscVBRError(f"array of shape {array.shape} does not fit a grid of shape {self.shape[:3]}")
        return Image(array, self.affine)

    def same_grid(self, other: "Image", atol: float = GEOMETRY_ATOL_MM) -> bool:
        """True when both images share spatial shape and geometry (within ``atol`` mm)."""
        return self.shape[:3] == other.shape[:3] and np.allclose(self.affine, other.affine, atol=atol)


@dataclass(frozen=True)
class EchoSeries:
    """Images of one relaxometry acquisition at several echo or spin-lock times.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z, E)
        Magnitude images, echoes on the last axis.
    times : ndarray, shape (E,)
        Echo times (T2) or spin-lock times (T1rho) in ms, strictly increasing.
    affine : ndarray, shape (4, 4)
        Voxel -> RAS mm, shared by all echoes.
    kind : str
        ``"t1rho"``, ``"t2"`` or another name of the relaxation time it measures.
    """

    data: np.ndarray
    times: np.ndarray
    affine: np.ndarray
    kind: str = "t1rho"

    def __post_init__(self) -> None:
        times = validate_times(self.times, what=f"{self.kind} times")
        if self.data.ndim != 4 or self.data.shape[-1] != times.size:
            raise DiscVBRError(
                f"{self.kind} series: {times.size} times given for data of shape {self.data.shape}; "
                "expected (X, Y, Z, E) with E equal to the number of times"
            )
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=float))

    @property
    def n_echoes(self) -> int:
        return int(self.times.size)

    def echo(self, index: int) -> Image:
        """One echo as an :class:`Image`."""
        return Image(self.data[..., index], self.affine)

    @property
    def grid(self) -> Image:
        """The first echo, for its geometry."""
        return self.echo(0)


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz`` stays compressed NIfTI).
    On an exception the temporary file is removed and the target is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and check that files can be written in it, before any work.

    Raises
    ------
    DiscVBRError
        Naming the folder, when it cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DiscVBRError(f"output folder {folder} is not writable: {exc}") from None
    return folder


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented JSON, atomically. Numpy scalars and arrays are converted."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _suffix_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(_NRRD_SUFFIXES):
        return "nrrd"
    raise DiscVBRError(f"{path}: unsupported image format; use NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr)")


def write_image(path: str | os.PathLike, image: Image | np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write an image (NIfTI or NRRD by the file name), atomically.

    Parameters
    ----------
    path : path-like
        Target file; ``.nii``/``.nii.gz`` or ``.nrrd``.
    image : Image or ndarray
        What to write. A bare array needs ``affine``.
    affine : ndarray, optional
        Voxel -> RAS mm, when ``image`` is an array.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if not isinstance(image, Image):
        image = Image(np.asarray(image), np.eye(4) if affine is None else affine)
    array = np.asarray(image.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    kind = _suffix_kind(path)
    with atomic_write(path) as tmp:
        if kind == "nifti":
            import nibabel as nib

            img = nib.Nifti1Image(array, image.affine)
            img.header.set_xyzt_units("mm", "msec")
            img.set_qform(image.affine, code=1)
            img.set_sform(image.affine, code=1)
            nib.save(img, str(tmp))
        else:
            import nrrd

            lps = image.affine.copy()
            lps[:3, :] = _LPS_TO_RAS @ lps[:3, :]
            directions = np.full((array.ndim, 3), np.nan)
            directions[:3] = lps[:3, :3].T
            header = {
                "space": "left-posterior-superior",
                "space directions": directions,
                "space origin": lps[:3, 3],
                "kinds": ["domain"] * 3 + ["list"] * (array.ndim - 3),
                "encoding": "gzip",
            }
            nrrd.write(str(tmp), array, header, index_order="F")
    return path


# --------------------------------------------------------------------------- reading


def check_file(path: str | os.PathLike, *, what: str = "image") -> Path:
    """Return ``path`` when it is an existing file; otherwise say what it is instead.

    Raises
    ------
    DiscVBRError
        ``"<what> <path> is a folder, not a file"`` or ``"<what> file not found: <path>"``
        (``what`` may be empty when the caller names the file itself).
    """
    path = Path(path)
    if path.is_file():
        return path
    named = f"{what} " if what else ""
    if path.is_dir():
        raise DiscVBRError(f"{named}{path} is a folder, not a file")
    raise DiscVBRError(f"{named}file not found: {path}")


def check_geometry(affine: np.ndarray, *, what: str = "image") -> np.ndarray:
    """Refuse a voxel -> RAS affine that no resampling or orientation step can use.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        As read from a file header.
    what : str
        How to name the image in the message (usually its path).

    Returns
    -------
    ndarray
        ``affine`` as float64.

    Raises
    ------
    DiscVBRError
        When an entry is not finite, a voxel size is zero, or the axes are degenerate
        (the header's spacing or direction is damaged).
    """
    affine = np.asarray(affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        raise DiscVBRError(f"{what}: the header's geometry (voxel size, origin or direction) holds a non-finite value")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise DiscVBRError(
            f"{what}: voxel size {np.round(spacing, 6).tolist()} mm in the header; every voxel size must be positive"
        )
    if abs(np.linalg.det(affine[:3, :3] / spacing)) < 1e-6:
        raise DiscVBRError(f"{what}: the header's voxel axes are parallel (degenerate direction matrix)")
    return affine


def read_image(path: str | os.PathLike, *, what: str = "image") -> Image:
    """Read a NIfTI or NRRD image with its geometry.

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        How to name the file in error messages (for example ``"mask"``).

    Returns
    -------
    Image
        Voxel data (native dtype) and voxel -> RAS affine. A 4D NRRD with its list
        axis first (as 3D Slicer writes multi-volumes) is returned with that axis last.

    Raises
    ------
    DiscVBRError
        When the file is missing, not an image, or unreadable.
    """
    path = check_file(path, what=what)
    kind = _suffix_kind(path)
    try:
        if kind == "nifti":
            img, affine = _load_nifti(path, what=f"{what} {path}")
            return Image(np.asanyarray(img.dataobj), affine)
        import nrrd

        data, header = nrrd.read(str(path), index_order="F")
        data, affine = _nrrd_to_ras(data, header)
        return Image(data, check_geometry(affine, what=f"{what} {path}"))
    except DiscVBRError:
        raise
    except Exception as exc:  # nibabel/pynrrd raise many types for a damaged file
        raise DiscVBRError(f"{what} file {path} could not be read: {exc}") from None


def read_geometry(path: str | os.PathLike, *, what: str = "image") -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (list axis last) and affine of an image file, from its header only (cheap)."""
    path = check_file(path, what=what)
    kind = _suffix_kind(path)
    try:
        if kind == "nifti":
            img, affine = _load_nifti(path, what=f"{what} {path}")
            return tuple(int(s) for s in img.shape), affine
        import nrrd

        header = nrrd.read_header(str(path))
        affine, list_axes = _nrrd_geometry(header)
        sizes = [int(s) for i, s in enumerate(header["sizes"]) if i not in list_axes]
        sizes += [int(header["sizes"][i]) for i in list_axes]
        return tuple(sizes), check_geometry(affine, what=f"{what} {path}")
    except DiscVBRError:
        raise
    except Exception as exc:
        raise DiscVBRError(f"{what} file {path} could not be read: {exc}") from None


def _load_nifti(path: Path, *, what: str):
    """A NIfTI image (data not read yet) and its checked affine.

    nibabel takes a zero voxel size as 1 mm when it loads a header (and logs a line on the
    terminal); a file saying 0 or NaN is damaged, whatever affine nibabel would make of it,
    so the voxel sizes (pixdim) are first read as they are on disk.
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fh:
        block = fh.read(nib.Nifti2Header.template_dtype.itemsize)
    header_class = nib.Nifti2Header if nib.Nifti2Header.may_contain_header(block) else nib.Nifti1Header
    raw = header_class(block[: header_class.template_dtype.itemsize], check=False)
    pixdim = np.asarray(raw["pixdim"][1:4], dtype=float)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
        raise DiscVBRError(
            f"{what}: voxel size {pixdim.tolist()} mm in the header (pixdim); every voxel size must be a positive number"
        )
    img = nib.load(str(path))
    return img, check_geometry(img.affine, what=what)


def _nrrd_geometry(header: dict) -> tuple[np.ndarray, list[int]]:
    """RAS affine and the indices of non-spatial (list) axes of a NRRD header."""
    dirs = header.get("space directions")
    if dirs is None:
        raise DiscVBRError("NRRD without 'space directions': geometry unknown")
    columns, list_axes = [], []
    for axis, d in enumerate(dirs):
        vec = None if d is None else np.asarray(d, dtype=float)
        if vec is None or not np.all(np.isfinite(vec)):
            list_axes.append(axis)
        else:
            columns.append(vec)
    if len(columns) != 3:
        raise DiscVBRError(f"NRRD with {len(columns)} spatial axes; expected 3")
    if list_axes not in ([], [0], [len(dirs) - 1]):
        raise DiscVBRError("NRRD non-spatial axis must be the first or the last")
    matrix = np.stack(columns, axis=1)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float)
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        matrix, origin = _LPS_TO_RAS @ matrix, _LPS_TO_RAS @ origin
    elif space not in ("right-anterior-superior", "ras"):
        raise DiscVBRError(f"NRRD space {space!r} is not supported (use LPS or RAS)")
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine, list_axes


def _nrrd_to_ras(data: np.ndarray, header: dict) -> tuple[np.ndarray, np.ndarray]:
    affine, list_axes = _nrrd_geometry(header)
    if list_axes == [0] and data.ndim == 4:
        data = np.moveaxis(data, 0, -1)
    return data, affine


# --------------------------------------------------------------------------- series


def parse_times(text: str | Sequence[float], *, what: str = "times") -> np.ndarray:
    """Parse echo/spin-lock times in ms from ``"0;10;40;80"``, ``"0,10,40,80"`` or a sequence.

    Raises
    ------
    DiscVBRError
        On a value that is not a number, naming ``what``.
    """
    if isinstance(text, str):
        parts = [p for p in text.replace(",", ";").replace(" ", ";").split(";") if p.strip()]
        values = []
        for p in parts:
            try:
                values.append(float(p))
            except ValueError:
                raise DiscVBRError(f"{what}: {p!r} is not a number (times are in ms, separated by ',' or ';')") from None
        return validate_times(values, what=what)
    return validate_times(text, what=what)


def validate_times(times: Sequence[float] | np.ndarray, *, what: str = "times") -> np.ndarray:
    """Check that times are finite, non-negative, strictly increasing and at least two.

    Returns
    -------
    ndarray of float64, shape (E,)
    """
    try:
        arr = np.asarray(times, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise DiscVBRError(f"{what}: not numeric: {times!r}") from None
    if arr.size < 2:
        raise DiscVBRError(f"{what}: {arr.size} echo time(s) given; a mono-exponential fit needs at least 2")
    if not np.all(np.isfinite(arr)):
        raise DiscVBRError(f"{what}: non-finite value in {arr.tolist()}")
    if np.any(arr < 0):
        raise DiscVBRError(f"{what}: negative time in {arr.tolist()} ms")
    if np.any(np.diff(arr) <= 0):
        raise DiscVBRError(f"{what}: times must be strictly increasing (no duplicates), got {arr.tolist()} ms")
    return arr


def read_series(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    times: str | Sequence[float] | np.ndarray,
    *,
    kind: str = "t1rho",
) -> EchoSeries:
    """Read a multi-echo series from one 4D file or one 3D file per echo.

    Parameters
    ----------
    paths : path or sequence of paths
        A 4D image with echoes on the last axis, or one 3D image per echo in echo order.
    times : str or sequence of float
        Echo or spin-lock times in ms (see :func:`parse_times`).
    kind : str
        Name of the series (``"t1rho"``, ``"t2"``), used in messages.

    Raises
    ------
    DiscVBRError
        Missing or unreadable files, echoes on different grids, a number of echoes
        that does not match the times, fewer than two echoes.
    """
    times_arr = parse_times(times, what=f"{kind} times")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        img = read_image(paths[0], what=f"{kind} series")
        data = img.array
        if data.ndim == 3:
            data = data[..., None]
        if data.ndim != 4:
            raise DiscVBRError(f"{paths[0]}: {kind} series must be 3D per echo or one 4D file, got {data.ndim}D")
        affine = img.affine
    else:
        echoes = [read_image(p, what=f"{kind} echo {i + 1}") for i, p in enumerate(paths)]
        first = echoes[0]
        for i, (p, echo) in enumerate(zip(paths, echoes)):
            if echo.array.ndim != 3:
                raise DiscVBRError(f"{p}: {kind} echo {i + 1} must be a 3D image, got shape {echo.shape}")
            if not echo.same_grid(first):
                raise DiscVBRError(
                    f"{p}: {kind} echo {i + 1} is not on the grid of echo 1 ({paths[0]}): "
                    f"shape {echo.shape} vs {first.shape}, spacing {np.round(echo.spacing, 4).tolist()} vs "
                    f"{np.round(first.spacing, 4).tolist()}"
                )
        data = np.stack([e.array for e in echoes], axis=-1)
        affine = first.affine
    if data.shape[-1] != times_arr.size:
        raise DiscVBRError(
            f"{paths[0]}: {kind} series has {data.shape[-1]} echo(es) but {times_arr.size} times were given"
        )
    return EchoSeries(np.asarray(data, dtype=np.float32), times_arr, affine, kind)


def write_series(path: str | os.PathLike, series: EchoSeries) -> Path:
    """Write a series as one 4D NIfTI plus a JSON sidecar with the times (same stem)."""
    path = Path(path)
    write_image(path, Image(np.asarray(series.data, dtype=np.float32), series.affine))
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    write_json(path.with_name(stem + ".json"), {"kind": series.kind, "times_ms": series.times.tolist()})
    return path


# --------------------------------------------------------------------------- orientation


def to_canonical(image: Image) -> Image:
    """Reorder and flip voxel axes to the closest RAS orientation, without resampling.

    After this, axis 0 runs left -> right, axis 1 posterior -> anterior and axis 2
    inferior -> superior: the layout DiscVBR stores sagittal data in.
    """
    import nibabel.orientations as nio

    current = nio.io_orientation(image.affine)
    target = nio.axcodes2ornt(("R", "A", "S"))
    transform = nio.ornt_transform(current, target)
    array = nio.apply_orientation(image.array, transform)
    affine = image.affine @ nio.inv_ornt_aff(transform, image.array.shape[:3])
    return Image(np.ascontiguousarray(array), affine)


def slice_axis(image: Image) -> int:
    """Index axis of the acquisition's slices: the coarsest spacing, then the fewest voxels.

    Returns -1 when the grid is isotropic and has as many voxels on every axis (the
    acquisition plane cannot be told from the geometry).
    """
    spacing = image.spacing
    shape = np.asarray(image.shape[:3])
    if np.ptp(spacing) <= 1e-3 * spacing.max() and np.ptp(shape) == 0:
        return -1
    order = np.lexsort((shape, -spacing))
    return int(order[0])


def require_sagittal(image: Image, *, what: str = "image") -> Image:
    """Return ``image`` in canonical RAS layout, refusing axial and coronal acquisitions.

    The acquisition plane is told from the geometry: the slice axis (coarsest spacing,
    then fewest voxels) must run left-right. Isotropic volumes are accepted as they are.

    Raises
    ------
    DiscVBRError
        When the slices are axial or coronal.
    """
    canonical = to_canonical(image)
    axis = slice_axis(canonical)
    if axis > 0:
        plane = {1: "coronal", 2: "axial"}[axis]
        raise DiscVBRError(
            f"{what} looks {plane}, not sagittal: its slices are {canonical.spacing[axis]:.2f} mm apart along the "
            f"{'anterior-posterior' if axis == 1 else 'inferior-superior'} axis. DiscVBR needs sagittal "
            "slices (slice axis left-right)"
        )
    return canonical
