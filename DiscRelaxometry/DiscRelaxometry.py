"""DiscRelaxometry: register each disc to the atlas, check the registration, fit T1rho/T2 maps.

The GUI over :class:`discvbr.extension.relaxometry.DiscRelaxometryLogic` (Qt-free, tested
headless in the project's CI). Settings live in the module's parameter node, copied to the
widgets by ``updateGUIFromParameterNode`` and back by ``updateParameterNodeFromGUI``. The run
reports progress between steps and Apply turns into Cancel; registration goes through
SlicerElastix when it is installed (stacks of slices), with DiscVBR's own elastix parameter
files, which are shown here and can be edited and saved as presets.
"""

import logging
import os
import sys

import qt
import slicer
import vtk
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
from discvbr.extension import relaxometry as R
from discvbr.extension.relaxometry import DiscRelaxometryLogic

__all__ = ["DiscRelaxometry", "DiscRelaxometryWidget", "DiscRelaxometryLogic", "DiscRelaxometryTest"]

#: Maps offered in the Maps section: output key -> label.
MAP_CHOICES = {
    "t1rho T": "T1rho (ms)", "t1rho r2": "T1rho fit r2", "t1rho T_sd": "T1rho standard error (ms)",
    "t2 T": "T2 (ms)", "t2 r2": "T2 fit r2", "t2 T_sd": "T2 standard error (ms)",
}


class DiscRelaxometry(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        # the phantom samples (simulated, offline) appear in Sample Data once Slicer has started
        slicer.app.connect("startupCompleted()", register_sample_data)
        self.parent.title = "Disc Relaxometry"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["DiscVBR developers"]
        self.parent.helpText = """
Registers every lumbar disc to the same disc of an atlas (mask-guided elastix registration: affine, then
B-spline with a rigidity penalty), applies the transforms to every echo, and fits mono-exponential
T1rho/T2 maps on the series grid and in atlas space. Check each disc's registration with the atlas
outlines, the checkerboard and the Jacobian determinant; click a voxel to plot its decay curve.
See <a href="https://github.com/discvbr/DiscVBR">the DiscVBR documentation</a>.
"""
        self.parent.acknowledgementText = """
Method: Iriondo C, Pedoia V, Majumdar S, et al. Magn Reson Med 2020;84:1376-1390. Registration: elastix
(Klein et al., IEEE TMI 2010) through SlicerElastix or itk-elastix.
"""


class DiscRelaxometryWidget(ScriptedLoadableModuleWidget, BackgroundJobWidgetMixin, ParameterNodeWidgetMixin, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUIFromParameterNode = False
        self._running = False
        self._cancelRequested = False
        self._chart = None
        self._clickObservations = []
        self._echoRows = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiscRelaxometry.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiscRelaxometryLogic()
        self._jobTimer = qt.QTimer()
        self._jobTimer.setInterval(200)
        self._jobTimer.timeout.connect(self.onJobTimer)
        for name in self.logic.atlas_choices():
            self.ui.atlasCombo.addItem(name)
        for key, label in MAP_CHOICES.items():
            self.ui.mapCombo.addItem(label, key)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for selector in (self.ui.t1rhoEchoSelector, self.ui.t2EchoSelector):
            selector.connect("checkedNodesChanged()", self.updateParameterNodeFromGUI)
        for selector in (self.ui.t1rhoSeriesSelector, self.ui.t2SeriesSelector, self.ui.segmentationSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for edit in (self.ui.t1rhoTimesEdit, self.ui.t2TimesEdit):
            edit.editingFinished.connect(self.updateParameterNodeFromGUI)
        self.ui.atlasCombo.currentTextChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.atlasFolderEdit.currentPathChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.engineCombo.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.fitMethodCombo.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        for spin in (self.ui.gridSpacingSpin, self.ui.iterationsSpin, self.ui.rigiditySpin, self.ui.t1rhoMaxSpin, self.ui.t2MaxSpin, self.ui.minSnrSpin):
            spin.valueChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.presetFolderEdit.currentPathChanged.connect(self.onPresetFolderChanged)
        self.ui.presetFileCombo.currentIndexChanged.connect(self.onPresetFileChanged)
        self.ui.presetTextEdit.textChanged.connect(lambda: setattr(self.ui.savePresetButton, "enabled", True))
        self.ui.savePresetButton.clicked.connect(self.onSavePreset)

        self.ui.echoTable.setHorizontalHeaderLabels(["Series", "Volume", "Time (ms)"])
        self.ui.echoTable.cellChanged.connect(self.onEchoTimeEdited)
        self.ui.echoUpButton.clicked.connect(lambda: self.onMoveEcho(-1))
        self.ui.echoDownButton.clicked.connect(lambda: self.onMoveEcho(+1))
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.showRegisteredButton.clicked.connect(self.onShowRegistered)
        self.ui.showCheckerboardButton.clicked.connect(self.onShowCheckerboard)
        self.ui.showJacobianButton.clicked.connect(self.onShowJacobian)
        self.ui.faderSlider.valueChanged.connect(lambda value: slicer.util.setSliceViewerLayers(foregroundOpacity=value))
        self.ui.showMapButton.clicked.connect(self.onShowMap)
        self.ui.decayCurveCheckBox.toggled.connect(self.onDecayCurveToggled)
        self.initializeParameterNode()
        self.onPresetFolderChanged()

    def cleanup(self):
        BackgroundJobWidgetMixin.cleanup(self)
        self.onDecayCurveToggled(False)
        self.removeObservers()

    # ---------------------------------------------------------------- parameter node <-> GUI

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """The one place the widgets are set from the parameter node."""
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        self._updatingGUIFromParameterNode = True
        try:
            for kind, echoSelector, seriesSelector, timesEdit in self._seriesWidgets():
                chosen = {node.GetNthNodeReferenceID(R.echo_role(kind), i) for i in range(node.GetNumberOfNodeReferences(R.echo_role(kind)))}
                for i in range(echoSelector.nodeCount()):
                    volume = echoSelector.nodeFromIndex(i)
                    echoSelector.setCheckState(volume, qt.Qt.Checked if volume.GetID() in chosen else qt.Qt.Unchecked)
                seriesSelector.setCurrentNode(node.GetNodeReference(R.series_role(kind)))
                timesEdit.text = node.GetParameter(R.times_parameter(kind))
            self.ui.segmentationSelector.setCurrentNode(node.GetNodeReference(R.SEGMENTATION))
            atlas = node.GetParameter(R.ATLAS)
            if os.path.isdir(atlas):
                self.ui.atlasFolderEdit.currentPath = atlas
            else:
                self.ui.atlasFolderEdit.currentPath = ""
                self.ui.atlasCombo.setCurrentText(atlas)
            self.ui.engineCombo.setCurrentText(node.GetParameter(R.ENGINE))
            self.ui.gridSpacingSpin.value = float(node.GetParameter(R.GRID_SPACING))
            self.ui.iterationsSpin.value = int(float(node.GetParameter(R.ITERATIONS)))
            self.ui.rigiditySpin.value = float(node.GetParameter(R.RIGIDITY))
            self.ui.presetFolderEdit.currentPath = node.GetParameter(R.PARAMETER_FOLDER)
            self.ui.fitMethodCombo.setCurrentText(node.GetParameter(R.FIT_METHOD))
            self.ui.t1rhoMaxSpin.value = float(node.GetParameter(R.T1RHO_MAX))
            self.ui.t2MaxSpin.value = float(node.GetParameter(R.T2_MAX))
            self.ui.minSnrSpin.value = float(node.GetParameter(R.MIN_SNR))
            self.updateEchoTable()
            qc = self.logic.output_node(node, "qc table")
            self.ui.qcTableView.setMRMLTableNode(qc)
            for button in (self.ui.showRegisteredButton, self.ui.showCheckerboardButton, self.ui.showJacobianButton, self.ui.showMapButton):
                button.enabled = qc is not None and not self._running and not self.jobRunning
            self.updateApplyButton()
            if self.jobRunning:
                self.setInputsEnabled(False)
        finally:
            self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        """The one place the parameter node is set from the widgets."""
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        was = node.StartModify()
        for kind, echoSelector, seriesSelector, timesEdit in self._seriesWidgets():
            self.logic.select_echo_volumes(node, kind, echoSelector.checkedNodes())  # keeps the echo table's order
            node.SetNodeReferenceID(R.series_role(kind), seriesSelector.currentNodeID)
            node.SetParameter(R.times_parameter(kind), timesEdit.text.strip())
        node.SetNodeReferenceID(R.SEGMENTATION, self.ui.segmentationSelector.currentNodeID)
        node.SetParameter(R.ATLAS, self.ui.atlasFolderEdit.currentPath or self.ui.atlasCombo.currentText)
        node.SetParameter(R.ENGINE, self.ui.engineCombo.currentText)
        node.SetParameter(R.GRID_SPACING, f"{self.ui.gridSpacingSpin.value:g}")
        node.SetParameter(R.ITERATIONS, str(self.ui.iterationsSpin.value))
        node.SetParameter(R.RIGIDITY, f"{self.ui.rigiditySpin.value:g}")
        node.SetParameter(R.PARAMETER_FOLDER, self.ui.presetFolderEdit.currentPath)
        node.SetParameter(R.FIT_METHOD, self.ui.fitMethodCombo.currentText)
        node.SetParameter(R.T1RHO_MAX, f"{self.ui.t1rhoMaxSpin.value:g}")
        node.SetParameter(R.T2_MAX, f"{self.ui.t2MaxSpin.value:g}")
        node.SetParameter(R.MIN_SNR, f"{self.ui.minSnrSpin.value:g}")
        node.EndModify(was)

    def updateEchoTable(self):
        """One row per echo volume with the time it is paired with (a recorded time is shown beside it)."""
        node = self._parameterNode
        table = self.ui.echoTable
        table.blockSignals(True)
        try:
            self._echoRows = [(kind, index, row) for kind in R.KINDS for index, row in enumerate(self.logic.echo_rows(node, kind))]
            table.setRowCount(len(self._echoRows))
            for r, (kind, index, row) in enumerate(self._echoRows):
                time = "" if row.time is None else f"{row.time:g}"
                if row.recorded is not None and row.time is not None and abs(row.recorded - row.time) > 1e-6:
                    time += f"  (recorded {row.recorded:g})"
                for column, text in enumerate((R.KINDS[kind], row.name, time)):
                    item = qt.QTableWidgetItem(text)
                    if column < 2:
                        item.setFlags(item.flags() & ~qt.Qt.ItemIsEditable)
                    table.setItem(r, column, item)
            table.resizeColumnsToContents()
        finally:
            table.blockSignals(False)

    def onMoveEcho(self, step):
        row = self.ui.echoTable.currentRow()
        if not 0 <= row < len(self._echoRows):
            return
        kind, index, _ = self._echoRows[row]
        try:
            self.logic.move_echo(self._parameterNode, kind, index, step)
        except DiscVBRError:
            return  # the first row cannot go up, the last not down
        self.ui.echoTable.selectRow(row + step)

    def onEchoTimeEdited(self, row, column):
        if column != 2 or not 0 <= row < len(self._echoRows):
            return
        kind, index, _ = self._echoRows[row]
        text = self.ui.echoTable.item(row, column).text().split("(")[0].strip()
        try:
            self.logic.set_echo_time(self._parameterNode, kind, index, float(text))
        except (ValueError, DiscVBRError) as exc:
            slicer.util.errorDisplay(f"{R.KINDS[kind]} echo {index + 1}: {text!r} is not a time in ms ({exc})", windowTitle="Disc Relaxometry")
            self.updateEchoTable()

    def _seriesWidgets(self):
        return (
            ("t1rho", self.ui.t1rhoEchoSelector, self.ui.t1rhoSeriesSelector, self.ui.t1rhoTimesEdit),
            ("t2", self.ui.t2EchoSelector, self.ui.t2SeriesSelector, self.ui.t2TimesEdit),
        )

    def updateApplyButton(self):
        if self.jobRunning:
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = "Stop the registration and fit; nothing is added to the scene"
            return
        if self._running:
            self.ui.applyButton.text = "Cancelling..." if self._cancelRequested else "Cancel"
            self.ui.applyButton.enabled = not self._cancelRequested
            self.ui.applyButton.toolTip = "Stop after the current step; nothing is added to the scene"
            return
        reason = self.logic.disabled_reason(self._parameterNode)
        self.ui.applyButton.text = "Apply"
        self.ui.applyButton.enabled = reason is None
        self.ui.applyButton.toolTip = reason or "Register the discs, fit the maps and build the QC views"

    def addLog(self, text):
        self.ui.statusLog.appendPlainText(text)
        slicer.app.processEvents()

    # ---------------------------------------------------------------- presets

    def onPresetFolderChanged(self, path=None):
        self.ui.presetFileCombo.clear()
        for ndim in (2, 3):
            for name in self.logic.preset_file_names(ndim):
                self.ui.presetFileCombo.addItem(name, ndim)
        self.updateParameterNodeFromGUI()
        self.onPresetFileChanged()

    def onPresetFileChanged(self, index=None):
        name = self.ui.presetFileCombo.currentText
        if not name or self._parameterNode is None:
            return
        try:
            texts = self.logic.parameter_texts(self._parameterNode, ndim=self.ui.presetFileCombo.currentData)
        except DiscVBRError as exc:
            self.ui.presetTextEdit.setPlainText(f"// {exc}")
        else:
            self.ui.presetTextEdit.setPlainText(texts[name])
        self.ui.savePresetButton.enabled = False

    def onSavePreset(self):
        folder = qt.QFileDialog.getExistingDirectory(None, "Save the parameter files as a preset folder")
        if not folder:
            return
        ndim = self.ui.presetFileCombo.currentData
        texts = self.logic.parameter_texts(self._parameterNode, ndim=ndim)
        texts[self.ui.presetFileCombo.currentText] = self.ui.presetTextEdit.toPlainText()
        try:
            self.logic.save_parameter_preset(folder, texts, ndim=ndim)
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Relaxometry")
            return
        self._parameterNode.SetParameter(R.PARAMETER_FOLDER, folder)
        self.addLog(f"preset saved in {folder}; the registration uses it now")

    # ---------------------------------------------------------------- run

    def jobInputWidgets(self):
        return (self.ui.t1rhoEchoSelector, self.ui.t2EchoSelector, self.ui.t1rhoSeriesSelector, self.ui.t2SeriesSelector,
                self.ui.t1rhoTimesEdit, self.ui.t2TimesEdit, self.ui.segmentationSelector, self.ui.atlasCombo,
                self.ui.atlasFolderEdit, self.ui.engineCombo, self.ui.fitMethodCombo, self.ui.gridSpacingSpin,
                self.ui.iterationsSpin, self.ui.rigiditySpin, self.ui.t1rhoMaxSpin, self.ui.t2MaxSpin, self.ui.minSnrSpin,
                self.ui.presetFolderEdit, self.ui.presetTextEdit, self.ui.echoTable, self.ui.echoUpButton,
                self.ui.echoDownButton)

    def onApplyButton(self):
        if self.jobRunning:
            self.cancelJob()
            return
        if self._running:
            self._cancelRequested = True
            if self.logic._elastix_logic is not None:
                self.logic._elastix_logic.cancelRequested = True
            self.updateApplyButton()
            return
        self.ui.statusLog.clear()
        try:
            from discvbr.extension.dependencies import ensure_slicer_dependencies

            ensure_slicer_dependencies("DiscRelaxometry", log=self.addLog)
            if self._parameterNode.GetParameter(R.ENGINE) != "slicer-elastix":
                self.startJob(self.logic.start(self._parameterNode), self.onJobFinished)
                return
        except DiscVBRError as exc:
            self.addLog(f"error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Relaxometry")
            return
        self.runInSlicer()

    def onJobFinished(self, job):
        if self._parameterNode is None:  # the scene went away meanwhile
            job.close()
            return
        try:
            with slicer.util.WaitCursor():
                output = self.logic.finish(job, self._parameterNode)
        except DiscVBRError as exc:
            self.addLog(f"error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Relaxometry")
            return
        self.addLog(self.logic.summary(output))
        self.onShowMap()

    def runInSlicer(self):
        """The SlicerElastix engine needs the running Slicer: the run stays in this process, with Cancel between steps."""
        self._running, self._cancelRequested = True, False
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.updateGUIFromParameterNode()
        try:
            output = self.logic.run(self._parameterNode, progress=self.onProgress, cancelled=lambda: self._cancelRequested)
        except R.Cancelled as exc:
            self.addLog(str(exc))
        except DiscVBRError as exc:
            self.addLog(f"error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Relaxometry")
        else:
            self.addLog(self.logic.summary(output))
            self.onShowMap()
        finally:
            self._running = False
            self.ui.progressBar.visible = False
            self.updateGUIFromParameterNode()

    def onProgress(self, fraction, text):
        self.ui.progressBar.value = int(100 * fraction)
        self.addLog(text)

    # ---------------------------------------------------------------- views

    def _firstEcho(self):
        node = self._parameterNode
        for kind in R.KINDS:
            echo = node.GetNthNodeReference(R.echo_role(kind), 0)
            if echo is not None:
                return echo
            series = node.GetNodeReference(R.series_role(kind))
            if series is not None and series.IsA("vtkMRMLSequenceNode"):
                browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(series)
                if browser is not None:
                    return browser.GetProxyNode(series)
            if series is not None:
                return series
        return None

    def _registeredEcho(self):
        for kind in R.KINDS:
            sequence = self.logic.output_node(self._parameterNode, f"{kind} registered echoes")
            browser = self.logic.output_node(self._parameterNode, f"{kind} registered echoes browser")
            if sequence is not None and browser is not None:
                browser.SetSelectedItemNumber(0)
                return browser.GetProxyNode(sequence)
        return None

    def onShowMap(self):
        key = self.ui.mapCombo.currentData
        volume = self.logic.output_node(self._parameterNode, key)
        if volume is None:
            slicer.util.warningDisplay(f"There is no {self.ui.mapCombo.currentText} map (no such series in the last run)", windowTitle="Disc Relaxometry")
            return
        slicer.util.setSliceViewerLayers(background=self._firstEcho(), foreground=volume, foregroundOpacity=self.ui.faderSlider.value, label=None, fit=True)

    def onShowRegistered(self):
        atlas = self.logic.output_node(self._parameterNode, "atlas discs")
        registered = self.logic.output_node(self._parameterNode, "registered discs")
        if atlas is not None:
            atlas.GetDisplayNode().SetVisibility(True)
        slicer.util.setSliceViewerLayers(background=self._registeredEcho(), foreground=None, label=registered, fit=True)

    def onShowCheckerboard(self):
        board = self.logic.output_node(self._parameterNode, "checkerboard")
        slicer.util.setSliceViewerLayers(background=board, foreground=None, label=None, fit=True)

    def onShowJacobian(self):
        det = self.logic.output_node(self._parameterNode, "det jacobian")
        slicer.util.setSliceViewerLayers(background=self._registeredEcho(), foreground=det, foregroundOpacity=self.ui.faderSlider.value, label=None, fit=True)

    # ---------------------------------------------------------------- decay curves

    def onDecayCurveToggled(self, enabled):
        for interactor, tag in self._clickObservations:
            interactor.RemoveObserver(tag)
        self._clickObservations = []
        if not enabled:
            return
        layoutManager = slicer.app.layoutManager()
        for name in layoutManager.sliceViewNames():
            interactor = layoutManager.sliceWidget(name).sliceView().interactorStyle().GetInteractor()
            tag = interactor.AddObserver(vtk.vtkCommand.LeftButtonPressEvent, self.onSliceClick, 1.0)
            self._clickObservations.append((interactor, tag))

    def onSliceClick(self, caller=None, event=None):
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        ras = [0.0, 0.0, 0.0]
        crosshair.GetCursorPositionRAS(ras)
        kind = "t2" if self.ui.mapCombo.currentData.startswith("t2") else "t1rho"
        try:
            curve = self.logic.decay_curve(self._parameterNode, kind, ras)
        except DiscVBRError as exc:
            slicer.util.showStatusMessage(str(exc), 3000)
            return
        self._chart = self.logic.plot_decay_curve(curve, chart=self._chart)
        slicer.modules.plots.logic().ShowChartInLayout(self._chart)


class DiscRelaxometryTest(ScriptedLoadableModuleTest):
    """Runs the module's logic on a small phantom inside 3D Slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_register_and_fit_phantom()
        self.setUp()
        self.test_bad_input_leaves_scene_unchanged()
        self.setUp()
        self.test_sample_case_in_a_child_process()

    def _phantomNodes(self):
        from discvbr.extension.dependencies import ensure_slicer_dependencies
        from discvbr.mrml.segmentations import segmentation_from_labels
        from discvbr.mrml.series import sequence_from_series
        from discvbr.mrml.volumes import volume_from_image
        from discvbr.phantom import PhantomConfig, draw_subject, simulate_session

        ensure_slicer_dependencies("DiscRelaxometry", log=logging.info)
        config = PhantomConfig(n_subjects=1, matrix=128, seed=3)
        session = simulate_session(config, draw_subject(config, 0))
        echoes = [volume_from_image(slicer.mrmlScene, session.t1rho.echo(e), name=f"phantom T1rho {t:g} ms") for e, t in enumerate(session.t1rho.times)]
        t2, _ = sequence_from_series(slicer.mrmlScene, session.t2, name="phantom T2")
        segmentation = segmentation_from_labels(slicer.mrmlScene, session.labels, name="phantom discs")
        return session, echoes, t2, segmentation

    def test_register_and_fit_phantom(self):
        import numpy as np

        from discvbr.mrml.volumes import image_from_volume

        self.delayDisplay("Registering and fitting a phantom")
        session, echoes, t2, segmentation = self._phantomNodes()
        logic = DiscRelaxometryLogic()
        node = logic.parameter_node()
        logic.set_echo_volumes(node, "t1rho", echoes, ";".join(f"{t:g}" for t in session.t1rho.times))
        logic.set_series_node(node, "t2", t2)
        node.SetNodeReferenceID(R.SEGMENTATION, segmentation.GetID())
        node.SetParameter(R.ITERATIONS, "30")
        self.assertIsNone(logic.disabled_reason(node))
        output = logic.run(node)
        self.assertEqual(len(output.registrations), 5)
        t_map = image_from_volume(output.nodes["t1rho T"]).array
        inside = (session.labels.array > 0) & np.isfinite(t_map)
        error = np.median(np.abs(t_map[inside] - session.truth.t1rho[inside]))
        self.assertLess(error, 10.0)  # ms: fitted against the phantom's true T1rho
        self.assertEqual(image_from_volume(output.nodes["t1rho T atlas"]).shape, image_from_volume(output.nodes["registered discs"]).shape)
        centre = np.append(np.argwhere(session.labels.array == 2).mean(axis=0).round(), 1.0)
        curve = logic.decay_curve(node, "t1rho", (session.labels.affine @ centre)[:3])
        self.assertEqual(len(curve.signal), 4)
        logic.plot_decay_curve(curve)
        self.delayDisplay("Test passed")

    def test_bad_input_leaves_scene_unchanged(self):
        self.delayDisplay("Bad input: times that do not match the echoes")
        session, echoes, t2, segmentation = self._phantomNodes()
        logic = DiscRelaxometryLogic()
        node = logic.parameter_node()
        logic.set_echo_volumes(node, "t1rho", echoes, "0;10;40")
        node.SetNodeReferenceID(R.SEGMENTATION, segmentation.GetID())
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(DiscVBRError):
            logic.run(node)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Test passed")

    def test_sample_case_in_a_child_process(self):
        """The Sample Data case, its times read from the volumes, run the way Apply runs it (a child process)."""
        from discvbr.extension.dependencies import ensure_slicer_dependencies
        from discvbr.extension.sample import load_phantom_case
        from discvbr.mrml.legends import colour_legend
        from discvbr.mrml.segmentations import segmentation_from_labels

        self.delayDisplay("The DiscVBR phantom case in a child process")
        ensure_slicer_dependencies("DiscRelaxometry", log=logging.info)
        case = load_phantom_case(slicer.mrmlScene)
        logic = DiscRelaxometryLogic()
        node = logic.parameter_node()
        logic.set_echo_volumes(node, "t1rho", case.t1rho, "")
        node.SetNodeReferenceID(R.SEGMENTATION, segmentation_from_labels(slicer.mrmlScene, case.session.labels, name="phantom discs").GetID())
        node.SetParameter(R.ITERATIONS, "30")
        node.SetParameter(R.ENGINE, "itk-elastix")
        self.assertIsNone(logic.disabled_reason(node))
        job = logic.start(node)
        self.assertEqual(job.wait(timeout=900), 0)
        output = logic.finish(job, node)
        self.assertEqual(len(output.registrations), 5)
        self.assertEqual(colour_legend(output.nodes["t1rho T"]).GetTitleText(), "T1rho (ms)")
        self.delayDisplay("Test passed")
