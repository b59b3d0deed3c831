"""Segment the five lumbar discs of a sagittal image: the API the pipeline calls.

``segment_discs(image)`` checks the input (sagittal geometry, 3D shape, finite and
non-empty values), runs the model (the shipped default ensemble unless another is
given), postprocesses (threshold, components, levels along the spine) and returns the
label map, class probabilities, an uncertainty map and a per-disc uncertainty score,
with every warning a reviewer needs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, Image, require_sagittal, write_image, write_json
from discvbr.levels import DISC_LEVELS
from discvbr.segmentation.infer import predict_volume, resolve_device, use_mixed_precision
from discvbr.segmentation.model_store import ModelSet, combine, load_model
from discvbr.segmentation.postprocess import (
    DEFAULT_MIN_SIZE,
    DEFAULT_THRESHOLD,
    DiscFinding,
    postprocess,
)
from discvbr.segmentation.preprocess import check_slice_image

__all__ = ["SegmentationResult", "segment_discs", "prepare_input", "load_models", "write_result"]

ModelSpec = ModelSet | str | os.PathLike | Sequence[str | os.PathLike] | None


@dataclass
class SegmentationResult:
    """Output of :func:`segment_discs`, on the canonical grid of the input.

    Attributes
    ----------
    labels : Image
        uint8 disc labels, 0 background, 1 = L5S1 ... 5 = L1L2.
    probabilities : Image
        float32 (X, Y, Z, 6) class probabilities, background first.
    uncertainty : Image
        float32 normalised predictive entropy (0 certain, 1 uniform).
    per_disc_uncertainty : dict
        Level -> mean uncertainty over the disc and a one-voxel rim (1 when missing).
    findings : list of DiscFinding
    warnings : list of str
    report : dict
        JSON-ready summary (input, model, settings, discs, warnings, review order, timing).
    """

    labels: Image
    probabilities: Image
    uncertainty: Image
    per_disc_uncertainty: dict[str, float]
    findings: list[DiscFinding]
    warnings: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    @property
    def review_order(self) -> list[str]:
        """Disc levels, least certain first (missing discs lead)."""
        return sorted(DISC_LEVELS, key=lambda lvl: -self.per_disc_uncertainty[lvl])

    @property
    def missing(self) -> list[str]:
        found = {f.level for f in self.findings if f.label}
        return [lvl for lvl in DISC_LEVELS if lvl not in found]


def prepare_input(image: Image | EchoSeries, *, echo: int = 0, what: str = "image") -> Image:
    """Check an input and return it as a canonical sagittal 3D image.

    Parameters
    ----------
    image : Image or EchoSeries
        A 3D image ``(X, Y, Z)`` (a single slice is ``(1, ny, nz)`` with its 3D affine)
        or a series, of which echo ``echo`` is used (0: the first, as in the paper).
    echo : int
        Echo index for a series.
    what : str
        Names the input in errors.

    Raises
    ------
    DiscVBRError
        Axial or coronal geometry, a shape that is not 3D, NaN or infinite values, an
        empty (constant) image, an echo index out of range.
    """
    if isinstance(image, EchoSeries):
        if not -image.n_echoes <= echo < image.n_echoes:
            raise DiscVBRError(f"{what}: echo {echo} requested but the series has {image.n_echoes} echoes")
        image = image.echo(echo)
    if not isinstance(image, Image):
        raise DiscVBRError(f"{what}: expected a discvbr.io.Image or EchoSeries, got {type(image).__name__}")
    shape = np.shape(image.array)
    if len(shape) != 3:
        hint = (
            " (a single sagittal slice is stored as (1, ny, nz) with its 3D affine)"
            if len(shape) == 2
            else " (for a multi-echo series pass an EchoSeries and choose the echo)"
            if len(shape) == 4
            else ""
        )
        raise DiscVBRError(f"{what}: image must be 3D (X, Y, Z), got shape {shape}{hint}")
    if min(shape) == 0:
        raise DiscVBRError(f"{what}: the image has no voxels (shape {shape})")
    values = check_slice_image(image.array, what=what)
    canonical = require_sagittal(Image(values, image.affine), what=what)
    if min(canonical.shape[1:]) < 16:
        raise DiscVBRError(f"{what}: sagittal slices of {canonical.shape[1:]} pixels are too small to segment")
    return canonical


def load_models(model: ModelSpec = None, *, device="cpu") -> ModelSet:
    """Load the default model, a model/ensemble folder, or several folders as one ensemble."""
    if isinstance(model, ModelSet):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device)
    paths = list(model)
    if not paths:
        raise DiscVBRError("an empty list of model folders was given")
    return combine([load_model(p, device=device) for p in paths])


def segment_discs(
    image: Image | EchoSeries,
    *,
    model: ModelSpec = None,
    device: str = "auto",
    echo: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
    min_size: int = DEFAULT_MIN_SIZE,
    mode: str = "auto",
    batch_size: int = 8,
    amp: bool | str = "auto",
    subject: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentationResult:
    """Segment and label the five lumbar discs of a sagittal image.

    Parameters
    ----------
    image : Image or EchoSeries
        Sagittal lumbar image (any voxel order; axial and coronal are refused), or a
        T1rho/T2 series whose first echo (``echo``) is segmented.
    model : ModelSet, path, list of paths or None
        None: the shipped default model; a folder with ``model.json`` or
        ``ensemble.json``; several folders: one ensemble (logits averaged).
    device : {"auto", "cpu", "cuda"}
        ``"auto"``: CUDA when present, else CPU.
    echo : int
        Echo of a series to segment.
    threshold : float
        Disc probability threshold (0.5).
    min_size : int
        Smallest connected component kept, voxels (125).
    mode : {"auto", "2d", "3d"}
        Connected components per slice or across the stack (auto: 2D for one slice).
    batch_size : int
        Slices per network call.
    amp : bool or "auto"
        Mixed precision; ``"auto"``: on CUDA only.
    subject : str, optional
        Names the image in warnings and the report.
    progress : callable, optional
        ``progress(done, total)`` in slices.

    Returns
    -------
    SegmentationResult
    """
    where = subject or "image"
    canonical = prepare_input(image, echo=echo, what=where)
    torch_device = resolve_device(device)
    use_amp = use_mixed_precision(torch_device, amp)
    models = load_models(model, device=torch_device)
    start = time.perf_counter()
    spacing = canonical.spacing
    probabilities = predict_volume(
        canonical.array, (float(spacing[1]), float(spacing[2])), models,
        device=torch_device, batch_size=batch_size, amp=use_amp, progress=progress,
    )
    inference_s = time.perf_counter() - start
    assignment = postprocess(probabilities, canonical.affine, threshold=threshold, min_size=min_size, mode=mode, where=where)
    uncertainty = assignment.uncertainty
    scores = assignment.per_disc_uncertainty
    elapsed = time.perf_counter() - start
    result = SegmentationResult(
        labels=Image(assignment.labels, canonical.affine),
        probabilities=Image(np.moveaxis(probabilities, 0, -1), canonical.affine),
        uncertainty=Image(uncertainty, canonical.affine),
        per_disc_uncertainty=scores,
        findings=assignment.findings,
        warnings=list(assignment.warnings),
    )
    result.report = {
        "subject": subject,
        "input": {"shape": list(canonical.shape), "spacing_mm": [round(float(s), 5) for s in spacing]},
        "model": models.describe(),
        "settings": {"threshold": threshold, "min_size": min_size, "mode": mode, "echo": echo,
                     "device": torch_device.type, "mixed_precision": use_amp, "batch_size": batch_size},
        "discs": [f.as_dict() for f in assignment.findings],
        "found": assignment.found,
        "missing": assignment.missing,
        "warnings": result.warnings,
        "per_disc_uncertainty": {k: round(v, 4) for k, v in scores.items()},
        "review_order": result.review_order,
        "timing": {"inference_s": round(inference_s, 3), "total_s": round(elapsed, 3),
                   "slices": int(canonical.shape[0]), "inference_s_per_slice": round(inference_s / canonical.shape[0], 4)},
        "versions": {"discvbr": __version__},
    }
    return result


def write_result(result: SegmentationResult, out: str | os.PathLike, *, prefix: str = "") -> dict[str, Path]:
    """Write labels, probabilities, uncertainty (NIfTI) and the JSON report to a folder.

    Returns
    -------
    dict
        Kind -> written path (``labels``, ``probabilities``, ``uncertainty``, ``report``).
    """
    out = Path(out)
    paths = {
        "labels": out / f"{prefix}discs.nii.gz",
        "probabilities": out / f"{prefix}disc_probabilities.nii.gz",
        "uncertainty": out / f"{prefix}disc_uncertainty.nii.gz",
        "report": out / f"{prefix}segmentation.json",
    }
    write_image(paths["labels"], result.labels)
    write_image(paths["probabilities"], Image(result.probabilities.array.astype(np.float32), result.probabilities.affine))
    write_image(paths["uncertainty"], result.uncertainty)
    report = dict(result.report)
    report["outputs"] = {k: p.name for k, p in paths.items()}
    write_json(paths["report"], report)
    return paths
