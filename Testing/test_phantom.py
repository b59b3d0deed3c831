"""The phantom: anatomy, ground truth that reproduces the signals, determinism, cohorts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage, stats

from discvbr.io import read_image
from discvbr.levels import DISC_LEVELS
from discvbr.phantom import EFFECTS, PhantomConfig, Tissue, build_spine, draw_subject, simulate_session
from discvbr.phantom.real import RealAnatomySimulator, load_real_anatomies

from conftest import REAL_DATA


def test_2d_geometry_and_labels(phantom_session_2d):
    s = phantom_session_2d
    assert s.t1rho.data.shape == (1, 256, 256, 4) and s.t2.data.shape == (1, 256, 256, 4)
    np.testing.assert_allclose(s.t1rho.grid.spacing, [8.0, 240 / 256, 240 / 256])
    labels = s.labels.array[0]
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    pixel_area = (240 / 256) ** 2
    centroids = []
    for label in range(1, 6):
        disc = labels == label
        # one connected disc of a realistic sagittal area (35-45 mm deep, 5-13 mm high)
        assert ndimage.label(disc)[1] == 1
        assert 120 < disc.sum() * pixel_area < 650, DISC_LEVELS[label - 1]
        centroids.append(ndimage.center_of_mass(disc))
    # labels run from the bottom up: L5S1 lowest
    assert np.all(np.diff([c[1] for c in centroids]) > 15)


def test_l5s1_is_the_most_wedged_disc():
    geometry = build_spine(lordosis=1.0)
    wedges = {seg.name: seg.lower.tilt - seg.upper.tilt for seg in geometry.segments if seg.label}
    assert max(wedges, key=wedges.get) == "L5S1"
    assert all(w > 0 for w in wedges.values())  # lordotic: every lumbar disc taller anteriorly


def test_images_look_like_t2_lumbar_mri(phantom_session_2d):
    s = phantom_session_2d
    tissue = s.truth.tissue[0]
    last_t2 = s.t2.data[0, :, :, -1]
    first = s.t1rho.data[0, :, :, 0]
    mean = lambda img, t: img[tissue == t].mean()  # noqa: E731
    # CSF brightest on the long echo; bone cortex and ligaments dark; air at the noise floor
    assert mean(last_t2, Tissue.CSF) > 2 * mean(last_t2, Tissue.MARROW)
    assert mean(first, Tissue.CORTEX) < 0.3 * mean(first, Tissue.DISC)
    assert mean(first, Tissue.AIR) < 3 * s.noise_sigma
    # the healthy nucleus outshines the annulus on T1rho maps
    disc_t1rho = s.truth.t1rho[0][s.labels.array[0] > 0]
    assert disc_t1rho.max() > 90 and disc_t1rho.min() < 70


@pytest.mark.parametrize("series", ["t1rho", "t2"])
def test_truth_reproduces_signals_to_noise_level(phantom_session_2d, series):
    s = phantom_session_2d
    echoes = getattr(s, series)
    truth_t = s.truth.t1rho if series == "t1rho" else s.truth.t2
    # voxels entirely inside a disc (no partial volume with other tissue)
    interior = (s.truth.disc_fraction > 0.999) & (s.labels.array > 0)
    assert interior.sum() > 1000
    model = s.truth.s0[interior][:, None] * np.exp(-echoes.times[None, :] / truth_t[interior][:, None])
    residual = echoes.data[interior] - model
    # high SNR: Rician noise is nearly Gaussian with SD sigma; bias within 3 standard errors
    n = residual.size
    assert abs(residual.mean()) < 3 * s.noise_sigma / np.sqrt(n) + 0.01 * s.noise_sigma
    assert residual.std() == pytest.approx(s.noise_sigma, rel=0.05)


def test_same_seed_same_data_other_seed_other_data():
    config = PhantomConfig(n_subjects=2, matrix=96, seed=11)
    a = simulate_session(config, draw_subject(config, 1))
    b = simulate_session(config, draw_subject(config, 1))
    np.testing.assert_array_equal(a.t1rho.data, b.t1rho.data)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    other = PhantomConfig(n_subjects=2, matrix=96, seed=12)
    c = simulate_session(other, draw_subject(other, 1))
    assert not np.array_equal(a.t1rho.data, c.t1rho.data)


def test_planted_odi_effect_is_where_and_as_strong_as_declared():
    low = PhantomConfig(n_subjects=1, matrix=128, seed=5, odi_effect_ms=0.0)
    high = PhantomConfig(n_subjects=1, matrix=128, seed=5, odi_effect_ms=-20.0)
    spec = draw_subject(low, 0)
    a, b = simulate_session(low, spec), simulate_session(high, spec)
    weight = a.truth.effects["odi"]
    z = (spec.clinical["odi"] - 30.0) / 20.0
    delta = b.truth.t1rho - a.truth.t1rho
    inside = weight > 0.05
    # only L4L5 carries the effect, and the change equals amplitude x weight (S0-weighting within
    # a voxel makes it approximate: 1 ms or 10% of the amplitude)
    assert set(np.unique(a.labels.array[inside & (a.labels.array > 0)])) == {2}
    np.testing.assert_allclose(delta[inside], -20.0 * z * weight[inside], atol=max(1.0, 2.0 * abs(z)))
    outside = (a.labels.array > 0) & (weight < 1e-4)
    assert np.nanmax(np.abs(delta[outside])) < 0.01  # ms


def test_cohort_files_and_truth(phantom_cohort_dir, phantom_config_2d):
    truth = json.loads((phantom_cohort_dir / "truth.json").read_text())
    assert set(truth["effects"]) == set(EFFECTS)
    assert truth["config"]["seed"] == phantom_config_2d.seed
    subjects = truth["subjects"]
    assert len(subjects) == phantom_config_2d.n_subjects
    first = phantom_cohort_dir / "sub-01" / "ses-baseline"
    labels = read_image(first / "discs.nii.gz")
    t1rho_map = read_image(first / "truth" / "t1rho_map.nii.gz")
    assert labels.same_grid(t1rho_map)
    assert labels.array.dtype == np.uint8
    # every subject's hidden clinical values are complete, even where the manifest is empty
    assert all(s["clinical"]["odi"] is not None for s in subjects)
    followups = [s for s in subjects if s["followup_clinical"] is not None]
    for s in followups:
        assert (phantom_cohort_dir / s["subject"] / "ses-followup" / "t1rho.nii.gz").is_file()


def test_degeneration_lowers_nucleus_t1rho_in_a_cohort():
    """Across subjects, disc T1rho falls with the Pfirrmann grade (ROI check as in the paper)."""
    config = PhantomConfig(n_subjects=10, matrix=96, seed=2, odi_effect_ms=0.0)
    grades, means = [], []
    for i in range(config.n_subjects):
        spec = draw_subject(config, i)
        session = simulate_session(config, spec)
        for label, level in enumerate(DISC_LEVELS, start=1):
            disc = session.labels.array == label
            grades.append(spec.pfirrmann[level])
            means.append(np.nanmean(session.truth.t1rho[disc]))
    r, p = stats.spearmanr(grades, means)
    assert r < -0.6 and p < 1e-4


def test_3d_stack_geometry():
    config = PhantomConfig(n_subjects=1, mode="3d", matrix=96, n_slices=6, slice_thickness=4.0, seed=4)
    s = simulate_session(config, draw_subject(config, 0))
    assert s.t1rho.data.shape == (6, 96, 96, 4)
    np.testing.assert_allclose(s.t1rho.grid.spacing[0], 4.0)
    per_slice = (s.labels.array > 0).sum(axis=(1, 2))
    # discs are widest at the midline and narrower off it; all five present in the central slices
    assert per_slice[2:4].min() >= per_slice[[0, -1]].max()
    for k in (2, 3):
        assert set(np.unique(s.labels.array[k])) == {0, 1, 2, 3, 4, 5}


def test_semi_synthetic_mode_keeps_real_disc_shapes():
    anatomies = load_real_anatomies(REAL_DATA)
    assert len(anatomies) == 3
    config = PhantomConfig(n_subjects=1, seed=1)
    session = RealAnatomySimulator(anatomies)(config, draw_subject(config, 0), "baseline")
    real = anatomies[0]
    assert session.t1rho.data.shape == (1, *real.image.shape[1:], 4)
    np.testing.assert_allclose(session.t1rho.grid.spacing, [8.0, 1.0, 1.0])
    # the 8 mm slab's labels agree with the thin central slice's labels
    centre_x = int(round(np.flatnonzero((real.labels.array > 0).any(axis=(1, 2))).mean()))
    thin = real.labels.array[centre_x]
    thick = session.labels.array[0]
    for label in range(1, 6):
        a, b = thin == label, thick == label
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.8, DISC_LEVELS[label - 1]
    t1 = session.truth.t1rho[0][thick > 0]
    assert 35 < t1.min() and t1.max() < 160
