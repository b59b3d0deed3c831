"""Colour legends (colour bars) with their title and units, for volumes and models alike."""

from __future__ import annotations


__all__ = ["add_colour_legend", "colour_legend"]


def add_colour_legend(scene, displayable, *, title: str):
    """The colour legend (colour bar) of a displayable node's colours, titled with the quantity and its unit.

    A node keeps one legend: calling again retitles it instead of adding another (a map
    refilled by a second run, a scene loaded again).

    Parameters
    ----------
    scene : vtkMRMLScene
    displayable : vtkMRMLDisplayableNode
        A volume or model whose display node has a colour node.
    title : str
        Quantity and unit (``"T1rho (ms)"``, ``"det J (no unit; 1: volume kept)"``).

    Returns
    -------
    vtkMRMLColorLegendDisplayNode
    """
    legend = colour_legend(displayable)
    if legend is None:
        display = displayable.GetDisplayNode()
        legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode", f"{displayable.GetName()} legend")
        legend.SetAndObservePrimaryDisplayNode(display)
        displayable.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetTitleText(title)
    legend.SetVisibility(True)
    return legend


def colour_legend(displayable):
    """A displayable node's colour legend display node, or None."""
    for i in range(displayable.GetNumberOfDisplayNodes()):
        display = displayable.GetNthDisplayNode(i)
        if display is not None and display.IsA("vtkMRMLColorLegendDisplayNode"):
            return display
    return None
