"""Scenes: headless scenes, saving and loading bundles, all-or-nothing node transactions, node lookup and folders."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from discvbr.errors import DiscVBRError

__all__ = [
    "ROLE_ATTRIBUTE",
    "slicer_module",
    "new_scene",
    "save_scene",
    "load_scene",
    "NodeTransaction",
    "TemporaryNodes",
    "tagged_node",
    "place_in_folder",
    "iter_nodes",
]


#: Node attribute marking nodes DiscVBR made (value: what the node is).
ROLE_ATTRIBUTE = "DiscVBR.Role"


def slicer_module():
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
    slicer = slicer_module()
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
    slicer = slicer_module()
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


def tagged_node(scene, cls: str, role: str, name: str):
    """The scene's node of class ``cls`` with ``DiscVBR.Role == role``, or a new one."""
    for node in iter_nodes(scene, cls):
        if node.GetAttribute(ROLE_ATTRIBUTE) == role:
            return node, False
    node = scene.AddNewNodeByClass(cls, name)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    return node, True


def place_in_folder(scene, nodes: Sequence, *, folder: str) -> int:
    """Put nodes under a subject-hierarchy folder (created) so a result stays together; its item id."""
    slicer = slicer_module()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder_item = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), folder)
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, folder_item)
        else:
            hierarchy.CreateItem(folder_item, node)
    return folder_item


def iter_nodes(scene, cls: str) -> Iterator:
    """The scene's nodes of one class."""
    for i in range(scene.GetNumberOfNodesByClass(cls)):
        yield scene.GetNthNodeByClass(i, cls)

