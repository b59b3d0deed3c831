"""Colour legends (colour bars) with their title and units, for volumes and models alike."""

from __future__ import annotations


__all__ = ["add_colour_legend"]


def add_colour_legend(scene, displayable, *, title: str):
    """A colour legend (colour bar) for a displayable node's colours, shown in all views."""
    display = displayable.GetDisplayNode()
    legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode", f"{displayable.GetName()} legend")
    legend.SetAndObservePrimaryDisplayNode(display)
    displayable.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetTitleText(title)
    legend.SetVisibility(True)
    return legend

