"""Table nodes from data frames and back."""

from __future__ import annotations

import numpy as np


__all__ = ["table_from_dataframe", "dataframe_from_table"]


def table_from_dataframe(scene, table, *, name: str, node=None):
    """A table node with a pandas DataFrame's columns (a named index becomes the first column).

    Numeric columns are stored as numbers (NaN for missing), others as text.
    """
    import pandas as pd
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkStringArray

    frame = table.reset_index() if table.index.name is not None or isinstance(table.index, pd.MultiIndex) else table
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    node.RemoveAllColumns()
    vtk_table = node.GetTable()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            values = values.astype(float)
        if pd.api.types.is_numeric_dtype(values):
            array = numpy_to_vtk(np.ascontiguousarray(values.to_numpy(dtype=float)), deep=True)
        else:
            array = vtkStringArray()
            for value in values:
                array.InsertNextValue("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value))
        array.SetName(str(column))
        vtk_table.AddColumn(array)
    node.Modified()
    return node


def dataframe_from_table(node):
    """A table node's columns as a pandas DataFrame (numbers as float, text as str)."""
    import pandas as pd
    from vtkmodules.util.numpy_support import vtk_to_numpy

    table = node.GetTable()
    columns = {}
    for i in range(table.GetNumberOfColumns()):
        array = table.GetColumn(i)
        if array.IsA("vtkDataArray"):
            columns[array.GetName()] = vtk_to_numpy(array).astype(float)
        else:
            columns[array.GetName()] = [array.GetValue(r) for r in range(array.GetNumberOfValues())]
    return pd.DataFrame(columns)

