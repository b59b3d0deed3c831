"""The statistics find the phantom's planted effect where it was planted and nowhere else.

Every subject is simulated on the same real anatomy (semi-synthetic mode), so the maps are
aligned without registration and the test isolates the statistics (with fitting noise).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from discvbr.fitting import fit_monoexp
from discvbr.manifest import encode_variables
from discvbr.phantom import EFFECTS, PhantomConfig, draw_subject
from discvbr.phantom.coordinates import effect_weight_map
from discvbr.phantom.real import load_real_anatomies, synthesize_from_real
from discvbr.stats import analyze_discs

from conftest import REAL_DATA

N_SUBJECTS = 24


@pytest.fixture(scope="module")
def aligned_cohort():
    anatomy = load_real_anatomies(REAL_DATA)[1]
    config = PhantomConfig(n_subjects=N_SUBJECTS, seed=11, missing_fraction=0.0)
    maps, rows = [], []
    for i in range(N_SUBJECTS):
        spec = draw_subject(config, i)
        session = synthesize_from_real(anatomy, config, spec)
        labels = np.asarray(session.labels.array)
        fit = fit_monoexp(session.t1rho.data, session.t1rho.times, labels > 0, t_max=250.0)
        maps.append(fit.T)
        rows.append({"subject": spec.subject, **{k: spec.clinical[k] for k in ("age", "sex", "bmi", "odi")}})
    table = encode_variables(pd.DataFrame(rows).set_index("subject"))
    return np.stack(maps), table, session.labels


def test_planted_odi_effect_is_found_where_planted_and_nowhere_else(aligned_cohort):
    maps, table, labels = aligned_cohort
    study = analyze_discs(
        "voxel_by_variable", maps, labels=np.asarray(labels.array), variables=table, subjects=list(table.index),
        variable="odi", covariates=["age", "sex", "bmi"], n_permutations=1000, seed=0,
    )
    weight = effect_weight_map(labels, EFFECTS["odi"])
    discs = np.asarray(labels.array) > 0
    core = weight >= 0.5
    # voxel-level max-T is the stricter test: some of the core; TFCE: most of it
    for correction, share in (("fwe_voxel_joint", 0.1), ("fwe_tfce_joint", 0.5)):
        significant = study.significant(correction, alpha=0.05)
        # nowhere else: no significant voxel where the planted weight is below 5 %
        assert not (significant & discs & (weight < 0.05)).any(), correction
        # where planted
        assert significant[core].mean() > share, correction
    # the direction is the planted one: T1rho falls with ODI
    assert np.nanmean(study.map("r")[weight >= 0.5]) < -0.6


def test_no_effect_is_found_against_a_shuffled_variable(aligned_cohort):
    maps, table, labels = aligned_cohort
    shuffled = table.copy()
    shuffled["odi"] = np.random.default_rng(3).permutation(shuffled["odi"].to_numpy())
    study = analyze_discs(
        "voxel_by_variable", maps, labels=np.asarray(labels.array), variables=shuffled, subjects=list(table.index),
        variable="odi", covariates=["age", "sex", "bmi"], n_permutations=500, seed=1,
    )
    assert study.significant("fwe_voxel_joint", alpha=0.05).sum() <= 3
