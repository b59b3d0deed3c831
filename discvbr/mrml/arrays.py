"""numpy <-> VTK: 4x4 matrices, image data in DiscVBR's (i, j, k) order, a node's world matrix."""

from __future__ import annotations

import numpy as np

from discvbr.errors import DiscVBRError

__all__ = [
    "vtk_matrix",
    "numpy_matrix",
    "image_data",
    "array_from_image_data",
    "world_matrix",
    "describe_node",
]


def vtk_matrix(array: np.ndarray):
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def image_data(array: np.ndarray):
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


def array_from_image_data(image) -> np.ndarray:
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


def world_matrix(node, what: str) -> np.ndarray:
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
    return numpy_matrix(matrix)


def describe_node(node) -> str:
    return f"{node.GetClassName().replace('vtkMRML', '').replace('Node', ' node').lower()} {node.GetName()!r}"

