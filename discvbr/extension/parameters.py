"""Parameter nodes: the single source of truth of a module's settings.

Each module keeps its GUI state in one ``vtkMRMLScriptedModuleNode`` (saved with the
scene): settings as string parameters, inputs and outputs as node references. The
widget copies the node into the GUI in one function and the GUI into the node in
another; the logic reads the node through the typed helpers here, which name the
setting at fault when a value is not usable.
"""

from __future__ import annotations

from typing import Mapping

from discvbr.errors import DiscVBRError

__all__ = ["MODULE_ATTRIBUTE", "ModuleLogic", "parameter_node", "set_defaults", "text", "number", "integer", "flag", "choice"]

#: Attribute naming the module a parameter node belongs to (Slicer's convention).
MODULE_ATTRIBUTE = "ModuleName"


def parameter_node(scene, module: str, defaults: Mapping[str, str]):
    """The module's parameter node in ``scene`` (created with ``defaults`` when absent).

    Parameters
    ----------
    scene : vtkMRMLScene
    module : str
        Module name, stored as the node's ``ModuleName`` attribute and singleton tag.
    defaults : mapping of str to str
        Settings filled in where the node has no value yet.

    Returns
    -------
    vtkMRMLScriptedModuleNode
    """
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
        if node.GetAttribute(MODULE_ATTRIBUTE) == module:
            set_defaults(node, defaults)
            return node
    import slicer

    node = slicer.vtkMRMLScriptedModuleNode()
    node.SetName(module)
    node.SetSingletonTag(module)
    node.SetAttribute(MODULE_ATTRIBUTE, module)
    node.SetHideFromEditors(True)
    set_defaults(node, defaults)
    return scene.AddNode(node)


def set_defaults(node, defaults: Mapping[str, str]) -> None:
    """Fill settings that have no value yet (one Modified event)."""
    was = node.StartModify()
    for name, value in defaults.items():
        if not node.GetParameter(name):
            node.SetParameter(name, str(value))
    node.EndModify(was)


def text(node, name: str) -> str:
    """A setting as stripped text ('' when unset)."""
    return (node.GetParameter(name) or "").strip()


def number(node, name: str, *, label: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A setting as a float in ``[minimum, maximum]``.

    Raises
    ------
    DiscVBRError
        Naming ``label`` when the value is not a number or is out of range.
    """
    raw = text(node, name)
    try:
        value = float(raw)
    except ValueError:
        raise DiscVBRError(f"{label}: {raw!r} is not a number") from None
    if value != value or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'} to {maximum if maximum is not None else 'inf'}"
        raise DiscVBRError(f"{label}: {raw} is outside {bounds}")
    return value


def integer(node, name: str, *, label: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """A setting as a whole number in ``[minimum, maximum]`` (see :func:`number`)."""
    value = number(node, name, label=label, minimum=minimum, maximum=maximum)
    if value != int(value):
        raise DiscVBRError(f"{label}: {text(node, name)} is not a whole number")
    return int(value)


def flag(node, name: str) -> bool:
    """A setting as a boolean ('true'/'1'/'yes'/'on', any case, is true)."""
    return text(node, name).lower() in ("true", "1", "yes", "on")


def choice(node, name: str, options: tuple[str, ...], *, label: str) -> str:
    """A setting that must be one of ``options``."""
    value = text(node, name)
    if value not in options:
        raise DiscVBRError(f"{label}: {value!r} is not one of {', '.join(options)}")
    return value


class ModuleLogic:
    """What the three module logics share: their scene and their parameter node.

    Subclasses name their module (``module``) and the settings' defaults (``defaults``).

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Default: ``slicer.mrmlScene``, looked up on first use so that the logic can be
        built and tested without Slicer.
    """

    module: str = ""
    defaults: Mapping[str, str] = {}

    def __init__(self, scene=None):
        self._scene = scene

    @property
    def scene(self):
        if self._scene is None:
            import slicer

            self._scene = slicer.mrmlScene
        return self._scene

    def parameter_node(self):
        """The module's parameter node (settings and the input/output node references)."""
        return parameter_node(self.scene, self.module, self.defaults)
