"""Training augmentations, drawn fresh for every slice in every epoch.

The paper's set (Iriondo et al. 2020, Supporting Figure S1): in-plane rotation
-20..20 deg, elastic deformation (1 to 3 control points, sigma 6 to 12 pixels) and
localised Gaussian brightening (intensity scaled by a Gaussian bump shifted -100..100
pixels in both axes). The paper gives the bump's sigma as "3" without a unit; we use a
bump of ``brightening_sigma_px`` = 48 pixels (about 45 mm on the 0.94 mm grid: a region a
few discs tall), a documented choice of ours. Extra, optional augmentations that help a
model trained on synthetic images transfer to real scans: isotropic scaling, a random
gamma and additive Gaussian noise. All act on the raw slice before CLAHE and z-scoring.

Geometric transforms move the image (linear interpolation) and the one-hot label
fractions (linear, so edges keep partial volume) with one sampling grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from discvbr.errors import DiscVBRError

__all__ = ["AugmentConfig", "geometric_transform", "gaussian_brightening", "augment_slice"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentations (stored in a model's metadata).

    Parameters
    ----------
    rotation_deg : float
        In-plane rotation drawn from U(-rotation_deg, rotation_deg).
    elastic_points : (int, int)
        Control points per axis of the elastic grid, drawn from this range (inclusive).
    elastic_sigma_px : (float, float)
        SD of the control-point displacements (pixels), drawn from this range.
    brightening_probability : float
        Probability of a localised Gaussian brightening.
    brightening_sigma_px : float
        SD of the brightening bump, pixels.
    brightening_shift_px : float
        The bump's centre is the slice centre shifted by U(-shift, shift) in each axis.
    brightening_gain : (float, float)
        Peak relative gain of the bump (intensity x (1 + gain) at its centre).
    scale : (float, float)
        Isotropic zoom factor range (1, 1 disables).
    gamma : (float, float)
        Range of the exponent applied to intensities scaled to [0, 1] (1, 1 disables).
    noise_sd : (float, float)
        Range of additive Gaussian noise SD as a fraction of the slice's 99th percentile
        (0, 0 disables).
    """

    rotation_deg: float = 20.0
    elastic_points: tuple[int, int] = (1, 3)
    elastic_sigma_px: tuple[float, float] = (6.0, 12.0)
    brightening_probability: float = 0.5
    brightening_sigma_px: float = 48.0
    brightening_shift_px: float = 100.0
    brightening_gain: tuple[float, float] = (0.0, 1.0)
    scale: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_sd: tuple[float, float] = (0.0, 0.05)

    def __post_init__(self) -> None:
        if self.rotation_deg < 0 or min(self.elastic_points) < 1 or self.elastic_points[0] > self.elastic_points[1]:
            raise DiscVBRError(f"invalid augmentation settings: {self}")
        if self.scale[0] <= 0 or self.gamma[0] <= 0 or not 0 <= self.brightening_probability <= 1:
            raise DiscVBRError(f"invalid augmentation settings: {self}")

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "AugmentConfig":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in cls.__dataclass_fields__})


def _elastic_field(shape: tuple[int, int], points: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth displacement field (2, H, W), pixels: cubic interpolation of a points x points grid."""
    grid = rng.normal(0.0, sigma, size=(2, points, points))
    return np.stack(
        [ndimage.zoom(g, (shape[0] / points, shape[1] / points), order=min(points - 1, 3), mode="nearest", grid_mode=True) for g in grid]
    )


def geometric_transform(
    image: np.ndarray,
    onehot: np.ndarray,
    *,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation, zoom and elastic deformation of a slice and its label fractions.

    Parameters
    ----------
    image : ndarray (H, W)
    onehot : ndarray (C, H, W)
        Class fractions (background first); they stay a partition of unity.
    rng : numpy.random.Generator
    config : AugmentConfig

    Returns
    -------
    image, onehot : the transformed arrays (same shapes). Outside the original slice the
    image takes its minimum and the labels are background.
    """
    h, w = image.shape
    angle = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
    zoom = rng.uniform(*config.scale)
    points = int(rng.integers(config.elastic_points[0], config.elastic_points[1] + 1))
    sigma = rng.uniform(*config.elastic_sigma_px)
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    yy, zz = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    dy, dz = yy - centre[0], zz - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    # output pixel -> source position: inverse rotation and zoom about the centre, then the warp
    src = np.stack([(c * dy + s * dz) / zoom + centre[0], (-s * dy + c * dz) / zoom + centre[1]])
    src += _elastic_field((h, w), points, sigma, rng)
    out_image = ndimage.map_coordinates(image, src, order=1, mode="constant", cval=float(image.min()))
    out_labels = np.stack([ndimage.map_coordinates(ch, src, order=1, mode="constant", cval=0.0) for ch in onehot[1:]])
    background = np.clip(1.0 - out_labels.sum(axis=0), 0.0, 1.0)
    return out_image.astype(np.float32), np.concatenate([background[None], out_labels]).astype(np.float32)


def gaussian_brightening(image: np.ndarray, *, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Scale intensities by ``1 + gain * exp(-r^2 / (2 sigma^2))`` around a shifted centre."""
    h, w = image.shape
    cy = (h - 1) / 2.0 + rng.uniform(-config.brightening_shift_px, config.brightening_shift_px)
    cz = (w - 1) / 2.0 + rng.uniform(-config.brightening_shift_px, config.brightening_shift_px)
    gain = rng.uniform(*config.brightening_gain)
    yy, zz = np.meshgrid(np.arange(h) - cy, np.arange(w) - cz, indexing="ij")
    bump = np.exp(-(yy**2 + zz**2) / (2.0 * config.brightening_sigma_px**2))
    return (image * (1.0 + gain * bump)).astype(np.float32)


def augment_slice(
    image: np.ndarray, onehot: np.ndarray, *, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Apply every augmentation of ``config`` to a raw slice and its label fractions.

    Returns the augmented raw slice (before CLAHE) and label fractions.
    """
    image, onehot = geometric_transform(image, onehot, rng=rng, config=config)
    lo = float(image.min())
    image = image - lo  # brightening and gamma act on a zero-based intensity scale
    if rng.random() < config.brightening_probability:
        image = gaussian_brightening(image, rng=rng, config=config)
    top = float(np.percentile(image, 99.0))
    if top > 0:
        if config.gamma != (1.0, 1.0):
            g = np.exp(rng.uniform(np.log(config.gamma[0]), np.log(config.gamma[1])))
            image = top * np.clip(image / top, 0.0, None) ** g
        if config.noise_sd[1] > 0:
            image = image + rng.normal(0.0, rng.uniform(*config.noise_sd) * top, size=image.shape)
    return image.astype(np.float32), onehot
