"""The parameter-node lifecycle shared by the three module widgets.

Slicer's scripted-module template gives every widget the same six methods: bind to the
module's parameter node on entering the module and after a scene is closed, observe the
node so that the GUI follows it, and stop observing on leaving. They live here once; a
widget mixes this class in after ``ScriptedLoadableModuleWidget`` and
``VTKObservationMixin`` and provides ``self.logic.parameter_node()`` and
``updateGUIFromParameterNode``. No Qt and no ``slicer`` import, so the tests run it
without the Slicer application.
"""

from __future__ import annotations

__all__ = ["ParameterNodeWidgetMixin"]


class ParameterNodeWidgetMixin:
    """Keeps ``self._parameterNode`` bound to the module's node and observed.

    Requires ``addObserver``/``removeObserver`` (Slicer's ``VTKObservationMixin``),
    ``self.logic.parameter_node()``, ``self.parent.isEntered`` and
    ``updateGUIFromParameterNode``. A widget that must prepare a fresh node (choose a
    default input, forget a result) overrides :meth:`initializeParameterNode` or
    :meth:`onSceneStartClose` and calls this class's version.
    """

    _parameterNode = None

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.removeObserver(self._parameterNode, _modified_event(), self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.parameter_node())

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, _modified_event(), self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, _modified_event(), self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()


def _modified_event() -> int:
    from vtkmodules.vtkCommonCore import vtkCommand

    return vtkCommand.ModifiedEvent
