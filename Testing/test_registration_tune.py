"""Bayesian tuning of the registration: objective, resumable study, best parameter files."""

from __future__ import annotations

import json

import pytest

from discvbr.errors import DiscVBRError
from discvbr.registration import RegistrationParams, load_atlas, register_disc
from discvbr.registration.params import read_parameter_file
from discvbr.registration.subject import DiscFailure
from discvbr.registration.tune import FAILURE_LOSS, SearchSpace, TuneCase, disc_loss, objective_value, tune_registration

# a small space around the paper's values so that its trial (enqueued first) is inside
SPACE = SearchSpace(grid_spacing=(2, 4), iterations=(10, 200), rigidity_weight=(0.1, 1.0))


def test_tuning_resumes_and_its_best_value_is_the_papers_objective(phantom_session_2d, tmp_path):
    atlas = load_atlas("phantom-healthy", mode="2d")
    cases = [TuneCase("sub-03", phantom_session_2d.labels, 2)]
    first = tune_registration(cases, atlas, out=tmp_path, n_trials=2, space=SPACE, seed=1)
    assert first.n_complete == 2
    assert first.trials.loc[0, "params_iterations"] == 200
    assert first.trials.loc[0, "params_final_grid_spacing"] == 2
    assert first.trials.loc[0, "params_rigidity_weight"] == pytest.approx(0.77)

    # resuming asks only for the missing trial and keeps the earlier ones as they were
    second = tune_registration(cases, atlas, out=tmp_path, n_trials=3, space=SPACE, seed=1)
    assert second.n_complete == 3 and len(second.trials) == 3
    assert list(second.trials["value"][:2]) == list(first.trials["value"])

    # the best value is L = mean(1 - Dice + SD(det J)), reproduced by registering again
    again = register_disc(phantom_session_2d.labels, 2, atlas, subject="sub-03", params=second.best_params)
    assert second.best_value == pytest.approx(1.0 - again.qc.dice + again.qc.det_jacobian_sd, abs=1e-12)
    assert second.best_value == pytest.approx(min(second.trials["value"]), abs=1e-12)

    # the best parameter files carry the best values and run as user parameters
    bspline = read_parameter_file(tmp_path / "best" / "bspline-2d.txt")
    assert int(bspline["MaximumNumberOfIterations"][0]) == second.best_params.iterations
    assert float(bspline["FinalGridSpacingInVoxels"][0]) == second.best_params.final_grid_spacing
    assert float(bspline["Metric1Weight"][0]) == pytest.approx(second.best_params.rigidity_weight)
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["value"] == second.best_value and best["n_complete"] == 3


def test_objective_counts_failed_discs_as_worst():
    failure = DiscFailure("s", 2, "empty")
    assert disc_loss(failure) == FAILURE_LOSS
    assert objective_value([failure, failure]) == FAILURE_LOSS
    with pytest.raises(DiscVBRError, match="no disc"):
        objective_value([])


def test_search_space_is_checked():
    with pytest.raises(DiscVBRError, match="search range for iterations"):
        SearchSpace(iterations=(100, 10))
    with pytest.raises(DiscVBRError, match="at least one disc"):
        tune_registration([], load_atlas("phantom-healthy", mode="2d"), out="unused", base_params=RegistrationParams())
