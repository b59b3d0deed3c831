"""``discvbr phantom``: write a synthetic (or semi-synthetic) lumbar qMRI cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from discvbr.cli import app


@app.command("phantom")
def phantom_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created)."),
    subjects: int = typer.Option(20, "--subjects", "-n", min=1, help="Number of subjects."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw (same seed, same cohort)."),
    three_d: bool = typer.Option(False, "--3d", help="Stacks of sagittal slices instead of one 8 mm slice."),
    slices: int = typer.Option(6, "--slices", min=1, help="Slices per stack in --3d mode."),
    slice_thickness: float = typer.Option(4.0, "--slice-thickness", min=0.5, help="Slice thickness in --3d mode, mm."),
    matrix: int = typer.Option(256, "--matrix", min=64, help="In-plane matrix size (square)."),
    fov: float = typer.Option(240.0, "--fov", min=100.0, help="In-plane field of view, mm."),
    snr: float = typer.Option(60.0, "--snr", min=1.0, help="Mean first-echo disc signal / noise SD (Rician noise)."),
    t1rho_times: str = typer.Option("0,10,40,80", "--t1rho-times", help="Spin-lock times, ms (MAPSS default)."),
    t2_times: str = typer.Option("0,12.9,25.7,51.4", "--t2-times", help="T2-preparation echo times, ms (MAPSS default)."),
    followup_fraction: float = typer.Option(0.2, "--followup-fraction", min=0.0, max=1.0, help="Fraction of subjects with a follow-up session."),
    missing_fraction: float = typer.Option(0.05, "--missing-fraction", min=0.0, max=1.0, help="Fraction of clinical cells left empty."),
    odi_effect: float = typer.Option(-30.0, "--odi-effect", help="Planted L4L5 T1rho change per SD of ODI, ms."),
    followup_effect: float = typer.Option(-20.0, "--followup-effect", help="Planted L5S1 nucleus T1rho change at follow-up, ms."),
    real: Optional[Path] = typer.Option(
        None, "--real", help="Semi-synthetic mode: folder of real anatomies (<subject>/t2w.nii.gz + discs.nii.gz)."
    ),
    with_masks: bool = typer.Option(False, "--with-masks", help="Fill the manifest's mask column with the true labels."),
) -> None:
    """Simulate a cohort of sagittal lumbar T1rho/T2 series with exact ground truth.

    Writes one folder per subject and session (series, true disc labels, true maps),
    a manifest.csv in the format users fill in, and truth.json with the generative
    model, planted effects and every hidden value.
    """
    from rich.progress import Progress

    from discvbr.io import parse_times
    from discvbr.phantom import PhantomConfig, write_cohort

    config = PhantomConfig(
        n_subjects=subjects,
        mode="3d" if three_d else "2d",
        matrix=matrix,
        fov_mm=fov,
        n_slices=slices,
        slice_thickness=slice_thickness,
        snr=snr,
        t1rho_times=tuple(parse_times(t1rho_times, what="--t1rho-times")),
        t2_times=tuple(parse_times(t2_times, what="--t2-times")),
        followup_fraction=followup_fraction,
        missing_fraction=missing_fraction,
        odi_effect_ms=odi_effect,
        followup_effect_ms=followup_effect,
        seed=seed,
    )
    simulate = None
    if real is not None:
        from discvbr.phantom.real import RealAnatomySimulator, load_real_anatomies

        simulate = RealAnatomySimulator(load_real_anatomies(real))
    with Progress(transient=True) as bar:
        task = bar.add_task("simulating", total=None)

        def progress(done: int, total: int, key: str) -> None:
            bar.update(task, completed=done, total=total, description=f"simulated {key}")

        manifest = write_cohort(out, config, with_masks=with_masks, progress=progress, simulate=simulate)
    typer.echo(f"wrote {subjects} subjects to {out}\nmanifest: {manifest}\ntruth: {out / 'truth.json'}")
