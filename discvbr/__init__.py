"""DiscVBR: voxel-based relaxometry of the lumbar intervertebral discs.

The logic layer of the DiscVBR 3D Slicer extension. Every stage of the pipeline
(images -> masks -> per-disc transforms -> echoes in atlas space -> maps ->
statistics -> figures) is a module of this package with a plain Python API and a
``discvbr`` sub-command. Nothing here imports Qt or ``slicer``.

Reference: Iriondo C, Pedoia V, Majumdar S, et al. Lumbar intervertebral disc
characterization through quantitative MRI analysis: an automatic voxel-based
relaxometry approach. Magn Reson Med 2020;84:1376-1390.
"""

__version__ = "0.1.0"

from discvbr.errors import DiscVBRError  # noqa: E402

__all__ = ["DiscVBRError", "__version__"]
