"""Synthetic cohorts: subjects, clinical variables, planted effects, files on disk.

The generative model (documented in the cohort's ``truth.json``):

* age ~ U(25, 70) years, sex M/F with equal odds, BMI ~ N(25 + 1.5 [male], 3.5) clipped
  to 18-40, paraspinal muscle fat fraction rising with age and BMI.
* group: patient with probability ``patient_fraction``, independent of age. ODI:
  controls U(0, 18), patients 15 + 60 * Beta(2, 2.5). Disability is deliberately
  independent of disc degeneration, so the planted ODI effect is the only association
  between ODI and the relaxation maps.
* degeneration per disc: a continuous score 1-5 that rises with age and towards the
  lower levels; the Pfirrmann grade is its rounded value. Nucleus T1rho/T2, disc height
  and nucleus/annulus contrast fall with it (:mod:`discvbr.phantom.tissues`).
* planted effects (:data:`discvbr.phantom.simulate.EFFECTS`): T1rho in the
  posterior-inferior nucleus of L4L5 falls by ``odi_effect_ms`` per SD of ODI (20 points);
  at follow-up, the L5S1 nucleus falls by ``followup_effect_ms``. T2 follows T1rho
  (T2 = ratio x T1rho x independent 3% texture), which gives the T1rho-T2 relation.
* anatomy per subject: size, lordosis, L1 tilt, disc heights, in-plane rotation,
  field-of-view shift, muscle and fat thickness (BMI), receive bias field.
* a ``missing_fraction`` of clinical cells is left empty in the manifest (the truth file
  keeps every value).

Everything is drawn from ``numpy.random.default_rng([seed, subject_index])``, so a
subject is the same whatever the cohort size.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import ensure_writable, write_image, write_json, write_series
from discvbr.levels import DISC_LEVELS
from discvbr.manifest import SeriesRef, SessionEntry, write_manifest
from discvbr.phantom.anatomy import SampleGrid, Samples, build_spine, rasterize
from discvbr.phantom.simulate import EFFECTS, PhantomSession, render_session

__all__ = [
    "PhantomConfig",
    "SubjectSpec",
    "draw_subject",
    "simulate_session",
    "session_samples",
    "iter_cohort",
    "write_cohort",
    "DEFAULT_T1RHO_TIMES",
    "DEFAULT_T2_TIMES",
    "BASELINE",
    "FOLLOWUP",
]

#: Spin-lock times (ms) of the UCSF MAPSS T1rho protocol used in the paper's studies.
DEFAULT_T1RHO_TIMES = (0.0, 10.0, 40.0, 80.0)
#: T2-preparation echo times (ms) of the same MAPSS protocol (Li et al., MRM 2008).
DEFAULT_T2_TIMES = (0.0, 12.9, 25.7, 51.4)
BASELINE, FOLLOWUP = "baseline", "followup"
ODI_MEAN, ODI_SD = 30.0, 20.0
_LEVEL_DEGENERATION = {"L1L2": 0.45, "L2L3": 0.55, "L3L4": 0.75, "L4L5": 1.05, "L5S1": 1.15, "T12L1": 0.35}


@dataclass(frozen=True)
class PhantomConfig:
    """Settings of a synthetic cohort.

    Parameters
    ----------
    n_subjects : int
        Number of subjects.
    mode : {"2d", "3d"}
        One 8 mm sagittal slice, or a stack of ``n_slices`` slices of ``slice_thickness``.
    matrix, fov_mm : int, float
        In-plane matrix (square) and field of view; default 256 over 240 mm (0.94 mm).
    n_slices, slice_thickness : int, float
        Slices in 3D mode and their thickness (mm); 2D uses one 8 mm slice.
    snr : float
        Mean first-echo disc signal over the noise SD (Rician magnitude noise).
    t1rho_times, t2_times : tuple of float
        Spin-lock and echo times, ms.
    followup_fraction : float
        Fraction of subjects with a follow-up session (exactly, rounded to whole subjects).
    missing_fraction : float
        Fraction of clinical cells left empty in the manifest.
    patient_fraction : float
        Probability that a subject is a patient.
    odi_effect_ms : float
        Planted change of L4L5 posterior-inferior nucleus T1rho per SD of ODI, ms.
    followup_effect_ms : float
        Planted change of the L5S1 nucleus T1rho at follow-up, ms.
    supersample : int
        Sub-voxel samples per in-plane axis (partial volume).
    seed : int
        Seed of every random draw.
    """

    n_subjects: int = 20
    mode: str = "2d"
    matrix: int = 256
    fov_mm: float = 240.0
    n_slices: int = 6
    slice_thickness: float = 4.0
    snr: float = 60.0
    t1rho_times: tuple[float, ...] = DEFAULT_T1RHO_TIMES
    t2_times: tuple[float, ...] = DEFAULT_T2_TIMES
    followup_fraction: float = 0.2
    missing_fraction: float = 0.05
    patient_fraction: float = 0.6
    odi_effect_ms: float = -30.0
    followup_effect_ms: float = -20.0
    supersample: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("2d", "3d"):
            raise DiscVBRError(f"phantom mode must be '2d' or '3d', got {self.mode!r}")
        if self.n_subjects < 1:
            raise DiscVBRError(f"number of subjects must be at least 1, got {self.n_subjects}")
        for name in ("followup_fraction", "missing_fraction", "patient_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DiscVBRError(f"{name} must be within 0..1, got {value}")
        if self.snr <= 0:
            raise DiscVBRError(f"snr must be positive, got {self.snr}")
        if self.matrix < 64:
            raise DiscVBRError(f"matrix must be at least 64, got {self.matrix}")


@dataclass(frozen=True)
class SubjectSpec:
    """Everything drawn for one subject (the hidden truth behind its manifest row)."""

    subject: str
    index: int
    clinical: dict[str, object]  # complete values (before missingness)
    degeneration: dict[str, float]  # continuous 1-5 per disc
    anatomy: dict[str, object]  # build_spine arguments shared by all sessions
    followup: dict[str, object] | None  # follow-up clinical values, or None
    missing: tuple[str, ...]  # clinical fields left empty in the manifest
    seed: int

    @property
    def pfirrmann(self) -> dict[str, int]:
        return {lvl: int(np.clip(np.rint(self.degeneration[lvl]), 1, 5)) for lvl in DISC_LEVELS}


#: Seed stream of the cohort-level choice of follow-up subjects (per-subject streams use index, stream).
_FOLLOWUP_STREAM = 7919


def subject_rng(config: PhantomConfig, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([config.seed, index, stream])


def followup_subjects(config: PhantomConfig) -> frozenset[int]:
    """Indices (0-based) of the subjects with a follow-up session.

    Exactly ``followup_fraction`` of the cohort (rounded half up to whole subjects), chosen
    with the cohort's seed, so that "30 % with a follow-up" is what every run gets.
    """
    count = int(np.floor(config.followup_fraction * config.n_subjects + 0.5))
    rng = np.random.default_rng([config.seed, _FOLLOWUP_STREAM])
    return frozenset(int(i) for i in rng.choice(config.n_subjects, size=count, replace=False))


def draw_subject(config: PhantomConfig, index: int) -> SubjectSpec:
    """Draw subject ``index`` (0-based) of a cohort: clinical values, discs, anatomy."""
    rng = subject_rng(config, index)
    age = float(rng.uniform(25, 70))
    sex = "M" if rng.random() < 0.5 else "F"
    bmi = float(np.clip(rng.normal(25.0 + (1.5 if sex == "M" else 0.0), 3.5), 18.0, 40.0))
    patient = bool(rng.random() < config.patient_fraction)
    odi = float(15.0 + 60.0 * rng.beta(2.0, 2.5)) if patient else float(rng.uniform(0, 18))
    fat_fraction = float(np.clip(6.0 + 0.25 * (age - 25) + 0.5 * (bmi - 25) + rng.normal(0, 3), 2.0, 60.0))
    age_load = 3.0 * (age - 25.0) / 45.0
    degeneration = {
        lvl: float(np.clip(1.0 + age_load * w + rng.normal(0.0, 0.7), 1.0, 5.0)) for lvl, w in _LEVEL_DEGENERATION.items()
    }
    clinical: dict[str, object] = {
        "age": round(age, 1),
        "sex": sex,
        "bmi": round(bmi, 1),
        "group": "patient" if patient else "control",
        "odi": round(odi, 0),
        "fat_fraction": round(fat_fraction, 1),
    }
    clinical.update({f"pfirrmann_{lvl}": int(np.clip(np.rint(degeneration[lvl]), 1, 5)) for lvl in DISC_LEVELS})
    anatomy = {
        "scale": float(rng.uniform(0.9, 1.1)),
        "lordosis": float(rng.uniform(0.7, 1.3)),
        "l1_tilt_deg": float(rng.normal(-10.0, 4.0)),
        "disc_height_factor": {lvl: float(rng.uniform(0.9, 1.1)) for lvl in _LEVEL_DEGENERATION},
        "muscle_thickness": float(rng.uniform(30, 45)),
        "fat_thickness": float(np.clip(6.0 + 1.6 * (bmi - 20.0) + rng.normal(0, 3), 4.0, 45.0)),
    }
    followup = None
    if index in followup_subjects(config):
        followup = dict(clinical)
        followup["age"] = round(age + 1.0, 1)
        followup["odi"] = float(np.clip(round(odi + rng.normal(0, 6), 0), 0, 100))
    candidates = [k for k in clinical if k not in ("group",)]
    missing = tuple(k for k in candidates if rng.random() < config.missing_fraction)
    return SubjectSpec(
        subject=f"sub-{index + 1:02d}",
        index=index,
        clinical=clinical,
        degeneration=degeneration,
        anatomy=anatomy,
        followup=followup,
        missing=missing,
        seed=config.seed,
    )


def effect_amplitudes(config: PhantomConfig, clinical: dict, session: str) -> dict[str, float]:
    """T1rho change (ms) at weight 1 of each planted effect for one session."""
    z_odi = (float(clinical["odi"]) - ODI_MEAN) / ODI_SD
    return {"odi": config.odi_effect_ms * z_odi, "followup": config.followup_effect_ms if session == FOLLOWUP else 0.0}


def draw_bias(rng: np.random.Generator) -> np.ndarray:
    """Receive-bias coefficients: brighter posteriorly (spine coil) plus gentle random terms."""
    return np.array([rng.uniform(0.2, 0.5), *rng.normal(0.0, 0.08, size=4)])


def _grid(config: PhantomConfig, lateral_offset: float) -> tuple[tuple[int, int, int], np.ndarray]:
    n = config.matrix
    spacing = config.fov_mm / n
    if config.mode == "2d":
        nx, thickness = 1, 8.0
    else:
        nx, thickness = config.n_slices, config.slice_thickness
    affine = np.diag([thickness, spacing, spacing, 1.0])
    affine[:3, 3] = [
        lateral_offset - 0.5 * (nx - 1) * thickness,
        -0.5 * (n - 1) * spacing,
        -0.5 * (n - 1) * spacing,
    ]
    return (nx, n, n), affine


def simulate_session(config: PhantomConfig, spec: SubjectSpec, session: str = BASELINE) -> PhantomSession:
    """Simulate one session of a subject (``"baseline"`` or ``"followup"``).

    The follow-up shares the subject's anatomy and degeneration; the subject lies a little
    differently (new rotation and shift), and the planted follow-up change is applied.
    """
    samples, grid, meta, rng = _session_samples(config, spec, session)
    return render_subject_session(samples, config, spec, session, factors=grid.factors, affine=grid.affine, rng=rng, meta=meta)


def session_samples(config: PhantomConfig, spec: SubjectSpec, session: str = BASELINE) -> tuple[Samples, SampleGrid]:
    """The sub-voxel anatomy of one session, as :func:`simulate_session` paints it.

    Its ``disc_u``, ``disc_v`` and ``disc_x`` are the normalised disc coordinates every
    voxel of the session's images was made from: the truth of which atlas point a subject
    point is (``benchmarks/bench_registration_phantom.py``).
    """
    samples, grid, _, _ = _session_samples(config, spec, session)
    return samples, grid


def _session_samples(config: PhantomConfig, spec: SubjectSpec, session: str):
    """Samples, their grid, the placement metadata and the rng that goes on to render the session."""
    if session not in (BASELINE, FOLLOWUP):
        raise DiscVBRError(f"phantom session must be {BASELINE!r} or {FOLLOWUP!r}, got {session!r}")
    if session == FOLLOWUP and spec.followup is None:
        raise DiscVBRError(f"{spec.subject} has no follow-up session")
    rng = subject_rng(config, spec.index, 1 if session == BASELINE else 2)
    rotation = float(rng.normal(0.0, 4.0))
    shift = rng.normal(0.0, 6.0, size=2)
    lateral = float(rng.uniform(-1.5, 1.5))
    geometry = build_spine(
        **spec.anatomy,
        degeneration=spec.degeneration,
        rotation_deg=rotation,
        l3_position=(22.0 + shift[0], 10.0 + shift[1]),
    )
    shape, affine = _grid(config, lateral)
    through = 3 if config.mode == "2d" else 2
    grid = SampleGrid(shape, affine, config.supersample, through)
    samples = rasterize(geometry, grid, rng=rng)
    meta = {"rotation_deg": rotation, "shift_mm": shift.tolist(), "lateral_offset_mm": lateral, "anatomy": spec.anatomy}
    return samples, grid, meta, rng


def render_subject_session(
    samples,
    config: PhantomConfig,
    spec: SubjectSpec,
    session: str,
    *,
    factors: tuple[int, int, int],
    affine: np.ndarray,
    rng: np.random.Generator,
    meta: dict,
    base_properties: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> PhantomSession:
    """Signals and truth of one session of ``spec`` from its painted samples (synthetic or real anatomy)."""
    clinical = spec.clinical if session == BASELINE else spec.followup
    amplitudes = effect_amplitudes(config, clinical, session)
    bias = draw_bias(rng)
    result = render_session(
        samples,
        factors=factors,
        affine=affine,
        degeneration=spec.degeneration,
        effect_amplitudes=amplitudes,
        t1rho_times=np.asarray(config.t1rho_times, float),
        t2_times=np.asarray(config.t2_times, float),
        snr=config.snr,
        bias_coefficients=bias,
        rng=rng,
        subject=spec.subject,
        session=session,
        base_properties=base_properties,
    )
    result.meta = {
        **meta,
        "effect_amplitudes_ms": amplitudes,
        "bias_coefficients": bias.tolist(),
        "clinical": clinical,
        "degeneration": spec.degeneration,
        "pfirrmann": spec.pfirrmann,
    }
    return result


def iter_cohort(config: PhantomConfig) -> Iterator[tuple[SubjectSpec, PhantomSession]]:
    """Yield every (subject, session) of a cohort, baseline before follow-up, one at a time."""
    for index in range(config.n_subjects):
        spec = draw_subject(config, index)
        yield spec, simulate_session(config, spec, BASELINE)
        if spec.followup is not None:
            yield spec, simulate_session(config, spec, FOLLOWUP)


def write_cohort(
    out: str | os.PathLike,
    config: PhantomConfig,
    *,
    with_masks: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    simulate: Callable[[PhantomConfig, SubjectSpec, str], PhantomSession] | None = None,
) -> Path:
    """Simulate a cohort and write it to ``out``; return the manifest's path.

    Layout::

        out/manifest.csv                     the cohort, as users fill it in
        out/truth.json                       generative model, parameters, hidden values
        out/sub-01/ses-baseline/t1rho.nii.gz (+ .json with the times)
                               /t2.nii.gz    (+ .json)
                               /discs.nii.gz ground-truth disc labels, 1 = L5S1 ... 5 = L1L2
                               /truth/*.nii.gz  T1rho/T2 maps (ms), S0, tissue, disc fraction,
                                                planted-effect weights; truth.json

    Parameters
    ----------
    out : path-like
        Output folder (created).
    config : PhantomConfig
    with_masks : bool
        Also fill the manifest's ``mask`` column with the ground-truth labels (as if
        masks had been drawn by hand).
    progress : callable, optional
        Called as ``progress(done, total, key)`` after each session.
    simulate : callable, optional
        Replaces :func:`simulate_session` (used by the semi-synthetic real-anatomy mode).
    """
    out = Path(out)
    ensure_writable(out)
    simulate = simulate or simulate_session
    specs = [draw_subject(config, i) for i in range(config.n_subjects)]
    total = sum(1 + (s.followup is not None) for s in specs)
    entries: list[SessionEntry] = []
    subjects_truth = []
    done = 0
    start = time.perf_counter()
    for spec in specs:
        sessions = [BASELINE] + ([FOLLOWUP] if spec.followup is not None else [])
        for session in sessions:
            result = simulate(config, spec, session)
            folder = out / spec.subject / f"ses-{session}"
            paths = _write_session(folder, result)
            clinical = spec.clinical if session == BASELINE else spec.followup
            variables = {k: (None if k in spec.missing else v) for k, v in clinical.items()}
            variables = {k: (np.nan if v is None and k not in ("sex", "group") else v) for k, v in variables.items()}
            entries.append(
                SessionEntry(
                    subject=spec.subject,
                    session=session,
                    series={
                        "t1rho": SeriesRef("t1rho", (paths["t1rho"],), result.t1rho.times),
                        "t2": SeriesRef("t2", (paths["t2"],), result.t2.times),
                    },
                    mask=paths["labels"] if with_masks else None,
                    variables=variables,
                )
            )
            done += 1
            if progress is not None:
                progress(done, total, f"{spec.subject}/{session}")
        subjects_truth.append({
            "subject": spec.subject,
            "clinical": spec.clinical,
            "followup_clinical": spec.followup,
            "degeneration": spec.degeneration,
            "pfirrmann": spec.pfirrmann,
            "missing_in_manifest": list(spec.missing),
            "anatomy": spec.anatomy,
        })
    manifest = write_manifest(out / "manifest.csv", entries)
    write_json(out / "truth.json", {
        "generator": "discvbr.phantom",
        "discvbr_version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "config": asdict(config),
        "seconds": round(time.perf_counter() - start, 2),
        "labels": {str(i + 1): lvl for i, lvl in enumerate(DISC_LEVELS)},
        "effects": {
            name: {
                "level": e.level,
                "center_normalised_uvx": e.center,
                "sigma_normalised_uvx": e.sigma,
                "amplitude_ms": config.odi_effect_ms if name == "odi" else config.followup_effect_ms,
                "description": e.description,
                "weight_maps": f"<session>/truth/effect_{name}.nii.gz",
            }
            for name, e in EFFECTS.items()
        },
        "model": (__doc__ or "").split("The generative model")[1].strip() if __doc__ else "",
        "subjects": subjects_truth,
    })
    return manifest


def _write_session(folder: Path, result: PhantomSession) -> dict[str, Path]:
    paths = {
        "t1rho": write_series(folder / "t1rho.nii.gz", result.t1rho),
        "t2": write_series(folder / "t2.nii.gz", result.t2),
        "labels": write_image(folder / "discs.nii.gz", result.labels),
    }
    for name, image in result.truth_images().items():
        write_image(folder / "truth" / f"{name}.nii.gz", image)
    write_json(folder / "truth" / "truth.json", {
        "subject": result.subject,
        "session": result.session,
        "noise_sigma": result.noise_sigma,
        **result.meta,
    })
    return paths
