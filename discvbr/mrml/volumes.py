"""Volume nodes from :class:`~discvbr.io.Image` and back (IJKToRAS is the image affine)."""

from __future__ import annotations

import numpy as np

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.mrml.arrays import array_from_image_data, describe_node, image_data, numpy_matrix, vtk_matrix, world_matrix
from discvbr.mrml.colours import disc_colour_table
from discvbr.mrml.scene import ROLE_ATTRIBUTE

__all__ = ["volume_from_image", "image_from_volume", "grid_text"]


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
    node.SetAndObserveImageData(image_data(array))
    node.SetIJKToRASMatrix(vtk_matrix(image.affine))
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
    label = what or describe_node(node)
    image = node.GetImageData()
    if image is None:
        raise DiscVBRError(f"{label} has no voxel data")
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    affine = world_matrix(node, label) @ numpy_matrix(matrix)
    return Image(array_from_image_data(image), affine)


def grid_text(image: Image) -> str:
    return (
        f"shape {tuple(image.shape[:3])}, voxel {np.round(image.spacing, 3).tolist()} mm, "
        f"origin {np.round(image.origin, 2).tolist()} mm"
    )

