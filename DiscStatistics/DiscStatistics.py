"""DiscStatistics: voxel-wise statistics of a study, with the maps on the spine mesh.

The GUI over :class:`discvbr.extension.statistics.DiscStatisticsLogic` (Qt-free, tested
headless in the project's CI). Settings live in the module's parameter node, copied to the
widgets by ``updateGUIFromParameterNode`` and back by ``updateParameterNodeFromGUI``. A
manifest is first run through ``discvbr run`` in a separate process (Apply turns into
Cancel); analyses run the pipeline's own statistics code on the study folder.
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
from discvbr.extension import statistics as T
from discvbr.extension.statistics import DiscStatisticsLogic

__all__ = ["DiscStatistics", "DiscStatisticsWidget", "DiscStatisticsLogic", "DiscStatisticsTest"]


class DiscStatistics(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        # the phantom samples (simulated, offline) appear in Sample Data once Slicer has started
        slicer.app.connect("startupCompleted()", register_sample_data)
        self.parent.title = "Disc Statistics"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["DiscVBR developers"]
        self.parent.helpText = """
Voxel-wise statistics of registered T1rho/T2 maps across a cohort: correlation with a variable (partial for
covariates), group comparison, T1rho vs T2, baseline vs follow-up, with permutation family-wise error
control per disc and over the five discs. Results appear as volumes on the atlas grid, tables, and maps
on the atlas spine mesh in the 3D view. Permutation runs with many permutations take minutes.
See <a href="https://github.com/discvbr/DiscVBR">the DiscVBR documentation</a>.
"""
        self.parent.acknowledgementText = """
Method: Iriondo C, Pedoia V, Majumdar S, et al. Magn Reson Med 2020;84:1376-1390.
"""


class DiscStatisticsWidget(ScriptedLoadableModuleWidget, BackgroundJobWidgetMixin, ParameterNodeWidgetMixin, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUIFromParameterNode = False
        self._jobKind = None  # "pipeline" or "analysis" while a job runs

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiscStatistics.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiscStatisticsLogic()
        self._jobTimer = qt.QTimer()
        self._jobTimer.setInterval(200)
        self._jobTimer.timeout.connect(self.onJobTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.studyPathEdit.currentPathChanged.connect(self.updateParameterNodeFromGUI)
        self.ui.manifestPathEdit.currentPathChanged.connect(self.updateParameterNodeFromGUI)
        for edit in (self.ui.analysisNameEdit, self.ui.variableEdit, self.ui.covariatesEdit, self.ui.cutEdit, self.ui.baselineEdit, self.ui.followupEdit):
            edit.editingFinished.connect(self.updateParameterNodeFromGUI)
        for combo in (self.ui.analysisKindCombo, self.ui.mapCombo, self.ui.secondMapCombo, self.ui.methodCombo, self.ui.correctionCombo):
            combo.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        for box in (self.ui.welchCheckBox, self.ui.tfceCheckBox):
            box.toggled.connect(self.updateParameterNodeFromGUI)
        for spin in (self.ui.permutationsSpin, self.ui.seedSpin, self.ui.alphaSpin):
            spin.valueChanged.connect(self.updateParameterNodeFromGUI)

        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.runPipelineButton.clicked.connect(self.onRunPipeline)
        self.ui.loadButton.clicked.connect(self.onLoadResults)
        self.ui.showMapCombo.activated.connect(self.onShowMapChosen)
        self.ui.tableCombo.currentIndexChanged.connect(self.onTableChosen)
        self.ui.exportTablesButton.clicked.connect(self.onExportTables)
        self.ui.exportFigureButton.clicked.connect(self.onExportFigure)
        self.ui.capture3DButton.clicked.connect(self.onCapture3D)
        self.initializeParameterNode()

    def cleanup(self):
        BackgroundJobWidgetMixin.cleanup(self)
        self.removeObservers()

    def currentOutput(self):
        """The loaded results, from the parameter node's references (so they survive saving and reloading the scene)."""
        return self.logic.current_output(self._parameterNode) if self._parameterNode is not None else None

    # ---------------------------------------------------------------- parameter node <-> GUI

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """The one place the widgets are set from the parameter node."""
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        self._updatingGUIFromParameterNode = True
        try:
            self.ui.studyPathEdit.currentPath = node.GetParameter(T.STUDY)
            self.ui.manifestPathEdit.currentPath = node.GetParameter(T.MANIFEST)
            self.ui.analysisNameEdit.text = node.GetParameter(T.NAME)
            self.ui.analysisKindCombo.setCurrentText(node.GetParameter(T.KIND))
            self.ui.mapCombo.setCurrentText(node.GetParameter(T.MAP))
            self.ui.secondMapCombo.setCurrentText(node.GetParameter(T.SECOND_MAP))
            self.ui.variableEdit.text = node.GetParameter(T.VARIABLE)
            self.ui.covariatesEdit.text = node.GetParameter(T.COVARIATES)
            self.ui.methodCombo.setCurrentText(node.GetParameter(T.METHOD))
            self.ui.cutEdit.text = node.GetParameter(T.CUT)
            self.ui.welchCheckBox.checked = node.GetParameter(T.WELCH) == "true"
            self.ui.baselineEdit.text = node.GetParameter(T.BASELINE)
            self.ui.followupEdit.text = node.GetParameter(T.FOLLOWUP)
            self.ui.permutationsSpin.value = int(node.GetParameter(T.PERMUTATIONS) or 0)
            self.ui.seedSpin.value = int(node.GetParameter(T.SEED) or 0)
            self.ui.tfceCheckBox.checked = node.GetParameter(T.TFCE) == "true"
            self.ui.alphaSpin.value = float(node.GetParameter(T.ALPHA) or 0.05)
            self.ui.correctionCombo.setCurrentText(node.GetParameter(T.CORRECTION))
            kind = node.GetParameter(T.KIND)
            for widget in (self.ui.variableEdit, self.ui.covariatesEdit):
                widget.enabled = kind in ("variable", "group")
            self.ui.cutEdit.enabled = self.ui.welchCheckBox.enabled = kind == "group"
            self.ui.secondMapCombo.enabled = kind == "voxel"
            self.ui.baselineEdit.enabled = self.ui.followupEdit.enabled = kind == "time"
            self.updateAnalysisList()
            self.updateButtons()
            if self.jobRunning:  # the per-kind enabling above must not unlock inputs of a running job
                self.setInputsEnabled(False)
        finally:
            self._updatingGUIFromParameterNode = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        """The one place the parameter node is set from the widgets."""
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        was = node.StartModify()
        node.SetParameter(T.STUDY, self.ui.studyPathEdit.currentPath)
        node.SetParameter(T.MANIFEST, self.ui.manifestPathEdit.currentPath)
        node.SetParameter(T.NAME, self.ui.analysisNameEdit.text.strip())
        node.SetParameter(T.KIND, self.ui.analysisKindCombo.currentText)
        node.SetParameter(T.MAP, self.ui.mapCombo.currentText)
        node.SetParameter(T.SECOND_MAP, self.ui.secondMapCombo.currentText)
        node.SetParameter(T.VARIABLE, self.ui.variableEdit.text.strip())
        node.SetParameter(T.COVARIATES, self.ui.covariatesEdit.text.strip())
        node.SetParameter(T.METHOD, self.ui.methodCombo.currentText)
        node.SetParameter(T.CUT, self.ui.cutEdit.text.strip())
        node.SetParameter(T.WELCH, "true" if self.ui.welchCheckBox.checked else "false")
        node.SetParameter(T.BASELINE, self.ui.baselineEdit.text.strip())
        node.SetParameter(T.FOLLOWUP, self.ui.followupEdit.text.strip())
        node.SetParameter(T.PERMUTATIONS, str(self.ui.permutationsSpin.value))
        node.SetParameter(T.SEED, str(self.ui.seedSpin.value))
        node.SetParameter(T.TFCE, "true" if self.ui.tfceCheckBox.checked else "false")
        node.SetParameter(T.ALPHA, f"{self.ui.alphaSpin.value:g}")
        node.SetParameter(T.CORRECTION, self.ui.correctionCombo.currentText)
        node.EndModify(was)

    def updateAnalysisList(self):
        current = self.ui.analysisCombo.currentText
        self.ui.analysisCombo.clear()
        folder = self._parameterNode.GetParameter(T.STUDY)
        if folder and os.path.isdir(folder):
            for name in T.study_analyses(folder):
                self.ui.analysisCombo.addItem(name)
        if current:
            self.ui.analysisCombo.setCurrentText(current)

    def updateButtons(self):
        busy = self.jobRunning
        manifest, study = self._parameterNode.GetParameter(T.MANIFEST), self._parameterNode.GetParameter(T.STUDY)
        if busy and self._jobKind == "pipeline":
            self.ui.runPipelineButton.text = "Cancel the pipeline run"
            self.ui.runPipelineButton.enabled = True
        else:
            self.ui.runPipelineButton.text = "Run the pipeline on the manifest into the study folder"
            self.ui.runPipelineButton.enabled = bool(manifest and study) and not busy
            self.ui.runPipelineButton.toolTip = "" if manifest and study else "Choose a manifest and the folder to write the study to"
        if busy and self._jobKind == "analysis":
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = "Stop the analysis; nothing is added to the scene"
        else:
            reason = self.logic.disabled_reason(self._parameterNode)
            self.ui.applyButton.text = "Apply"
            self.ui.applyButton.enabled = reason is None and not busy
            self.ui.applyButton.toolTip = "A job is running" if busy else (reason or "Run the analysis on the study (in a separate process)")
        self.ui.loadButton.enabled = self.ui.analysisCombo.count > 0 and not busy
        loaded = self.currentOutput() is not None and not busy
        for button in (self.ui.exportTablesButton, self.ui.exportFigureButton, self.ui.capture3DButton):
            button.enabled = loaded

    def jobInputWidgets(self):
        return (self.ui.studyPathEdit, self.ui.manifestPathEdit, self.ui.analysisNameEdit, self.ui.variableEdit,
                self.ui.covariatesEdit, self.ui.cutEdit, self.ui.baselineEdit, self.ui.followupEdit,
                self.ui.analysisKindCombo, self.ui.mapCombo, self.ui.secondMapCombo, self.ui.methodCombo,
                self.ui.correctionCombo, self.ui.welchCheckBox, self.ui.tfceCheckBox, self.ui.permutationsSpin,
                self.ui.seedSpin, self.ui.alphaSpin, self.ui.analysisCombo, self.ui.showMapCombo)

    def setInputsEnabled(self, enabled):
        super().setInputsEnabled(enabled)
        if enabled:
            self._jobKind = None

    def addLog(self, text):
        self.ui.statusLog.appendPlainText(text)
        slicer.app.processEvents()

    # ---------------------------------------------------------------- jobs: pipeline on a manifest, analysis

    def onRunPipeline(self):
        if self.jobRunning:
            self.cancelJob("pipeline run cancelled; completed steps are kept and resume on the next run")
            return
        try:
            from discvbr.extension.dependencies import ensure_slicer_dependencies

            ensure_slicer_dependencies("DiscStatistics", log=self.addLog)
            node = self._parameterNode
            job = self.logic.start_pipeline(node.GetParameter(T.MANIFEST), node.GetParameter(T.STUDY))
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Statistics")
            return
        self._jobKind = "pipeline"
        self.startJob(job, self.onPipelineFinished)

    def onPipelineFinished(self, job):
        code = job.process.wait()
        job.close()
        level, message = self.logic.pipeline_outcome(code, job.process.error, self._parameterNode.GetParameter(T.STUDY))
        self.addLog(message)
        if level == "warning":
            slicer.util.warningDisplay(message, windowTitle="Disc Statistics")
        elif level == "error":
            slicer.util.errorDisplay(message, windowTitle="Disc Statistics")
        self.updateGUIFromParameterNode()

    def onApplyButton(self):
        if self.jobRunning:
            self.cancelJob("analysis cancelled")
            return
        self.ui.statusLog.clear()
        try:
            from discvbr.extension.dependencies import ensure_slicer_dependencies

            ensure_slicer_dependencies("DiscStatistics", log=self.addLog)
            job = self.logic.start_analysis(self._parameterNode)
        except DiscVBRError as exc:
            self.addLog(f"error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Statistics")
            return
        self._jobKind = "analysis"
        self.startJob(job, self.onAnalysisFinished)

    def onAnalysisFinished(self, job):
        if self._parameterNode is None:  # the scene went away meanwhile
            job.close()
            return
        try:
            with slicer.util.WaitCursor():
                output = self.logic.finish_analysis(job, self._parameterNode)
        except DiscVBRError as exc:
            self.addLog(f"error: {exc}")
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Statistics")
            return
        self.addLog(f"results in {output.folder}")
        self.updateGUIFromParameterNode()
        self.ui.analysisCombo.setCurrentText(output.name)
        self.showOutput(output)

    def onLoadResults(self):
        name = self.ui.analysisCombo.currentText
        try:
            with slicer.util.WaitCursor():
                output = self.logic.load_results(self._parameterNode, name=name)
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Statistics")
            return
        self.showOutput(output)

    def showOutput(self, output):
        self.ui.showMapCombo.clear()
        for stem in sorted(output.volumes):
            if T.map_kind(stem) is not None:
                self.ui.showMapCombo.addItem(stem)
        self.ui.showMapCombo.setCurrentText(output.shown or "")
        self.ui.tableCombo.clear()
        for table in output.tables:
            self.ui.tableCombo.addItem(table)
        if output.shown:
            slicer.util.setSliceViewerLayers(background=output.volumes[output.shown], fit=True)
        slicer.util.resetThreeDViews()
        self.addLog(f"loaded {output.name}: {len(output.volumes)} maps, {len(output.tables)} tables; on the spine: {output.shown}")
        self.updateButtons()

    def onShowMapChosen(self, index):
        output = self.currentOutput()
        if output is None:
            return
        stem = self.ui.showMapCombo.currentText
        try:
            self.logic.show_map_on_mesh(self._parameterNode, output, stem)
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Statistics")
            return
        slicer.util.setSliceViewerLayers(background=output.volumes[stem])

    def onTableChosen(self, index):
        output = self.currentOutput()
        if output is None:
            return
        table = output.tables.get(self.ui.tableCombo.currentText)
        self.ui.resultsTableView.setMRMLTableNode(table)

    def onExportTables(self):
        folder = qt.QFileDialog.getExistingDirectory(None, "Export the tables as CSV into")
        if folder:
            written = self.logic.export_tables(self.currentOutput(), folder)
            self.addLog("wrote " + ", ".join(os.path.basename(p) for p in written))

    def onExportFigure(self):
        output = self.currentOutput()
        path = qt.QFileDialog.getSaveFileName(None, "Export the figure", f"{output.name}_{output.shown}.png", "PNG (*.png)")
        if not path:
            return
        try:
            with slicer.util.WaitCursor():
                self.logic.export_figure(self._parameterNode, output, path)
        except DiscVBRError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="Disc Statistics")
            return
        self.addLog(f"wrote {path}")

    def onCapture3D(self):
        path = qt.QFileDialog.getSaveFileName(None, "Save the 3D view", f"{self.currentOutput().name}_3d.png", "PNG (*.png)")
        if not path:
            return
        import ScreenCapture

        view = slicer.app.layoutManager().threeDWidget(0).threeDView()
        ScreenCapture.ScreenCaptureLogic().captureImageFromView(view, path)
        self.addLog(f"wrote {path}")


class DiscStatisticsTest(ScriptedLoadableModuleTest):
    """Runs the module's logic on a small phantom study inside 3D Slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_phantom_study()

    def test_phantom_study(self):
        import tempfile
        from pathlib import Path

        import numpy as np

        from discvbr.extension.dependencies import ensure_slicer_dependencies
        from discvbr.mrml.volumes import image_from_volume
        from discvbr.phantom import PhantomConfig, write_cohort
        from discvbr.pipeline import PipelineConfig, run_pipeline
        from discvbr.pipeline.config import (
            FigureSettings,
            RegistrationSettings,
            StatisticsSettings,
        )

        ensure_slicer_dependencies("DiscStatistics", log=logging.info)
        self.delayDisplay("Running the pipeline on a 4-subject phantom cohort")
        out = Path(tempfile.mkdtemp(prefix="discvbr-selftest-"))
        manifest = write_cohort(out / "cohort", PhantomConfig(n_subjects=4, matrix=128, seed=5, followup_fraction=0.0), with_masks=True)
        config = PipelineConfig(
            registration=RegistrationSettings(iterations=20),
            statistics=StatisticsSettings(analyses=[], permutations=0, correction="fdr_bh_joint"),
            figures=FigureSettings(enabled=False),
        )
        run_pipeline(manifest.resolve(), out / "study", config=config)
        logic = DiscStatisticsLogic()
        node = logic.parameter_node()
        for key, value in {T.STUDY: str(out / "study"), T.NAME: "t1rho_vs_t2", T.KIND: "voxel", T.PERMUTATIONS: "0", T.CORRECTION: "fdr_bh_joint"}.items():
            node.SetParameter(key, value)
        self.assertIsNone(logic.disabled_reason(node))
        self.delayDisplay("T1rho vs T2 correlation, in a child process as Apply runs it")
        job = logic.start_analysis(node)
        self.assertEqual(job.wait(timeout=600), 0)
        output = logic.finish_analysis(job, node)
        self.assertEqual(logic.current_output(node).name, output.name)  # referenced from the parameter node
        r = image_from_volume(output.volumes["r"]).array
        self.assertTrue(np.nanmax(r) <= 1.0 and np.nanmin(r) >= -1.0)
        self.assertEqual(output.shown, "r")
        self.assertGreater(len(output.models.maps()), 0)
        self.delayDisplay("Test passed")
