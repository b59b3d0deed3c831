"""Per-disc registrations as grid transform nodes, and back (points, Jacobian determinant)."""

from __future__ import annotations

import numpy as np

from discvbr.io import Image
from discvbr.mrml.arrays import vtk_matrix
from discvbr.mrml.scene import ROLE_ATTRIBUTE, slicer_module

__all__ = ["transform_from_points", "points_from_transform", "det_jacobian_from_points"]


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
    slicer = slicer_module()
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
    grid_transform.SetGridDirectionMatrix(vtk_matrix(rotation))
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

