"""``run_pipeline``: a cohort manifest in, every output of the method out.

Sessions run in this process by default (each session's discs registered in parallel
processes), on a local Dask process cluster with ``workers=N``, or on an existing Dask
cluster with ``scheduler="tcp://..."`` (for example a SLURM cluster started with
dask-jobqueue). Every step is resumable (:mod:`discvbr.pipeline.cache`), so a run that
was killed picks up where it stopped, and one failing session never stops the others.

Output layout::

    <out>/subjects/<subject>/<session>/   masks, uncertainty, transforms, registered echoes,
                                          native and atlas-space maps, session.json (QC)
    <out>/atlas/                          the atlas the run used
    <out>/tables/*.csv                    ROI means, registration QC, segmentation, failures
    <out>/stats/<analysis>/               statistics maps (NIfTI) and tables (CSV)
    <out>/figures/*.png, <out>/report.html
    <out>/provenance.json                 versions, settings, input checksums
    <out>/summary.json, <out>/discvbr.log

A run holds ``<out>/.discvbr.lock`` while it works (:mod:`discvbr.pipeline.lock`), and
removes the previous ``summary.json`` and ``report.html`` before its first step: they are
written again only when the run completes, so a folder without them is incomplete.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from discvbr.errors import DiscVBRError
from discvbr.io import ensure_writable, read_geometry, write_json
from discvbr.manifest import Cohort, read_manifest
from discvbr.naming import check_id
from discvbr.pipeline.cache import file_digest
from discvbr.pipeline.cohort import AnalysisOutcome, run_analyses, write_tables
from discvbr.pipeline.config import PipelineConfig, config_to_dict
from discvbr.pipeline.lock import output_lock
from discvbr.pipeline.session import SessionOutcome, SessionTask, process_session
from discvbr.provenance import environment, now

if TYPE_CHECKING:
    from discvbr.registration import Atlas

__all__ = ["RunResult", "run_pipeline", "Progress", "COMPLETION_FILES"]

log = logging.getLogger("discvbr.pipeline")

#: Files a run writes last, only when it completes; removed when a run starts.
COMPLETION_FILES = ("summary.json", "report.html")

#: progress(stage, done, total, message): stage is "sessions", "statistics" or "report"
Progress = Callable[[str, int, int, str], None]


@dataclass
class RunResult:
    """What a run produced and what failed."""

    out: Path
    sessions: list[SessionOutcome]
    analyses: list[AnalysisOutcome]
    seconds: float
    report: Path | None = None
    tables: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[SessionOutcome]:
        return [s for s in self.sessions if s.status == "failed"]

    def summary(self) -> dict:
        return {
            "out": str(self.out),
            "seconds": round(self.seconds, 1),
            "sessions": {status: sum(s.status == status for s in self.sessions) for status in ("ok", "partial", "failed")},
            "failures": [{"subject": s.subject, "session": s.session, **f} for s in self.sessions for f in s.failures],
            "analyses": {
                a.settings.name: {"status": a.status, "message": a.message, "subjects": len(a.subjects), "significant_voxels": a.significant}
                for a in self.analyses
            },
            "report": str(self.report) if self.report else None,
        }


def _data_mode(cohort: Cohort) -> str:
    modes = {}
    for entry in cohort:
        try:
            shape, _ = read_geometry(entry.first_series.paths[0], what=f"subject {entry.subject} series")
        except DiscVBRError:
            continue  # reported when the session runs
        modes[entry.key] = "2d" if min(shape[:3]) == 1 else "3d"
    if not modes:
        raise DiscVBRError("no readable series in the manifest")
    kinds = set(modes.values())
    if len(kinds) > 1:
        two = [k for k, m in modes.items() if m == "2d"][:3]
        raise DiscVBRError(
            f"the cohort mixes single-slice (2D) and multi-slice (3D) series (2D: {', '.join(two)} ...); "
            "run them as separate cohorts (one atlas per mode)"
        )
    return kinds.pop()


def _check_parameter_folder(folder: str, mode: str) -> None:
    """Refuse, before any work, a registration.parameter_folder without readable maps for ``mode``."""
    if not folder:
        return
    from discvbr.registration.params import load_parameter_files

    try:
        load_parameter_files(2 if mode == "2d" else 3, parameter_dir=folder)
    except (DiscVBRError, OSError) as exc:
        raise DiscVBRError(f"registration.parameter_folder = {folder!r}: {exc}") from None


def _setup_log(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "discvbr.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("discvbr")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def run_pipeline(
    manifest: str | os.PathLike | Cohort,
    out: str | os.PathLike,
    *,
    config: PipelineConfig | None = None,
    workers: int = 0,
    scheduler: str | None = None,
    progress: Progress | None = None,
    extra_report_sections: Callable[[list[SessionOutcome]], Sequence[object]] | None = None,
    title: str = "DiscVBR voxel-based relaxometry",
) -> RunResult:
    """Run segmentation, registration, fitting, statistics and figures on a cohort.

    Parameters
    ----------
    manifest : path-like or Cohort
        The cohort manifest (see :mod:`discvbr.manifest`), validated before any work.
    out : path-like
        Output folder; a previous run's folder is resumed.
    config : PipelineConfig, optional
        Settings (:func:`discvbr.pipeline.config.load_config`); default: the paper's.
    workers : int
        0: sessions one after the other in this process, each session's discs registered
        in ``os.cpu_count()`` processes; N > 0: a local Dask cluster of N single-threaded
        worker processes, one session per task.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); overrides ``workers``.
    progress : callable, optional
        ``progress(stage, done, total, message)``.
    extra_report_sections : callable, optional
        Given the session outcomes, returns more report sections (used by the demo).
    title : str
        Report title.

    Returns
    -------
    RunResult
    """
    from discvbr.registration import DEFAULT_ATLAS, load_atlas

    start = time.perf_counter()
    out = Path(out)
    config = config or PipelineConfig()
    # every row is checked from the file headers (ids, files, echo counts, grids) before
    # any work, so that a bad row cannot stop the run half-way
    cohort = manifest if isinstance(manifest, Cohort) else read_manifest(manifest, check_images=True)
    for entry in cohort:  # a Cohort built in Python did not go through the manifest's checks
        check_id(entry.subject, what=f"subject of session {entry.key!r}")
        check_id(entry.session, what=f"session of subject {entry.subject!r}")
    for i, analysis in enumerate(config.statistics.analyses):
        check_id(analysis.name, what=f"settings, statistics.analyses[{i}].name (the analysis' output folder)")
    mode = _data_mode(cohort)
    _check_parameter_folder(config.registration.parameter_folder, mode)
    atlas = load_atlas(DEFAULT_ATLAS if config.registration.atlas == "default" else config.registration.atlas, mode=mode)
    ensure_writable(out)
    with output_lock(out, command="discvbr run"):
        return _run_locked(cohort, out, config, atlas, workers=workers, scheduler=scheduler, progress=progress,
                           extra_report_sections=extra_report_sections, title=title, start=start)


def _run_locked(
    cohort: Cohort,
    out: Path,
    config: PipelineConfig,
    atlas: Atlas,
    *,
    workers: int,
    scheduler: str | None,
    progress: Progress | None,
    extra_report_sections: Callable[[list[SessionOutcome]], Sequence[object]] | None,
    title: str,
    start: float,
) -> RunResult:
    """The run itself, once the cohort, the settings and the atlas are checked and the output folder locked."""
    from discvbr.registration import save_atlas

    for name in COMPLETION_FILES:  # until this run completes, nothing may look complete
        (out / name).unlink(missing_ok=True)
    notify = progress or (lambda *args: None)
    handler = _setup_log(out)
    try:
        log.info("run started: %d sessions, output %s", len(cohort), out)
        atlas_folder = save_atlas(atlas, out / "atlas")
        parallel = scheduler is not None or workers > 0
        tasks = [
            SessionTask(entry, out, config, atlas_folder, disc_jobs=1 if parallel else max(1, os.cpu_count() or 1))
            for entry in cohort
        ]
        outcomes = _run_sessions(tasks, workers=workers, scheduler=scheduler, notify=notify)
        tables = write_tables(outcomes, out)
        done = {"n": 0}

        def stats_progress(name: str) -> None:
            notify("statistics", done["n"], len(config.statistics.analyses), name)
            done["n"] += 1

        analyses = run_analyses(cohort, outcomes, out, config, atlas.labels, progress=stats_progress)
        notify("statistics", len(analyses), len(analyses), "done")
        provenance = _provenance(cohort, config, atlas.name)
        write_json(out / "provenance.json", provenance)
        notify("report", 0, 1, "figures")
        extra = extra_report_sections(outcomes) if extra_report_sections else ()
        from discvbr.pipeline.report import write_figures_and_report

        report = write_figures_and_report(
            out, cohort, outcomes, analyses, atlas.labels, config, title=title, extra_sections=extra,
            provenance={"inputs": provenance["inputs"]["manifest"]},
        )
        notify("report", 1, 1, "done")
        result = RunResult(out, outcomes, analyses, time.perf_counter() - start, report, tables)
        write_json(out / "summary.json", result.summary())
        log.info("run finished in %.1f s: %s", result.seconds, result.summary()["sessions"])
        return result
    except KeyboardInterrupt:
        log.warning("run interrupted after %.1f s: completed steps are kept; run the same command again to resume",
                    time.perf_counter() - start)
        raise
    finally:
        logging.getLogger("discvbr").removeHandler(handler)
        handler.close()


def _run_sessions(tasks: list[SessionTask], *, workers: int, scheduler: str | None, notify: Progress) -> list[SessionOutcome]:
    total = len(tasks)
    notify("sessions", 0, total, "starting")
    if scheduler is None and workers <= 0:
        outcomes = []
        for i, task in enumerate(tasks):
            key = f"{task.entry.subject}/{task.entry.session}"
            outcomes.append(process_session(task, progress=lambda stage: notify("sessions", i, total, f"{key}: {stage}")))
            notify("sessions", i + 1, total, key)
        return outcomes

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        # single-threaded workers: elastix's multi-metric registration is not thread safe
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(scheduler or cluster) as client:
            futures = client.map(process_session, tasks, pure=False, key=[f"session-{i}" for i in range(total)])
            order = {f.key: i for i, f in enumerate(futures)}
            outcomes: list[SessionOutcome | None] = [None] * total
            for done, future in enumerate(as_completed(futures), start=1):
                i = order[future.key]
                try:
                    outcomes[i] = future.result()
                    for level, message in outcomes[i].log_records:  # logged in the worker
                        log.log(level, "[worker] %s", message)
                except Exception as exc:  # a worker died: that session failed, the others go on
                    entry = tasks[i].entry
                    outcome = SessionOutcome(entry.subject, entry.session)
                    outcome.fail("worker", f"subject {entry.subject}, session {entry.session}: worker failed: {exc}")
                    outcomes[i] = outcome
                notify("sessions", done, total, f"{tasks[i].entry.subject}/{tasks[i].entry.session}")
    finally:
        if cluster is not None:
            cluster.close()
    return outcomes  # type: ignore[return-value]


def _provenance(cohort: Cohort, config: PipelineConfig, atlas_name: str) -> dict:
    files = {}
    for entry in cohort:
        for ref in entry.series.values():
            for p in ref.paths:
                files[str(p)] = file_digest(p)
        if entry.mask is not None:
            files[str(entry.mask)] = file_digest(entry.mask)
    return {
        "created": now(),
        "environment": environment(),
        "config": config_to_dict(config),
        "atlas": atlas_name,
        "inputs": {
            "manifest": {"path": str(cohort.source) if cohort.source else None,
                         "sha256": file_digest(cohort.source) if cohort.source else None},
            "files_sha256": files,
        },
    }
