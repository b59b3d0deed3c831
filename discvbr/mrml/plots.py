"""Plot chart nodes of curves (decay curves with their fit)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from discvbr.mrml.tables import table_from_dataframe

__all__ = ["plot_curves"]


def plot_curves(
    scene,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, str, tuple[float, float, float]]],
    *,
    name: str,
    title: str,
    x_title: str,
    y_title: str,
    chart=None,
):
    """A plot chart node showing curves (each from its own table node).

    Parameters
    ----------
    curves : mapping of str to (x, y, style, colour)
        ``style`` is ``"markers"`` or ``"line"``.
    chart : vtkMRMLPlotChartNode, optional
        Chart to refill (its series and their tables are replaced).

    Returns
    -------
    vtkMRMLPlotChartNode
    """
    import pandas as pd

    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    else:
        for i in reversed(range(chart.GetNumberOfPlotSeriesNodes())):
            series = chart.GetNthPlotSeriesNode(i)
            chart.RemoveNthPlotSeriesNodeID(i)
            table = series.GetTableNode()
            scene.RemoveNode(series)
            if table is not None:
                scene.RemoveNode(table)
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    for label, (x, y, style, colour) in curves.items():
        table = table_from_dataframe(scene, pd.DataFrame({"x": np.asarray(x, float), "y": np.asarray(y, float)}), name=f"{name} {label}")
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {label}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("x")
        series.SetYColumnName("y")
        series.SetPlotType(series.PlotTypeScatter)
        if style == "markers":
            series.SetLineStyle(series.LineStyleNone)
            series.SetMarkerStyle(series.MarkerStyleCircle)
        else:
            series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetColor(*colour)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart

