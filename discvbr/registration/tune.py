"""Bayesian optimisation of the registration's B-spline parameters (Optuna).

Iriondo et al. (MRM 2020, section 2.2, eq. 1) chose the final grid spacing, the number of
iterations and the rigidity penalty weight by Bayesian optimisation of

    L = (1 / N) * sum_i (1 - Dice_i + SD(det J)_i)

over all N discs of all subjects, Dice_i being the overlap of registered disc i with its
atlas disc and SD(det J)_i the SD of the determinant of the spatial Jacobian over it. They
found spacing 2, 200 iterations and weight 0.77 (the ``paper`` preset of
:func:`~discvbr.registration.params.registration_preset`). The objective rewards overlap and
a uniform det J, not that each voxel lands on its anatomical match; issue 17's default
(depth maps, grid 8, weight 4) was chosen on known deformations instead
(``benchmarks/bench_registration_accuracy.py``). The trials run with the parameter files of
``base_params`` (default: the shipped default files).

Here Optuna's TPE sampler proposes the trials; each trial registers every disc, the discs
of several trials running in parallel worker processes. The study lives in an Optuna
journal file, so an interrupted run resumes where it stopped. The paper's values are the
first trial of a new study (when inside the search space), so the search is always
compared with them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import Image, atomic_write, write_json
from discvbr.registration.atlas import Atlas
from discvbr.registration.disc import DEFAULT_MARGIN_MM, DiscRegistration
from discvbr.registration.params import RegistrationParams, write_parameter_files
from discvbr.registration.subject import DiscFailure, DiscTask, run_disc_tasks

__all__ = ["SearchSpace", "TuneCase", "TuneResult", "FAILURE_LOSS", "disc_loss", "objective_value", "tune_registration"]

#: Loss of a disc whose registration failed: worse than any registered disc can score in
#: practice (1 - Dice <= 1 and SD(det J) rarely above 1), so failing trials rank last.
FAILURE_LOSS = 2.0
_JOURNAL = "optuna-journal.log"


@dataclass(frozen=True)
class SearchSpace:
    """Ranges searched (inclusive). Grid spacing in voxels (integers); iterations and the
    rigidity weight on a log scale."""

    grid_spacing: tuple[int, int] = (1, 8)
    iterations: tuple[int, int] = (50, 500)
    rigidity_weight: tuple[float, float] = (0.01, 10.0)

    def __post_init__(self) -> None:
        for name in ("grid_spacing", "iterations", "rigidity_weight"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise DiscVBRError(f"search range for {name} must satisfy 0 < low <= high, got {lo}..{hi}")


@dataclass(frozen=True)
class TuneCase:
    """One disc to register in every trial: a subject's label map and the disc's label."""

    subject: str
    mask: Image
    label: int


@dataclass
class TuneResult:
    """Outcome of a tuning run."""

    best_params: RegistrationParams
    best_value: float
    n_complete: int
    trials: pd.DataFrame
    files: list[Path]


def disc_loss(result: DiscRegistration | DiscFailure) -> float:
    """``1 - Dice + SD(det J)`` of one disc; :data:`FAILURE_LOSS` for a failed disc."""
    if isinstance(result, DiscFailure):
        return FAILURE_LOSS
    value = 1.0 - result.qc.dice + result.qc.det_jacobian_sd
    return float(value) if np.isfinite(value) else FAILURE_LOSS


def objective_value(results: Sequence[DiscRegistration | DiscFailure]) -> float:
    """The paper's objective: mean over discs of ``1 - Dice + SD(det J)``."""
    if not results:
        raise DiscVBRError("no disc to evaluate the registration objective on")
    return float(np.mean([disc_loss(r) for r in results]))


def _trial_params(trial, space: SearchSpace, base: RegistrationParams) -> RegistrationParams:
    return base.with_values(
        final_grid_spacing=float(trial.suggest_int("final_grid_spacing", *space.grid_spacing)),
        iterations=int(trial.suggest_int("iterations", *space.iterations, log=True)),
        rigidity_weight=float(trial.suggest_float("rigidity_weight", *space.rigidity_weight, log=True)),
    )


def _write_outputs(out: Path, study, base: RegistrationParams, ndim: int, meta: dict) -> tuple[list[Path], pd.DataFrame]:
    import optuna

    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
    with atomic_write(out / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    files = [out / "trials.csv"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = min(complete, key=lambda t: t.value)
        params = base.with_values(
            final_grid_spacing=float(best.params["final_grid_spacing"]),
            iterations=int(best.params["iterations"]),
            rigidity_weight=float(best.params["rigidity_weight"]),
        )
        note = (
            f"Best of {len(complete)} trials of discvbr tune-registration (trial {best.number}, "
            f"L = mean(1 - Dice + SD(det J)) = {best.value:.5f})"
        )
        files += write_parameter_files(out / "best", params, ndim=ndim, note=note)
        files.append(write_json(out / "best.json", {
            "trial": best.number,
            "value": best.value,
            "params": params.to_dict(),
            "mean_dice": best.user_attrs.get("mean_dice"),
            "mean_det_jacobian_sd": best.user_attrs.get("mean_det_jacobian_sd"),
            "n_complete": len(complete),
            **meta,
        }))
    return files, table


def tune_registration(
    cases: Sequence[TuneCase],
    atlas: Atlas,
    *,
    out: str | os.PathLike,
    n_trials: int = 30,
    jobs: int = 1,
    parallel_trials: int | None = None,
    space: SearchSpace = SearchSpace(),
    base_params: RegistrationParams = RegistrationParams(),
    margin_mm: float = DEFAULT_MARGIN_MM,
    seed: int = 0,
    study_name: str = "discvbr-registration",
    progress: Callable[[int, int, float], None] | None = None,
) -> TuneResult:
    """Tune final grid spacing, iterations and rigidity weight on a set of discs.

    Parameters
    ----------
    cases : sequence of TuneCase
        The discs every trial registers (all discs of all subjects, or a sample).
    atlas : Atlas
    out : path-like
        Output folder: ``optuna-journal.log`` (the study; rerun to resume), ``trials.csv``,
        ``best.json`` and ``best/`` (parameter files of the best trial, usable as
        ``RegistrationParams(parameter_dir=...)`` and in SlicerElastix).
    n_trials : int
        Completed trials wanted in the study in total (earlier runs count).
    jobs : int
        Worker processes.
    parallel_trials : int, optional
        Trials proposed at once and evaluated together (default: ``jobs``); Optuna's
        constant-liar TPE keeps them apart.
    space : SearchSpace
    base_params : RegistrationParams
        Everything not tuned (seed, step length, parameter files).
    margin_mm : float
        Crop margin, mm.
    seed : int
        Seed of the sampler.
    study_name : str
    progress : callable, optional
        ``progress(complete, n_trials, best_value)`` after each batch of trials.

    Returns
    -------
    TuneResult

    Raises
    ------
    DiscVBRError
        With no cases, or when the cases and the atlas differ in mode.
    """
    import optuna

    if not cases:
        raise DiscVBRError("tuning needs at least one disc")
    if n_trials < 1:
        raise DiscVBRError(f"number of trials must be at least 1, got {n_trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ndim = atlas.ndim
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / _JOURNAL)))
    existing = [s.study_name for s in storage.get_all_studies()]
    probe = optuna.load_study(study_name=study_name, storage=storage) if study_name in existing else None
    n_before = len(probe.trials) if probe is not None else 0
    sampler = optuna.samplers.TPESampler(
        seed=int(seed) + 7919 * n_before,  # a resumed run continues the sequence, it does not replay it
        constant_liar=True,
        n_startup_trials=max(2, min(10, n_trials // 3)),
    )
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, direction="minimize", load_if_exists=True)
    if n_before == 0:
        study.set_user_attr("cases", [f"{c.subject}:{c.label}" for c in cases])
        study.set_user_attr("atlas", atlas.name)
        paper = {"final_grid_spacing": 2, "iterations": 200, "rigidity_weight": 0.77}
        if all(getattr(space, k)[0] <= v <= getattr(space, k)[1] for k, v in zip(("grid_spacing", "iterations", "rigidity_weight"), paper.values())):
            study.enqueue_trial(paper, skip_if_exists=True)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # left running by an interrupted run: close it so the study stays consistent
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)

    meta = {"atlas": atlas.name, "n_discs": len(cases), "seed": seed, "discvbr_version": __version__, "optuna_version": optuna.__version__}
    batch = max(1, parallel_trials or jobs)

    def n_complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    while n_complete() < n_trials:
        trials = [study.ask() for _ in range(min(batch, n_trials - n_complete()))]
        tasks = []
        for trial in trials:
            params = _trial_params(trial, space, base_params)
            tasks += [
                DiscTask(c.mask, c.label, atlas, c.subject, params, margin_mm, tag=(trial.number, i))
                for i, c in enumerate(cases)
            ]
        results = run_disc_tasks(tasks, jobs=jobs)
        for trial in trials:
            mine = [r for t, r in zip(tasks, results) if t.tag[0] == trial.number]
            done = [r for r in mine if isinstance(r, DiscRegistration)]
            trial.set_user_attr("n_failed", len(mine) - len(done))
            trial.set_user_attr("mean_dice", float(np.mean([r.qc.dice for r in done])) if done else None)
            trial.set_user_attr("mean_det_jacobian_sd", float(np.mean([r.qc.det_jacobian_sd for r in done])) if done else None)
            study.tell(trial, objective_value(mine))
        files, table = _write_outputs(out, study, base_params, ndim, meta)
        if progress is not None:
            progress(n_complete(), n_trials, study.best_value)

    files, table = _write_outputs(out, study, base_params, ndim, meta)
    best = json.loads((out / "best.json").read_text())
    return TuneResult(
        best_params=RegistrationParams(**best["params"]),
        best_value=float(best["value"]),
        n_complete=n_complete(),
        trials=table,
        files=files,
    )
