"""``discvbr fit``: T1rho/T2 maps from a multi-echo series.

Writes, on the grid of the input series, ``T.nii.gz`` (ms), ``S0.nii.gz``, ``r2.nii.gz``,
``T_sd.nii.gz`` (ms) and ``status.nii.gz`` (uint8 :class:`discvbr.fitting.FitStatus`
codes), and ``fit.json``: voxel counts per status, median T overall and per disc label
when the mask is a label map, and provenance (version, inputs, parameters).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from discvbr import __version__
from discvbr.cli import EXIT_INCOMPLETE, app
from discvbr.errors import DiscVBRError

if TYPE_CHECKING:
    import numpy as np

SUMMARY_FILE = "fit.json"


@app.command("fit", context_settings={"allow_extra_args": True})
def fit_command(
    ctx: typer.Context,
    series: List[Path] = typer.Option(
        ...,
        "--series",
        help="The series: one 4D image (echoes last), or one 3D image per echo in echo order, "
        "e.g. --series e1.nii.gz e2.nii.gz e3.nii.gz (NIfTI or NRRD).",
    ),
    times: str = typer.Option(..., "--times", help="Echo (T2) or spin-lock (T1rho) times in ms, e.g. 0,10,40,80."),
    out: Path = typer.Option(..., "--out", help="Output folder (created if needed; existing maps are replaced)."),
    mask: Optional[Path] = typer.Option(
        None,
        "--mask",
        help="Voxels to fit (non-zero), on the series grid. A disc label map (1 = L5S1 ... 5 = L1L2) "
        "also gets median T per disc in the summary. Default: every voxel.",
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help="Plausible T range from the paper: t1rho (= t1rho_a, T < 250 ms), t1rho_b (T < 200 ms), t2 (T < 150 ms).",
    ),
    method: str = typer.Option(
        "lm",
        "--method",
        help="lm: Levenberg-Marquardt (the paper's); loglinear: fast weighted log-linear preview; "
        "rician: Rician-aware LM for low SNR (needs --noise-sigma or --background).",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    backend: str = typer.Option("auto", "--backend", help="auto (numpy on CPU, torch on CUDA), numpy or torch."),
    t_min: Optional[float] = typer.Option(None, "--t-min", help="Lowest valid T in ms, exclusive (default: preset's, else 0)."),
    t_max: Optional[float] = typer.Option(
        None, "--t-max", help="Highest valid T in ms, exclusive (default: preset's, else no limit)."
    ),
    noise_sigma: Optional[float] = typer.Option(
        None, "--noise-sigma", help="Noise SD per channel (Rician sigma), in image units: sets the noise floor."
    ),
    background: Optional[Path] = typer.Option(
        None,
        "--background",
        help="Mask of signal-free air voxels on the series grid; the noise sigma is estimated from it "
        "(instead of --noise-sigma).",
    ),
    min_snr: float = typer.Option(2.0, "--min-snr", help="An echo counts as signal above min-snr x sigma."),
    min_echoes: int = typer.Option(2, "--min-echoes", help="Echoes above noise a voxel needs to be fitted."),
    dtype: str = typer.Option("float32", "--dtype", help="Working precision: float32 (fast) or float64."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the numpy backend (default: all)."),
) -> None:
    """Fit mono-exponential T1rho/T2 maps voxel by voxel (S = S0 exp(-t/T)).

    Exit status 0: maps written; 3: maps written but no voxel gave a valid fit (a warning
    says why, from the status counts); 2: bad input, nothing written.
    """
    from discvbr import io
    from discvbr.fitting import estimate_noise_sigma, fit_monoexp, get_preset
    from discvbr.fitting.outputs import MAP_FILES, fit_summary, write_fit_maps
    from discvbr.provenance import environment, now

    paths = _series_paths(series, list(ctx.args))
    preset_obj = get_preset(preset) if preset else None
    kind = preset_obj.kind if preset_obj else "relaxometry"
    data = io.read_series(paths if len(paths) > 1 else paths[0], times, kind=kind)
    grid = data.grid
    mask_array = _read_on_grid(mask, grid, "mask") if mask else None
    if background is not None:
        if noise_sigma is not None:
            raise DiscVBRError("give either --noise-sigma or --background, not both")
        noise_sigma = estimate_noise_sigma(data.data, _read_on_grid(background, grid, "background mask") != 0)

    start = time.perf_counter()
    result = fit_monoexp(
        data.data,
        data.times,
        mask_array,
        method=method,
        device=device,
        backend=backend,
        preset=preset_obj,
        t_min=t_min,
        t_max=t_max,
        noise_sigma=noise_sigma,
        min_snr=min_snr,
        min_echoes=min_echoes,
        dtype=dtype,
        n_threads=threads,
    )
    elapsed = time.perf_counter() - start

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_fit_maps(out, grid, result)
    except BaseException:
        if created:  # no empty or half-filled folder left behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    summary = {
        "discvbr_version": __version__,
        "command": "fit",
        "created": now(),
        **fit_summary(result, mask_array),
        "elapsed_s": round(elapsed, 4),
    }
    fitted = summary["voxels"]["fitted"]
    summary["fits_per_s"] = round(fitted / elapsed) if elapsed > 0 else None
    summary["inputs"] = {
        "series": [str(p) for p in paths],
        "times_ms": data.times.tolist(),
        "mask": str(mask) if mask else None,
        "background": str(background) if background else None,
        "shape": list(data.data.shape),
        "affine": grid.affine.tolist(),
    }
    summary["parameters"] = dict(result.params, preset_description=preset_obj.description if preset_obj else None)
    summary["outputs"] = dict(MAP_FILES)
    summary["provenance"] = environment()
    io.write_json(out / SUMMARY_FILE, summary)
    median = summary["median_T_ms"]
    typer.echo(
        f"fitted {summary['voxels']['fitted']} voxels: {summary['voxels']['valid']} valid, median T "
        f"{'n/a' if median is None else f'{median:.2f} ms'} ({elapsed:.2f} s); wrote {out}"
    )
    if summary["voxels"]["valid"] == 0:
        reasons = ", ".join(f"{name} {n}" for name, n in summary["status_counts"].items() if n and name != "CONVERGED")
        typer.echo(f"discvbr: warning: no voxel could be fitted ({reasons}); see status.nii.gz and {SUMMARY_FILE}", err=True)
        raise typer.Exit(code=EXIT_INCOMPLETE)


def _series_paths(series: list[Path], extra: list[str]) -> list[Path]:
    """Echo files from ``--series a --series b`` or ``--series a b c`` (not both)."""
    stray = [a for a in extra if a.startswith("-")]
    if stray:
        raise DiscVBRError(f"unexpected option(s): {' '.join(stray)}")
    if extra and len(series) > 1:
        raise DiscVBRError("give the echo files either all after one --series, or with one --series per file")
    return list(series) + [Path(a) for a in extra]


def _read_on_grid(path: Path, grid, what: str) -> np.ndarray:
    import numpy as np

    from discvbr import io

    image = io.read_image(path, what=what)
    if image.array.ndim != 3 or not image.same_grid(grid):
        raise DiscVBRError(
            f"{what} {path} is not on the grid of the series: shape {image.shape} vs {grid.shape}, "
            f"spacing {np.round(image.spacing, 4).tolist()} vs {np.round(grid.spacing, 4).tolist()} mm"
        )
    return np.asarray(image.array)
