"""DiscSegmentation: segment the five lumbar discs, review them by uncertainty, correct and save them.

The GUI over :class:`discvbr.extension.segmentation.DiscSegmentationLogic` (Qt-free, tested
headless in the project's CI): the settings live in the module's parameter node, copied to
the widgets by ``updateGUIFromParameterNode`` and back by ``updateParameterNodeFromGUI``;
the network runs in a separate process polled by a timer, so Apply turns into Cancel and the
GUI never freezes.
"""

import logging
import os
import sys

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    import DiscVBRLib  # noqa: F401  (installed beside the module with the discvbr package by the extension build)
except ImportError:  # a source checkout added with "Additional module paths": both are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from DiscVBRLib.compat import require_supported_python

require_supported_python()  # one clear message on a Slicer whose Python is too old, before discvbr is parsed

from DiscVBRLib.sampledata import register_sample_data
from DiscVBRLib.widget import BackgroundJobWidgetMixin, ParameterNodeWidgetMixin
from discvbr.errors import DiscVBRError
from discvbr.extension import segmentation as S
from discvbr.extension.segmentation import DiscSegmentationLogic

__all__ = ["DiscSegmentation", "DiscSegmentationWidget", "DiscSegmentationLogic", "DiscSegmentationTest"]


class DiscSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        # the phantom samples (simulated, offline) appear in Sample Data once Slicer has started
        slicer.app.connect("startupCompleted()", register_sample_data)
        self.parent.title = "Disc Segmentation"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["DiscVBR developers"]
        self.parent.helpText = """
Segments the five lumbar intervertebral discs (L1L2 ... L5S1) on the first echo of a sagittal
T1rho or T2 series with the CFCM network of Iriondo et al. (MRM 2020), in a separate process.
The discs are listed least certain first: click one to centre the views on it, correct it in the
Segment Editor, and save the masks for the pipeline or use them in Disc Relaxometry.
See <a href="https://github.com/discvbr/DiscVBR">the DiscVBR documentation</a>.
"""
        self.parent.acknowledgementText = """
Method: Iriondo C, Pedoia V, Majumdar S, et al. Lumbar intervertebral disc characterization through
quantitative MRI analysis: an automatic voxel-based relaxometry approach. Magn Reson Med 2020;84:1376-1390.
"""


class DiscSegmentationWidget(ScriptedLoadableModuleWidget, BackgroundJobWidgetMixin, ParameterNodeWidgetMixin, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUIFromParameterNode = False
        self._review = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiscSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiscSegmentationLogic()
        self._jobTimer = qt.QTimer()
        self._jobTimer.setInterval(100)
        self._jobTimer.timeout.connect(self.onJobTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for selector in (self.ui.inputSelector, self.ui.segmentationSelector, self.ui.uncertaintySelector, self.ui.labelMapSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.modelCombo.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.modelPathEdit.currentPathChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.deviceCombo.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.thresholdSlider.valueChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.minSizeSpin.valueChanged.connect(self.updateParameterNodeFromGUI)

        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.reviewList.currentRowChanged.connect(self.onReviewRowChanged)
        self.ui.segmentEditorButton.clicked.connect(self.onSegmentEditor)
        self.ui.saveMasksButton.clicked.connect(self.onSaveMasks)
        self.ui.importLabelsButton.clicked.connect(self.onImportLabels)
        self.initializeParameterNode()

    def cleanup(self):
        BackgroundJobWidgetMixin.cleanup(self)
        self.removeObservers()

    def initializeParameterNode(self):
        node = self.logic.parameter_node()
        if node.GetNodeReference(S.INPUT) is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                node.SetNodeReferenceID(S.INPUT, first.GetID())
        self.setParameterNode(node)

    # ---------------------------------------------------------------- parameter node <-> GUI

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """The one place the widgets are set from the parameter node."""
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        self._updatingGUIFromParameterNode = True
        try:
            self.ui.inputSelector.setCurrentNode(node.GetNodeReference(S.INPUT))
            self.ui.segmentationSelector.setCurrentNode(node.GetNodeReference(S.SEGMENTATION))
            self.ui.uncertaintySelector.setCurrentNode(node.GetNodeReference(S.UNCERTAINTY))
            custom = node.GetParameter(S.MODEL_SOURCE) == "folder"
            self.ui.modelCombo.setCurrentIndex(1 if custom else 0)
            self.ui.modelPathEdit.enabled = custom
            self.ui.modelPathEdit.currentPath = node.GetParameter(S.MODEL_FOLDER)
            self.ui.deviceCombo.setCurrentText(node.GetParameter(S.DEVICE))
            self.ui.thresholdSlider.value = float(node.GetParameter(S.THRESHOLD) or 0.5)
            self.ui.minSizeSpin.value = int(float(node.GetParameter(S.MIN_SIZE) or 125))
            segmentation = node.GetNodeReference(S.SEGMENTATION)
            self.ui.segmentEditorButton.enabled = segmentation is not None and not self.jobRunning
            self.ui.saveMasksButton.enabled = segmentation is not None and not self.jobRunning
            self.ui.importLabelsButton.enabled = self.ui.labelMapSelector.currentNode() is not None and not self.jobRunning
            self.updateApplyButton()
            self.updateReviewList()
            if self.jobRunning:  # the settings above must not unlock inputs of a running job
                self.setInputsEnabled(False)
        finally:
            self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        """The one place the parameter node is set from the widgets."""
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        was = node.StartModify()
        node.SetNodeReferenceID(S.INPUT, self.ui.inputSelector.currentNodeID)
        node.SetNodeReferenceID(S.SEGMENTATION, self.ui.segmentationSelector.currentNodeID)
        node.SetNodeReferenceID(S.UNCERTAINTY, self.ui.uncertaintySelector.currentNodeID)
        node.SetParameter(S.MODEL_SOURCE, S.MODEL_SOURCES[self.ui.modelCombo.currentIndex])
        node.SetParameter(S.MODEL_FOLDER, self.ui.modelPathEdit.currentPath)
        node.SetParameter(S.DEVICE, self.ui.deviceCombo.currentText)
        node.SetParameter(S.THRESHOLD, f"{self.ui.thresholdSlider.value:g}")
        node.SetParameter(S.MIN_SIZE, str(self.ui.minSizeSpin.value))
        node.EndModify(was)  # the node's Modified event updates the GUI (once)

    def updateApplyButton(self):
        if self.jobRunning:
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.toolTip = "Stop the segmentation; nothing is added to the scene"
            self.ui.applyButton.enabled = True
            return
        reason = self.logic.disabled_reason(self._parameterNode)
        self.ui.applyButton.text = "Apply"
        self.ui.applyButton.enabled = reason is None
        self.ui.applyButton.toolTip = reason or "Segment the discs (in a separate process)"

    def updateReviewList(self):
        segmentation = self._parameterNode.GetNodeReference(S.SEGMENTATION) if self._parameterNode else None
        self._review = self.logic.review(segmentation) if segmentation is not None else []
        self.ui.reviewList.clear()
        for item in self._review:
            self.ui.reviewList.addItem(item.text())

    def addLog(self, text):
        self.ui.statusLog.appendPlainText(text)

    # ---------------------------------------------------------------- actions

    def jobInputWidgets(self):
        return (self.ui.inputSelector, self.ui.modelCombo, self.ui.modelPathEdit, self.ui.deviceCombo,
                self.ui.thresholdSlider, self.ui.minSizeSpin, self.ui.segmentationSelector, self.ui.uncertaintySelector,
                self.ui.labelMapSelector)

    def onApplyButton(self):
        if self.jobRunning:
            self.cancelJob()
            return
        try:
            from discvbr.extension.dependencies import ensure_slicer_dependencies

            ensure_slicer_dependencies("DiscSegmentation", log=self.addLog)
            self.ui.statusLog.clear()
            job = self.logic.start(self._parameterNode)
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Segmentation")
            return
        self.startJob(job, self.onJobFinished)

    def onJobFinished(self, job):
        if self._parameterNode is None:  # the scene went away meanwhile
            job.close()
            return
        try:
            output = self.logic.finish(job, self._parameterNode)
        except DiscVBRError as exc:
            self.addLog(f"error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Segmentation")
            return
        self.addLog(f"done: {output.segmentation.GetName()} (earlier segmentations are kept); review first "
                    f"{', '.join(item.level for item in output.review[:2])}")
        slicer.util.setSliceViewerLayers(background=self._parameterNode.GetNodeReference(S.INPUT), fit=True)
        self.updateGUIFromParameterNode()

    def onReviewRowChanged(self, row):
        if 0 <= row < len(self._review):
            try:
                self.logic.jump_slices(slicer.mrmlScene, self._review[row])
            except DiscVBRError as exc:
                slicer.util.warningDisplay(str(exc), windowTitle="Disc Segmentation")

    def onSegmentEditor(self):
        segmentation = self._parameterNode.GetNodeReference(S.SEGMENTATION)
        volume = self._parameterNode.GetNodeReference(S.INPUT)
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(volume)
        else:  # Slicer < 5.4
            editor.setMasterVolumeNode(volume)

    def onSaveMasks(self):
        volume = self._parameterNode.GetNodeReference(S.INPUT)
        default = os.path.join(qt.QDir.homePath(), f"{volume.GetName() if volume else 'discs'}_discs.nii.gz")
        path = qt.QFileDialog.getSaveFileName(None, "Save disc masks", default, "Label map (*.nii.gz *.nrrd)")
        if not path:
            return
        try:
            saved = self.logic.save_masks(self._parameterNode, path)
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Segmentation")
            return
        self.addLog(f"masks saved to {saved}")

    def onImportLabels(self):
        from discvbr.mrml.volumes import image_from_volume

        try:
            labels = image_from_volume(self.ui.labelMapSelector.currentNode())
            self.logic.import_labels(self._parameterNode, labels)
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Segmentation")
            return
        self.addLog(f"using {self.ui.labelMapSelector.currentNode().GetName()} as the segmentation")
        self.updateGUIFromParameterNode()


class DiscSegmentationTest(ScriptedLoadableModuleTest):
    """Runs the module's logic on a small phantom inside 3D Slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_phantom()
        self.setUp()
        self.test_import_and_save_masks()

    def _phantom(self):
        from discvbr.extension.dependencies import ensure_slicer_dependencies
        from discvbr.phantom import PhantomConfig, draw_subject, simulate_session

        ensure_slicer_dependencies("DiscSegmentation", log=logging.info)
        config = PhantomConfig(n_subjects=1, matrix=128, seed=3)
        return simulate_session(config, draw_subject(config, 0))

    def _model_folder(self):
        """The shipped model, else a tiny untrained network (the test is about the plumbing)."""
        import tempfile

        from discvbr.segmentation.model_store import default_model_path, save_model
        from discvbr.segmentation.network import CFCMConfig, build_network
        from discvbr.segmentation.preprocess import PreprocessConfig

        if default_model_path().is_dir():
            return None
        folder = os.path.join(tempfile.mkdtemp(prefix="discvbr-selftest-"), "tiny")
        config = CFCMConfig(width=0.0625, blocks=(1, 1, 1, 1))
        save_model(folder, build_network(config), architecture=config, preprocess=PreprocessConfig(), name="tiny", training={"purpose": "self-test"})
        return folder

    def test_segment_phantom(self):
        import numpy as np

        from discvbr.levels import DISC_COLOURS, DISC_LEVELS
        from discvbr.mrml.volumes import image_from_volume, volume_from_image

        self.delayDisplay("Segmenting a phantom in a separate process")
        session = self._phantom()
        volume = volume_from_image(slicer.mrmlScene, session.t1rho.echo(0), name="phantom TSL 0")
        logic = DiscSegmentationLogic()
        node = logic.parameter_node()
        node.SetNodeReferenceID(S.INPUT, volume.GetID())
        model = self._model_folder()
        if model is not None:
            logic.use_model_folder(node, model)
        node.SetParameter(S.DEVICE, "cpu")
        self.assertIsNone(logic.disabled_reason(node))
        output = logic.run(node, timeout=600)
        segmentation = output.segmentation.GetSegmentation()
        self.assertEqual([segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())], list(DISC_LEVELS))
        for level in DISC_LEVELS:
            np.testing.assert_allclose(segmentation.GetSegment(level).GetColor(), DISC_COLOURS[level], atol=1e-6)
        uncertainty = image_from_volume(output.uncertainty)
        self.assertEqual(uncertainty.shape, session.t1rho.echo(0).shape)
        self.assertEqual(len(output.review), 5)
        self.delayDisplay("Test passed")

    def test_import_and_save_masks(self):
        import tempfile

        import numpy as np

        from discvbr.io import read_image
        from discvbr.mrml.volumes import volume_from_image

        self.delayDisplay("Importing phantom masks and saving them back")
        session = self._phantom()
        volume = volume_from_image(slicer.mrmlScene, session.t1rho.echo(0), name="phantom TSL 0")
        logic = DiscSegmentationLogic()
        node = logic.parameter_node()
        node.SetNodeReferenceID(S.INPUT, volume.GetID())
        output = logic.import_labels(node, session.labels)
        self.assertTrue(all(not item.missing for item in output.review))
        path = os.path.join(tempfile.mkdtemp(prefix="discvbr-selftest-"), "discs.nii.gz")
        saved = read_image(logic.save_masks(node, path))
        np.testing.assert_array_equal(saved.array, session.labels.array)
        self.delayDisplay("Test passed")
