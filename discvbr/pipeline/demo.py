"""``discvbr demo``: the whole method on a phantom cohort, checked against its ground truth.

A phantom cohort is simulated (``<out>/cohort``), run through the pipeline exactly as a
user's manifest would be (``<out>/results``), and the outputs are compared with the
truth the phantom knows: disc Dice of the automatic masks, agreement of mean disc T1rho
from automatic and true masks (the paper's Table 3), accuracy of the fitted maps, and
whether each planted effect was found where it was planted and nowhere else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from discvbr.io import atomic_write, ensure_writable, read_image, write_json
from discvbr.levels import DISC_LEVELS
from discvbr.pipeline.cache import Step
from discvbr.pipeline.config import PipelineConfig
from discvbr.pipeline.lock import output_lock
from discvbr.pipeline.runner import Progress, RunResult, run_pipeline
from discvbr.pipeline.session import session_folder

__all__ = ["DemoResult", "run_demo", "evaluate_against_truth", "DEMO_SUMMARY"]

#: Written last, only when the demo completes.
DEMO_SUMMARY = "demo_summary.json"


@dataclass
class DemoResult:
    """The run and how its outputs compare with the phantom's truth."""

    run: RunResult
    evaluation: dict = field(default_factory=dict)
    summary_path: Path | None = None


def run_demo(
    out: str | os.PathLike,
    *,
    subjects: int = 20,
    mode: str = "2d",
    seed: int = 1,
    workers: int = 0,
    scheduler: str | None = None,
    config: PipelineConfig | None = None,
    followup_fraction: float = 0.5,
    progress: Progress | None = None,
) -> DemoResult:
    """Simulate a phantom cohort, run the pipeline on it and evaluate against the truth.

    Parameters
    ----------
    out : path-like
        Output folder: ``cohort/`` (the phantom), ``results/`` (the run), ``demo_summary.json``.
    subjects : int
        Phantom subjects.
    mode : {"2d", "3d"}
    seed : int
        Phantom seed.
    workers, scheduler, config, progress
        As for :func:`discvbr.pipeline.run_pipeline`.
    followup_fraction : float
        Share of the subjects with a follow-up session (for the longitudinal analysis),
        exactly: ``round(followup_fraction * subjects)`` of them. The default gives 10 of 20:
        the longitudinal test flips the sign of each subject's change, and 10 subjects give
        1,024 sign patterns where 6 gave 64, too few for a family-wise corrected check
        whose result does not hinge on the two or three largest of them.
    """
    out = Path(out)
    ensure_writable(out)
    with output_lock(out, command="discvbr demo"):
        (out / DEMO_SUMMARY).unlink(missing_ok=True)  # written again only when this run completes
        return _run_demo_locked(out, subjects=subjects, mode=mode, seed=seed, workers=workers, scheduler=scheduler,
                                config=config, followup_fraction=followup_fraction, progress=progress)


def _run_demo_locked(
    out: Path,
    *,
    subjects: int,
    mode: str,
    seed: int,
    workers: int,
    scheduler: str | None,
    config: PipelineConfig | None,
    followup_fraction: float,
    progress: Progress | None,
) -> DemoResult:
    from discvbr.phantom import PhantomConfig, write_cohort

    phantom = PhantomConfig(n_subjects=subjects, mode=mode, seed=seed, followup_fraction=followup_fraction)
    cohort_dir = out / "cohort"
    if not _same_phantom(cohort_dir, phantom):
        notify = progress or (lambda *a: None)
        write_cohort(cohort_dir, phantom, progress=lambda d, t, k: notify("phantom", d, t, k))
    run = run_pipeline(
        cohort_dir / "manifest.csv",
        out / "results",
        config=config,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        extra_report_sections=lambda outcomes: _agreement_section(cohort_dir, out / "results", outcomes),
        title="DiscVBR demo: phantom cohort",
    )
    evaluation = evaluate_against_truth(cohort_dir, run)
    summary_path = write_json(out / DEMO_SUMMARY, {"run": run.summary(), "evaluation": evaluation})
    return DemoResult(run, evaluation, summary_path)


def _same_phantom(folder: Path, config) -> bool:
    """True when ``folder`` holds a complete cohort simulated with ``config``."""
    try:
        truth = json.loads((folder / "truth.json").read_text())
    except (OSError, ValueError):
        return False
    expected = json.loads(json.dumps(asdict(config)))
    return truth.get("config") == expected and (folder / "manifest.csv").is_file()


def _true_mask_means(cohort_dir: Path, results: Path, outcomes) -> pd.DataFrame:
    """Mean native T per disc from the true labels and from the run's masks."""
    rows = []
    for o in outcomes:
        if o.status == "failed":
            continue
        folder = session_folder(results, o.subject, o.session)
        truth = np.asarray(read_image(cohort_dir / o.subject / f"ses-{o.session}" / "discs.nii.gz").array)
        auto = np.asarray(read_image(folder / "masks" / "discs.nii.gz").array)
        for kind in ("t1rho", "t2"):
            path = folder / "maps" / "native" / f"{kind}_T.nii.gz"
            if not path.is_file():
                continue
            t_map = np.asarray(read_image(path).array)
            true_fit = _fit_in(cohort_dir / o.subject / f"ses-{o.session}" / f"{kind}.nii.gz", truth, kind)
            for label, level in enumerate(DISC_LEVELS, start=1):
                a = t_map[(auto == label) & np.isfinite(t_map)]
                m = true_fit[(truth == label) & np.isfinite(true_fit)]
                rows.append({"subject": o.subject, "session": o.session, "map": kind, "level": level,
                             "manual": float(m.mean()) if m.size else np.nan,
                             "automatic": float(a.mean()) if a.size else np.nan,
                             "dice": _dice(auto == label, truth == label)})
    return pd.DataFrame(rows, columns=["subject", "session", "map", "level", "manual", "automatic", "dice"])


def _fit_in(series_path: Path, labels: np.ndarray, kind: str) -> np.ndarray:
    from discvbr.io import read_series
    from discvbr.pipeline.config import FittingSettings
    from discvbr.pipeline.session import fit_series

    times = json.loads(series_path.with_name(f"{kind}.json").read_text())["times_ms"]
    series = read_series(series_path, times, kind=kind)
    return fit_series(series, labels > 0, FittingSettings()).T


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else float("nan")


def _agreement_table(cohort_dir: Path, results: Path, outcomes) -> pd.DataFrame:
    """:func:`_true_mask_means`, written to ``tables/``; a resumable step (it fits every session again)."""
    path = results / "tables" / "agreement_true_vs_automatic_masks.csv"
    usable = [o for o in outcomes if o.status != "failed"]
    inputs = []
    for o in usable:
        truth, folder = cohort_dir / o.subject / f"ses-{o.session}", session_folder(results, o.subject, o.session)
        inputs += [truth / "discs.nii.gz", folder / "masks" / "discs.nii.gz"]
        for kind in ("t1rho", "t2"):
            inputs += [p for p in (truth / f"{kind}.nii.gz", folder / "maps" / "native" / f"{kind}_T.nii.gz") if p.is_file()]
    step = Step("agreement", path.parent, {"sessions": [[o.subject, o.session] for o in usable]}, inputs)
    if step.done():
        return pd.read_csv(path)
    table = _true_mask_means(cohort_dir, results, outcomes)
    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=False)
    step.finish([path])
    return table


def _agreement_section(cohort_dir: Path, results: Path, outcomes):
    from discvbr.pipeline.report import cached_figure
    from discvbr.render.figures import plot_agreement, save_figure
    from discvbr.render.report import ReportSection

    table = _agreement_table(cohort_dir, results, outcomes)
    section = ReportSection(
        "Biomarker agreement: true vs automatic masks",
        "Mean disc T1rho in subject space from the phantom's true disc labels (the 'manual' masks) and from the "
        "automatic segmentation (the paper's Table 3 and Figure 3).",
    )
    t1 = table[table["map"] == "t1rho"].dropna(subset=["manual", "automatic"])
    if not t1.empty:
        manual = {lvl: t1[t1.level == lvl]["manual"].to_numpy() for lvl in DISC_LEVELS}
        automatic = {lvl: t1[t1.level == lvl]["automatic"].to_numpy() for lvl in DISC_LEVELS}
        section.figures.append(cached_figure(
            results / "figures" / "agreement.png", {"manual": manual, "automatic": automatic},
            lambda path: save_figure(plot_agreement(manual, automatic, quantity="T1rho"), path),
        ))
        section.captions.append("Scatter and Bland-Altman plots per disc")
    return [section]


def evaluate_against_truth(cohort_dir: str | os.PathLike, run: RunResult) -> dict:
    """Compare a run on a phantom cohort with the phantom's truth.

    Returns a JSON-ready dict: per-disc Dice of the automatic masks, biomarker agreement
    (Pearson r, bias and limits of agreement of mean disc T1rho, true vs automatic masks),
    the error of fitted T1rho inside the discs, and for each planted effect the share of
    its region found significant and the significant voxels found elsewhere.
    """
    from scipy import stats

    from discvbr.phantom import EFFECTS
    from discvbr.phantom.coordinates import effect_weight_map
    from discvbr.registration import load_atlas

    cohort_dir = Path(cohort_dir)
    results = run.out
    evaluation: dict = {}
    table_path = results / "tables" / "agreement_true_vs_automatic_masks.csv"
    table = pd.read_csv(table_path) if table_path.is_file() else _true_mask_means(cohort_dir, results, run.sessions)
    evaluation["segmentation_dice"] = {lvl: round(float(table[(table.level == lvl) & (table["map"] == "t1rho")]["dice"].mean()), 4) for lvl in DISC_LEVELS}
    agreement = {}
    for kind in ("t1rho", "t2"):
        part = table[table["map"] == kind].dropna(subset=["manual", "automatic"])
        if len(part) > 2:
            diff = part["automatic"] - part["manual"]
            agreement[kind] = {
                "pearson_r": round(float(stats.pearsonr(part["manual"], part["automatic"])[0]), 4),
                "bias_ms": round(float(diff.mean()), 3),
                "limits_of_agreement_ms": [round(float(diff.mean() - 1.96 * diff.std(ddof=1)), 3),
                                           round(float(diff.mean() + 1.96 * diff.std(ddof=1)), 3)],
                "n": int(len(part)),
            }
    evaluation["biomarker_agreement"] = agreement
    evaluation["fit_error_t1rho_ms"] = _fit_error(cohort_dir, results, run.sessions)

    atlas = load_atlas(results / "atlas")
    correction = "fwe_tfce_joint"
    effects = {}
    for analysis in run.analyses:
        name = analysis.settings.name
        planted = {"odi": "odi", "odi_groups": "odi", "followup": "followup"}.get(name)
        entry: dict = {"status": analysis.status, "subjects": len(analysis.subjects)}
        if analysis.status == "ok":
            folder = analysis.folder
            p_path = folder / f"p_{correction}.nii.gz"
            if not p_path.is_file():
                p_path = folder / "p_fwe_tfce.nii.gz"
            p = np.asarray(read_image(p_path).array)
            significant = np.isfinite(p) & (p <= 0.05)
            entry["correction"] = p_path.stem.replace(".nii", "")
            entry["significant_voxels"] = int(significant.sum())
            if planted:
                weight = effect_weight_map(atlas.labels, EFFECTS[planted])
                region, outside = weight >= 0.5, weight < 0.05
                discs = np.asarray(atlas.labels.array) > 0
                entry["planted"] = EFFECTS[planted].description
                entry["region_voxels"] = int(region.sum())
                entry["found_in_region"] = round(float(significant[region].mean()), 3) if region.any() else None
                entry["significant_outside_region"] = int((significant & outside & discs).sum())
                # the strength of the effect where planted: the share found under FWE control can
                # swing with few subjects (n subjects give 2**n sign patterns), the statistic less
                t_path = folder / "t.nii.gz"
                if t_path.is_file() and region.any():
                    t = np.abs(np.asarray(read_image(t_path).array, dtype=float))[region]
                    entry["median_abs_t_in_region"] = round(float(np.nanmedian(t)), 2) if np.isfinite(t).any() else None
                entry["found_where_planted"] = bool(significant[region].any() and not (significant & outside & discs).any())
        else:
            entry["message"] = analysis.message
        effects[name] = entry
    evaluation["effects"] = effects
    return evaluation


def _fit_error(cohort_dir: Path, results: Path, outcomes) -> dict:
    """Fitted minus true T1rho in voxels entirely inside a true disc (native space)."""
    errors = []
    for o in outcomes:
        if o.status == "failed":
            continue
        path = session_folder(results, o.subject, o.session) / "maps" / "native" / "t1rho_T.nii.gz"
        truth_dir = cohort_dir / o.subject / f"ses-{o.session}" / "truth"
        if not path.is_file():
            continue
        fitted = np.asarray(read_image(path).array)
        true = np.asarray(read_image(truth_dir / "t1rho_map.nii.gz").array)
        interior = np.asarray(read_image(truth_dir / "disc_fraction.nii.gz").array) > 0.999
        diff = (fitted - true)[interior & np.isfinite(fitted)]
        errors.append(diff)
    if not errors:
        return {}
    diff = np.concatenate(errors)
    return {"voxels": int(diff.size), "median_error": round(float(np.median(diff)), 3),
            "median_absolute_error": round(float(np.median(np.abs(diff))), 3)}
