"""``discvbr run`` (a cohort) and ``discvbr demo`` (the phantom, checked against its truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from discvbr.cli import EXIT_INCOMPLETE, app


def _progress_bars():
    """A rich progress display with one bar per stage, and the callback that drives it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    display = Progress(TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bars: dict[str, int] = {}

    def update(stage: str, done: int, total: int, message: str) -> None:
        if stage not in bars:
            bars[stage] = display.add_task(stage, total=total)
        display.update(bars[stage], completed=done, total=total, description=f"{stage}: {message}"[:44])

    return display, update


def _print_summary(summary: dict, out: Path) -> None:
    sessions = summary["sessions"]
    typer.echo(f"\nsessions: {sessions['ok']} ok, {sessions['partial']} partial, {sessions['failed']} failed "
               f"({summary['seconds']:.0f} s)")
    for failure in summary["failures"][:20]:
        where = f"{failure['subject']}/{failure['session']}"
        typer.echo(f"  {where} {failure['stage']}{' ' + failure['level'] if failure.get('level') else ''}: {failure['message']}")
    if len(summary["failures"]) > 20:
        typer.echo(f"  ... {len(summary['failures']) - 20} more in {out / 'tables' / 'failures.csv'}")
    for name, analysis in summary["analyses"].items():
        if analysis["status"] == "ok":
            found = ", ".join(f"{k} {v}" for k, v in analysis["significant_voxels"].items() if v) or "none"
            typer.echo(f"  analysis {name}: {analysis['subjects']} subjects; significant voxels: {found}")
        else:
            typer.echo(f"  analysis {name}: {analysis['status']}: {analysis['message']}")
    typer.echo(f"report: {summary['report']}")


@app.command("run")
def run_command(
    manifest: Optional[Path] = typer.Argument(None, help="Cohort manifest (CSV/TSV; see the README)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (a previous run's folder is resumed)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Settings file (TOML); see --config-template."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Local Dask worker processes (0: in this process)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of an existing Dask scheduler, e.g. tcp://host:8786."),
    config_template: bool = typer.Option(False, "--config-template", help="Print a settings file with every field documented, and exit."),
) -> None:
    """Run segmentation, registration, fitting, statistics and figures on a cohort.

    Resumable: completed steps whose inputs and settings are unchanged are skipped.
    One failing subject never stops the others; a summary says what failed and why.
    Exit status 0: every session ran; 3: some session failed (the others are complete);
    2: bad manifest or settings, or --out in use by another run; 130: interrupted.
    """
    from discvbr.errors import DiscVBRError
    from discvbr.pipeline.config import config_template as template
    from discvbr.pipeline.config import load_config
    from discvbr.pipeline.runner import run_pipeline

    if config_template:
        typer.echo(template())
        return
    if manifest is None or out is None:
        raise DiscVBRError("discvbr run needs a MANIFEST and --out (see discvbr run --help)")
    settings = load_config(config)
    display, update = _progress_bars()
    with display:
        result = run_pipeline(manifest, out, config=settings, workers=workers, scheduler=scheduler, progress=update)
    _print_summary(result.summary(), out)
    _exit_on_failures(result)


def _exit_on_failures(result) -> None:
    """Exit with :data:`EXIT_INCOMPLETE` when a session failed, saying so last."""
    if result.failed:
        typer.echo(f"discvbr: {len(result.failed)} of {len(result.sessions)} session(s) failed; "
                   "see the list above and tables/failures.csv", err=True)
        raise typer.Exit(code=EXIT_INCOMPLETE)


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Output folder."),
    subjects: int = typer.Option(20, "--subjects", "-n", min=3, help="Phantom subjects."),
    three_d: bool = typer.Option(False, "--3d", help="Stacks of sagittal slices instead of one slice."),
    seed: int = typer.Option(1, "--seed", help="Phantom seed."),
    followup_fraction: float = typer.Option(0.5, "--followup-fraction", min=0.0, max=1.0,
                                            help="Share of the subjects with a follow-up session."),
    workers: int = typer.Option(0, "--workers", "-w", min=0, help="Local Dask worker processes (0: in this process)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Settings file (TOML)."),
) -> None:
    """The whole method on a phantom cohort, with a check against the phantom's truth.

    Simulates a cohort, segments it with the shipped model, registers every disc to the
    default atlas, fits T1rho and T2 in atlas space, runs the paper's analyses, writes
    figures and an HTML report, and prints how well the planted effects were found.
    Resumable like run; exit status 3 when a session failed, 2 when --out is in use.
    """
    from discvbr.pipeline.config import load_config
    from discvbr.pipeline.demo import run_demo
    from discvbr.io import ensure_writable

    ensure_writable(out)
    display, update = _progress_bars()
    with display:
        result = run_demo(out, subjects=subjects, mode="3d" if three_d else "2d", seed=seed, workers=workers,
                          config=load_config(config), followup_fraction=followup_fraction, progress=update)
    _print_summary(result.run.summary(), out / "results")
    ev = result.evaluation
    typer.echo("\nagainst the phantom's truth:")
    dice = ", ".join(f"{k} {v:.3f}" for k, v in ev.get("segmentation_dice", {}).items())
    typer.echo(f"  segmentation Dice: {dice}")
    for kind, a in ev.get("biomarker_agreement", {}).items():
        typer.echo(f"  mean disc {kind}, true vs automatic masks: r = {a['pearson_r']:.3f}, bias {a['bias_ms']:+.2f} ms, "
                   f"limits {a['limits_of_agreement_ms'][0]:+.2f} to {a['limits_of_agreement_ms'][1]:+.2f} ms")
    fe = ev.get("fit_error_t1rho_ms", {})
    if fe:
        typer.echo(f"  fitted T1rho inside the discs: median error {fe['median_error']:+.2f} ms, "
                   f"median absolute error {fe['median_absolute_error']:.2f} ms")
    for name, e in ev.get("effects", {}).items():
        if "planted" in e:
            strength = e.get("median_abs_t_in_region")
            typer.echo(f"  planted effect, analysis {name}: {100 * (e['found_in_region'] or 0):.0f}% of its region significant "
                       f"({e['correction']}), {e['significant_outside_region']} significant voxels elsewhere"
                       + (f", median |t| in its region {strength:.2f}" if strength is not None else ""))
        elif e["status"] == "ok":
            typer.echo(f"  analysis {name}: {e['significant_voxels']} significant voxels ({e['correction']})")
        else:
            typer.echo(f"  analysis {name}: {e['status']}: {e.get('message', '')}")
    typer.echo(f"summary: {result.summary_path}")
    _exit_on_failures(result.run)
