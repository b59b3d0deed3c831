"""DiscSegmentation: segment the five lumbar discs, review them by uncertainty, save corrected masks.

The network runs in a separate process (``discvbr segment``, see
:mod:`discvbr.extension.process`), so the GUI stays responsive and Cancel kills it; the
result comes back as a segmentation node with the five disc segments (named and coloured
as everywhere in DiscVBR) and an uncertainty volume. The review list orders the discs by
their uncertainty (missing discs first) with the point the slice views jump to. A
corrected segmentation is saved as a label map for the pipeline or handed to
DiscRelaxometry as it is.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.extension import parameters as P
from discvbr.extension.process import CommandProcess, Job, discvbr_command
from discvbr.io import Image
from discvbr.levels import DISC_LEVELS
from discvbr.resources import default_model_path

__all__ = ["MODULE", "DEFAULTS", "ReviewItem", "SegmentationOutput", "DiscSegmentationLogic"]

MODULE = "DiscSegmentation"
#: Node references of the parameter node.
INPUT, SEGMENTATION, UNCERTAINTY = "InputVolume", "Segmentation", "Uncertainty"
#: Settings of the parameter node.
MODEL_SOURCE, MODEL_FOLDER = "ModelSource", "ModelFolder"
DEVICE, THRESHOLD, MIN_SIZE = "Device", "Threshold", "MinimumSize"
#: Setting: "true" refills the referenced segmentation (and uncertainty) node, wiping its hand
#: corrections; the default "false" puts every run into new nodes, so corrections are never lost.
REPLACE_OUTPUT = "ReplaceOutput"
MODEL_SOURCES = ("shipped", "folder")
DEVICES = ("auto", "cpu", "cuda")
DEFAULTS = {MODEL_SOURCE: "shipped", MODEL_FOLDER: "", DEVICE: "auto", THRESHOLD: "0.5", MIN_SIZE: "125", REPLACE_OUTPUT: "false"}
#: Attribute of a segmentation node holding the segmentation report (JSON), saved with the scene.
REPORT_ATTRIBUTE = "DiscVBR.SegmentationReport"


@dataclass(frozen=True)
class ReviewItem:
    """One disc in the review list.

    Attributes
    ----------
    level : str
    uncertainty : float
        Mean normalised entropy over the disc and a one-voxel rim (1 for a missing disc;
        NaN when the masks did not come from the network).
    voxels : int
        Voxels in the disc's segment now (after any correction).
    centre_ras : tuple of float or None
        Centroid of the segment (RAS mm), where the slice views jump; None when empty.
    """

    level: str
    uncertainty: float
    voxels: int
    centre_ras: tuple[float, float, float] | None

    @property
    def missing(self) -> bool:
        return self.voxels == 0

    def text(self) -> str:
        """One line for the list: level, uncertainty, size."""
        if self.missing:
            return f"{self.level}: missing - paint it in the Segment Editor"
        score = "n/a" if self.uncertainty != self.uncertainty else f"{self.uncertainty:.3f}"
        return f"{self.level}: uncertainty {score}, {self.voxels} voxels"


@dataclass
class SegmentationOutput:
    """Nodes and review list of one segmentation."""

    segmentation: object
    uncertainty: object | None
    review: list[ReviewItem]
    warnings: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)


class DiscSegmentationLogic(P.ModuleLogic):
    """Disc segmentation on volume nodes (the DiscSegmentation module's logic).

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Default: ``slicer.mrmlScene``.
    python : str, optional
        Python that runs ``discvbr segment`` (default: PythonSlicer inside Slicer, else
        this interpreter).
    """

    module = MODULE
    defaults = DEFAULTS

    def __init__(self, scene=None, *, python: str | None = None):
        super().__init__(scene)
        self.python = python
        # (segmentation node id, segment id) -> (segment version, (voxels, centre)): see review()
        self._review_cache: dict[tuple[str, str], tuple[tuple, tuple[int, tuple[float, float, float] | None]]] = {}

    # ------------------------------------------------------------------ settings

    def use_model_folder(self, node, folder: str | os.PathLike) -> None:
        """Segment with a model or ensemble folder (several folders separated by ';' are one ensemble)."""
        was = node.StartModify()
        node.SetParameter(MODEL_SOURCE, "folder")
        node.SetParameter(MODEL_FOLDER, str(folder))
        node.EndModify(was)

    def model_folders(self, node) -> list[Path] | None:
        """The chosen model folders, or None for the shipped model."""
        if P.choice(node, MODEL_SOURCE, MODEL_SOURCES, label="model") == "shipped":
            return None
        return [Path(p.strip()).expanduser() for p in P.text(node, MODEL_FOLDER).split(";") if p.strip()]

    def disabled_reason(self, node) -> str | None:
        """Why Apply cannot run now, in words for the button's tooltip, or None when it can."""
        volume = node.GetNodeReference(INPUT)
        if volume is None:
            return "Select the input volume (the first echo of a T1rho or T2 series)"
        if volume.GetImageData() is None:
            return f"The volume {volume.GetName()!r} has no voxel data"
        if P.text(node, MODEL_SOURCE) not in MODEL_SOURCES:
            return f"Model must be one of {', '.join(MODEL_SOURCES)}"
        folders = self.model_folders(node)
        if folders == []:
            return "Choose a model or ensemble folder"
        if folders is None:
            if not default_model_path().is_dir():
                return "The shipped model is not installed; choose a model or ensemble folder"
        else:
            for folder in folders:
                if not ((folder / "model.json").is_file() or (folder / "ensemble.json").is_file()):
                    return f"{folder} is not a model folder (no model.json or ensemble.json)"
        if P.text(node, DEVICE) not in DEVICES:
            return f"Device must be one of {', '.join(DEVICES)}"
        try:
            self._settings(node)
        except DiscVBRError as exc:
            return str(exc)
        return None

    def _settings(self, node) -> tuple[float, int]:
        threshold = P.number(node, THRESHOLD, label="probability threshold", minimum=0.0, maximum=1.0)
        min_size = P.integer(node, MIN_SIZE, label="smallest disc (voxels)", minimum=1)
        return threshold, min_size

    # ------------------------------------------------------------------ running

    def start(self, node) -> Job:
        """Export the input volume and start ``discvbr segment`` on it.

        Raises
        ------
        DiscVBRError
            When the settings do not allow a run (:meth:`disabled_reason`).
        """
        from discvbr.io import write_image
        from discvbr.mrml.volumes import image_from_volume

        reason = self.disabled_reason(node)
        if reason:
            raise DiscVBRError(reason)
        volume = node.GetNodeReference(INPUT)
        image = image_from_volume(volume)
        if image.array.ndim == 4:  # a multi-echo volume: its first echo, as the paper segments
            image = Image(image.array[..., 0], image.affine)
        threshold, min_size = self._settings(node)
        workdir = tempfile.TemporaryDirectory(prefix="discvbr-segment-")
        try:
            source = write_image(Path(workdir.name) / "input.nii.gz", Image(np.asarray(image.array, np.float32), image.affine))
            args = [
                "segment", "--machine-output", source, "--out", Path(workdir.name) / "out", "--device", P.text(node, DEVICE),
                "--threshold", f"{threshold:g}", "--min-size", str(min_size), "--subject", volume.GetName(),
            ]
            for folder in self.model_folders(node) or []:
                args += ["--model", folder]
            process = CommandProcess(discvbr_command(*args, python=self.python))
        except BaseException:
            workdir.cleanup()
            raise
        return Job(process, workdir, volume.GetName())

    def finish(self, job: Job, node) -> SegmentationOutput:
        """Load a finished job's results into nodes (referenced by the parameter node).

        Raises
        ------
        DiscVBRError
            The process's error message (bad input, missing model...), or a cancelled or
            crashed process; nothing is added to the scene then.
        """
        from discvbr.io import read_image

        try:
            result = job.result_path("segmentation")
            report = json.loads(result.read_text())
            out = result.parent
            labels = read_image(out / report["outputs"]["labels"], what="segmentation labels")
            uncertainty = read_image(out / report["outputs"]["uncertainty"], what="uncertainty map")
            return self._store(node, labels, uncertainty=uncertainty, report=report, name=job.name)
        finally:
            job.close()

    def run(self, node, *, progress: Callable[[float, str], None] | None = None, timeout: float | None = None) -> SegmentationOutput:
        """Segment and wait (scripts, tests, self-test); ``progress(fraction, text)`` per line."""
        job = self.start(node)
        job.wait(progress=progress, timeout=timeout)
        return self.finish(job, node)

    def import_labels(self, node, labels: Image, *, name: str | None = None) -> SegmentationOutput:
        """Use an existing disc label map (hand-drawn, from a manifest, a phantom's truth) instead of the network.

        The label map becomes the module's segmentation output (five named, coloured
        segments) without an uncertainty map; the review list is in level order, missing
        discs first.
        """
        volume = node.GetNodeReference(INPUT)
        report = {"source": "label map", "per_disc_uncertainty": {lvl: float("nan") for lvl in DISC_LEVELS}, "warnings": []}
        return self._store(node, labels, uncertainty=None, report=report, name=name or (volume.GetName() if volume else "discs"))

    def _store(self, node, labels: Image, *, uncertainty: Image | None, report: dict, name: str) -> SegmentationOutput:
        from discvbr.mrml.colours import shared_colour_table, show_volume_with_colours
        from discvbr.mrml.legends import add_colour_legend
        from discvbr.mrml.scene import NodeTransaction
        from discvbr.mrml.segmentations import segmentation_from_labels
        from discvbr.mrml.volumes import volume_from_image

        volume = node.GetNodeReference(INPUT)
        replace = P.flag(node, REPLACE_OUTPUT)
        with NodeTransaction(self.scene):
            segmentation = segmentation_from_labels(
                self.scene, Image(np.asarray(labels.array, np.uint8), labels.affine), name=self.scene.GenerateUniqueName(f"{name} discs"),
                node=node.GetNodeReference(SEGMENTATION) if replace else None, reference_volume=volume,
            )
            segmentation.SetAttribute(REPORT_ATTRIBUTE, json.dumps(report, default=_json_value))
            uncertainty_node = None
            if uncertainty is not None:
                uncertainty_node = volume_from_image(
                    self.scene, Image(np.asarray(uncertainty.array, np.float32), uncertainty.affine),
                    name=self.scene.GenerateUniqueName(f"{name} disc uncertainty"),
                    node=node.GetNodeReference(UNCERTAINTY) if replace else None, role="disc uncertainty",
                )
                colours, value_range = shared_colour_table(self.scene, uncertainty_scale(), role="uncertainty colours", name="DiscVBR uncertainty colours")
                show_volume_with_colours(uncertainty_node, colours, value_range)
                add_colour_legend(self.scene, uncertainty_node, title=uncertainty_scale().title)
            was = node.StartModify()
            node.SetNodeReferenceID(SEGMENTATION, segmentation.GetID())
            node.SetNodeReferenceID(UNCERTAINTY, uncertainty_node.GetID() if uncertainty_node is not None else None)
            node.EndModify(was)
        return SegmentationOutput(segmentation, uncertainty_node, self.review(segmentation), list(report.get("warnings", [])), report)

    # ------------------------------------------------------------------ review

    def review(self, segmentation) -> list[ReviewItem]:
        """The discs of a segmentation, least certain first (missing discs lead).

        Sizes and centres are read from the segments as they are now, so the list follows
        corrections; uncertainties come from the network's report. A segment's size and
        centre are computed again only when its voxels changed since the last call (the
        list is rebuilt on every GUI update, a slider tick included).
        """
        from discvbr.mrml.segmentations import segment_level

        report = json.loads(segmentation.GetAttribute(REPORT_ATTRIBUTE) or "{}")
        scores = report.get("per_disc_uncertainty", {})
        found: dict[str, tuple[int, tuple[float, float, float] | None]] = {}
        seg = segmentation.GetSegmentation()
        for i in range(seg.GetNumberOfSegments()):
            segment_id = seg.GetNthSegmentID(i)
            level = segment_level(seg.GetSegment(segment_id).GetName())
            if level is not None:
                found[level] = self._segment_summary(segmentation, segment_id)
        items = []
        for level in DISC_LEVELS:
            voxels, centre = found.get(level, (0, None))
            score = scores.get(level)
            items.append(ReviewItem(level, float("nan") if score is None else float(score), voxels, centre))
        return sorted(items, key=lambda item: (not item.missing, -(item.uncertainty if item.uncertainty == item.uncertainty else -1.0)))

    def _segment_summary(self, segmentation, segment_id: str) -> tuple[int, tuple[float, float, float] | None]:
        """Size and centre of one segment, from the logic's cache while the segment's voxels are unchanged."""
        from discvbr.mrml.segmentations import segment_version

        key = (segmentation.GetID(), segment_id)
        version = segment_version(segmentation, segment_id)
        cached = self._review_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        summary = _segment_size_and_centre(segmentation, segment_id)
        self._review_cache[key] = (version, summary)
        return summary

    @staticmethod
    def jump_slices(scene, item: ReviewItem) -> None:
        """Centre every slice view on a disc of the review list."""
        import slicer

        if item.centre_ras is None:
            raise DiscVBRError(f"disc {item.level} has no voxel to show; paint it in the Segment Editor")
        slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *item.centre_ras, slicer.vtkMRMLSliceNode.CenteredJumpSlice)

    def save_masks(self, node, path: str | os.PathLike) -> Path:
        """Write the (corrected) segmentation as a disc label map on the input volume's grid.

        The file is what a cohort manifest's ``mask`` column takes (1 = L5S1 ... 5 = L1L2).

        Raises
        ------
        DiscVBRError
            No input or segmentation, unnamed or overlapping segments, or a missing disc.
        """
        from discvbr.io import write_image
        from discvbr.mrml.segmentations import labels_from_segmentation
        from discvbr.mrml.volumes import image_from_volume

        volume = node.GetNodeReference(INPUT)
        segmentation = node.GetNodeReference(SEGMENTATION)
        if volume is None or segmentation is None:
            raise DiscVBRError("run the segmentation (or select an input volume and a segmentation) before saving masks")
        grid = image_from_volume(volume)
        labels = labels_from_segmentation(segmentation, reference=Image(np.empty(grid.shape[:3], np.uint8), grid.affine))
        return write_image(path, labels)


def uncertainty_scale():
    """Colour scale of uncertainty maps: normalised entropy 0 (certain) to 1 (uniform), viridis."""
    import dataclasses

    from discvbr.render.colours import colour_scale

    return dataclasses.replace(colour_scale("T", vmin=0.0, vmax=1.0), title="uncertainty (normalised entropy)")


def _segment_size_and_centre(segmentation, segment_id: str) -> tuple[int, tuple[float, float, float] | None]:
    from discvbr.mrml.arrays import array_from_image_data, numpy_matrix
    from discvbr.mrml.segmentations import segment_labelmap

    image = segment_labelmap(segmentation, segment_id)
    if image is None:
        return 0, None
    mask = array_from_image_data(image) > 0
    count = int(mask.sum())
    if count == 0:
        return 0, None
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    extent = image.GetExtent()
    index = np.argwhere(mask).mean(axis=0) + np.array([extent[0], extent[2], extent[4]], float)
    centre = numpy_matrix(matrix) @ np.append(index, 1.0)
    return count, (float(centre[0]), float(centre[1]), float(centre[2]))


def _json_value(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a report")
