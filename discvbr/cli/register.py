"""``discvbr register``, ``discvbr tune-registration`` and ``discvbr build-atlas``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from discvbr.cli import EXIT_INCOMPLETE, app

_PARAM_HELP = "Defaults are the paper's tuned values (Iriondo et al., MRM 2020)."


def _levels(text: Optional[str]) -> list[int]:
    from discvbr.levels import DISC_LEVELS, label_of

    if not text:
        return list(range(1, len(DISC_LEVELS) + 1))
    return [label_of(part.strip().upper()) for part in text.split(",") if part.strip()]


def _sessions(manifest: Optional[Path], mask: Optional[Path], subject: str, series: dict[str, tuple[Optional[Path], Optional[str]]]):
    """(subject, session, mask path, {kind: SeriesRef}) for every session with a mask."""
    from discvbr.errors import DiscVBRError
    from discvbr.io import parse_times
    from discvbr.manifest import SeriesRef, read_manifest
    from discvbr.naming import check_id

    if (manifest is None) == (mask is None):
        raise DiscVBRError("give either --manifest (a cohort) or --mask (one subject)")
    if manifest is not None:
        cohort = read_manifest(manifest)
        rows = [(e.subject, e.session, e.mask, e.series) for e in cohort]
        missing = [f"{s}/{ses}" for s, ses, m, _ in rows if m is None]
        if len(missing) == len(rows):
            raise DiscVBRError(f"manifest {manifest}: no row has a mask; fill the 'mask' column with disc label maps")
        if missing:
            typer.echo(f"skipping {len(missing)} session(s) without a mask: {', '.join(missing[:8])}", err=True)
        return [r for r in rows if r[2] is not None]
    check_id(subject, what="--subject")
    refs = {}
    for kind, (path, times) in series.items():
        if path is None:
            continue
        if times is None:
            raise DiscVBRError(f"--{kind} needs --{kind}-times (ms, separated by ';' or ',')")
        refs[kind] = SeriesRef(kind, (path,), parse_times(times, what=f"--{kind}-times"))
    return [(subject, "1", mask, refs)]


@app.command("register")
def register_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created); rerunning resumes finished discs."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", "-m", help="Cohort manifest; every row with a mask is registered."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="One subject: its disc label map (1 = L5S1 ... 5 = L1L2)."),
    subject: str = typer.Option("subject", "--subject", help="Subject name with --mask."),
    t1rho: Optional[Path] = typer.Option(None, "--t1rho", help="With --mask: the T1rho series (4D file) to bring into atlas space."),
    t1rho_times: Optional[str] = typer.Option(None, "--t1rho-times", help="Spin-lock times of --t1rho, ms."),
    t2: Optional[Path] = typer.Option(None, "--t2", help="With --mask: the T2 series (4D file) to bring into atlas space."),
    t2_times: Optional[str] = typer.Option(None, "--t2-times", help="Echo times of --t2, ms."),
    atlas: str = typer.Option("phantom-healthy", "--atlas", "-a", help="Shipped atlas name (see 'discvbr build-atlas --list') or an atlas folder."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Discs to register, e.g. 'L4L5,L5S1' (default: all five)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes (one disc each at a time)."),
    grid_spacing: float = typer.Option(8.0, "--grid-spacing", min=0.5, help=f"B-spline final grid spacing, voxels (paper: 2). {_PARAM_HELP}"),
    iterations: int = typer.Option(200, "--iterations", min=1, help=f"B-spline iterations per resolution. {_PARAM_HELP}"),
    rigidity_weight: float = typer.Option(4.0, "--rigidity-weight", min=0.0, help=f"Rigidity penalty weight (paper: 0.77). {_PARAM_HELP}"),
    parameters: Optional[Path] = typer.Option(None, "--parameters", help="Folder with your own affine-{2d,3d}.txt and bspline-{2d,3d}.txt."),
    margin: float = typer.Option(10.0, "--margin-mm", min=0.0, help="Margin around each disc's bounding box, mm."),
    seed: int = typer.Option(0, "--seed", help="Seed of elastix's random sampling."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Register again discs already registered in --out."),
) -> None:
    """Register every disc to the atlas (affine + B-spline with rigidity penalty) and bring all echoes into atlas space.

    Per session writes <out>/<subject>/<session>/<LEVEL>/ (elastix TransformParameters files,
    the parameters that ran, det J map, registration.json), <kind>_atlas.nii.gz (echoes on the
    atlas grid, NaN outside the atlas discs) and mask_atlas.nii.gz; and <out>/registration_qc.csv
    with Dice, det J statistics, Kolmogorov-Smirnov distance and flags per disc. Exits with
    status 3 when some disc failed (the others are complete).
    """
    import numpy as np
    from rich.progress import Progress

    from discvbr import __version__
    from discvbr.errors import DiscVBRError
    from discvbr.io import EchoSeries, Image, atomic_write, read_image, require_sagittal, write_image, write_json, write_series
    from discvbr.levels import level_of
    from discvbr.registration import (
        DiscFailure,
        DiscRegistration,
        DiscTask,
        RegistrationParams,
        SubjectRegistration,
        apply_subject,
        load_atlas,
        paste_discs,
        qc_rows,
        run_disc_tasks,
        save_atlas,
        warp_mask,
    )
    from discvbr.registration.engine import registration_ndim

    params = RegistrationParams(
        final_grid_spacing=grid_spacing,
        iterations=iterations,
        rigidity_weight=rigidity_weight,
        seed=seed,
        parameter_dir=None if parameters is None else str(parameters.resolve()),
    )
    wanted = _levels(levels)
    sessions = _sessions(manifest, mask, subject, {"t1rho": (t1rho, t1rho_times), "t2": (t2, t2_times)})
    atlases: dict[str, object] = {}
    plans = []
    tasks: list = []
    for subj, ses, mask_path, refs in sessions:
        label_map = require_sagittal(read_image(mask_path, what=f"mask of subject {subj}"), what=str(mask_path))
        label_map = Image(np.asarray(label_map.array), label_map.affine)
        mode = f"{registration_ndim(label_map.shape)}d"
        if mode not in atlases:
            atlases[mode] = load_atlas(atlas, mode=mode)
        folder = out / subj / ses
        name = subj if ses == "1" else f"{subj}/{ses}"
        plan = {"subject": subj, "name": name, "folder": folder, "mask": label_map, "refs": refs, "atlas": atlases[mode], "done": {}}
        for label in wanted:
            disc_dir = folder / level_of(label)
            if not overwrite and (disc_dir / "registration.json").is_file():
                try:
                    previous = DiscRegistration.load(disc_dir)
                except DiscVBRError:
                    previous = None
                same = previous is not None and previous.params == params and previous.atlas_name == atlases[mode].name
                if same and previous.margin_mm == margin:
                    plan["done"][label] = previous
                    continue
            tasks.append(DiscTask(label_map, label, atlases[mode], name, params, margin, tag=(len(plans), label)))
        plans.append(plan)

    failures: list[DiscFailure] = []

    # no auto-refresh thread: worker processes are forked while the bar is shown
    with Progress(transient=True, auto_refresh=False) as bar:
        progress_task = bar.add_task("registering discs", total=len(tasks))

        def saved(done: int, total: int, result) -> None:
            bar.update(progress_task, completed=done, description=f"registered {done}/{total} discs", refresh=True)

        results = run_disc_tasks(tasks, jobs=jobs, progress=saved)
    for task, result in zip(tasks, results):
        plan = plans[task.tag[0]]
        if isinstance(result, DiscFailure):
            failures.append(result)
        else:
            result.save(plan["folder"] / result.level)
            plan["done"][task.label] = result

    all_results = list(failures)
    for plan in plans:
        registration = SubjectRegistration(plan["name"], plan["atlas"], discs=dict(sorted(plan["done"].items())))
        if registration.discs:
            try:
                for kind, ref in plan["refs"].items():
                    loaded = ref.load()
                    canonical = require_sagittal(Image(loaded.data, loaded.affine), what=f"{kind} series of {plan['name']}")
                    series = EchoSeries(np.asarray(canonical.array), loaded.times, canonical.affine, loaded.kind)
                    write_series(plan["folder"] / f"{kind}_atlas.nii.gz", apply_subject(registration, series, mask=plan["mask"]))
                warped = {label: warp_mask(reg, plan["mask"]) for label, reg in registration.discs.items()}
                pasted = paste_discs(warped, plan["atlas"])
                write_image(plan["folder"] / "mask_atlas.nii.gz", Image(np.nan_to_num(pasted.array).astype(np.uint8), pasted.affine))
                for reg in registration.discs.values():
                    reg.save(plan["folder"] / reg.level)
            except DiscVBRError as exc:
                failures += [DiscFailure(plan["name"], label, str(exc)) for label in registration.discs]
                registration.discs.clear()
        all_results += list(registration.discs.values())

    table = qc_rows(all_results)
    with atomic_write(out / "registration_qc.csv") as tmp:
        table.to_csv(tmp, index=False)
    for mode, used in atlases.items():
        save_atlas(used, out / "atlas" / mode)
    write_json(out / "provenance.json", {
        "command": "discvbr register",
        "discvbr_version": __version__,
        "params": params.to_dict(),
        "margin_mm": margin,
        "atlases": {mode: a.name for mode, a in atlases.items()},
        "levels": [level_of(v) for v in wanted],
        "sessions": len(plans),
    })
    n_ok = int((table.get("status") == "ok").sum()) if not table.empty else 0
    n_flagged = int((table.get("status") == "flagged").sum()) if not table.empty else 0
    resumed = sum(len(plan["done"]) for plan in plans) - sum(not isinstance(r, DiscFailure) for r in results)
    typer.echo(
        f"registered {n_ok + n_flagged} disc(s) ({n_flagged} flagged, {resumed} resumed from earlier runs), "
        f"{len(failures)} failed; QC: {out / 'registration_qc.csv'}"
    )
    for failure in failures[:10]:
        typer.echo(f"  failed: {failure.message}", err=True)
    if failures:
        raise typer.Exit(code=EXIT_INCOMPLETE)


@app.command("tune-registration")
def tune_command(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Cohort manifest; the masks of its rows are the discs tuned on."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: Optuna journal (rerun to resume), trials.csv, best.json, best/ parameter files."),
    atlas: str = typer.Option("phantom-healthy", "--atlas", "-a", help="Shipped atlas name or an atlas folder."),
    trials: int = typer.Option(30, "--trials", "-n", min=1, help="Completed trials wanted in total (earlier runs count)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    parallel_trials: Optional[int] = typer.Option(None, "--parallel-trials", min=1, help="Trials evaluated together (default: --jobs)."),
    levels: Optional[str] = typer.Option(None, "--levels", help="Discs to use, e.g. 'L4L5,L5S1' (default: all five)."),
    max_discs: Optional[int] = typer.Option(None, "--max-discs", min=1, help="Tune on a random sample of this many discs (seeded)."),
    grid_spacing_range: tuple[int, int] = typer.Option((1, 8), "--grid-spacing-range", help="Final grid spacing searched, voxels (low high)."),
    iterations_range: tuple[int, int] = typer.Option((50, 500), "--iterations-range", help="Iterations searched (low high, log scale)."),
    rigidity_range: tuple[float, float] = typer.Option((0.01, 10.0), "--rigidity-range", help="Rigidity weight searched (low high, log scale)."),
    margin: float = typer.Option(10.0, "--margin-mm", min=0.0, help="Margin around each disc's bounding box, mm."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler, of the disc sample and of elastix."),
) -> None:
    """Bayesian optimisation (Optuna TPE) of grid spacing, iterations and rigidity weight.

    Minimises L = mean over discs of (1 - Dice + SD(det J)), the paper's objective, and writes
    the best parameter files to <out>/best/ (use them with 'discvbr register --parameters').
    """
    import numpy as np

    from discvbr.errors import DiscVBRError
    from discvbr.io import Image, read_image, require_sagittal
    from discvbr.registration import RegistrationParams, load_atlas
    from discvbr.registration.engine import registration_ndim
    from discvbr.registration.tune import SearchSpace, TuneCase, tune_registration

    wanted = _levels(levels)
    sessions = _sessions(manifest, None, "", {})
    cases = []
    modes = set()
    for subj, ses, mask_path, _ in sessions:
        label_map = require_sagittal(read_image(mask_path, what=f"mask of subject {subj}"), what=str(mask_path))
        modes.add(registration_ndim(label_map.shape))
        present = set(np.unique(np.asarray(label_map.array)).astype(int).tolist())
        name = subj if ses == "1" else f"{subj}/{ses}"
        cases += [TuneCase(name, Image(np.asarray(label_map.array), label_map.affine), v) for v in wanted if v in present]
    if len(modes) != 1:
        raise DiscVBRError(f"manifest {manifest}: masks mix single slices and stacks; tune 2D and 3D separately")
    if not cases:
        raise DiscVBRError(f"manifest {manifest}: no mask holds the requested discs")
    if max_discs is not None and max_discs < len(cases):
        pick = np.sort(np.random.default_rng(seed).choice(len(cases), size=max_discs, replace=False))
        cases = [cases[i] for i in pick]
    used = load_atlas(atlas, mode=f"{modes.pop()}d")
    space = SearchSpace(grid_spacing_range, iterations_range, rigidity_range)

    def report(done: int, total: int, best: float) -> None:
        typer.echo(f"{done}/{total} trials, best L = {best:.4f}")

    result = tune_registration(
        cases,
        used,
        out=out,
        n_trials=trials,
        jobs=jobs,
        parallel_trials=parallel_trials,
        space=space,
        base_params=RegistrationParams(seed=seed),
        margin_mm=margin,
        seed=seed,
        progress=report,
    )
    p = result.best_params
    typer.echo(
        f"best L = {result.best_value:.4f} with grid spacing {p.final_grid_spacing:g}, {p.iterations} iterations, "
        f"rigidity weight {p.rigidity_weight:.3g} ({result.n_complete} trials on {len(cases)} discs); "
        f"parameter files: {out / 'best'}"
    )


@app.command("build-atlas")
def build_atlas_command(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Atlas folder to write (labels.nii.gz + atlas.json)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Your healthy subject's disc label map (1 = L5S1 ... 5 = L1L2)."),
    phantom: Optional[str] = typer.Option(None, "--phantom", help="Build from the phantom: 'healthy' or 'degenerated'."),
    real: Optional[Path] = typer.Option(None, "--real", help="Build from a real subject in this folder (<folder>/<subject>/discs.nii.gz)."),
    real_subject: Optional[str] = typer.Option(None, "--real-subject", help="Subject folder name with --real, e.g. sub-20."),
    mode: str = typer.Option("2d", "--mode", help="With --phantom or --real: '2d' (one 8 mm slice) or '3d' (6 slices of 4 mm)."),
    name: Optional[str] = typer.Option(None, "--name", help="Atlas name (default: the folder name)."),
    description: str = typer.Option("", "--description", help="Free text stored with the atlas."),
    seed: int = typer.Option(0, "--seed", help="Phantom seed with --phantom."),
    list_atlases: bool = typer.Option(False, "--list", help="List the shipped atlases and exit."),
) -> None:
    """Build a disc atlas from your own healthy subject, the phantom, or a real example subject."""
    from discvbr.errors import DiscVBRError
    from discvbr.io import read_image
    from discvbr.naming import check_id
    from discvbr.phantom.atlas import phantom_atlas_labels, real_atlas_labels
    from discvbr.registration import available_atlases, build_atlas, save_atlas

    if list_atlases:
        for atlas_name, text in available_atlases().items():
            typer.echo(f"{atlas_name}: {text}")
        return
    if out is None:
        raise DiscVBRError("give --out, the atlas folder to write")
    atlas_name = check_id(name or out.resolve().name, what="--name" if name else "atlas name (the --out folder's name; give --name)")
    if sum(x is not None for x in (labels, phantom, real)) != 1:
        raise DiscVBRError("give exactly one of --labels, --phantom or --real")
    if mode not in ("2d", "3d"):
        raise DiscVBRError(f"--mode must be '2d' or '3d', got {mode!r}")
    if labels is not None:
        label_map = read_image(labels, what="atlas labels")
        source = {"labels": str(labels)}
    elif phantom is not None:
        label_map, source = phantom_atlas_labels(phantom, mode=mode, seed=seed)
    else:
        if real_subject is None:
            raise DiscVBRError("--real needs --real-subject (a subject folder name, e.g. sub-20)")
        label_map, source = real_atlas_labels(real, real_subject, mode=mode)
    atlas = build_atlas(label_map, name=atlas_name, description=description, source=source)
    save_atlas(atlas, out)
    typer.echo(f"atlas {atlas.name!r} ({atlas.mode}, discs {', '.join(str(v) for v in atlas.levels)}) written to {out}")
