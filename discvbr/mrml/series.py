"""Echo series in the scene: one volume per echo, sequence nodes, multi-volumes; times checked against echoes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, validate_times
from discvbr.mrml.arrays import describe_node, image_data, vtk_matrix
from discvbr.mrml.scene import ROLE_ATTRIBUTE, slicer_module
from discvbr.mrml.volumes import grid_text, image_from_volume

__all__ = [
    "series_from_volumes",
    "series_from_sequence",
    "series_from_multivolume",
    "series_from_node",
    "sequence_from_series",
]


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
            raise DiscVBRError(f"{kind} series: {describe_node(node)} is not a 3D scalar volume (shape {image.shape})")
        if not image.same_grid(first):
            raise DiscVBRError(
                f"{kind} series: echo volumes are on different grids: {describe_node(nodes[0])} ({grid_text(first)}) "
                f"and {describe_node(node)} ({grid_text(image)}); resample them onto one grid first"
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
    source = describe_node(node)
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
                f"{kind} series from {source}: item {i} ({grid_text(image)}) is not on the grid of item 1 "
                f"({grid_text(images[0])})"
            )
    values = _times_for(times, count, kind=kind, source=source)
    data = np.stack([np.asarray(i.array, dtype=np.float32) for i in images], axis=-1)
    return EchoSeries(data, values, images[0].affine, kind)


def series_from_multivolume(node, *, times=None, kind: str = "t1rho") -> EchoSeries:
    """An echo series from a multi-component volume (a MultiVolume or vector volume node).

    Times default to the node's ``MultiVolume.FrameLabels`` attribute (comma-separated ms),
    as the MultiVolumeExplorer extension stores them.
    """
    source = describe_node(node)
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
    raise DiscVBRError(f"{kind} series: {describe_node(node)} is neither a sequence nor a multi-volume")


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
    slicer = slicer_module()
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")
    sequence.SetIndexType(sequence.NumericIndex)
    sequence.SetAttribute(ROLE_ATTRIBUTE, f"{series.kind} series")
    for e in range(series.n_echoes):
        echo = slicer.vtkMRMLScalarVolumeNode()
        echo.SetName(f"{name} {series.times[e]:g} ms")
        echo.SetAndObserveImageData(image_data(np.asarray(series.data[..., e], dtype=np.float32)))
        echo.SetIJKToRASMatrix(vtk_matrix(series.affine))
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

