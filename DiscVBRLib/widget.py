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

__all__ = ["ParameterNodeWidgetMixin", "BackgroundJobWidgetMixin"]


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


class BackgroundJobWidgetMixin:
    """Runs a module logic's :class:`~discvbr.extension.process.Job` from a widget without blocking it.

    While a job runs the widget's inputs are disabled (``setInputsEnabled(False)``), a timer
    polls the job and passes its progress to ``showJobProgress(fraction, text)``; when it
    ends, the ``finish`` given to :meth:`startJob` receives it. Cancel (:meth:`cancelJob`)
    asks the child process to stop and returns at once; the timer kills it if it is still
    alive after the job's grace period (so it is gone within a second) and deletes its files.
    Closing the scene cancels the job: nothing is loaded into the next scene.

    The widget provides ``self._jobTimer`` (a ``qt.QTimer`` whose ``timeout`` calls
    :meth:`onJobTimer`), ``jobInputWidgets()`` (the widgets to disable while a job runs),
    ``self.ui.progressBar``, ``addLog`` and ``updateGUIFromParameterNode``. No Qt and no
    ``slicer`` import here: the tests drive it with stand-ins and a stub clock.
    """

    _job = None
    _jobFinish = None
    _stoppingJobs = ()

    @staticmethod
    def _jobClock() -> float:
        import time

        return time.monotonic()

    @property
    def jobRunning(self) -> bool:
        return self._job is not None

    def setInputsEnabled(self, enabled: bool) -> None:
        """Enable or disable the widget's inputs; the progress bar shows while they are disabled."""
        for widget in self.jobInputWidgets():
            widget.enabled = enabled
        self.ui.progressBar.visible = not enabled

    def showJobProgress(self, fraction: float, text: str) -> None:
        """Show a job's progress (0-1) on the progress bar and its step in the log."""
        self.ui.progressBar.value = int(100 * fraction)
        if text:
            self.addLog(text)

    def startJob(self, job, finish) -> None:
        """Watch a started job; ``finish(job)`` runs once it has ended by itself."""
        self._job, self._jobFinish = job, finish
        self.setInputsEnabled(False)
        self.showJobProgress(0.0, f"{job.name}: running in a separate process")
        self._jobTimer.start()
        self.updateGUIFromParameterNode()

    def onJobTimer(self) -> None:
        self._reapStoppingJobs()
        job = self._job
        if job is not None:
            for event in job.poll():
                if event.kind == "progress":
                    self.showJobProgress(job.fraction, event.text)
                elif event.kind == "warning":
                    self.addLog(f"warning: {event.text}")
                elif event.kind == "error":
                    self.addLog(f"error: {event.text}")
            if not job.running:
                finish = self._releaseJob()
                finish(job)
        if self._job is None and not self._stoppingJobs:
            self._jobTimer.stop()

    def cancelJob(self, reason: str = "cancelled") -> None:
        """Stop the running job without waiting for it; nothing it computed reaches the scene."""
        job = self._job
        if job is None:
            return
        self._releaseJob()
        job.process.terminate()
        self._stoppingJobs = (*self._stoppingJobs, (job, self._jobClock()))
        self.addLog(f"{job.name}: {reason}; nothing was added to the scene")
        self._jobTimer.start()

    def _reapStoppingJobs(self) -> None:
        from discvbr.extension.process import TERMINATE_GRACE_S

        still = []
        for job, since in self._stoppingJobs:
            if job.process.returncode is None and self._jobClock() - since >= TERMINATE_GRACE_S:
                job.process.kill()
            if job.process.returncode is None:
                still.append((job, since))
            else:
                job.close()
        self._stoppingJobs = tuple(still)

    def _releaseJob(self):
        finish = self._jobFinish
        self._job = self._jobFinish = None
        self.setInputsEnabled(True)
        self.updateGUIFromParameterNode()
        return finish

    def onSceneStartClose(self, caller, event):
        self.cancelJob("cancelled because the scene was closed")
        super().onSceneStartClose(caller, event)

    def cleanup(self):
        self.cancelJob("cancelled because the module was closed")
        for job, _ in self._stoppingJobs:
            job.process.kill()
            job.close()
        self._stoppingJobs = ()
