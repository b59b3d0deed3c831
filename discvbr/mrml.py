"""MRML glue: DiscVBR's images, series, label maps, meshes and transforms as 3D Slicer nodes.

The one place where the logic layer meets the MRML scene; the three Slicer modules
(DiscSegmentation, DiscRelaxometry, DiscStatistics) and the scene demo use it, inside
3D Slicer and headless with the ``slicer-core`` wheels. ``slicer`` and VTK are imported
inside the functions, never when this module is imported.

Conventions
-----------
* Geometry: an :class:`~discvbr.io.Image` affine (voxel index -> RAS mm) is a volume
  node's IJKToRAS matrix. VTK image data are x-fastest, so the numpy array indexed
  ``(i, j, k)`` is stored transposed; :func:`volume_from_image` and
  :func:`image_from_volume` do that, and a volume under a linear transform is read in
  world coordinates.
* Disc label maps (1 = L5S1 ... 5 = L1L2) become segmentation nodes with five segments
  whose IDs and names are the level names and whose colours are
  :data:`discvbr.levels.DISC_COLOURS`; missing discs are empty segments, so they can be
  painted in the Segment Editor. :func:`labels_from_segmentation` reads them back by name.
* Colours of maps come from :class:`discvbr.render.ColourScale`, the same as the figures:
  :func:`colour_table_from_scale` turns one into a colour table node sampled on a linear
  value axis (p values, whose scale is logarithmic, are sampled finely enough that every
  colour of the log scale appears), used by volume and model display nodes alike.
* Nothing half-made stays in a scene: code that creates several nodes runs inside
  :class:`NodeTransaction`, which removes every node it added when an exception escapes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, Image, validate_times
from discvbr.levels import DISC_COLOURS, DISC_LEVELS

__all__ = [
    "NodeTransaction",
    "TemporaryNodes",
    "SpineModels",
    "new_scene",
    "load_scene",
    "save_scene",
    "volume_from_image",
    "image_from_volume",
    "series_from_volumes",
    "series_from_sequence",
    "series_from_multivolume",
    "series_from_node",
    "sequence_from_series",
    "disc_colour_table",
    "segmentation_from_labels",
    "labels_from_segmentation",
    "segment_level",
    "segment_labelmap",
    "colour_table_from_scale",
    "shared_colour_table",
    "show_volume_with_colours",
    "model_from_polydata",
    "add_colour_legend",
    "models_from_spine_scene",
    "transform_from_points",
    "points_from_transform",
    "det_jacobian_from_points",
    "table_from_dataframe",
    "dataframe_from_table",
    "plot_curves",
    "place_in_folder",
    "iter_nodes",
]

#: Node attribute marking nodes DiscVBR made (value: what the node is).
ROLE_ATTRIBUTE = "DiscVBR.Role"
#: Finest value step of a colour table sampled from a log scale (p maps), as a fraction of its range.
_LOG_TABLE_RESOLUTION = 1.0 / 65536
#: Voxels with values outside this range are not drawn (NaN, the "no value" marker, fails both tests).
_DRAWN_RANGE = (-1e30, 1e30)


# --------------------------------------------------------------------------- scenes


def _slicer():
    try:
        import slicer
    except ImportError:  # pragma: no cover - the message is the point
        raise DiscVBRError(
            "the MRML glue needs 3D Slicer or the slicer-core package (pip install slicer-core)"
        ) from None
    return slicer


def new_scene():
    """A headless MRML scene ready for DiscVBR's nodes.

    Inside 3D Slicer use ``slicer.mrmlScene``, whose module logics are already set up.
    Here the logics that register node classes and converters (segmentations with their
    labelmap <-> surface rules, sequences, colours, subject hierarchy) are created and
    kept alive with the scene.

    Returns
    -------
    vtkMRMLScene
    """
    slicer = _slicer()
    scene = slicer.vtkMRMLScene()
    logics = []
    for name in ("vtkSlicerSubjectHierarchyModuleLogic", "vtkSlicerSegmentationsModuleLogic", "vtkSlicerSequencesLogic"):
        logic = getattr(slicer, name)()
        logic.SetMRMLScene(scene)
        logics.append(logic)
    # colour legends: only the node class (the colours logic would add ~50 default colour tables)
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    scene.discvbr_logics = logics  # the logics observe the scene; they live as long as it
    return scene


def _with_cache(scene, folder: Path) -> None:
    slicer = _slicer()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(folder))
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    scene.SetDataIOManager(io)
    scene.SetCacheManager(cache)
    scene.discvbr_io = (io, cache)


def save_scene(scene, path: str | os.PathLike) -> Path:
    """Save a scene as a Medical Reality Bundle (``.mrb``: the scene and all its data in one zip).

    Written to a temporary folder beside ``path`` and moved into place when complete, so a
    failed save never leaves a partial bundle.

    Raises
    ------
    DiscVBRError
        When the file name does not end in ``.mrb`` or the scene cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != ".mrb":
        raise DiscVBRError(f"{path}: a scene bundle must end in .mrb")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        target = staging / path.name
        if not scene.WriteToMRB(str(target)) or not target.is_file():
            raise DiscVBRError(f"{path}: the scene could not be written (see the log for the node at fault)")
        os.replace(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def load_scene(path: str | os.PathLike, *, cache: str | os.PathLike | None = None):
    """Read a ``.mrb`` bundle into a new headless scene (for scripts and tests).

    Parameters
    ----------
    path : path-like
        The bundle.
    cache : path-like, optional
        Folder where the bundle is unpacked (default: a folder beside it).
    """
    path = Path(path)
    if not path.is_file():
        raise DiscVBRError(f"scene file not found: {path}")
    scene = new_scene()
    folder = Path(cache) if cache is not None else path.parent / f".{path.stem}-cache"
    folder.mkdir(parents=True, exist_ok=True)
    _with_cache(scene, folder)
    if not scene.ReadFromMRB(str(path)):
        raise DiscVBRError(f"{path}: not a readable scene bundle")
    return scene


class NodeTransaction:
    """Remove every node added to a scene inside a ``with`` block if the block raises.

    The modules create their outputs inside one transaction, so an error (bad input found
    late, a failed disc, a cancelled run) leaves the scene as it was.
    """

    def __init__(self, scene):
        self.scene = scene
        self._before: set[str] = set()

    def _ids(self) -> list[str]:
        return [self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())]

    def __enter__(self) -> "NodeTransaction":
        self._before = set(self._ids())
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is not None:
            self._remove_added()
        return False

    def _remove_added(self) -> None:
        for node_id in reversed([i for i in self._ids() if i not in self._before]):
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)


class TemporaryNodes(NodeTransaction):
    """Remove every node added to a scene inside a ``with`` block when it ends, whatever happens."""

    def __exit__(self, kind, value, traceback) -> bool:
        self._remove_added()
        return False


# --------------------------------------------------------------------------- geometry helpers


def _vtk_matrix(array: np.ndarray):
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def _image_data(array: np.ndarray):
    """vtkImageData holding ``array`` indexed (i, j, k[, component]); geometry left at identity."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    spatial = array.shape[:3]
    components = int(np.prod(array.shape[3:])) if array.ndim > 3 else 1
    flat = np.ascontiguousarray(np.moveaxis(array.reshape(*spatial, components), (0, 1, 2), (2, 1, 0))).reshape(-1, components)
    scalars = numpy_to_vtk(flat if components > 1 else flat[:, 0], deep=True)
    image = vtkImageData()
    image.SetDimensions(*[int(s) for s in spatial])
    image.GetPointData().SetScalars(scalars)
    return image


def _array_from_image_data(image) -> np.ndarray:
    """The voxels of vtkImageData as (i, j, k[, component]) (a copy)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        raise DiscVBRError("the volume has no voxel data")
    values = vtk_to_numpy(scalars)
    components = scalars.GetNumberOfComponents()
    values = values.reshape(dims[2], dims[1], dims[0], components)
    values = np.moveaxis(values, (0, 1, 2), (2, 1, 0))
    return np.array(values[..., 0] if components == 1 else values)


def _world_matrix(node, what: str) -> np.ndarray:
    """Node-to-world matrix of a transformable node (identity when untransformed)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise DiscVBRError(
            f"{what} is under the non-linear transform {parent.GetName()!r}; harden the transform "
            "(Data module, right-click the node) or remove it first"
        )
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return _numpy_matrix(matrix)


def _describe(node) -> str:
    return f"{node.GetClassName().replace('vtkMRML', '').replace('Node', ' node').lower()} {node.GetName()!r}"


# --------------------------------------------------------------------------- volumes


def volume_from_image(
    scene,
    image: Image,
    *,
    name: str,
    node=None,
    labelmap: bool = False,
    role: str | None = None,
):
    """A volume node holding an image with its geometry (IJKToRAS = the image's affine).

    Parameters
    ----------
    scene : vtkMRMLScene
    image : Image
        3D array ``(X, Y, Z)``, or 4D ``(X, Y, Z, C)`` stored as a vector volume of C
        components (a multi-echo series); bool becomes uint8.
    name : str
        Node name.
    node : vtkMRMLVolumeNode, optional
        Existing node to fill instead of adding one.
    labelmap : bool
        Add a label map volume node (disc labels) instead of a scalar volume node.
    role : str, optional
        Value of the ``DiscVBR.Role`` attribute (what the node is).

    Returns
    -------
    vtkMRMLVolumeNode
    """
    array = np.asarray(image.array)
    if array.ndim not in (3, 4):
        raise DiscVBRError(f"{name}: a volume must be 3D (or 4D with components last), got shape {array.shape}")
    if node is None:
        if labelmap:
            cls = "vtkMRMLLabelMapVolumeNode"
        elif array.ndim == 4:
            cls = "vtkMRMLVectorVolumeNode"
        else:
            cls = "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(cls, name)
    node.SetAndObserveImageData(_image_data(array))
    node.SetIJKToRASMatrix(_vtk_matrix(image.affine))
    if role:
        node.SetAttribute(ROLE_ATTRIBUTE, role)
    if node.GetDisplayNode() is None:
        if node.IsA("vtkMRMLLabelMapVolumeNode"):  # disc labels in disc colours (Slicer's default table may be absent)
            display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode")
            display.SetAndObserveColorNodeID(disc_colour_table(scene).GetID())
            node.SetAndObserveDisplayNodeID(display.GetID())
        else:
            node.CreateDefaultDisplayNodes()
    return node


def image_from_volume(node, *, what: str | None = None) -> Image:
    """The voxels and world geometry of a volume node.

    A volume under a linear transform is returned in world coordinates (the transform
    composed into the affine); a multi-component volume gives a 4D array, components last.

    Raises
    ------
    DiscVBRError
        No volume, no voxel data, or a non-linear parent transform.
    """
    if node is None:
        raise DiscVBRError(f"{what or 'volume'}: no volume selected")
    label = what or _describe(node)
    image = node.GetImageData()
    if image is None:
        raise DiscVBRError(f"{label} has no voxel data")
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    affine = _world_matrix(node, label) @ _numpy_matrix(matrix)
    return Image(_array_from_image_data(image), affine)


# --------------------------------------------------------------------------- echo series


def _grid_text(image: Image) -> str:
    return (
        f"shape {tuple(image.shape[:3])}, voxel {np.round(image.spacing, 3).tolist()} mm, "
        f"origin {np.round(image.origin, 2).tolist()} mm"
    )


def _times_for(times, count: int, *, kind: str, source: str) -> np.ndarray:
    if times is None:
        raise DiscVBRError(f"{kind} series from {source}: give the echo (or spin-lock) times in ms")
    from discvbr.io import parse_times

    values = parse_times(times, what=f"{kind} times") if isinstance(times, str) else validate_times(times, what=f"{kind} times")
    if values.size != count:
        raise DiscVBRError(
            f"{kind} series from {source}: {count} echo volume(s) but {values.size} times "
            f"({'; '.join(f'{t:g}' for t in values)} ms); give one time per echo"
        )
    return values


def series_from_volumes(nodes: Sequence, times, *, kind: str = "t1rho") -> EchoSeries:
    """An echo series from one volume node per echo (in echo order).

    Parameters
    ----------
    nodes : sequence of vtkMRMLScalarVolumeNode
        The echoes; all on one grid.
    times : str or sequence of float
        Echo (T2) or spin-lock (T1rho) times in ms, one per node (``"0;10;40;80"``).
    kind : str
        ``"t1rho"`` or ``"t2"``, for messages and the series.

    Raises
    ------
    DiscVBRError
        Fewer than two volumes, volumes on different grids (naming both), a number of
        times that differs from the number of volumes.
    """
    nodes = [n for n in nodes if n is not None]
    if len(nodes) < 2:
        raise DiscVBRError(f"{kind} series: select at least two echo volumes, got {len(nodes)}")
    images = [image_from_volume(n) for n in nodes]
    first = images[0]
    for node, image in zip(nodes[1:], images[1:]):
        if image.array.ndim != 3:
            raise DiscVBRError(f"{kind} series: {_describe(node)} is not a 3D scalar volume (shape {image.shape})")
        if not image.same_grid(first):
            raise DiscVBRError(
                f"{kind} series: echo volumes are on different grids: {_describe(nodes[0])} ({_grid_text(first)}) "
                f"and {_describe(node)} ({_grid_text(image)}); resample them onto one grid first"
            )
    values = _times_for(times, len(nodes), kind=kind, source=f"{len(nodes)} volumes")
    data = np.stack([np.asarray(i.array, dtype=np.float32) for i in images], axis=-1)
    return EchoSeries(data, values, first.affine, kind)


def _index_times(values: Sequence[str]) -> np.ndarray | None:
    """Numeric index values as times, or None when one is not a number."""
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return None


def series_from_sequence(node, *, times=None, kind: str = "t1rho") -> EchoSeries:
    """An echo series from a sequence node of volumes (one item per echo).

    The times are the sequence's index values when they are numbers (index unit ms)
    unless ``times`` is given.

    Raises
    ------
    DiscVBRError
        Items that are not volumes or not on one grid, non-numeric index values without
        ``times``, or times that do not match the number of items.
    """
    source = _describe(node)
    count = node.GetNumberOfDataNodes()
    volumes = [node.GetNthDataNode(i) for i in range(count)]
    bad = [i for i, v in enumerate(volumes) if v is None or not v.IsA("vtkMRMLVolumeNode")]
    if bad:
        raise DiscVBRError(f"{kind} series from {source}: item {bad[0] + 1} is not a volume")
    if times is None:
        index = [node.GetNthIndexValue(i) for i in range(count)]
        times = _index_times(index)
        if times is None:
            raise DiscVBRError(
                f"{kind} series from {source}: its index values ({', '.join(index)}) are not times in ms; "
                "type the echo times"
            )
    images = [image_from_volume(v, what=f"{source}, item {i + 1}") for i, v in enumerate(volumes)]
    for i, image in enumerate(images[1:], start=2):
        if not image.same_grid(images[0]):
            raise DiscVBRError(
                f"{kind} series from {source}: item {i} ({_grid_text(image)}) is not on the grid of item 1 "
                f"({_grid_text(images[0])})"
            )
    values = _times_for(times, count, kind=kind, source=source)
    data = np.stack([np.asarray(i.array, dtype=np.float32) for i in images], axis=-1)
    return EchoSeries(data, values, images[0].affine, kind)


def series_from_multivolume(node, *, times=None, kind: str = "t1rho") -> EchoSeries:
    """An echo series from a multi-component volume (a MultiVolume or vector volume node).

    Times default to the node's ``MultiVolume.FrameLabels`` attribute (comma-separated ms),
    as the MultiVolumeExplorer extension stores them.
    """
    source = _describe(node)
    image = image_from_volume(node)
    if image.array.ndim != 4 or image.array.shape[3] < 2:
        raise DiscVBRError(f"{kind} series from {source}: the volume has one component; select one volume per echo")
    if times is None:
        labels = node.GetAttribute("MultiVolume.FrameLabels")
        if labels:
            times = _index_times(labels.split(","))
    values = _times_for(times, image.array.shape[3], kind=kind, source=source)
    return EchoSeries(np.asarray(image.array, dtype=np.float32), values, image.affine, kind)


def series_from_node(node, *, times=None, kind: str = "t1rho") -> EchoSeries:
    """An echo series from a sequence node or a multi-component volume node."""
    if node is None:
        raise DiscVBRError(f"{kind} series: no series node selected")
    if node.IsA("vtkMRMLSequenceNode"):
        return series_from_sequence(node, times=times, kind=kind)
    if node.IsA("vtkMRMLVolumeNode"):
        return series_from_multivolume(node, times=times, kind=kind)
    raise DiscVBRError(f"{kind} series: {_describe(node)} is neither a sequence nor a multi-volume")


def sequence_from_series(scene, series: EchoSeries, *, name: str, browse: bool = True):
    """A sequence node holding one volume per echo, indexed by the echo times (ms).

    Parameters
    ----------
    scene : vtkMRMLScene
    series : EchoSeries
    name : str
    browse : bool
        Also add a sequence browser node (with its proxy volume), so the echoes can be
        stepped through in the slice views.

    Returns
    -------
    (vtkMRMLSequenceNode, vtkMRMLSequenceBrowserNode or None)
    """
    slicer = _slicer()
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")
    sequence.SetIndexType(sequence.NumericIndex)
    sequence.SetAttribute(ROLE_ATTRIBUTE, f"{series.kind} series")
    for e in range(series.n_echoes):
        echo = slicer.vtkMRMLScalarVolumeNode()
        echo.SetName(f"{name} {series.times[e]:g} ms")
        echo.SetAndObserveImageData(_image_data(np.asarray(series.data[..., e], dtype=np.float32)))
        echo.SetIJKToRASMatrix(_vtk_matrix(series.affine))
        sequence.SetDataNodeAtValue(echo, f"{series.times[e]:g}")
    browser = None
    if browse:
        browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
        if hasattr(browser, "SetAndObservePrimarySequenceNodeID"):
            browser.SetAndObservePrimarySequenceNodeID(sequence.GetID())
        else:  # Slicer < 5.6
            browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
        logic = _sequences_logic(scene)
        if logic is not None:
            logic.UpdateProxyNodesFromSequences(browser)
    return sequence, browser


def _sequences_logic(scene):
    try:
        import slicer

        modules = getattr(slicer, "modules", None)
        if modules is not None and hasattr(modules, "sequences"):
            return modules.sequences.logic()
    except ImportError:
        return None
    for logic in getattr(scene, "discvbr_logics", []):
        if logic.IsA("vtkSlicerSequencesLogic"):
            return logic
    return None


# --------------------------------------------------------------------------- segmentations


def _tagged_node(scene, cls: str, role: str, name: str):
    """The scene's node of class ``cls`` with ``DiscVBR.Role == role``, or a new one."""
    for node in iter_nodes(scene, cls):
        if node.GetAttribute(ROLE_ATTRIBUTE) == role:
            return node, False
    node = scene.AddNewNodeByClass(cls, name)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    return node, True


def disc_colour_table(scene):
    """The colour table of disc labels (0 background, 1 = L5S1 ... 5 = L1L2), one per scene."""
    node, created = _tagged_node(scene, "vtkMRMLColorTableNode", "disc colours", "DiscVBR discs")
    if created:
        node.SetTypeToUser()
        node.SetNumberOfColors(len(DISC_LEVELS) + 1)
        node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for label, level in enumerate(DISC_LEVELS, start=1):
            node.SetColor(label, level, *DISC_COLOURS[level], 1.0)
    return node


def _binary_name() -> str:
    return _slicer().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def _oriented(mask: np.ndarray, affine: np.ndarray):
    slicer = _slicer()
    plain = _image_data(np.asarray(mask, dtype=np.uint8))
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(plain)
    image.SetImageToWorldMatrix(_vtk_matrix(affine))
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
    slicer = _slicer()
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
    slicer = _slicer()
    segment = node.GetSegmentation().GetSegment(segment_id)
    image = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(node, segment_id, image)
    if image.GetPointData().GetScalars() is None or image.IsEmpty():
        return None
    values = _array_from_image_data(image)
    mask = (values == segment.GetLabelValue()).astype(np.uint8)
    if not mask.any():
        return None
    binary = slicer.vtkOrientedImageData()
    binary.ShallowCopy(_image_data(mask))
    binary.SetExtent(image.GetExtent())
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    binary.SetImageToWorldMatrix(matrix)
    return binary


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
    slicer = _slicer()
    if node is None:
        raise DiscVBRError(f"{what or 'segmentation'}: no segmentation selected")
    label_text = what or _describe(node)
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
        mask = _array_from_image_data(resampled) > 0
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


# --------------------------------------------------------------------------- colours


def colour_table_from_scale(scene, scale, *, name: str, node=None):
    """A colour table node giving the colours of a :class:`~discvbr.render.ColourScale`.

    Parameters
    ----------
    scene : vtkMRMLScene
    scale : ColourScale
        From :func:`discvbr.render.colour_scale`.
    name : str
    node : vtkMRMLColorTableNode, optional
        Node to fill.

    Returns
    -------
    node : vtkMRMLColorTableNode
    value_range : (float, float)
        The values the first and last entries stand for: display nodes map this range
        linearly onto the table. Linear scales keep their entries over ``[vmin, vmax]``;
        a log scale (p values) is sampled on a linear axis from 0 to ``vmax`` in steps no
        coarser than ``vmin`` (at most 65536 entries).
    """
    if scale.log:
        lo, hi = 0.0, float(scale.vmax)
        count = int(min(np.ceil((hi - lo) / max(scale.vmin, hi * _LOG_TABLE_RESOLUTION)), 65536))
        centres = lo + (np.arange(count) + 0.5) * (hi - lo) / count
        rgba = scale.rgba(centres)
    else:
        lo, hi = float(scale.vmin), float(scale.vmax)
        rgba = np.asarray(scale.table, dtype=float)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(rgba))
    table = node.GetLookupTable()
    for i, (r, g, b, a) in enumerate(rgba):
        table.SetTableValue(i, float(r), float(g), float(b), float(a))
    table.SetRange(lo, hi)
    node.SetAttribute(ROLE_ATTRIBUTE, f"{scale.kind} colours")
    node.SetAttribute("DiscVBR.Title", scale.title)
    node.Modified()
    return node, (lo, hi)


def shared_colour_table(scene, scale, *, role: str, name: str):
    """The scene's colour table for a fixed scale (one per ``role``: created once, refilled after)."""
    node, _ = _tagged_node(scene, "vtkMRMLColorTableNode", role, name)
    node, value_range = colour_table_from_scale(scene, scale, name=name, node=node)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    return node, value_range


def show_volume_with_colours(volume, colour_node, value_range: tuple[float, float]) -> None:
    """Display a map volume through a colour table over a value range; NaN voxels transparent."""
    if volume.GetDisplayNode() is None:
        volume.CreateDefaultDisplayNodes()
    display = volume.GetDisplayNode()
    display.SetAndObserveColorNodeID(colour_node.GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(float(value_range[0]), float(value_range[1]))
    display.SetAutoThreshold(False)
    display.SetApplyThreshold(True)
    display.SetThreshold(*_DRAWN_RANGE)
    display.SetInterpolate(False)


# --------------------------------------------------------------------------- models


def model_from_polydata(
    scene,
    polydata,
    *,
    name: str,
    colour: tuple[float, float, float] | None = None,
    opacity: float = 1.0,
    scalars: str | None = None,
    colour_node=None,
    value_range: tuple[float, float] | None = None,
    role: str | None = None,
):
    """A model node showing polydata, in a solid colour or coloured by cell scalars.

    Parameters
    ----------
    scene : vtkMRMLScene
    polydata : vtkPolyData
        In RAS mm.
    name : str
    colour : (r, g, b), optional
        Solid colour (0..1).
    opacity : float
    scalars : str, optional
        Name of the cell-data array to colour by (needs ``colour_node`` and ``value_range``).
    colour_node : vtkMRMLColorNode, optional
    value_range : (float, float), optional
        Values mapped onto the first and last colour.
    role : str, optional
        ``DiscVBR.Role`` attribute.
    """
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    model.SetAndObservePolyData(polydata)
    if role:
        model.SetAttribute(ROLE_ATTRIBUTE, role)
    model.CreateDefaultDisplayNodes()
    display = model.GetDisplayNode()
    display.SetOpacity(float(opacity))
    display.SetVisibility2D(True)
    if colour is not None:
        display.SetColor(*colour)
    if scalars is not None:
        if colour_node is None or value_range is None:
            raise DiscVBRError(f"{name}: colouring by {scalars!r} needs a colour node and a value range")
        if polydata.GetCellData().GetArray(scalars) is None:
            raise DiscVBRError(f"{name}: the mesh has no cell array {scalars!r}")
        from vtkmodules.vtkFiltersCore import vtkAssignAttribute

        display.SetActiveScalarName(scalars)
        display.SetActiveAttributeLocation(vtkAssignAttribute.CELL_DATA)
        display.SetAndObserveColorNodeID(colour_node.GetID())
        display.SetScalarRangeFlag(display.UseManualScalarRange)
        display.SetScalarRange(float(value_range[0]), float(value_range[1]))
        display.SetScalarVisibility(True)
    return model


def add_colour_legend(scene, displayable, *, title: str):
    """A colour legend (colour bar) for a displayable node's colours, shown in all views."""
    display = displayable.GetDisplayNode()
    legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode", f"{displayable.GetName()} legend")
    legend.SetAndObservePrimaryDisplayNode(display)
    displayable.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetTitleText(title)
    legend.SetVisibility(True)
    return legend


def place_in_folder(scene, nodes: Sequence, *, folder: str) -> int:
    """Put nodes under a subject-hierarchy folder (created) so a result stays together; its item id."""
    slicer = _slicer()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder_item = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), folder)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, folder_item)
        else:
            hierarchy.CreateItem(folder_item, node)
    return folder_item


@dataclass
class SpineModels:
    """Model nodes of a :class:`~discvbr.render.SpineScene` in the scene."""

    models: list
    colour_node: object
    value_range: tuple[float, float]
    legend: object
    folder: int

    def maps(self) -> list:
        """The model nodes coloured by the map's values."""
        return [m for m in self.models if m.GetAttribute(ROLE_ATTRIBUTE) == "map"]


def models_from_spine_scene(scene, spine_scene, *, name: str) -> SpineModels:
    """Model nodes for every element of a spine figure, one colour table and one legend.

    Parameters
    ----------
    scene : vtkMRMLScene
    spine_scene : SpineScene
        From :func:`discvbr.render.build_scene`: vertebrae and discs as solid surfaces,
        each disc's map as a plane of voxel quads with cell scalars, outlined in the
        disc's colour.
    name : str
        Names the folder, the colour table and the models.

    Returns
    -------
    SpineModels
    """
    colour_node, value_range = colour_table_from_scale(scene, spine_scene.scale, name=f"{name} colours")
    models = []
    for element in spine_scene.elements:
        if element.role == "map":
            model = model_from_polydata(
                scene, element.polydata, name=f"{name} {element.name}", opacity=element.opacity,
                scalars=element.scalars, colour_node=colour_node, value_range=value_range, role="map",
            )
        else:
            model = model_from_polydata(
                scene, element.polydata, name=f"{name} {element.name}", colour=element.colour,
                opacity=element.opacity, role=element.role,
            )
            if element.role == "outline":
                model.GetDisplayNode().SetLineWidth(3)
        if element.level:
            model.SetAttribute("DiscVBR.Level", element.level)
        models.append(model)
    first_map = next((m for m in models if m.GetAttribute(ROLE_ATTRIBUTE) == "map"), None)
    legend = add_colour_legend(scene, first_map, title=spine_scene.scale.title) if first_map is not None else None
    folder = place_in_folder(scene, [*models, colour_node], folder=name)
    return SpineModels(models, colour_node, value_range, legend, folder)


# --------------------------------------------------------------------------- transforms


_RAS_LPS = np.array([-1.0, -1.0, 1.0])


def _grid_positions_ras(grid: Image) -> np.ndarray:
    shape = grid.shape[:3]
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), axis=-1)
    return index @ grid.affine[:3, :3].T + grid.affine[:3, 3]


def _frame_to_ras(points: np.ndarray, *, ndim: int, moving_affine: np.ndarray) -> np.ndarray:
    """Registration-frame points (DiscVBR's elastix frame: LPS, or (P, S) of a slice) -> RAS."""
    if ndim == 3:
        return points * _RAS_LPS
    from discvbr.registration.engine import frame_geometry

    matrix, origin = frame_geometry(moving_affine, 2)
    jk = np.linalg.solve(matrix, (points.reshape(-1, 2) - origin).T).T
    index = np.column_stack([np.zeros(len(jk)), jk, np.ones(len(jk))])
    return (index @ np.asarray(moving_affine).T)[:, :3].reshape(*points.shape[:-1], 3)


def _ras_to_frame(ras: np.ndarray, *, ndim: int) -> np.ndarray:
    lps = ras * _RAS_LPS
    return lps if ndim == 3 else lps[..., 1:]


def transform_from_points(scene, points: np.ndarray, grid: Image, *, ndim: int, moving_affine: np.ndarray, name: str, node=None):
    """A grid transform node from a registration's sampling points.

    Parameters
    ----------
    scene : vtkMRMLScene
    points : ndarray
        :attr:`discvbr.registration.DiscRegistration.points`: for each voxel of the atlas
        grid, the subject position it samples, in the registration frame (LPS mm; in 2D the
        (P, S) coordinates of the slice, shape ``(ny, nz, 2)``).
    grid : Image
        The atlas-space grid (``DiscRegistration.grid``).
    ndim : {2, 3}
    moving_affine : ndarray, shape (4, 4)
        Voxel -> RAS of the subject image (places 2D points back on the subject's slice).
    name : str
    node : vtkMRMLGridTransformNode, optional

    Returns
    -------
    vtkMRMLGridTransformNode
        Its transform from parent maps atlas RAS to subject RAS (the resampling direction),
        so a subject volume placed under it appears on the atlas, as registration results
        do in Slicer. A 2D registration's plane is given the slice's thickness.
    """
    slicer = _slicer()
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    target = _frame_to_ras(np.asarray(points, dtype=float), ndim=ndim, moving_affine=moving_affine)
    positions = _grid_positions_ras(grid)
    displacement = target.reshape(positions.shape) - positions
    spacing = np.asarray(grid.spacing, dtype=float)
    direction = grid.direction
    origin = grid.origin
    if ndim == 2:
        # a slab one slice thick, so points of the slice's thickness get the plane's displacement
        displacement = np.concatenate([displacement, displacement], axis=0)
        origin = origin - 0.5 * spacing[0] * direction[:, 0]
    image = vtkImageData()
    image.SetDimensions(*[int(s) for s in displacement.shape[:3]])
    image.SetSpacing(*[float(s) for s in spacing])
    image.SetOrigin(*[float(o) for o in origin])
    flat = np.ascontiguousarray(np.moveaxis(displacement, (0, 1, 2), (2, 1, 0))).reshape(-1, 3)
    vectors = numpy_to_vtk(flat, deep=True)
    vectors.SetNumberOfComponents(3)
    image.GetPointData().SetScalars(vectors)
    grid_transform = slicer.vtkOrientedGridTransform()
    grid_transform.SetDisplacementGridData(image)
    rotation = np.eye(4)
    rotation[:3, :3] = direction
    grid_transform.SetGridDirectionMatrix(_vtk_matrix(rotation))
    grid_transform.SetInterpolationModeToLinear()
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    node.SetAndObserveTransformFromParent(grid_transform)
    node.SetAttribute(ROLE_ATTRIBUTE, "disc transform")
    return node


def points_from_transform(node, grid: Image, *, ndim: int) -> np.ndarray:
    """Where a transform node's resampling transform sends every voxel of a grid.

    The inverse of :func:`transform_from_points`, and how a registration computed by
    SlicerElastix (a displacement field on the fixed grid) becomes DiscVBR sampling points.

    Parameters
    ----------
    node : vtkMRMLTransformNode
        Transform whose "from parent" direction maps fixed (atlas) RAS to moving RAS.
    grid : Image
        The fixed grid.
    ndim : {2, 3}
        Registration dimension of the returned frame.

    Returns
    -------
    ndarray
        Shape ``grid.shape + (3,)`` in 3D (LPS mm) or ``(ny, nz, 2)`` in 2D ((P, S) mm).
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonCore import vtkPoints

    positions = _grid_positions_ras(grid)
    source = vtkPoints()
    source.SetData(numpy_to_vtk(np.ascontiguousarray(positions.reshape(-1, 3)), deep=True))
    target = vtkPoints()
    target.SetDataTypeToDouble()
    node.GetTransformFromParent().TransformPoints(source, target)
    moved = vtk_to_numpy(target.GetData()).astype(float).reshape(positions.shape)
    frame = _ras_to_frame(moved, ndim=ndim)
    return frame[0] if ndim == 2 else frame


def det_jacobian_from_points(points: np.ndarray, grid: Image, *, ndim: int) -> np.ndarray:
    """Determinant of the spatial Jacobian of a sampled transform, by central differences.

    Parameters
    ----------
    points : ndarray
        Moving-frame position of each fixed-grid voxel (as :func:`points_from_transform`).
    grid : Image
        The fixed grid.
    ndim : {2, 3}

    Returns
    -------
    ndarray, shape grid.shape
        det(dx_moving / dx_fixed) per voxel (> 1 expansion, < 1 compression, <= 0 folding);
        one-sided differences on the grid's faces.
    """
    from discvbr.registration.engine import frame_geometry

    matrix, _ = frame_geometry(grid.affine, ndim)
    field = np.asarray(points, dtype=float)
    axes = tuple(range(ndim))
    derivative = np.stack([np.stack(np.gradient(field[..., c], axis=axes), axis=-1) for c in range(ndim)], axis=-2)
    jacobian = derivative @ np.linalg.inv(matrix)
    det = np.linalg.det(jacobian)
    return det.reshape(grid.shape[:3])


# --------------------------------------------------------------------------- tables and plots


def table_from_dataframe(scene, table, *, name: str, node=None):
    """A table node with a pandas DataFrame's columns (a named index becomes the first column).

    Numeric columns are stored as numbers (NaN for missing), others as text.
    """
    import pandas as pd
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkStringArray

    frame = table.reset_index() if table.index.name is not None or isinstance(table.index, pd.MultiIndex) else table
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    node.RemoveAllColumns()
    vtk_table = node.GetTable()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            values = values.astype(float)
        if pd.api.types.is_numeric_dtype(values):
            array = numpy_to_vtk(np.ascontiguousarray(values.to_numpy(dtype=float)), deep=True)
        else:
            array = vtkStringArray()
            for value in values:
                array.InsertNextValue("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value))
        array.SetName(str(column))
        vtk_table.AddColumn(array)
    node.Modified()
    return node


def dataframe_from_table(node):
    """A table node's columns as a pandas DataFrame (numbers as float, text as str)."""
    import pandas as pd
    from vtkmodules.util.numpy_support import vtk_to_numpy

    table = node.GetTable()
    columns = {}
    for i in range(table.GetNumberOfColumns()):
        array = table.GetColumn(i)
        if array.IsA("vtkDataArray"):
            columns[array.GetName()] = vtk_to_numpy(array).astype(float)
        else:
            columns[array.GetName()] = [array.GetValue(r) for r in range(array.GetNumberOfValues())]
    return pd.DataFrame(columns)


def plot_curves(
    scene,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, str, tuple[float, float, float]]],
    *,
    name: str,
    title: str,
    x_title: str,
    y_title: str,
    chart=None,
):
    """A plot chart node showing curves (each from its own table node).

    Parameters
    ----------
    curves : mapping of str to (x, y, style, colour)
        ``style`` is ``"markers"`` or ``"line"``.
    chart : vtkMRMLPlotChartNode, optional
        Chart to refill (its series and their tables are replaced).

    Returns
    -------
    vtkMRMLPlotChartNode
    """
    import pandas as pd

    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    else:
        for i in reversed(range(chart.GetNumberOfPlotSeriesNodes())):
            series = chart.GetNthPlotSeriesNode(i)
            chart.RemoveNthPlotSeriesNodeID(i)
            table = series.GetTableNode()
            scene.RemoveNode(series)
            if table is not None:
                scene.RemoveNode(table)
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    for label, (x, y, style, colour) in curves.items():
        table = table_from_dataframe(scene, pd.DataFrame({"x": np.asarray(x, float), "y": np.asarray(y, float)}), name=f"{name} {label}")
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {label}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("x")
        series.SetYColumnName("y")
        series.SetPlotType(series.PlotTypeScatter)
        if style == "markers":
            series.SetLineStyle(series.LineStyleNone)
            series.SetMarkerStyle(series.MarkerStyleCircle)
        else:
            series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetColor(*colour)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def iter_nodes(scene, cls: str) -> Iterator:
    """The scene's nodes of one class."""
    for i in range(scene.GetNumberOfNodesByClass(cls)):
        yield scene.GetNthNodeByClass(i, cls)
