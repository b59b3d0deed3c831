"""``discvbr segment``: label the five lumbar discs of a sagittal image or series.

A person gets a progress bar, the warnings and the files written. With
``--machine-output`` (what the Slicer module's child process uses) it prints instead one
``PROGRESS <fraction> <what>`` line per step on stdout (flushed), one ``WARNING <text>``
line per warning, and ``RESULT <report.json>`` last. Exit status 0: done (read the
warnings); 2: bad input (one ``discvbr: error:`` line on stderr, nothing written); 130:
interrupted.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import typer

from discvbr.cli import app


def _machine_lines():
    """``say(kind, fraction, text)`` for the Slicer child process: one parseable line each."""

    def say(kind: str, fraction: float | None, text: str) -> None:
        if kind == "PROGRESS":
            typer.echo(f"PROGRESS {fraction:.3f} {text}")
        elif kind == "INFO":
            typer.echo(text)
        else:
            typer.echo(f"{kind} {text}")

    return contextlib.nullcontext(), say


def _person_lines():
    """``say(kind, fraction, text)`` for a terminal: a progress bar, warnings printed above it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    display = Progress(TextColumn("{task.description:<32}"), BarColumn(), TimeElapsedColumn(), transient=True)
    bar = display.add_task("segmenting", total=1.0)

    def say(kind: str, fraction: float | None, text: str) -> None:
        if kind == "PROGRESS":
            display.update(bar, completed=fraction, description=text[:32])
        elif kind == "WARNING":
            display.console.print(f"warning: {text}", markup=False, highlight=False, style=None)
        elif kind == "RESULT":
            typer.echo(f"report: {text}")
        else:
            typer.echo(text)

    return display, say


@app.command("segment")
def segment_command(
    image: Path = typer.Argument(..., help="Sagittal image (3D NIfTI/NRRD) or multi-echo series (4D, echoes last)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created): discs.nii.gz, disc_probabilities.nii.gz, disc_uncertainty.nii.gz, segmentation.json."),
    echo: int = typer.Option(0, "--echo", min=0, help="Echo of a 4D series to segment (0: the first, as in the paper)."),
    model: Optional[List[Path]] = typer.Option(None, "--model", "-m", help="Model or ensemble folder; repeat to ensemble several (logits averaged). Default: the shipped model."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0, help="Disc probability threshold."),
    min_size: int = typer.Option(125, "--min-size", min=1, help="Smallest connected component kept, voxels."),
    mode: str = typer.Option("auto", "--mode", help="Connected components: auto (2d for one slice, 3d for a stack), 2d or 3d."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Slices per network call."),
    subject: Optional[str] = typer.Option(None, "--subject", help="Name used in warnings and the report (default: the file name)."),
    prefix: str = typer.Option("", "--prefix", help="Prefix of the output file names."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the network (default: torch's choice)."),
    machine_output: bool = typer.Option(
        False, "--machine-output",
        help="Print PROGRESS <fraction> <what>, WARNING <text> and RESULT <report.json> lines for a calling program "
        "(the Slicer module) instead of a progress bar.",
    ),
) -> None:
    """Segment the lumbar discs (1 = L5S1 ... 5 = L1L2) with the CFCM network.

    Writes the label map, the class probabilities (4D, background first), a normalised
    entropy map and a JSON report (discs found, volumes, per-disc uncertainty and a
    review order, warnings, model provenance, timing).
    """
    import numpy as np

    from discvbr.errors import DiscVBRError
    from discvbr.io import Image, read_image

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from discvbr.segmentation.segment import segment_discs, write_result

    name = subject or image.name.split(".")[0]
    display, say = _machine_lines() if machine_output else _person_lines()
    with display:
        say("PROGRESS", 0.0, f"reading {image}")
        img = read_image(image, what="image to segment")
        array = np.asarray(img.array)
        if array.ndim == 4:
            if echo >= array.shape[3]:
                raise DiscVBRError(f"{image}: echo {echo} requested but the series has {array.shape[3]} echoes")
            img = Image(array[..., echo], img.affine)
        elif echo != 0:
            raise DiscVBRError(f"{image}: --echo {echo} given but the image has a single echo (3D)")

        def progress(done: int, total: int) -> None:
            say("PROGRESS", 0.05 + 0.85 * done / max(total, 1), f"slices {done}/{total}")

        say("PROGRESS", 0.05, "loading model")
        result = segment_discs(
            img, model=list(model) if model else None, device=device, threshold=threshold, min_size=min_size,
            mode=mode, batch_size=batch_size, subject=name, progress=progress,
        )
        say("PROGRESS", 0.95, "writing")
        paths = write_result(result, out, prefix=prefix)
        for warning in result.warnings:
            say("WARNING", None, warning)
        say("PROGRESS", 1.0, "done")
    found = ", ".join(f.level for f in result.findings if f.label) or "none"
    say("INFO", None, f"found {found}; review first: {', '.join(result.review_order[:2])}")
    say("RESULT", None, str(paths["report"]))
