"""Disc label maps as segmentation nodes with five named, coloured segments, and back."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.levels import DISC_COLOURS, DISC_LEVELS
from discvbr.mrml.arrays import array_from_image_data, describe_node, image_data, vtk_matrix
from discvbr.mrml.scene import ROLE_ATTRIBUTE, slicer_module

__all__ = [
    "segmentation_from_labels",
    "segment_level",
    "segment_labelmap",
    "segment_version",
    "labels_from_segmentation",
]


def _binary_name() -> str:
    return slicer_module().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def _oriented(mask: np.ndarray, affine: np.ndarray):
    slicer = slicer_module()
    plain = image_data(np.asarray(mask, dtype=np.uint8))
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(plain)
    image.SetImageToWorldMatrix(vtk_matrix(affine))
    return image


def segmentation_from_labels(scene, labels: Image, *, name: str, node=None, reference_volume=None, role: str = "disc segmentation"):
    """A segmentation node with the five disc segments of a label map.

    Parameters
    ----------
    scene : vtkMRMLScene
    labels : Image
        Disc labels 1 = L5S1 ... 5 = L1L2 (0 background; other values are refused).
    name : str
        Node name.
    node : vtkMRMLSegmentationNode, optional
        Node to fill (its segments are replaced).
    reference_volume : vtkMRMLVolumeNode, optional
        Volume whose grid the Segment Editor uses for this segmentation (the image the
        labels belong to).
    role : str
        ``DiscVBR.Role`` attribute (``"disc segmentation"``: a subject's discs, which
        DiscRelaxometry offers as its input; ``"atlas discs"`` for an atlas).

    Returns
    -------
    vtkMRMLSegmentationNode
        Segment IDs and names are the level names, colours :data:`DISC_COLOURS`, label
        values 1-5; a disc missing from the map is an empty segment.
    """
    slicer = slicer_module()
    values = np.asarray(labels.array)
    if values.ndim != 3:
        raise DiscVBRError(f"{name}: disc labels must be a 3D volume, got shape {values.shape}")
    present = np.unique(values)
    bad = [v for v in present if v not in range(len(DISC_LEVELS) + 1)]
    if bad:
        raise DiscVBRError(f"{name}: label value {bad[0]} is not a disc label (0 background, 1 = L5S1 ... 5 = L1L2)")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    segmentation = node.GetSegmentation()
    segmentation.RemoveAllSegments()
    binary = _binary_name()
    if hasattr(segmentation, "SetSourceRepresentationName"):
        segmentation.SetSourceRepresentationName(binary)
    else:  # Slicer < 5.4
        segmentation.SetMasterRepresentationName(binary)
    for label, level in enumerate(DISC_LEVELS, start=1):
        segment = slicer.vtkSegment()
        segment.SetName(level)
        segment.SetColor(*DISC_COLOURS[level])
        # a segment's labelmap holds its label value (Slicer's shared-labelmap convention)
        segment.SetLabelValue(label)
        segment.AddRepresentation(binary, _oriented(np.where(values == label, label, 0), labels.affine))
        segmentation.AddSegment(segment, level)
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    else:
        geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(_oriented(values == 0, labels.affine))
        segmentation.SetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def segment_level(name: str) -> str | None:
    """The disc level a segment name denotes (``"L4-L5"``, ``"l4l5"``, ``"L4/L5 disc"`` -> ``"L4L5"``), or None."""
    compact = "".join(ch for ch in name.upper() if ch.isalnum())
    compact = compact.removesuffix("DISC")
    for level in DISC_LEVELS:
        if compact == level:
            return level
    return None


def segment_labelmap(node, segment_id: str):
    """One segment's voxels as a 0/1 vtkOrientedImageData (its own extent), or None when empty.

    A segment's binary labelmap may be shared with other segments (the Segment Editor
    merges them into layers); its voxels are those holding the segment's label value.
    """
    slicer = slicer_module()
    segment = node.GetSegmentation().GetSegment(segment_id)
    image = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(node, segment_id, image)
    if image.GetPointData().GetScalars() is None or image.IsEmpty():
        return None
    values = array_from_image_data(image)
    mask = (values == segment.GetLabelValue()).astype(np.uint8)
    if not mask.any():
        return None
    binary = slicer.vtkOrientedImageData()
    binary.ShallowCopy(image_data(mask))
    binary.SetExtent(image.GetExtent())
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    binary.SetImageToWorldMatrix(matrix)
    return binary


def segment_version(node, segment_id: str) -> tuple:
    """A value that changes whenever a segment's voxels (or its label value, or the node's geometry) change.

    The modification times of the segment and of its binary labelmap (shared with other
    segments in a Segment Editor layer, so painting one segment of a layer changes the
    version of all of them: recomputing those is the safe side).
    """
    segment = node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        return (None,)
    representation = segment.GetRepresentation(_binary_name())
    return (segment.GetMTime(), segment.GetLabelValue(), representation.GetMTime() if representation is not None else None)


def labels_from_segmentation(node, *, reference: Image, require: Sequence[str] = DISC_LEVELS, what: str | None = None) -> Image:
    """Disc labels (1 = L5S1 ... 5 = L1L2) of a segmentation node on a reference grid.

    Segments are matched to discs by name (:func:`segment_level`), so a segmentation
    drawn by hand with segments named "L4-L5" works as well as DiscVBR's own.

    Parameters
    ----------
    node : vtkMRMLSegmentationNode
    reference : Image
        The grid to label (e.g. the first echo); only its shape and affine are used.
    require : sequence of str
        Levels that must be present and non-empty.
    what : str, optional
        Names the segmentation in messages.

    Returns
    -------
    Image
        uint8 labels on the reference grid.

    Raises
    ------
    DiscVBRError
        A segment whose name is not a disc level, two segments for one disc, required
        discs missing or empty (all named), overlapping discs, or a transformed node.
    """
    slicer = slicer_module()
    if node is None:
        raise DiscVBRError(f"{what or 'segmentation'}: no segmentation selected")
    label_text = what or describe_node(node)
    if node.GetParentTransformNode() is not None:
        raise DiscVBRError(f"{label_text} is under the transform {node.GetParentTransformNode().GetName()!r}; harden or remove it first")
    segmentation = node.GetSegmentation()
    shape = tuple(int(s) for s in reference.shape[:3])
    geometry = _oriented(np.zeros(shape, np.uint8), reference.affine)
    labels = np.zeros(shape, np.uint8)
    owner: dict[str, str] = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        name = segmentation.GetSegment(segment_id).GetName()
        level = segment_level(name)
        if level is None:
            raise DiscVBRError(
                f"{label_text}: segment {name!r} is not a disc level; name the segments "
                f"{', '.join(DISC_LEVELS)} (or delete the extra ones)"
            )
        if level in owner:
            raise DiscVBRError(f"{label_text}: segments {owner[level]!r} and {name!r} are both {level}; keep one")
        owner[level] = name
        extracted = segment_labelmap(node, segment_id)
        if extracted is None:
            continue
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(extracted, geometry, resampled)
        if resampled.GetPointData().GetScalars() is None:
            continue
        mask = array_from_image_data(resampled) > 0
        if mask.shape != shape:
            raise DiscVBRError(f"{label_text}: segment {name!r} could not be placed on the grid {shape}")
        label = DISC_LEVELS.index(level) + 1
        clash = mask & (labels > 0)
        if clash.any():
            other = DISC_LEVELS[int(np.bincount(labels[clash]).argmax()) - 1]
            raise DiscVBRError(f"{label_text}: discs {other} and {level} overlap in {int(clash.sum())} voxel(s); correct them in the Segment Editor")
        labels[mask] = label
    missing = [lvl for lvl in require if not (labels == DISC_LEVELS.index(lvl) + 1).any()]
    if missing:
        raise DiscVBRError(
            f"{label_text}: no voxel for disc(s) {', '.join(missing)}; every level must be segmented "
            "(paint the missing discs in the Segment Editor)"
        )
    return Image(labels, reference.affine)

