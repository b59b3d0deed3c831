"""Figures: spine meshes of an atlas, maps drawn on them off screen, colour scales.

``render_spine_maps(atlas_labels, maps, kind="r")`` draws per-disc maps on the atlas'
spine mesh; :func:`build_scene` gives the same polydata, scalars and lookup tables for
the Slicer module. Matplotlib plots are in :mod:`discvbr.render.figures` and the HTML
report in :mod:`discvbr.render.report`. VTK is imported only when a mesh or scene is built.
"""

from discvbr.render.colours import MAP_KINDS, ColourScale, colour_scale
from discvbr.render.mesh import SpineParts, spine_mesh, spine_parts
from discvbr.render.scene import (
    CAMERA_PRESETS,
    CameraView,
    RenderedFigure,
    SceneElement,
    SpineScene,
    build_scene,
    render_scene,
    render_spine_maps,
    write_png,
)

__all__ = [
    "MAP_KINDS",
    "ColourScale",
    "colour_scale",
    "SpineParts",
    "spine_mesh",
    "spine_parts",
    "CAMERA_PRESETS",
    "CameraView",
    "RenderedFigure",
    "SceneElement",
    "SpineScene",
    "build_scene",
    "render_scene",
    "render_spine_maps",
    "write_png",
]
