"""Figures and the HTML report of a pipeline run.

Every figure is also written as a PNG in ``<out>/figures``; the report embeds them with
the cohort tables. A figure that cannot be drawn (no off-screen OpenGL, say) is reported
in the log and the report goes on without it. Each figure is a resumable step keyed on
what it shows (the arrays' bytes and the options), so a re-run of a complete folder
writes the report again without drawing anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from discvbr.errors import DiscVBRError
from discvbr.io import Image, read_image
from discvbr.levels import DISC_LEVELS
from discvbr.pipeline.cache import Step
from discvbr.pipeline.cohort import QUANTITY, AnalysisOutcome, analysis_sessions
from discvbr.pipeline.config import PipelineConfig, config_to_dict
from discvbr.pipeline.session import SessionOutcome, session_folder

__all__ = ["write_figures_and_report", "cached_figure"]

log = logging.getLogger("discvbr.pipeline")


def _content_digest(value: object) -> object:
    """A JSON-ready stand-in for ``value`` in which arrays and images are their SHA-256."""
    if isinstance(value, Image):
        return {"image": _content_digest(np.asarray(value.array)), "affine": np.round(value.affine, 6).tolist()}
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {"sha256": hashlib.sha256(array.tobytes()).hexdigest(), "shape": list(array.shape), "dtype": str(array.dtype)}
    if isinstance(value, dict):
        return {str(k): _content_digest(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_content_digest(v) for v in value]
    return value


def cached_figure(path: Path, shows: dict, draw: Callable[[Path], Path | None]) -> Path | None:
    """Draw a figure into ``path`` unless a figure of the same content is already there.

    Parameters
    ----------
    path : Path
        The figure file (its folder keeps the step record, ``.steps/<stem>.json``).
    shows : dict
        Everything the figure depends on: arrays and images (compared by their bytes),
        options, titles.
    draw : callable
        ``draw(path)`` writes the figure and returns its path, or None when it could not.

    Returns
    -------
    Path or None
        ``path`` when the figure is there, None when it could not be drawn.
    """
    digest = hashlib.sha256(json.dumps(_content_digest(shows), sort_keys=True, default=str).encode()).hexdigest()
    step = Step(f"figure-{path.stem}", path.parent, {"figure": digest})
    if step.done():
        return path
    drawn = draw(path)
    if drawn is not None:
        step.finish([drawn])
    return drawn


def _mean_map(out: Path, rows: Sequence[tuple[str, ...]], kind: str, grid: tuple[int, ...]) -> np.ndarray:
    total = np.zeros(grid)
    count = np.zeros(grid)
    for subject, session, *_ in rows:
        path = session_folder(out, subject, session) / "maps" / "atlas" / f"{kind}_T.nii.gz"
        if path.is_file():
            values = np.asarray(read_image(path).array, dtype=float)
            finite = np.isfinite(values)
            total[finite] += values[finite]
            count[finite] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def write_figures_and_report(
    out: Path,
    cohort,
    outcomes: Sequence[SessionOutcome],
    analyses: Sequence[AnalysisOutcome],
    atlas_labels: Image,
    config: PipelineConfig,
    *,
    title: str = "DiscVBR voxel-based relaxometry",
    extra_sections: Sequence[object] = (),
    provenance: dict | None = None,
) -> Path:
    """Draw the figures of a run into ``<out>/figures`` and write ``<out>/report.html``."""
    from discvbr.render.report import ReportSection, write_report

    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    settings = config.figures
    grid = tuple(atlas_labels.shape)
    sections = [_overview(outcomes, analyses)]

    def spine(name: str, maps: np.ndarray, **options) -> Path | None:
        if not settings.enabled:
            return None

        def draw(path: Path) -> Path | None:
            from discvbr.render.scene import render_spine_maps

            try:
                render_spine_maps(atlas_labels, Image(maps, atlas_labels.affine), out=path,
                                  size=(settings.width, settings.height), camera=settings.camera, **options)
            except DiscVBRError as exc:
                log.warning("figure %s not drawn: %s", name, exc)
                return None
            return path

        shows = {"maps": maps, "atlas": atlas_labels, "size": [settings.width, settings.height], "camera": settings.camera,
                 **options}
        return cached_figure(figures_dir / f"{name}.png", shows, draw)

    baseline = [(o.subject, o.session) for o in outcomes if o.status != "failed"]
    first_sessions = analysis_sessions(cohort, outcomes, config.statistics.analyses[0]) if config.statistics.analyses else baseline
    maps_section = ReportSection(
        "Relaxation maps in atlas space",
        "Mean of the subjects' maps after registration to the atlas (one session per subject), drawn on the "
        "atlas spine.",
    )
    for kind in ("t1rho", "t2"):
        mean = _mean_map(out, first_sessions, kind, grid)
        if np.isfinite(mean).any():
            path = spine(f"mean_{kind}", mean, kind="T", quantity=QUANTITY[kind], title=f"mean {QUANTITY[kind]} (ms)")
            if path:
                maps_section.figures.append(path)
                maps_section.captions.append(f"Mean {QUANTITY[kind]} over {len(first_sessions)} subjects")
    sections.append(maps_section)
    sections.append(_registration_section(out, outcomes, atlas_labels, figures_dir, settings.enabled))

    correction = config.statistics.correction
    for analysis in analyses:
        section = ReportSection(f"Analysis: {analysis.settings.name}")
        if analysis.status != "ok":
            section.text = f"Not run: {analysis.message}"
            sections.append(section)
            continue
        folder = analysis.folder
        section.text = _describe(analysis, correction, config.statistics.alpha)
        stat = "r" if analysis.settings.kind in ("variable", "voxel") else "t"
        values = _read(folder / f"{stat}.nii.gz")
        p_name = f"p_{correction}" if (folder / f"p_{correction}.nii.gz").is_file() else "p"
        p_values = _read(folder / f"{p_name}.nii.gz")
        quantity = QUANTITY.get(analysis.settings.map, analysis.settings.map)
        if values is not None:
            path = spine(f"{analysis.settings.name}_{stat}", values, kind=stat, quantity=quantity,
                         title=f"{analysis.settings.name}: {stat}")
            if path:
                section.figures.append(path)
                section.captions.append(f"{stat} map on the atlas spine")
        if p_values is not None:
            path = spine(f"{analysis.settings.name}_{p_name}", p_values, kind="p", quantity=quantity,
                         alpha=config.statistics.alpha, title=f"{analysis.settings.name}: {p_name}")
            if path:
                section.figures.append(path)
                section.captions.append(f"{p_name} (grey: not significant at {config.statistics.alpha})")
        if settings.enabled and analysis.settings.kind == "group" and p_values is not None:
            from discvbr.render.figures import plot_group_comparison, save_figure

            mean_a, mean_b = _read(folder / "mean_a.nii.gz"), _read(folder / "mean_b.nii.gz")
            if mean_a is not None and mean_b is not None:
                cut = analysis.settings.cut
                names = (f"{analysis.settings.variable} <= {cut:g}", f"{analysis.settings.variable} > {cut:g}") if cut is not None else ("group a", "group b")
                shows = {"means": [mean_a, mean_b], "p": p_values, "names": names, "quantity": quantity,
                         "alpha": config.statistics.alpha, "atlas": atlas_labels}
                section.figures.append(cached_figure(
                    figures_dir / f"{analysis.settings.name}_groups.png", shows,
                    lambda path: save_figure(plot_group_comparison(
                        Image(mean_a, atlas_labels.affine), Image(mean_b, atlas_labels.affine), Image(p_values, atlas_labels.affine),
                        names=names, quantity=quantity, alpha=config.statistics.alpha, labels=atlas_labels,
                    ), path),
                ))
                section.captions.append("Group means and the corrected p map")
        if settings.enabled and analysis.settings.kind == "voxel" and values is not None and p_values is not None:
            from discvbr.render.figures import plot_voxel_correlation, save_figure

            title = f"{quantity} vs {QUANTITY.get(analysis.settings.second_map, '')}"
            shows = {"r": values, "p": p_values, "title": title, "alpha": config.statistics.alpha, "atlas": atlas_labels}
            section.figures.append(cached_figure(
                figures_dir / f"{analysis.settings.name}_voxel.png", shows,
                lambda path: save_figure(plot_voxel_correlation(
                    Image(values, atlas_labels.affine), Image(p_values, atlas_labels.affine), title=title,
                    alpha=config.statistics.alpha, labels=atlas_labels), path),
            ))
            section.captions.append("Voxel-by-voxel correlation")
        for table_name in ("summary", "roi", "clusters"):
            path = folder / f"{table_name}.csv"
            if path.is_file():
                try:
                    table = pd.read_csv(path)
                except pd.errors.EmptyDataError:  # an analysis without clusters writes an empty table
                    continue
                if not table.empty:
                    section.tables.append(table)
                    section.table_captions.append(f"{table_name}.csv")
        sections.append(section)
    sections.extend(extra_sections)
    tables = out / "tables" / "roi_means.csv"
    if tables.is_file():
        try:
            roi = pd.read_csv(tables)
        except pd.errors.EmptyDataError:  # every session failed: the table has no rows nor columns
            roi = pd.DataFrame()
        if not roi.empty:
            pivot = roi.pivot_table(index=["map", "space"], columns="level", values="mean_T_ms", aggfunc="mean")
            sections.append(ReportSection("Whole-disc means (ms)", "Mean over sessions of each disc's mean T.",
                                          tables=[pivot[[c for c in DISC_LEVELS if c in pivot.columns]].reset_index()]))
    return write_report(out / "report.html", title=title, sections=sections,
                        parameters={"config": config_to_dict(config), **(provenance or {})})


def _read(path: Path) -> np.ndarray | None:
    return np.asarray(read_image(path).array, dtype=float) if path.is_file() else None


def _overview(outcomes: Sequence[SessionOutcome], analyses: Sequence[AnalysisOutcome]):
    from discvbr.render.report import ReportSection

    counts = pd.Series([o.status for o in outcomes]).value_counts().to_dict()
    failures = pd.DataFrame([{"subject": o.subject, "session": o.session, **f} for o in outcomes for f in o.failures])
    text = (
        f"{len(outcomes)} sessions: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ". "
        f"{sum(a.status == 'ok' for a in analyses)} of {len(analyses)} analyses ran."
    )
    return ReportSection("Overview", text, tables=[failures] if not failures.empty else [],
                         table_captions=["What failed and why"] if not failures.empty else [])


def _registration_section(out: Path, outcomes, atlas_labels: Image, figures_dir: Path, draw: bool):
    from discvbr.render.report import ReportSection

    section = ReportSection(
        "Registration quality",
        "Per disc: Dice with the atlas disc after registration, SD of the Jacobian determinant over the atlas disc, "
        "folded fraction, and the Kolmogorov-Smirnov distance between the disc's T values before and after "
        "registration (similar histograms: the deformation kept the proportions of values).",
    )
    qc = pd.DataFrame([row for o in outcomes for row in o.registration_qc])
    if not qc.empty:
        columns = [c for c in ("dice", "det_jacobian_sd", "folded_fraction", "ks_T_t1rho", "ks_T_t2") if c in qc.columns]
        section.tables.append(qc.groupby("level")[columns].agg(["mean", "min", "max"]).reindex(
            [lvl for lvl in DISC_LEVELS if lvl in set(qc["level"])]).reset_index())
        section.table_captions.append("Registration QC over sessions")
    example = next((o for o in outcomes if o.status == "ok"), None)
    if draw and example is not None:
        from discvbr.render.figures import plot_registration_qc, save_figure

        folder = session_folder(out, example.subject, example.session)
        try:
            native = read_image(folder / "maps" / "native" / "t1rho_T.nii.gz")
            atlas_map = read_image(folder / "maps" / "atlas" / "t1rho_T.nii.gz")
            mask = np.asarray(read_image(folder / "masks" / "discs.nii.gz").array)
            labels = np.asarray(atlas_labels.array)
            before = {lvl: native.with_array(np.where(mask == i, native.array, np.nan)) for i, lvl in enumerate(DISC_LEVELS, 1) if (mask == i).any()}
            after = {lvl: atlas_map.with_array(np.where(labels == i, atlas_map.array, np.nan)) for i, lvl in enumerate(DISC_LEVELS, 1) if lvl in before}
            section.figures.append(cached_figure(
                figures_dir / "registration_qc.png", {"before": before, "after": after},
                lambda path: save_figure(plot_registration_qc(before, after, quantity="T1rho"), path),
            ))
            section.captions.append(f"{example.subject}/{example.session}: T1rho before and after registration")
        except (DiscVBRError, OSError) as exc:
            log.warning("registration QC figure not drawn: %s", exc)
    return section


def _describe(analysis: AnalysisOutcome, correction: str, alpha: float) -> str:
    s = analysis.settings
    what = {
        "variable": f"{s.method.title()} {'partial ' if s.covariates else ''}correlation of {QUANTITY.get(s.map, s.map)} with "
                    f"{s.variable}" + (f", adjusted for {', '.join(s.covariates)}" if s.covariates else ""),
        "group": f"{'Welch' if s.welch else 'Student'} t-test of {QUANTITY.get(s.map, s.map)} between {s.variable} <= "
                 f"{s.cut} and > {s.cut}",
        "voxel": f"Correlation across subjects of {QUANTITY.get(s.map, s.map)} and {QUANTITY.get(s.second_map, s.second_map)} at each voxel",
        "time": f"Paired t-test of {QUANTITY.get(s.map, s.map)} between {s.baseline} and {s.followup}",
    }[s.kind]
    found = ", ".join(f"{lvl} {n}" for lvl, n in analysis.significant.items())
    return f"{what}; {len(analysis.subjects)} subjects. Significant voxels at {correction} < {alpha}: {found or 'none'}."
