"""The per-disc registration through the SlicerElastix extension.

:class:`SlicerElastixRunner` is an :class:`~discvbr.registration.disc.ElastixRunner`: it
gives :func:`~discvbr.registration.register_disc` the same cropped disc masks and the same
parameter maps (the shipped files of ``discvbr/data/elastix`` with the run's values written
over them) as the headless engine, but runs them with SlicerElastix's ``elastix`` and
``transformix`` through ``Elastix.ElastixLogic().registerVolumes``. SlicerElastix returns
the result as a displacement-field transform node on the fixed (atlas) grid; the runner
samples it at the atlas voxels, which is all DiscVBR needs to warp echoes and maps, and
takes the Jacobian determinant by finite differences.

SlicerElastix registers volumes in 3D, so it serves stacks of slices; a single sagittal
slice (2D data) is registered with itk-elastix (the DiscRelaxometry logic chooses).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from discvbr.io import Image

__all__ = ["SlicerElastixRunner", "slicer_elastix_logic"]


def slicer_elastix_logic():
    """``Elastix.ElastixLogic()`` when the SlicerElastix extension is installed, else None."""
    try:
        import Elastix
    except ImportError:
        return None
    return Elastix.ElastixLogic()


class SlicerElastixRunner:
    """Runs a disc registration with SlicerElastix (an ``ElastixRunner`` for ``register_disc``).

    Parameters
    ----------
    scene : vtkMRMLScene
        Where the temporary volume and transform nodes live during a run (removed after).
    elastix_logic : Elastix.ElastixLogic
        SlicerElastix's logic (its ``cancelRequested`` flag stops a running registration).
    log : callable, optional
        Receives SlicerElastix's log lines.
    """

    def __init__(self, scene, elastix_logic, *, log: Callable[[str], None] | None = None):
        self.scene = scene
        self.elastix_logic = elastix_logic
        if log is not None:
            elastix_logic.logCallback = log

    def __call__(self, fixed: Image, moving: Image, parameter_maps: Sequence[dict], *, ndim: int):
        from discvbr.mrml.scene import TemporaryNodes
        from discvbr.mrml.transforms import det_jacobian_from_points, points_from_transform
        from discvbr.mrml.volumes import volume_from_image
        from discvbr.registration.params import write_parameter_file

        if ndim != 3:
            raise RuntimeError("SlicerElastix registers 3D volumes; single-slice data are registered with itk-elastix")
        with tempfile.TemporaryDirectory(prefix="discvbr-slicer-elastix-") as folder, TemporaryNodes(self.scene):
            # register_disc may run one stage at a time: name each file by its map's transform
            files = []
            for i, pm in enumerate(parameter_maps):
                stage = pm.get("Transform", ("stage",))[0]
                files.append(write_parameter_file(
                    Path(folder) / f"{i}-{stage}.txt", dict(pm, WriteResultImage=("false",)),
                    header=f"DiscVBR disc registration, {stage} stage (written for SlicerElastix)",
                ))
            fixed_node = volume_from_image(self.scene, fixed, name="DiscVBR atlas disc (temporary)")
            moving_node = volume_from_image(self.scene, moving, name="DiscVBR subject disc (temporary)")
            transform = self.scene.AddNewNodeByClass("vtkMRMLTransformNode", "DiscVBR disc transform (temporary)")
            self.elastix_logic.registerVolumes(
                fixedVolumeNode=fixed_node,
                movingVolumeNode=moving_node,
                parameterFilenames=[str(f) for f in files],
                outputTransformNode=transform,
                forceDisplacementFieldOutputTransform=True,
            )
            if transform.GetTransformFromParent() is None or transform.IsLinear():
                raise RuntimeError("SlicerElastix returned no displacement field (cancelled, or elastix failed: see its log)")
            grid = Image(np.empty(fixed.shape[:3], np.uint8), fixed.affine)
            points = points_from_transform(transform, grid, ndim=3)
            det = det_jacobian_from_points(points, grid, ndim=3)
        return [], points, det
