"""Model nodes from polydata, and the spine figure's elements as models with one colour table and legend."""

from __future__ import annotations

from dataclasses import dataclass

from discvbr.errors import DiscVBRError
from discvbr.mrml.colours import colour_table_from_scale
from discvbr.mrml.legends import add_colour_legend
from discvbr.mrml.scene import ROLE_ATTRIBUTE, place_in_folder

__all__ = ["model_from_polydata", "SpineModels", "models_from_spine_scene"]


def model_from_polydata(
    scene,
    polydata,
    *,
    name: str,
    colour: tuple[float, float, float] | None = None,
    opacity: float = 1.0,
    scalars: str | None = None,
    colour_node=None,
    value_range: tuple[float, float] | None = None,
    role: str | None = None,
):
    """A model node showing polydata, in a solid colour or coloured by cell scalars.

    Parameters
    ----------
    scene : vtkMRMLScene
    polydata : vtkPolyData
        In RAS mm.
    name : str
    colour : (r, g, b), optional
        Solid colour (0..1).
    opacity : float
    scalars : str, optional
        Name of the cell-data array to colour by (needs ``colour_node`` and ``value_range``).
    colour_node : vtkMRMLColorNode, optional
    value_range : (float, float), optional
        Values mapped onto the first and last colour.
    role : str, optional
        ``DiscVBR.Role`` attribute.
    """
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    model.SetAndObservePolyData(polydata)
    if role:
        model.SetAttribute(ROLE_ATTRIBUTE, role)
    model.CreateDefaultDisplayNodes()
    display = model.GetDisplayNode()
    display.SetOpacity(float(opacity))
    display.SetVisibility2D(True)
    if colour is not None:
        display.SetColor(*colour)
    if scalars is not None:
        if colour_node is None or value_range is None:
            raise DiscVBRError(f"{name}: colouring by {scalars!r} needs a colour node and a value range")
        if polydata.GetCellData().GetArray(scalars) is None:
            raise DiscVBRError(f"{name}: the mesh has no cell array {scalars!r}")
        from vtkmodules.vtkFiltersCore import vtkAssignAttribute

        display.SetActiveScalarName(scalars)
        display.SetActiveAttributeLocation(vtkAssignAttribute.CELL_DATA)
        display.SetAndObserveColorNodeID(colour_node.GetID())
        display.SetScalarRangeFlag(display.UseManualScalarRange)
        display.SetScalarRange(float(value_range[0]), float(value_range[1]))
        display.SetScalarVisibility(True)
    return model


@dataclass
class SpineModels:
    """Model nodes of a :class:`~discvbr.render.SpineScene` in the scene."""

    models: list
    colour_node: object
    value_range: tuple[float, float]
    legend: object
    folder: int

    def maps(self) -> list:
        """The model nodes coloured by the map's values."""
        return [m for m in self.models if m.GetAttribute(ROLE_ATTRIBUTE) == "map"]


def models_from_spine_scene(scene, spine_scene, *, name: str) -> SpineModels:
    """Model nodes for every element of a spine figure, one colour table and one legend.

    Parameters
    ----------
    scene : vtkMRMLScene
    spine_scene : SpineScene
        From :func:`discvbr.render.build_scene`: vertebrae and discs as solid surfaces,
        each disc's map as a plane of voxel quads with cell scalars, outlined in the
        disc's colour.
    name : str
        Names the folder, the colour table and the models.

    Returns
    -------
    SpineModels
    """
    colour_node, value_range = colour_table_from_scale(scene, spine_scene.scale, name=f"{name} colours")
    models = []
    for element in spine_scene.elements:
        if element.role == "map":
            model = model_from_polydata(
                scene, element.polydata, name=f"{name} {element.name}", opacity=element.opacity,
                scalars=element.scalars, colour_node=colour_node, value_range=value_range, role="map",
            )
        else:
            model = model_from_polydata(
                scene, element.polydata, name=f"{name} {element.name}", colour=element.colour,
                opacity=element.opacity, role=element.role,
            )
            if element.role == "outline":
                model.GetDisplayNode().SetLineWidth(3)
        if element.level:
            model.SetAttribute("DiscVBR.Level", element.level)
        models.append(model)
    first_map = next((m for m in models if m.GetAttribute(ROLE_ATTRIBUTE) == "map"), None)
    legend = add_colour_legend(scene, first_map, title=spine_scene.scale.title) if first_map is not None else None
    folder = place_in_folder(scene, [*models, colour_node], folder=name)
    return SpineModels(models, colour_node, value_range, legend, folder)

