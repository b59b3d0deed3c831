"""Colour table nodes from DiscVBR's colour scales, the disc colour table, volumes shown through them."""

from __future__ import annotations

import numpy as np

from discvbr.levels import DISC_COLOURS, DISC_LEVELS
from discvbr.mrml.scene import ROLE_ATTRIBUTE, tagged_node

__all__ = ["disc_colour_table", "colour_table_from_scale", "shared_colour_table", "show_volume_with_colours"]


#: Finest value step of a colour table sampled from a log scale (p maps), as a fraction of its range.
_LOG_TABLE_RESOLUTION = 1.0 / 65536


#: Voxels with values outside this range are not drawn (NaN, the "no value" marker, fails both tests).
_DRAWN_RANGE = (-1e30, 1e30)


def disc_colour_table(scene):
    """The colour table of disc labels (0 background, 1 = L5S1 ... 5 = L1L2), one per scene."""
    node, created = tagged_node(scene, "vtkMRMLColorTableNode", "disc colours", "DiscVBR discs")
    if created:
        node.SetTypeToUser()
        node.SetNumberOfColors(len(DISC_LEVELS) + 1)
        node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for label, level in enumerate(DISC_LEVELS, start=1):
            node.SetColor(label, level, *DISC_COLOURS[level], 1.0)
    return node


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
    node, _ = tagged_node(scene, "vtkMRMLColorTableNode", role, name)
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

