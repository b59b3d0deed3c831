"""``discvbr render``: draw per-disc maps on the atlas' spine mesh, off screen, to a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from discvbr.cli import app


def _parse_size(text: str) -> tuple[int, int]:
    from discvbr.errors import DiscVBRError

    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DiscVBRError(f"--size must be WIDTHxHEIGHT in pixels (e.g. 900x1000), got {text!r}") from None
    return width, height


@app.command("render")
def render_command(
    atlas: Path = typer.Option(..., "--atlas", "-a", help="Atlas label map (NIfTI/NRRD): disc labels 1-5 (1 = L5S1), or a spine label map with vertebrae 10-16."),
    maps: List[str] = typer.Option(
        ..., "--map", "-m", help="Map to draw: one file on the atlas grid holding every disc, or LEVEL=FILE per disc (e.g. L4L5=r_L4L5.nii.gz); repeat for several discs."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output PNG; a JSON file with the same stem records inputs, parameters and versions."),
    kind: str = typer.Option("T", "--kind", "-k", help="Map kind: T (relaxation time or group mean, ms), r, t, delta (difference, ms) or p (log scale)."),
    quantity: str = typer.Option("T1rho", "--quantity", help="Relaxation time named on the colour bar (T1rho, T2)."),
    vmin: Optional[float] = typer.Option(None, "--vmin", help="Lower end of the colour range (default depends on the kind)."),
    vmax: Optional[float] = typer.Option(None, "--vmax", help="Upper end of the colour range (default depends on the kind)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level marked on p colour bars."),
    slices: Optional[str] = typer.Option(None, "--slices", help="Slices of the maps to draw, e.g. '2,3' (default: the single 2D slice, or the two central slices of each disc)."),
    size: str = typer.Option("900x1000", "--size", help="Image size WIDTHxHEIGHT in pixels."),
    camera: str = typer.Option("sagittal", "--camera", help="Camera: sagittal (from the left, anterior on the left), sagittal-right, oblique, posterior-oblique."),
    zoom: float = typer.Option(1.0, "--zoom", min=0.1, help="Magnification over the fit of the whole spine."),
    title: Optional[str] = typer.Option(None, "--title", help="Text at the top of the figure."),
) -> None:
    """Render disc maps (relaxation times, r, p, group means) on the atlas' spine mesh.

    The vertebral bodies are taken from a spine label map or derived from the disc
    labels; a one-slice (2D) atlas is extruded into a plausible 3D spine.
    """
    import platform

    import numpy as np

    from discvbr import __version__
    from discvbr.errors import DiscVBRError
    from discvbr.io import read_image, require_sagittal, write_json
    from discvbr.levels import DISC_LEVELS
    from discvbr.render.scene import render_spine_maps

    width, height = _parse_size(size)
    atlas_image = require_sagittal(read_image(atlas, what="atlas labels"), what=str(atlas))
    per_level, single = {}, None
    for item in maps:
        level, sep, path = item.partition("=")
        if sep:
            if level not in DISC_LEVELS:
                raise DiscVBRError(f"--map {item}: unknown disc level {level!r}; expected one of {', '.join(DISC_LEVELS)}")
            per_level[level] = require_sagittal(read_image(path, what=f"{level} map"), what=path)
        else:
            if single is not None or per_level:
                raise DiscVBRError("give either one --map FILE on the atlas grid, or LEVEL=FILE maps, not both")
            single = require_sagittal(read_image(item, what="map"), what=item)
    if single is not None and per_level:
        raise DiscVBRError("give either one --map FILE on the atlas grid, or LEVEL=FILE maps, not both")
    chosen_slices = None
    if slices:
        try:
            chosen_slices = [int(s) for s in slices.replace(";", ",").split(",") if s.strip()]
        except ValueError:
            raise DiscVBRError(f"--slices must be whole numbers separated by commas, got {slices!r}") from None
    figure = render_spine_maps(
        atlas_image,
        single if single is not None else per_level,
        kind=kind,
        quantity=quantity,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha,
        slices=chosen_slices,
        size=(width, height),
        camera=camera,
        zoom=zoom,
        title=title,
        out=out,
    )
    from importlib.metadata import version

    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    write_json(
        out.with_name(stem + ".json"),
        {
            "figure": out.name,
            "atlas": str(atlas),
            "maps": [str(m) for m in maps],
            "kind": kind,
            "quantity": quantity,
            "colour_range": [figure.scale.vmin, figure.scale.vmax],
            "log_scale": figure.scale.log,
            "alpha": alpha if kind == "p" else None,
            "slices": chosen_slices,
            "size": [width, height],
            "camera": camera,
            "zoom": zoom,
            "render_window": figure.window_class,
            "versions": {"discvbr": __version__, "python": platform.python_version(), "numpy": np.__version__, "vtk": version("vtk")},
        },
    )
    typer.echo(f"wrote {out} ({width} x {height}, {figure.scale.title} {figure.scale.vmin:.3g}..{figure.scale.vmax:.3g})")
