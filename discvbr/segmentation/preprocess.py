"""Preprocessing of sagittal slices for the network, and the way back to the input grid.

Each sagittal slice (axes: posterior -> anterior, inferior -> superior) is

1. resampled in-plane to the network's pixel size (0.9375 mm by default: the 256 x 256
   matrix over 240 mm of the paper's data), keeping its physical extent and centre,
   and padded to a multiple of 16 pixels (the network halves the grid four times);
2. equalised with CLAHE (kernel 32 pixels, clip limit 0.01, 256 bins; Iriondo et al.
   2020, Supporting Figure S1) after scaling its intensities to [0, 1];
3. normalised to zero mean and unit variance.

The network's class probabilities are mapped back to the input grid by linear
interpolation (:func:`from_network_grid`), so thresholds apply on the user's voxels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from discvbr.errors import DiscVBRError

__all__ = [
    "PreprocessConfig",
    "GridMap",
    "check_slice_image",
    "to_network_grid",
    "from_network_grid",
    "labels_to_network_grid",
    "clahe_zscore",
    "prepare_slice",
]

#: In-plane spacings within this relative difference of the network's are not resampled.
SPACING_RTOL = 0.01


@dataclass(frozen=True)
class PreprocessConfig:
    """How slices are prepared for a network (stored in each model's metadata).

    Parameters
    ----------
    pixel_mm : float
        In-plane pixel size of the network grid, mm.
    multiple : int
        Network grid sizes are padded up to a multiple of this.
    clahe_kernel : int
        CLAHE contextual region size, pixels of the network grid.
    clahe_clip : float
        CLAHE clip limit (normalised, 0..1).
    clahe_bins : int
        CLAHE histogram bins.
    upper_percentile : float
        Intensities above this percentile are clipped before scaling to [0, 1], so a
        few hot voxels do not compress the contrast of the whole slice.
    """

    pixel_mm: float = 240.0 / 256.0
    multiple: int = 16
    clahe_kernel: int = 32
    clahe_clip: float = 0.01
    clahe_bins: int = 256
    upper_percentile: float = 99.9

    def __post_init__(self) -> None:
        if not self.pixel_mm > 0 or self.multiple < 1 or self.clahe_kernel < 2 or self.clahe_bins < 2:
            raise DiscVBRError(f"invalid preprocessing settings: {self}")
        if not 0 < self.clahe_clip <= 1 or not 50 < self.upper_percentile <= 100:
            raise DiscVBRError(f"invalid preprocessing settings: {self}")

    def as_dict(self) -> dict:
        return {"clahe": True, "zscore": True, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "PreprocessConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class GridMap:
    """Correspondence between an input slice grid and the network grid.

    ``input_shape`` (ny, nz) with ``input_spacing`` mm; the network grid of
    ``resampled_shape`` pixels of ``pixel_mm`` covers the same extent with the same
    centre, then ``pad`` pixels (before, after) per axis complete it to ``network_shape``.
    """

    input_shape: tuple[int, int]
    input_spacing: tuple[float, float]
    pixel_mm: float
    resampled_shape: tuple[int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]

    @property
    def network_shape(self) -> tuple[int, int]:
        return tuple(n + a + b for n, (a, b) in zip(self.resampled_shape, self.pad))

    @property
    def identity(self) -> bool:
        return self.resampled_shape == self.input_shape

    @classmethod
    def build(cls, shape: tuple[int, int], spacing: tuple[float, float], config: PreprocessConfig) -> "GridMap":
        resampled = []
        for n, s in zip(shape, spacing):
            if abs(s - config.pixel_mm) <= SPACING_RTOL * config.pixel_mm:
                resampled.append(int(n))
            else:
                resampled.append(max(int(round(n * s / config.pixel_mm)), 1))
        pad = []
        for n in resampled:
            total = (-n) % config.multiple
            pad.append((total // 2, total - total // 2))
        return cls(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), config.pixel_mm, tuple(resampled), tuple(pad))

    def _axis_coordinates(self, axis: int, forward: bool) -> np.ndarray:
        """Fractional indices, on the other grid, of this grid's pixel centres along ``axis``."""
        n_in, n_out = self.input_shape[axis], self.resampled_shape[axis]
        if n_in == n_out:
            return np.arange(n_out if forward else n_in, dtype=float)
        s_in = self.input_spacing[axis]
        s_out = s_in * n_in / n_out  # keeps the extent exactly (pixel size within rounding of pixel_mm)
        if forward:  # network pixel j -> input index
            return ((np.arange(n_out) + 0.5) * s_out) / s_in - 0.5
        return ((np.arange(n_in) + 0.5) * s_in) / s_out - 0.5


def check_slice_image(array: np.ndarray, *, what: str = "image") -> np.ndarray:
    """Validate voxel values for segmentation: finite, not empty, not constant.

    Returns
    -------
    ndarray of float32

    Raises
    ------
    DiscVBRError
        On NaN or infinite values, an empty array or a constant image, naming ``what``.
    """
    try:
        values = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError):
        raise DiscVBRError(f"{what}: voxel values are not numeric") from None
    if values.size == 0:
        raise DiscVBRError(f"{what}: the image has no voxels (shape {values.shape})")
    finite = np.isfinite(values)
    if not finite.all():
        raise DiscVBRError(f"{what}: {int((~finite).sum())} voxel(s) are NaN or infinite; fix or mask them first")
    if float(values.max()) == float(values.min()):
        raise DiscVBRError(f"{what}: the image is empty (every voxel equals {float(values.min()):g})")
    return values


def to_network_grid(image: np.ndarray, grid: GridMap, *, order: int = 1, fill: float | None = None) -> np.ndarray:
    """Resample a 2D slice (ny, nz) onto the network grid, padded.

    Parameters
    ----------
    image : ndarray (ny, nz)
    grid : GridMap
    order : int
        Spline order of the interpolation (1: linear).
    fill : float, optional
        Value of the padding; default the slice's minimum.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.shape != grid.input_shape:
        raise DiscVBRError(f"slice of shape {image.shape} does not match its grid {grid.input_shape}")
    if grid.identity:
        out = image
    else:
        cy = grid._axis_coordinates(0, True)
        cz = grid._axis_coordinates(1, True)
        coords = np.meshgrid(cy, cz, indexing="ij")
        out = ndimage.map_coordinates(image, coords, order=order, mode="nearest").astype(np.float32)
    fill_value = float(image.min()) if fill is None else fill
    return np.pad(out, grid.pad, mode="constant", constant_values=fill_value)


def labels_to_network_grid(labels: np.ndarray, grid: GridMap, n_classes: int) -> np.ndarray:
    """Label slice -> one-hot fractions on the network grid, shape (n_classes, H, W).

    Each class's indicator is interpolated linearly, so resampled edges keep their
    partial volume; the background takes the remainder (padding is background).
    """
    labels = np.asarray(labels)
    out = np.zeros((n_classes,) + grid.network_shape, np.float32)
    for k in range(1, n_classes):
        out[k] = to_network_grid((labels == k).astype(np.float32), grid, order=1, fill=0.0)
    out[0] = np.clip(1.0 - out[1:].sum(axis=0), 0.0, 1.0)
    return out


def from_network_grid(values: np.ndarray, grid: GridMap) -> np.ndarray:
    """Network-grid maps (C, H, W) -> the input slice grid (C, ny, nz), linear interpolation."""
    values = np.asarray(values, dtype=np.float32)
    (a0, _), (a1, _) = grid.pad
    ny, nz = grid.resampled_shape
    core = values[:, a0 : a0 + ny, a1 : a1 + nz]
    if grid.identity:
        return np.ascontiguousarray(core)
    cy = grid._axis_coordinates(0, False)
    cz = grid._axis_coordinates(1, False)
    coords = np.meshgrid(cy, cz, indexing="ij")
    return np.stack([ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in core]).astype(np.float32)


def clahe_zscore(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """CLAHE then zero mean, unit variance, of one 2D slice on the network grid.

    Intensities are clipped to the slice's [min, ``upper_percentile``] range and scaled
    to [0, 1] (CLAHE needs that range); the equalised slice is normalised per image.

    References
    ----------
    Zuiderveld K. Contrast limited adaptive histogram equalization. Graphics Gems IV, 1994.
    """
    from skimage.exposure import equalize_adapthist

    image = np.asarray(image, dtype=np.float64)
    lo = float(image.min())
    hi = float(np.percentile(image, config.upper_percentile))
    if hi <= lo:
        hi = float(image.max())
    if hi <= lo:
        raise DiscVBRError("slice is constant: nothing to segment")
    scaled = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
    equalised = equalize_adapthist(scaled, kernel_size=config.clahe_kernel, clip_limit=config.clahe_clip, nbins=config.clahe_bins)
    sd = float(equalised.std())
    return ((equalised - equalised.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def prepare_slice(
    image: np.ndarray, spacing: tuple[float, float], config: PreprocessConfig
) -> tuple[np.ndarray, GridMap]:
    """Resample, equalise and normalise one sagittal slice for the network.

    Parameters
    ----------
    image : ndarray (ny, nz)
        Slice in canonical layout (posterior -> anterior, inferior -> superior).
    spacing : (float, float)
        Its pixel size, mm.
    config : PreprocessConfig

    Returns
    -------
    network_input : ndarray (H, W), float32
    grid : GridMap
        To bring predictions back with :func:`from_network_grid`.
    """
    grid = GridMap.build(np.shape(image), spacing, config)
    resampled = to_network_grid(image, grid)
    if float(resampled.max()) == float(resampled.min()):
        # a slice outside the body (for example the edge of a 3D stack) carries no information
        return np.zeros(grid.network_shape, np.float32), grid
    return clahe_zscore(resampled, config), grid
