"""Semi-synthetic relaxometry on real anatomy.

A real T2-weighted sagittal volume with disc labels gives the shapes; the discs get
the phantom's nucleus/annulus relaxation pattern in their own normalised coordinates
(so planted effects land at the same place as in the synthetic phantom), and every
other tissue gets T1rho, T2 and signal weight from the image intensity (bright on T2w
means long T2: CSF and fat bright, muscle and bone dark). The result is resampled to
thick sagittal slices (8 mm in 2D mode, ``slice_thickness`` in 3D mode) by averaging
the original thin slices, which gives real partial volume across the slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import Image, read_image, require_sagittal
from discvbr.phantom.anatomy import Samples, Tissue
from discvbr.phantom.coordinates import disc_coordinates
from discvbr.phantom.cohort import BASELINE, PhantomConfig, SubjectSpec, render_subject_session, subject_rng
from discvbr.phantom.simulate import PhantomSession

__all__ = ["RealAnatomy", "load_real_anatomies", "synthesize_from_real", "RealAnatomySimulator"]


@dataclass(frozen=True)
class RealAnatomy:
    """A real sagittal volume (canonical RAS layout) with its disc labels (1 = L5S1 ... 5 = L1L2)."""

    name: str
    image: Image
    labels: Image


def load_real_anatomies(folder: str | os.PathLike) -> list[RealAnatomy]:
    """Read every ``<folder>/<name>/t2w.nii.gz`` with its ``discs.nii.gz``.

    Raises
    ------
    DiscVBRError
        When the folder holds none, or an image and its labels are on different grids.
    """
    folder = Path(folder)
    anatomies = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        image_path, label_path = sub / "t2w.nii.gz", sub / "discs.nii.gz"
        if not image_path.is_file():
            continue
        image = require_sagittal(read_image(image_path, what="real T2w image"), what=str(image_path))
        labels = require_sagittal(read_image(label_path, what="disc labels"), what=str(label_path))
        if not image.same_grid(labels):
            raise DiscVBRError(f"{label_path} is not on the grid of {image_path}")
        anatomies.append(RealAnatomy(sub.name, image, Image(np.asarray(labels.array, np.uint8), labels.affine)))
    if not anatomies:
        raise DiscVBRError(f"no real anatomy found in {folder}: expected <folder>/<subject>/t2w.nii.gz and discs.nii.gz")
    return anatomies


def _slab(anatomy: RealAnatomy, config: PhantomConfig) -> tuple[slice, int, np.ndarray]:
    """Thin slices to average, slices per output slice, and the output affine."""
    spacing_x = anatomy.image.spacing[0]
    thickness = 8.0 if config.mode == "2d" else config.slice_thickness
    per_slice = max(int(round(thickness / spacing_x)), 1)
    n_out = 1 if config.mode == "2d" else config.n_slices
    discs = np.flatnonzero((anatomy.labels.array > 0).any(axis=(1, 2)))
    centre = int(round(discs.mean())) if discs.size else anatomy.image.shape[0] // 2
    n_thin = min(per_slice * n_out, anatomy.image.shape[0] - anatomy.image.shape[0] % per_slice)
    n_out = n_thin // per_slice
    start = int(np.clip(centre - n_thin // 2, 0, anatomy.image.shape[0] - n_thin))
    affine = anatomy.image.affine.copy()
    affine[:3, 0] *= per_slice
    affine[:3, 3] = anatomy.image.affine[:3, :3] @ np.array([start + 0.5 * (per_slice - 1), 0, 0]) + anatomy.image.affine[:3, 3]
    return slice(start, start + n_out * per_slice), per_slice, affine


def _paint_discs(labels: np.ndarray, spacing: np.ndarray, samples: Samples) -> None:
    """Mark the labelled discs in ``samples`` with their normalised coordinates."""
    u, v, x = disc_coordinates(labels, spacing)
    inside = (labels >= 1) & (labels <= 5)
    samples.tissue[inside] = Tissue.DISC
    samples.disc[inside] = labels[inside]
    samples.disc_u[inside], samples.disc_v[inside], samples.disc_x[inside] = u[inside], v[inside], x[inside]


def synthesize_from_real(
    anatomy: RealAnatomy, config: PhantomConfig, spec: SubjectSpec, session: str = BASELINE
) -> PhantomSession:
    """Semi-synthetic T1rho and T2 series for one subject on a real anatomy.

    Parameters
    ----------
    anatomy : RealAnatomy
    config : PhantomConfig
        Times, SNR, mode (2D: one 8 mm slice at the discs' centre; 3D: ``n_slices``).
    spec : SubjectSpec
        Degeneration and clinical values (planted effects) of the simulated subject.
    session : str
        ``"baseline"`` or ``"followup"``.
    """
    rng = subject_rng(config, spec.index, 1 if session == BASELINE else 2)
    clinical = spec.clinical if session == BASELINE else spec.followup
    if clinical is None:
        raise DiscVBRError(f"{spec.subject} has no follow-up session")
    thin, per_slice, affine = _slab(anatomy, config)
    image = np.asarray(anatomy.image.array[thin], dtype=np.float32)
    labels = np.asarray(anatomy.labels.array[thin])
    body = image > np.percentile(image, 30)
    intensity = np.clip(image / np.percentile(image[body], 99.5), 0.0, 1.2)
    air = intensity < 0.06
    s0 = np.where(air, 0.0, 0.2 + 0.75 * intensity)
    t2 = 25.0 + 300.0 * intensity**3
    t1rho = 1.15 * t2

    shape = image.shape
    samples = Samples(
        tissue=np.where(air, Tissue.AIR, Tissue.IMAGE).astype(np.int8),
        disc=np.zeros(shape, np.int8),
        disc_u=np.full(shape, np.nan, np.float32),
        disc_v=np.full(shape, np.nan, np.float32),
        disc_x=np.full(shape, np.nan, np.float32),
        part=labels.astype(np.int8),
        curv_s=np.zeros(shape[1:], np.float32),
        curv_d=np.zeros(shape[1:], np.float32),
    )
    _paint_discs(labels, anatomy.image.spacing, samples)

    return render_subject_session(
        samples,
        config,
        spec,
        session,
        factors=(per_slice, 1, 1),
        affine=affine,
        rng=rng,
        meta={"anatomy": anatomy.name},
        base_properties=(s0, t1rho, t2),
    )


class RealAnatomySimulator:
    """A ``simulate`` callable for :func:`discvbr.phantom.write_cohort` on real anatomies.

    Subject ``i`` gets anatomy ``i mod len(anatomies)``.
    """

    def __init__(self, anatomies: list[RealAnatomy]):
        if not anatomies:
            raise DiscVBRError("no real anatomy given")
        self.anatomies = anatomies

    def __call__(self, config: PhantomConfig, spec: SubjectSpec, session: str) -> PhantomSession:
        return synthesize_from_real(self.anatomies[spec.index % len(self.anatomies)], config, spec, session)
