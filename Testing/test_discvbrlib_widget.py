"""The parameter-node lifecycle shared by the module widgets (DiscVBRLib.widget), on a stand-in widget."""

import sys
from pathlib import Path
from types import SimpleNamespace

from vtkmodules.vtkCommonCore import vtkCommand

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # DiscVBRLib lies beside the modules

from DiscVBRLib.widget import ParameterNodeWidgetMixin  # noqa: E402

MODIFIED = vtkCommand.ModifiedEvent


class FakeWidget(ParameterNodeWidgetMixin):
    """Records observations the way Slicer's VTKObservationMixin would hold them."""

    def __init__(self, nodes):
        self.logic = SimpleNamespace(parameter_node=lambda: nodes.pop(0))
        self.parent = SimpleNamespace(isEntered=True)
        self.observed = []
        self.gui_updates = 0

    def addObserver(self, node, event, callback):
        self.observed.append((node, event, callback))

    def removeObserver(self, node, event, callback):
        self.observed.remove((node, event, callback))

    def updateGUIFromParameterNode(self, caller=None, event=None):
        self.gui_updates += 1


def test_entering_binds_and_observes_the_module_node():
    widget = FakeWidget(["node-a"])
    widget.enter()
    assert widget._parameterNode == "node-a"
    assert widget.observed == [("node-a", MODIFIED, widget.updateGUIFromParameterNode)]
    assert widget.gui_updates == 1
    widget.exit()
    assert widget.observed == []


def test_closing_the_scene_rebinds_to_the_new_node_with_one_observer():
    widget = FakeWidget(["old", "new"])
    widget.enter()
    widget.onSceneStartClose(None, None)
    assert widget._parameterNode is None and widget.observed == []
    widget.onSceneEndClose(None, None)
    assert widget._parameterNode == "new"
    assert [o[0] for o in widget.observed] == ["new"]


def test_a_closed_scene_is_not_rebound_while_the_module_is_not_shown():
    widget = FakeWidget(["old", "new"])
    widget.enter()
    widget.parent.isEntered = False
    widget.onSceneStartClose(None, None)
    widget.onSceneEndClose(None, None)
    assert widget._parameterNode is None and widget.observed == []
