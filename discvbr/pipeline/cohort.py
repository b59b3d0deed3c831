"""The cohort stage: tables over sessions, voxel-wise statistics, figures and the report.

Maps enter the statistics through a disk-backed array (``numpy.memmap``) filled one
subject at a time, and each disc's analysis reads only its own voxels from it, so a
large cohort never needs every map in memory at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.io import Image, atomic_write, read_image
from discvbr.levels import DISC_LEVELS
from discvbr.manifest import Cohort, encode_variables
from discvbr.pipeline.cache import Step
from discvbr.pipeline.config import AnalysisSettings, PipelineConfig, config_to_dict
from discvbr.pipeline.session import SessionOutcome, session_folder

__all__ = ["AnalysisOutcome", "write_tables", "run_analyses", "analysis_sessions", "QUANTITY"]

log = logging.getLogger("discvbr.pipeline")

KIND_TO_ANALYSIS = {"variable": "voxel_by_variable", "group": "voxel_by_group", "voxel": "voxel_by_voxel", "time": "voxel_by_time"}
QUANTITY = {"t1rho": "T1rho", "t2": "T2"}


@dataclass
class AnalysisOutcome:
    """One analysis of the cohort: where its results are, or why it did not run."""

    settings: AnalysisSettings
    folder: Path
    status: str = "ok"  # ok, skipped or failed
    message: str = ""
    study: object = None  # discvbr.stats.StudyResult when run in this process
    subjects: list[str] = field(default_factory=list)
    significant: dict[str, int] = field(default_factory=dict)  # per disc, at the summary correction


def write_tables(outcomes: Sequence[SessionOutcome], out: Path) -> dict[str, Path]:
    """Cohort tables: ROI means, registration QC, segmentation and failures (CSV)."""
    tables = {
        "roi_means": pd.DataFrame([row for o in outcomes for row in o.roi]),
        "registration_qc": pd.DataFrame([row for o in outcomes for row in o.registration_qc]),
        "segmentation": pd.DataFrame([
            {"subject": o.subject, "session": o.session, "source": o.segmentation.get("source"),
             "missing": ";".join(o.segmentation.get("missing") or []),
             "review_order": ";".join(o.segmentation.get("review_order") or []),
             **{f"uncertainty_{k}": v for k, v in (o.segmentation.get("per_disc_uncertainty") or {}).items()}}
            for o in outcomes
        ]),
        "failures": pd.DataFrame(
            [{"subject": o.subject, "session": o.session, **f} for o in outcomes for f in o.failures],
            columns=["subject", "session", "stage", "level", "message"],
        ),
        "sessions": pd.DataFrame([{"subject": o.subject, "session": o.session, "status": o.status} for o in outcomes]),
    }
    paths = {}
    for name, table in tables.items():
        path = out / "tables" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            table.to_csv(tmp, index=False)
        paths[name] = path
    return paths


def analysis_sessions(cohort: Cohort, outcomes: Sequence[SessionOutcome], settings: AnalysisSettings) -> list[tuple[str, ...]]:
    """The sessions an analysis uses.

    Cross-sectional analyses take each subject's ``baseline`` session (its first session
    in the manifest when no session has that name); ``"time"`` takes (subject, baseline,
    follow-up) triples. Failed sessions are left out.
    """
    usable = {(o.subject, o.session) for o in outcomes if o.status != "failed"}
    sessions: dict[str, list[str]] = {}
    for e in cohort:
        sessions.setdefault(e.subject, []).append(e.session)
    if settings.kind == "time":
        return [
            (s, settings.baseline, settings.followup)
            for s, names in sessions.items()
            if settings.baseline in names and settings.followup in names
            and (s, settings.baseline) in usable and (s, settings.followup) in usable
        ]
    chosen = []
    for s, names in sessions.items():
        name = settings.baseline if settings.baseline in names else names[0]
        if (s, name) in usable:
            chosen.append((s, name))
    return chosen


def _stack(out: Path, rows: Sequence[tuple[str, str]], kind: str, grid: tuple[int, ...], scratch: Path) -> np.ndarray:
    """Atlas-space T maps of ``rows`` in a disk-backed array (NaN where a map is missing)."""
    stack = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=(len(rows), *grid))
    for i, (subject, session) in enumerate(rows):
        path = session_folder(out, subject, session) / "maps" / "atlas" / f"{kind}_T.nii.gz"
        if path.is_file():
            values = np.asarray(read_image(path).array, dtype=np.float32)
            stack[i] = values if values.shape == grid else np.nan
        else:
            stack[i] = np.nan
    stack.flush()
    return stack


def run_analyses(
    cohort: Cohort,
    outcomes: Sequence[SessionOutcome],
    out: Path,
    config: PipelineConfig,
    atlas_labels: Image,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[AnalysisOutcome]:
    """Run every configured analysis; one that cannot run is reported, the rest go on."""
    from discvbr.stats import analyze_discs, save_study

    settings = config.statistics
    variables = cohort.variables()
    grid = tuple(atlas_labels.shape)
    labels = np.asarray(atlas_labels.array)
    results = []
    for analysis in settings.analyses:
        folder = out / "stats" / analysis.name
        outcome = AnalysisOutcome(analysis, folder)
        results.append(outcome)
        if progress:
            progress(analysis.name)
        try:
            rows = analysis_sessions(cohort, outcomes, analysis)
            if len(rows) < 3:
                outcome.status, outcome.message = "skipped", f"{len(rows)} usable subject(s); at least 3 are needed"
                continue
            subjects = [r[0] for r in rows]
            outcome.subjects = subjects
            map_files = _map_files(out, rows, analysis)
            step = Step(
                f"stats-{analysis.name}",
                folder,
                {"analysis": config_to_dict(analysis), "statistics": {k: v for k, v in config_to_dict(settings).items() if k != "analyses"},
                 "subjects": subjects, "variables": variables.to_csv()},
                [p for p in map_files if p.is_file()],
            )
            if step.done():
                outcome.significant = step.record().get("significant", {})
                continue
            step.start()
            folder.mkdir(parents=True, exist_ok=True)
            maps, second = _analysis_maps(out, rows, analysis, grid, folder)
            table = None
            if analysis.kind in ("variable", "group") or analysis.covariates:
                index = [(r[0], r[1]) for r in rows]
                table = encode_variables(variables.loc[index]).set_axis(subjects, axis=0)
            study = analyze_discs(
                KIND_TO_ANALYSIS[analysis.kind],
                maps,
                labels=labels,
                second_maps=second,
                variables=table,
                subjects=subjects,
                variable=analysis.variable or None,
                covariates=analysis.covariates,
                method=analysis.method,
                cut=analysis.cut,
                equal_var=not analysis.welch,
                map_names=_map_names(analysis),
                n_permutations=settings.permutations,
                seed=settings.seed,
                tfce=settings.tfce,
            )
            written = save_study(folder, study, affine=atlas_labels.affine)
            outcome.study = study
            outcome.significant = _significant(study, settings.correction, settings.alpha)
            for level, reason in study.failures.items():
                log.warning("analysis %s, disc %s: %s", analysis.name, level, reason)
            step.finish(written, significant=outcome.significant, failures=study.failures)
        except DiscVBRError as exc:
            outcome.status, outcome.message = "failed", str(exc)
            log.warning("analysis %s: %s", analysis.name, exc)
        finally:
            for scratch in folder.glob(".maps-*.npy"):
                scratch.unlink()
    return results


def _map_files(out: Path, rows, analysis: AnalysisSettings) -> list[Path]:
    files = []
    for row in rows:
        sessions = row[1:] if analysis.kind == "time" else row[1:2]
        kinds = [analysis.map, analysis.second_map] if analysis.kind == "voxel" else [analysis.map]
        files += [session_folder(out, row[0], s) / "maps" / "atlas" / f"{k}_T.nii.gz" for s in sessions for k in kinds]
    return files


def _analysis_maps(out: Path, rows, analysis: AnalysisSettings, grid, folder: Path):
    if analysis.kind == "time":
        base = _stack(out, [(r[0], r[1]) for r in rows], analysis.map, grid, folder / ".maps-a.npy")
        follow = _stack(out, [(r[0], r[2]) for r in rows], analysis.map, grid, folder / ".maps-b.npy")
        return base, follow
    first = _stack(out, rows, analysis.map, grid, folder / ".maps-a.npy")
    if analysis.kind == "voxel":
        return first, _stack(out, rows, analysis.second_map, grid, folder / ".maps-b.npy")
    return first, None


def _map_names(analysis: AnalysisSettings) -> tuple[str, str]:
    first = QUANTITY.get(analysis.map, analysis.map)
    if analysis.kind == "voxel":
        return first, QUANTITY.get(analysis.second_map, analysis.second_map)
    if analysis.kind == "time":
        return f"{first} {analysis.baseline}", f"{first} {analysis.followup}"
    return first, "second maps"


def _significant(study, correction: str, alpha: float) -> dict[str, int]:
    counts = {}
    for level, result in study.regions.items():
        try:
            counts[level] = int(result.significant(correction, alpha=alpha).sum())
        except DiscVBRError:
            fallback = correction.replace("_joint", "")
            counts[level] = int(result.significant(fallback, alpha=alpha).sum())
    return counts


def level_order(names: Sequence[str]) -> list[str]:
    """Disc levels in label order."""
    return [lvl for lvl in DISC_LEVELS if lvl in names]
