"""One subject's session through the pipeline: mask, native maps, registration, atlas maps.

Stages, each a resumable :class:`~discvbr.pipeline.cache.Step` in the session folder
(``<out>/subjects/<subject>/<session>/``):

1. ``mask``: the manifest's mask (when given and allowed) or the segmentation of the
   first echo of the first series -> ``masks/discs.nii.gz`` (+ uncertainty, report);
2. ``native``: T1rho/T2 fitted on the series' own grid inside the discs ->
   ``maps/native/<kind>_T.nii.gz`` ... (the ROI means and the "before" histograms);
3. ``register-<LEVEL>``: each disc registered to its atlas disc -> ``transforms/<LEVEL>/``;
   a disc that fails is recorded and the others go on;
4. ``atlas``: every echo of every series warped with the disc transforms, then fitted ->
   ``registered/<kind>.nii.gz`` and ``maps/atlas/<kind>_T.nii.gz`` ... on the atlas grid.

:func:`process_session` never raises for a problem of the data: it returns a
:class:`SessionOutcome` that says what failed and why.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, Image, read_image, require_sagittal, write_image, write_json, write_series
from discvbr.levels import DISC_LEVELS
from discvbr.manifest import SessionEntry
from discvbr.pipeline.cache import Step
from discvbr.pipeline.config import FittingSettings, PipelineConfig, config_to_dict

__all__ = ["SessionTask", "SessionOutcome", "process_session", "session_folder", "fit_series"]

log = logging.getLogger("discvbr.pipeline")


def session_folder(out: Path, subject: str, session: str) -> Path:
    return Path(out) / "subjects" / subject / session


@dataclass(frozen=True)
class SessionTask:
    """Everything one worker needs for one session (picklable, for Dask)."""

    entry: SessionEntry
    out: Path
    config: PipelineConfig
    atlas_folder: Path  # the atlas copied into the output folder
    disc_jobs: int = 1  # processes for this session's disc registrations


@dataclass
class SessionOutcome:
    """What happened to one session."""

    subject: str
    session: str
    status: str = "ok"  # ok, partial (some discs or series failed) or failed
    failures: list[dict] = field(default_factory=list)  # {"stage", "level", "message"}
    roi: list[dict] = field(default_factory=list)  # per disc, series and space: mean T...
    registration_qc: list[dict] = field(default_factory=list)
    segmentation: dict = field(default_factory=dict)
    skipped_steps: list[str] = field(default_factory=list)
    log_records: list[tuple[int, str]] = field(default_factory=list)  # (level, message) logged while it ran

    def fail(self, stage: str, message: str, level: str | None = None) -> None:
        self.failures.append({"stage": stage, "level": level, "message": message})
        self.status = "failed" if level is None else "partial"
        log.warning("%s/%s %s%s: %s", self.subject, self.session, stage, f" {level}" if level else "", message)

    def as_dict(self) -> dict:
        return {
            "subject": self.subject,
            "session": self.session,
            "status": self.status,
            "failures": self.failures,
            "roi": self.roi,
            "registration_qc": self.registration_qc,
            "segmentation": self.segmentation,
            "skipped_steps": self.skipped_steps,
            "log": [[logging.getLevelName(level), message] for level, message in self.log_records],
        }


class _RecordKeeper(logging.Handler):
    """Keeps what DiscVBR logs during one session, so that a run in a worker process can
    write it to the run's log file (the file's handler lives in the main process only)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def process_session(task: SessionTask, *, progress: Callable[[str], None] | None = None) -> SessionOutcome:
    """Run the per-session stages, resuming completed steps; never raises for bad data."""
    entry = task.entry
    outcome = SessionOutcome(entry.subject, entry.session)
    folder = session_folder(task.out, entry.subject, entry.session)
    where = f"subject {entry.subject}, session {entry.session}"
    notify = progress or (lambda stage: None)
    keeper = _RecordKeeper()
    package_log = logging.getLogger("discvbr")
    level = package_log.level
    package_log.addHandler(keeper)
    if package_log.getEffectiveLevel() > logging.INFO:
        package_log.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        _run_stages(task, outcome, folder, where, notify)
        log.info("%s/%s: %s in %.1f s%s", entry.subject, entry.session, outcome.status, time.perf_counter() - start,
                 f" (resumed: {', '.join(outcome.skipped_steps)})" if outcome.skipped_steps else "")
    finally:
        package_log.removeHandler(keeper)
        package_log.setLevel(level)
    outcome.log_records = keeper.records
    write_json(folder / "session.json", outcome.as_dict())
    return outcome


def _run_stages(task: SessionTask, outcome: SessionOutcome, folder: Path, where: str, notify: Callable[[str], None]) -> None:
    """The per-session stages, in order; bad data and bugs become failures in ``outcome``."""
    entry = task.entry
    try:
        series = {kind: ref.load() for kind, ref in entry.series.items()}
        series = {kind: _canonical_series(s, where) for kind, s in series.items()}
        notify("mask")
        mask = _mask_stage(task, series, folder, outcome, where)
        notify("native maps")
        _native_stage(task, series, mask, folder, outcome)
        notify("registration")
        registrations = _registration_stage(task, mask, folder, outcome)
        notify("atlas maps")
        if registrations:
            _atlas_stage(task, series, mask, registrations, folder, outcome)
        else:
            outcome.fail("registration", f"{where}: no disc could be registered")
    except DiscVBRError as exc:
        outcome.fail("input", str(exc))
    except Exception as exc:  # a bug must not stop the other subjects; keep its trace in the log
        log.error("%s: unexpected error\n%s", where, traceback.format_exc())
        outcome.fail("internal", f"{where}: unexpected {type(exc).__name__}: {exc}")


def _canonical_series(series: EchoSeries, where: str) -> EchoSeries:
    grid = require_sagittal(series.grid, what=f"{where}, {series.kind} series")
    if np.allclose(grid.affine, series.affine):
        return series
    canonical = require_sagittal(Image(series.data, series.affine), what=f"{where}, {series.kind} series")
    return EchoSeries(canonical.array, series.times, canonical.affine, series.kind)


def _first(series: dict[str, EchoSeries]) -> EchoSeries:
    return series["t1rho"] if "t1rho" in series else next(iter(series.values()))


# --------------------------------------------------------------------------- stage 1: mask


def _mask_stage(task: SessionTask, series: dict[str, EchoSeries], folder: Path, outcome: SessionOutcome, where: str) -> Image:
    entry, settings = task.entry, task.config.segmentation
    first = _first(series)
    mask_path = folder / "masks" / "discs.nii.gz"
    from_manifest = entry.mask is not None and settings.use_manifest_masks
    inputs = [entry.mask] if from_manifest else list(entry.series[first.kind].paths)
    step = Step("mask", folder, {"segmentation": config_to_dict(settings), "from_manifest": from_manifest}, inputs)
    if step.done():
        outcome.skipped_steps.append(step.name)
        outcome.segmentation = step.record().get("report", {})
        return read_image(mask_path, what=f"{where} mask")
    step.start()
    if from_manifest:
        given = require_sagittal(read_image(entry.mask, what=f"{where}, mask"), what=f"{where}, mask")
        if not given.same_grid(first.grid):
            raise DiscVBRError(f"{where}, field 'mask': {entry.mask} is not on the grid of the {first.kind} series")
        values = np.asarray(given.array)
        if np.any((values < 0) | (values > len(DISC_LEVELS)) | (values != np.round(values))):
            raise DiscVBRError(f"{where}, field 'mask': {entry.mask} must hold disc labels 0-5 (1 = L5S1 ... 5 = L1L2)")
        mask = Image(values.astype(np.uint8), first.affine)
        report = {"source": "manifest", "path": str(entry.mask),
                  "found": [lvl for i, lvl in enumerate(DISC_LEVELS, 1) if (values == i).any()]}
        outputs = [write_image(mask_path, mask)]
    else:
        from discvbr.segmentation import segment_discs

        model = settings.model if settings.model != "default" else None
        result = segment_discs(
            first,
            model=model,
            device=settings.device,
            threshold=settings.threshold,
            min_size=settings.min_component_voxels,
            subject=f"{entry.subject}/{entry.session}",
        )
        mask = Image(np.asarray(result.labels.array, np.uint8), first.affine)
        report = {"source": "segmentation", **result.report}
        outputs = [
            write_image(mask_path, mask),
            write_image(folder / "masks" / "uncertainty.nii.gz", Image(result.uncertainty.array, first.affine)),
            write_json(folder / "masks" / "segmentation.json", report),
        ]
    for warning in report.get("warnings", []):
        outcome.failures.append({"stage": "segmentation", "level": None, "message": warning})
    outcome.segmentation = {k: report.get(k) for k in ("source", "found", "missing", "per_disc_uncertainty", "review_order") if k in report}
    step.finish(outputs, report=outcome.segmentation)
    return mask


# --------------------------------------------------------------------------- stage 2: native maps


def fit_series(series: EchoSeries, mask: np.ndarray, settings: FittingSettings):
    """Fit one series inside ``mask`` with the run's settings (T1rho or T2 thresholds)."""
    from discvbr.fitting import fit_monoexp

    t_max = settings.t2_max_ms if series.kind == "t2" else settings.t1rho_max_ms
    return fit_monoexp(
        series.data,
        series.times,
        mask,
        method=settings.method,
        device=settings.device,
        t_max=t_max,
        min_snr=settings.min_snr,
    )


def _native_stage(task: SessionTask, series: dict[str, EchoSeries], mask: Image, folder: Path, outcome: SessionOutcome) -> None:
    from discvbr.fitting.outputs import fit_summary, write_fit_maps

    labels = np.asarray(mask.array)
    maps_dir = folder / "maps" / "native"
    inputs = [folder / "masks" / "discs.nii.gz", *(p for k in series for p in task.entry.series[k].paths)]
    step = Step("native", folder, {"fitting": config_to_dict(task.config.fitting), "series": sorted(series)}, inputs)
    if step.done():
        outcome.skipped_steps.append(step.name)
        outcome.roi.extend(step.record().get("roi", []))
        return
    step.start()
    outputs, roi, summaries = [], [], {}
    for kind, s in series.items():
        result = fit_series(s, labels > 0, task.config.fitting)
        outputs += write_fit_maps(maps_dir, s.grid, result, prefix=f"{kind}_").values()
        summaries[kind] = fit_summary(result, labels)
        roi += _roi_rows(task.entry, kind, "native", result.T, labels)
    outputs.append(write_json(maps_dir / "fit.json", summaries))
    outcome.roi.extend(roi)
    step.finish(outputs, roi=roi)


def _roi_rows(entry: SessionEntry, kind: str, space: str, t_map: np.ndarray, labels: np.ndarray) -> list[dict]:
    rows = []
    for label, level in enumerate(DISC_LEVELS, start=1):
        inside = labels == label
        values = t_map[inside]
        valid = values[np.isfinite(values)]
        rows.append({
            "subject": entry.subject,
            "session": entry.session,
            "level": level,
            "map": kind,
            "space": space,
            "voxels": int(inside.sum()),
            "valid": int(valid.size),
            "mean_T_ms": float(valid.mean()) if valid.size else None,
            "median_T_ms": float(np.median(valid)) if valid.size else None,
            "sd_T_ms": float(valid.std(ddof=1)) if valid.size > 1 else None,
        })
    return rows


# --------------------------------------------------------------------------- stage 3: registration


def _registration_stage(task: SessionTask, mask: Image, folder: Path, outcome: SessionOutcome) -> dict:
    from discvbr.registration import DiscRegistration, DiscTask, RegistrationParams, load_atlas, run_disc_tasks
    from discvbr.registration.disc import REGISTRATION_METHOD
    from discvbr.registration.params import PARAMETER_DIR, parameter_file_names

    settings = task.config.registration
    atlas = load_atlas(task.atlas_folder)
    params = RegistrationParams(
        final_grid_spacing=settings.final_grid_spacing,
        iterations=settings.iterations,
        rigidity_weight=settings.rigidity_weight,
        parameter_dir=settings.parameter_folder or None,
    )
    # the files' contents (the shipped ones too), not only their folder, and the method that
    # reads them decide whether a registration is redone
    parameter_files = [Path(settings.parameter_folder or PARAMETER_DIR) / name for name in parameter_file_names(atlas.ndim)]
    subject = f"{task.entry.subject}/{task.entry.session}"
    values = np.asarray(mask.array)
    registrations: dict[int, DiscRegistration] = {}
    pending: list[tuple[Step, DiscTask]] = []
    for label, level in enumerate(DISC_LEVELS, start=1):
        step = Step(
            f"register-{level}",
            folder,
            {"registration": config_to_dict(settings), "atlas": atlas.name, "method": REGISTRATION_METHOD},
            [folder / "masks" / "discs.nii.gz", task.atlas_folder / "labels.nii.gz", *parameter_files],
        )
        if not (values == label).any():
            outcome.fail("registration", f"subject {subject}, disc {level}: not in the mask (not segmented)", level)
            continue
        if step.done() and (folder / "transforms" / level / "registration.json").is_file():
            outcome.skipped_steps.append(step.name)
            registrations[label] = DiscRegistration.load(folder / "transforms" / level)
            continue
        pending.append((step, DiscTask(mask, label, atlas, subject, params, settings.margin_mm)))

    def save(done: int, total: int, result) -> None:
        # runs in this process as each disc finishes, so a crash later loses nothing done
        step = pending[[t.label for _, t in pending].index(result.label)][0]
        if hasattr(result, "qc"):
            saved = result.save(folder / "transforms" / result.level)
            step.finish([saved / "registration.json"], seconds=result.seconds)

    results = run_disc_tasks([t for _, t in pending], jobs=task.disc_jobs, progress=save) if pending else []
    for (step, disc_task), result in zip(pending, results):
        if hasattr(result, "qc"):
            registrations[disc_task.label] = result
        else:
            outcome.fail("registration", result.message, DISC_LEVELS[disc_task.label - 1])
    # In label order whichever discs were resumed and which registered now, so that what is
    # written from them (QC rows, fit.json's per-disc entries) is the same after an interruption.
    registrations = dict(sorted(registrations.items()))
    for label, reg in registrations.items():
        row = {"subject": task.entry.subject, "session": task.entry.session, "level": reg.level, "label": label}
        row.update({k: v for k, v in reg.qc.to_dict().items() if k != "flags"})
        row["flags"] = ";".join(reg.qc.flags)
        row["seconds"] = round(reg.seconds, 2)
        outcome.registration_qc.append(row)
    return registrations


# --------------------------------------------------------------------------- stage 4: atlas maps


def _atlas_stage(
    task: SessionTask,
    series: dict[str, EchoSeries],
    mask: Image,
    registrations: dict,
    folder: Path,
    outcome: SessionOutcome,
) -> None:
    from discvbr.fitting.outputs import fit_summary, write_fit_maps
    from discvbr.registration import apply_registration, histogram_change, load_atlas, paste_discs

    atlas = load_atlas(task.atlas_folder)
    atlas_labels = np.asarray(atlas.labels.array)
    inputs = [folder / "masks" / "discs.nii.gz", *(p for k in series for p in task.entry.series[k].paths)]
    inputs += [folder / "transforms" / reg.level / "TransformParameters.1.txt" for reg in registrations.values()]
    inputs = [p for p in inputs if Path(p).is_file()]
    step = Step(
        "atlas",
        folder,
        {"fitting": config_to_dict(task.config.fitting), "discs": sorted(registrations), "atlas": atlas.name},
        inputs,
    )
    if step.done():
        outcome.skipped_steps.append(step.name)
        record = step.record()
        outcome.roi.extend(record.get("roi", []))
        _add_ks(outcome, record.get("ks", {}), series)
        return
    step.start()
    maps_dir = folder / "maps" / "atlas"
    outputs, roi, summaries, ks = [], [], {}, {}
    native_labels = np.asarray(mask.array)
    registered_labels = np.where(np.isin(atlas_labels, list(registrations)), atlas_labels, 0)
    for kind, s in series.items():
        parts = {label: apply_registration(reg, s) for label, reg in registrations.items()}
        warped = paste_discs(parts, atlas)
        outputs.append(write_series(folder / "registered" / f"{kind}.nii.gz", warped))
        result = fit_series(warped, registered_labels > 0, task.config.fitting)
        outputs += write_fit_maps(maps_dir, warped.grid, result, prefix=f"{kind}_").values()
        summaries[kind] = fit_summary(result, registered_labels)
        roi += _roi_rows(task.entry, kind, "atlas", result.T, registered_labels)
        native_t = read_image(folder / "maps" / "native" / f"{kind}_T.nii.gz").array
        for label, reg in registrations.items():
            change = histogram_change(native_t[native_labels == label], result.T[registered_labels == label])
            ks[f"{kind}_{reg.level}"] = None if not np.isfinite(change.ks_distance) else round(float(change.ks_distance), 4)
    outputs.append(write_json(maps_dir / "fit.json", {"fits": summaries, "ks_distance_T_native_vs_atlas": ks}))
    _add_ks(outcome, ks, series)
    outcome.roi.extend(roi)
    step.finish(outputs, roi=roi, ks=ks)


def _add_ks(outcome: SessionOutcome, ks: dict, series: dict) -> None:
    """Kolmogorov-Smirnov distance between native and atlas-space T, into the QC rows."""
    for row in outcome.registration_qc:
        row.update({f"ks_T_{kind}": ks.get(f"{kind}_{row['level']}") for kind in series})
