"""From painted tissue samples to echo series and exact ground truth.

Every sub-voxel sample gets a signal weight ``s0`` and T1rho/T2 (tissue table plus
texture, or the disc's nucleus/annulus pattern plus planted effects); each echo is
``s0 * exp(-t / T)`` averaged over the samples of a voxel (partial volume), scaled by
a smooth receive-bias field, with Rician magnitude noise added last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from discvbr.io import EchoSeries, Image
from discvbr.levels import DISC_LEVELS
from discvbr.phantom.anatomy import T12L1_DISC_ID, Samples
from discvbr.phantom.tissues import TISSUE_PROPERTIES, disc_relaxation

__all__ = ["PlantedEffect", "EFFECTS", "SessionTruth", "PhantomSession", "render_session", "SIGNAL_SCALE"]

#: Signal of a healthy nucleus at zero preparation time, before bias (arbitrary units).
SIGNAL_SCALE = 1000.0
#: Relative SD of the per-subject smooth random variation of disc T1rho and of T2 around T1rho.
DISC_TEXTURE_SD = 0.03


@dataclass(frozen=True)
class PlantedEffect:
    """A voxel-wise effect with known place and strength, in normalised disc coordinates.

    The weight is a Gaussian bump (1 at ``center``) of the normalised disc position;
    T1rho changes by ``amplitude * weight`` ms in the disc ``level`` (T2 follows
    through the T2/T1rho ratio).
    """

    name: str
    level: str
    center: tuple[float, float, float]
    sigma: tuple[float, float, float]
    description: str

    def weight(self, u: np.ndarray, v: np.ndarray, x: np.ndarray) -> np.ndarray:
        q = sum(((c - m) / s) ** 2 for c, m, s in zip((u, v, x), self.center, self.sigma))
        return np.exp(-0.5 * q).astype(np.float32)


EFFECTS: dict[str, PlantedEffect] = {
    "odi": PlantedEffect(
        "odi",
        "L4L5",
        (-0.40, -0.35, 0.0),
        (0.22, 0.28, 0.45),
        "T1rho (and T2) fall with the Oswestry Disability Index in the posterior-inferior nucleus of L4L5; "
        "amplitude in ms per standard deviation of ODI (20 points) at the centre",
    ),
    "followup": PlantedEffect(
        "followup",
        "L5S1",
        (-0.10, 0.0, 0.0),
        (0.35, 0.45, 0.50),
        "T1rho (and T2) of the L5S1 nucleus fall between baseline and follow-up; amplitude in ms at the centre",
    ),
}


@dataclass
class SessionTruth:
    """Ground truth of a phantom session, on the image grid."""

    t1rho: np.ndarray  # ms, S0-weighted mean of the sub-voxel T1rho; NaN in air
    t2: np.ndarray  # ms
    s0: np.ndarray  # signal at t = 0 including the bias field
    tissue: np.ndarray  # Tissue at the voxel centre
    spine: np.ndarray  # spine labels at the voxel centre: discs 1-5 (6 = T12L1), vertebrae 10-16
    disc_fraction: np.ndarray  # fraction of the voxel in one of the five lumbar discs
    effects: dict[str, np.ndarray]  # weight 0..1 of each planted effect
    bias: np.ndarray  # receive-bias field


@dataclass
class PhantomSession:
    """One simulated session: the series a user would have, and the truth behind them."""

    subject: str
    session: str
    t1rho: EchoSeries
    t2: EchoSeries
    labels: Image  # uint8, 1 = L5S1 ... 5 = L1L2
    truth: SessionTruth
    noise_sigma: float
    meta: dict = field(default_factory=dict)

    def truth_images(self) -> dict[str, Image]:
        """Truth maps as images on the series grid, keyed by file stem."""
        affine = self.t1rho.affine
        maps = {
            "t1rho_map": self.truth.t1rho,
            "t2_map": self.truth.t2,
            "s0": self.truth.s0,
            "tissue": self.truth.tissue.astype(np.uint8),
            "spine_labels": self.truth.spine.astype(np.uint8),
            "disc_fraction": self.truth.disc_fraction,
            **{f"effect_{k}": v for k, v in self.truth.effects.items()},
        }
        return {k: Image(v, affine) for k, v in maps.items()}


def _block_mean(values: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    nx, ny, nz = (s // f for s, f in zip(values.shape, factors))
    fx, fy, fz = factors
    return values.reshape(nx, fx, ny, fy, nz, fz).mean(axis=(1, 3, 5), dtype=np.float64)


def _expand(voxel_field: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    out = voxel_field
    for axis, f in enumerate(factors):
        out = np.repeat(out, f, axis=axis)
    return out


def _smooth_noise(shape: tuple[int, ...], sigma_vox: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field with unit SD, correlation length ``sigma_vox`` voxels per axis."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    sd = noise.std()
    return (noise / sd if sd > 0 else noise).astype(np.float32)


def render_session(
    samples: Samples,
    *,
    factors: tuple[int, int, int],
    affine: np.ndarray,
    degeneration: dict[str, float],
    effect_amplitudes: dict[str, float],
    t1rho_times: np.ndarray,
    t2_times: np.ndarray,
    snr: float,
    bias_coefficients: np.ndarray,
    rng: np.random.Generator,
    subject: str,
    session: str,
    base_properties: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> PhantomSession:
    """Compute signals, noise and truth of one session from its painted samples.

    Parameters
    ----------
    samples : Samples
        Tissue classes and disc coordinates on the sub-voxel samples.
    factors : (int, int, int)
        Samples per voxel along each axis.
    affine : ndarray (4, 4)
        Voxel -> RAS of the output grid.
    degeneration : dict
        Continuous degeneration score (1-5) per disc name (``"L4L5"``; ``"T12L1"`` optional).
    effect_amplitudes : dict
        T1rho change (ms) at weight 1 for each planted effect in :data:`EFFECTS`.
    t1rho_times, t2_times : ndarray
        Spin-lock and echo times, ms.
    snr : float
        Mean first-echo disc signal over the noise SD.
    bias_coefficients : ndarray (5,)
        Receive bias ``log B = c0*y + c1*z + c2*y^2 + c3*z^2 + c4*y*z`` on coordinates
        normalised to [-1, 1] over the field of view.
    rng : numpy.random.Generator
        Textures and noise.
    base_properties : (s0, t1rho, t2) arrays, optional
        Per-sample properties of non-disc tissue (semi-synthetic mode); default: tissue table.
    """
    tissue = samples.tissue
    vox_shape = tuple(s // f for s, f in zip(tissue.shape, factors))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    # textures: correlation lengths of a few mm, generated per voxel (constant within a voxel)
    sig = tuple(max(2.0 / s, 0.3) if n > 1 else 0.0 for s, n in zip(spacing, vox_shape))
    tex_s0 = _expand(_smooth_noise(vox_shape, sig, rng), factors)
    tex_t = _expand(_smooth_noise(vox_shape, sig, rng), factors)
    disc_sig = tuple(max(3.0 / s, 0.3) if n > 1 else 0.0 for s, n in zip(spacing, vox_shape))
    tex_disc_t1 = _expand(_smooth_noise(vox_shape, disc_sig, rng), factors)
    tex_disc_t2 = _expand(_smooth_noise(vox_shape, disc_sig, rng), factors)

    if base_properties is None:
        lut = np.array([[p.s0, p.t1rho, p.t2, p.texture] for _, p in sorted(TISSUE_PROPERTIES.items())], np.float32)
        props = lut[tissue.astype(np.intp)]
        s0, t1, t2, amp = (props[..., k] for k in range(4))
        s0 = s0 * (1.0 + amp * tex_s0)
        t1 = t1 * (1.0 + 0.5 * amp * tex_t)
        t2 = t2 * (1.0 + 0.5 * amp * tex_t)
    else:
        s0, t1, t2 = (np.array(a, dtype=np.float32, copy=True) for a in base_properties)

    effects = {name: np.zeros(tissue.shape, np.float32) for name in EFFECTS}
    for disc_id in np.unique(samples.disc):
        if disc_id == 0:
            continue
        name = "T12L1" if disc_id == T12L1_DISC_ID else DISC_LEVELS[disc_id - 1]
        where = samples.disc == disc_id
        u, v, x = samples.disc_u[where], samples.disc_v[where], samples.disc_x[where]
        rel = disc_relaxation(u, v, x, degeneration.get(name, 1.0))
        t1_disc = rel.t1rho * (1.0 + DISC_TEXTURE_SD * tex_disc_t1[where])
        for effect_name, effect in EFFECTS.items():
            if effect.level == name:
                weight = effect.weight(u, v, x)
                effects[effect_name][where] = weight
                t1_disc = t1_disc + effect_amplitudes.get(effect_name, 0.0) * weight
        t1[where] = t1_disc
        t2[where] = rel.t2_ratio * t1_disc * (1.0 + DISC_TEXTURE_SD * tex_disc_t2[where])
        s0[where] = rel.s0
    s0 = np.clip(s0, 0.0, None) * SIGNAL_SCALE
    t1 = np.clip(t1, 1.0, None)
    t2 = np.clip(t2, 1.0, None)

    # labels: a lumbar disc where it fills at least half of the voxel
    fractions = np.stack([_block_mean(samples.disc == k, factors) for k in range(1, 6)])
    best = fractions.argmax(axis=0)
    labels = np.where(fractions.max(axis=0) >= 0.5, best + 1, 0).astype(np.uint8)
    disc_fraction = fractions.sum(axis=0).astype(np.float32)

    bias = _bias_field(vox_shape, affine, bias_coefficients)
    disc_voxels = labels > 0
    if disc_voxels.any():
        bias = bias / bias[disc_voxels].mean()

    s0_vox = _block_mean(s0, factors)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = s0_vox > 1e-3 * SIGNAL_SCALE
        t1_map = np.where(present, _block_mean(s0 * t1, factors) / s0_vox, np.nan).astype(np.float32)
        t2_map = np.where(present, _block_mean(s0 * t2, factors) / s0_vox, np.nan).astype(np.float32)

    def echoes(times: np.ndarray, relax: np.ndarray) -> np.ndarray:
        return np.stack([_block_mean(s0 * np.exp(-t / relax), factors) * bias for t in times], axis=-1)

    clean_t1 = echoes(t1rho_times, t1)
    clean_t2 = echoes(t2_times, t2)
    reference = clean_t1[..., 0][disc_voxels].mean() if disc_voxels.any() else clean_t1[..., 0].max()
    sigma = float(reference / snr)

    def rician(clean: np.ndarray) -> np.ndarray:
        real = clean + sigma * rng.standard_normal(clean.shape)
        imag = sigma * rng.standard_normal(clean.shape)
        return np.hypot(real, imag).astype(np.float32)

    centre = tuple(slice(f // 2, None, f) for f in factors)
    truth = SessionTruth(
        t1rho=t1_map,
        t2=t2_map,
        s0=(s0_vox * bias).astype(np.float32),
        tissue=tissue[centre].astype(np.uint8),
        spine=samples.part[centre].astype(np.uint8),
        disc_fraction=disc_fraction,
        effects={k: _block_mean(v, factors).astype(np.float32) for k, v in effects.items()},
        bias=bias.astype(np.float32),
    )
    return PhantomSession(
        subject=subject,
        session=session,
        t1rho=EchoSeries(rician(clean_t1), t1rho_times, affine, "t1rho"),
        t2=EchoSeries(rician(clean_t2), t2_times, affine, "t2"),
        labels=Image(labels, affine),
        truth=truth,
        noise_sigma=sigma,
    )


def _bias_field(shape: tuple[int, int, int], affine: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smooth multiplicative receive field over the sagittal plane (constant across slices)."""
    ny, nz = shape[1], shape[2]
    y = np.linspace(-1.0, 1.0, ny)[:, None]
    z = np.linspace(-1.0, 1.0, nz)[None, :]
    # axis 1 runs posterior -> anterior: a positive c0 makes the posterior (spine-coil side) brighter
    log_b = -c[0] * y + c[1] * z + c[2] * y**2 + c[3] * z**2 + c[4] * y * z
    return np.broadcast_to(np.exp(log_b)[None], shape).astype(np.float64)
