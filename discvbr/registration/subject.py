"""Registering many discs: all discs of a subject, or of a cohort, in worker processes.

Each disc is one task run by :func:`register_disc` in its own process (elastix runs on one
thread; see :mod:`discvbr.registration.engine`). A task that fails, whether with a user
error (an empty mask) or a crash of elastix, becomes a :class:`DiscFailure` and never
stops the others.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, Image
from discvbr.levels import DISC_LEVELS, level_of
from discvbr.registration import engine
from discvbr.registration.apply import apply_registration, disc_histogram_change, paste_discs
from discvbr.registration.atlas import Atlas
from discvbr.registration.disc import DEFAULT_MARGIN_MM, DiscRegistration, check_same_grid, register_disc
from discvbr.registration.params import RegistrationParams
from discvbr.registration.qc import QCThresholds, flag_disc

__all__ = [
    "DiscTask",
    "DiscFailure",
    "SubjectRegistration",
    "run_disc_tasks",
    "register_subject",
    "apply_subject",
    "qc_rows",
]


@dataclass(frozen=True)
class DiscTask:
    """Everything one worker needs to register one disc."""

    mask: Image
    label: int
    atlas: Atlas
    subject: str
    params: RegistrationParams = RegistrationParams()
    margin_mm: float = DEFAULT_MARGIN_MM
    thresholds: QCThresholds = QCThresholds()
    tag: object = None


@dataclass(frozen=True)
class DiscFailure:
    """A disc that could not be registered, with the reason."""

    subject: str
    label: int
    message: str
    tag: object = None

    @property
    def level(self) -> str:
        return level_of(self.label) if 1 <= self.label <= len(DISC_LEVELS) else str(self.label)


def _run_task(task: DiscTask) -> DiscRegistration | DiscFailure:
    try:
        return register_disc(
            task.mask,
            task.label,
            task.atlas,
            params=task.params,
            subject=task.subject,
            margin_mm=task.margin_mm,
            thresholds=task.thresholds,
        )
    except DiscVBRError as exc:
        return DiscFailure(task.subject, task.label, str(exc), task.tag)
    except Exception as exc:  # a bug or an elastix error must not stop the other discs
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return DiscFailure(task.subject, task.label, f"subject {task.subject}, disc {level_of(task.label)}: {detail}", task.tag)


def _pool(workers: int) -> ProcessPoolExecutor:
    """Disc worker processes that end with this process, even when it is killed."""
    # fork keeps the already-loaded ITK wrapping (seconds per worker otherwise); ITK runs
    # with the platform threader, so no thread pool is copied half-alive into the child
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),))


def _exit_with_parent(parent: int) -> None:
    # an idle worker waits on a pipe whose other end it holds itself: once the run is killed
    # (SIGKILL, out of memory) it would wait for ever, holding its memory; watch the parent
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="discvbr-exit-with-parent", daemon=True).start()


def run_disc_tasks(
    tasks: Sequence[DiscTask],
    *,
    jobs: int = 1,
    progress: Callable[[int, int, DiscRegistration | DiscFailure], None] | None = None,
) -> list[DiscRegistration | DiscFailure]:
    """Run disc registrations, ``jobs`` processes at a time; results in task order.

    Parameters
    ----------
    tasks : sequence of DiscTask
    jobs : int
        Worker processes; 1 runs in this process.
    progress : callable, optional
        ``progress(done, total, result)`` after each disc.

    Returns
    -------
    list of DiscRegistration or DiscFailure
        A result has the task's ``tag`` available through ``tasks[i]``; failures carry it.
    """
    if jobs < 1:
        raise DiscVBRError(f"jobs must be at least 1, got {jobs}")
    total = len(tasks)
    results: list[DiscRegistration | DiscFailure | None] = [None] * total
    done = 0

    def record(i: int, result: DiscRegistration | DiscFailure) -> None:
        nonlocal done
        results[i] = result
        done += 1
        if progress is not None:
            progress(done, total, result)

    if jobs == 1 or total <= 1:
        for i, task in enumerate(tasks):
            record(i, _run_task(task))
        return results  # type: ignore[return-value]

    engine.load_itk()
    pending = list(range(total))
    try:
        with _pool(min(jobs, total)) as pool:
            futures = {pool.submit(_run_task, tasks[i]): i for i in pending}
            for future in as_completed(futures):
                record(futures[future], future.result())
    except BrokenProcessPool:
        # a worker died (elastix crashed): rerun each unfinished disc in its own process so
        # that only the disc that crashes is lost
        for i in [i for i in pending if results[i] is None]:
            try:
                with _pool(1) as single:
                    record(i, single.submit(_run_task, tasks[i]).result())
            except BrokenProcessPool:
                task = tasks[i]
                record(i, DiscFailure(task.subject, task.label, f"subject {task.subject}, disc {level_of(task.label)}: "
                                      "the registration process crashed", task.tag))
    return results  # type: ignore[return-value]


@dataclass
class SubjectRegistration:
    """The registered discs of one subject (or session), and the discs that failed."""

    subject: str
    atlas: Atlas
    discs: dict[int, DiscRegistration] = field(default_factory=dict)
    failures: dict[int, DiscFailure] = field(default_factory=dict)

    def qc_table(self) -> pd.DataFrame:
        """One row per disc: status, QC numbers and flags (failed discs carry the message)."""
        return qc_rows([*self.discs.values(), *self.failures.values()])


def qc_rows(results: Iterable[DiscRegistration | DiscFailure]) -> pd.DataFrame:
    """A QC table of registration results, one row per disc."""
    rows = []
    for r in results:
        if isinstance(r, DiscFailure):
            rows.append({"subject": r.subject, "level": r.level, "label": r.label, "status": "failed", "message": r.message})
        else:
            row = {"subject": r.subject, "level": r.level, "label": r.label, "status": "flagged" if r.qc.flags else "ok"}
            row.update({k: v for k, v in r.qc.to_dict().items() if k != "flags"})
            row["flags"] = ";".join(r.qc.flags)
            row["seconds"] = round(r.seconds, 2)
            row["message"] = ""
            rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(["subject", "label"], kind="stable").reset_index(drop=True)
    return table


def register_subject(
    mask: Image,
    atlas: Atlas,
    *,
    subject: str = "subject",
    labels: Sequence[int] | None = None,
    params: RegistrationParams = RegistrationParams(),
    margin_mm: float = DEFAULT_MARGIN_MM,
    thresholds: QCThresholds = QCThresholds(),
    jobs: int = 1,
) -> SubjectRegistration:
    """Register each disc of a subject's label map to the atlas.

    Parameters
    ----------
    mask : Image
        Disc labels 1 = L5S1 ... 5 = L1L2 (DiscVBR layout).
    atlas : Atlas
    subject : str
        Name for messages and tables.
    labels : sequence of int, optional
        Discs to register; default: the five lumbar discs. A disc missing from the mask or
        the atlas is reported in ``failures`` and the others are registered.
    params, margin_mm, thresholds
        See :func:`discvbr.registration.register_disc`.
    jobs : int
        Worker processes (one disc per process at a time).

    Returns
    -------
    SubjectRegistration
    """
    wanted = list(range(1, len(DISC_LEVELS) + 1)) if labels is None else [int(v) for v in labels]
    for v in wanted:
        level_of(v)
    tasks = [DiscTask(mask, v, atlas, subject, params, margin_mm, thresholds) for v in wanted]
    result = SubjectRegistration(subject=subject, atlas=atlas)
    for task, outcome in zip(tasks, run_disc_tasks(tasks, jobs=jobs)):
        if isinstance(outcome, DiscFailure):
            result.failures[task.label] = outcome
        else:
            result.discs[task.label] = outcome
    return result


def apply_subject(
    registration: SubjectRegistration,
    series: EchoSeries,
    *,
    mask: Image | None = None,
    thresholds: QCThresholds = QCThresholds(),
) -> EchoSeries:
    """A subject's series in atlas space on the atlas's full grid (NaN outside the atlas discs).

    Parameters
    ----------
    registration : SubjectRegistration
    series : EchoSeries
        On the grid of the mask that was registered.
    mask : Image, optional
        That mask; when given, each disc's first-echo distribution before and after
        registration is compared (Kolmogorov-Smirnov distance into ``qc.ks_distance``,
        flags updated).
    thresholds : QCThresholds

    Raises
    ------
    DiscVBRError
        When no disc was registered, or the series is not on the mask's grid.
    """
    if not registration.discs:
        raise DiscVBRError(f"subject {registration.subject}: no disc was registered, nothing to apply")
    parts = {}
    for label, reg in registration.discs.items():
        parts[label] = apply_registration(reg, series)
        if mask is not None:
            check_same_grid(mask, reg.moving_shape, reg.moving_affine, where=reg.where, what="mask")
            change = disc_histogram_change(reg, series.echo(0), mask)
            reg.qc.ks_distance = change.ks_distance if np.isfinite(change.ks_distance) else None
            reg.qc.flags = flag_disc(reg.qc, thresholds)
    return paste_discs(parts, registration.atlas)
