"""The child-process side of the module jobs and the widget's job handling, without Slicer or Qt."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace


from discvbr.extension import jobs
from discvbr.extension.process import TERMINATE_GRACE_S, CommandProcess, Job, parse_line

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # DiscVBRLib lies beside the modules

from DiscVBRLib.widget import BackgroundJobWidgetMixin  # noqa: E402


class StubClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_reporter_lines_parse_and_heartbeat_counts_seconds_in_the_step():
    out, clock = io.StringIO(), StubClock()
    reporter = jobs.ProgressReporter(out, interval=1.0, clock=clock)
    reporter.report(0.25, "permutations")
    clock.now += 7.0
    reporter.beat()
    lines = [parse_line(line) for line in out.getvalue().splitlines()]
    assert [(e.kind, e.fraction) for e in lines] == [("progress", 0.25), ("progress", 0.25)]
    assert lines[0].text == "permutations" and lines[1].text == "permutations (7 s)"


def test_heartbeat_speaks_while_the_job_is_silent():
    """A step that reports nothing for 0.6 s still yields lines every 0.1 s (the GUI sees a live job)."""
    out = io.StringIO()
    with jobs.ProgressReporter(out, interval=0.1):
        time.sleep(0.6)
    lines = out.getvalue().splitlines()
    assert lines[0] == "PROGRESS 0.0000 starting"
    assert len(lines) >= 3 and all(parse_line(line).kind == "progress" for line in lines)


def test_job_errors_are_one_line_and_status_2(tmp_path):
    code = [sys.executable, "-m", "discvbr.extension.jobs", "statistics", str(tmp_path / "missing.json")]
    result = subprocess.run(code, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"discvbr: error: job request not found: {tmp_path / 'missing.json'}"
    request = tmp_path / "bad.json"
    request.write_text('{"study": "%s", "manifest": "x", "analysis": {}, "inference": {}}' % tmp_path)
    result = subprocess.run([*code[:-1], str(request)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "is not a study folder written by discvbr run" in result.stderr
    assert "Traceback" not in result.stderr


STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('PROGRESS 0.1 busy', flush=True); time.sleep(120)"


def _stubborn_job(tmp_path) -> Job:
    import tempfile

    process = CommandProcess([sys.executable, "-c", STUBBORN])
    job = Job(process, tempfile.TemporaryDirectory(dir=tmp_path), "stubborn")
    while not job.poll():  # wait for its first line: the SIGTERM handler is in place
        time.sleep(0.02)
    return job


def test_cancel_kills_a_child_that_ignores_terminate(tmp_path):
    job = _stubborn_job(tmp_path)
    job.cancel()
    assert job.process.returncode == -9 and job.process.cancelled  # it needed the kill
    assert not job.folder.exists()
    assert TERMINATE_GRACE_S <= 0.5  # so Cancel ends a job within a second


class FakeTimer:
    def __init__(self):
        self.active = False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


class ParentWidget:
    def onSceneStartClose(self, caller, event):
        self.parameter_node_released = True


class FakeJobWidget(BackgroundJobWidgetMixin, ParentWidget):
    """The mixin with stand-ins for the Qt widgets: two inputs, a progress bar, a log."""

    def __init__(self, clock):
        self._jobTimer = FakeTimer()
        self.inputs = (SimpleNamespace(enabled=True), SimpleNamespace(enabled=True))
        self.ui = SimpleNamespace(progressBar=SimpleNamespace(value=0, visible=False))
        self.log, self.finished, self.gui_updates = [], [], 0
        self._clock = clock

    @property
    def inputs_enabled(self):
        states = {widget.enabled for widget in self.inputs}
        assert len(states) == 1 and self.ui.progressBar.visible == (states == {False}), "inputs and progress bar disagree"
        return states == {True}

    def _jobClock(self):
        return self._clock()

    def jobInputWidgets(self):
        return self.inputs

    def addLog(self, text):
        self.log.append(text)

    def updateGUIFromParameterNode(self, caller=None, event=None):
        self.gui_updates += 1


class FakeProcess:
    def __init__(self):
        self.returncode = None
        self.signals = []

    def terminate(self):
        self.signals.append("TERM")

    def kill(self):
        self.signals.append("KILL")
        self.returncode = -9


class FakeJob:
    def __init__(self, events):
        self.name, self.fraction, self.process = "fake", 0.0, FakeProcess()
        self._events, self.running, self.closed = list(events), True, False

    def poll(self):
        events, self._events = self._events, []
        for e in events:
            if e.kind == "progress":
                self.fraction = e.fraction
        return events

    def close(self):
        self.closed = True


def test_widget_disables_inputs_while_a_job_runs_and_finishes_it_once():
    widget = FakeJobWidget(StubClock())
    job = FakeJob([parse_line("PROGRESS 0.5 half way"), parse_line("WARNING L1L2 small")])
    widget.startJob(job, widget.finished.append)
    assert widget.jobRunning and not widget.inputs_enabled and widget._jobTimer.active
    widget.onJobTimer()
    assert widget.ui.progressBar.value == 50 and widget.log[-2:] == ["half way", "warning: L1L2 small"]
    assert widget.finished == []
    job.running = False
    widget.onJobTimer()
    widget.onJobTimer()
    assert widget.finished == [job] and widget.inputs_enabled and not widget.jobRunning and not widget._jobTimer.active


def test_cancel_returns_at_once_and_the_timer_kills_after_the_grace_period():
    clock = StubClock()
    widget = FakeJobWidget(clock)
    job = FakeJob([])
    widget.startJob(job, widget.finished.append)
    widget.cancelJob()
    assert job.process.signals == ["TERM"] and widget.inputs_enabled and not widget.jobRunning
    widget.onJobTimer()  # still inside the grace period: no kill yet
    assert job.process.signals == ["TERM"] and widget._jobTimer.active
    clock.now += TERMINATE_GRACE_S
    widget.onJobTimer()
    assert job.process.signals == ["TERM", "KILL"] and job.closed and not widget._jobTimer.active
    assert widget.finished == []  # a cancelled job never reaches the scene


def test_closing_the_scene_cancels_the_job_before_the_parameter_node_goes():
    widget = FakeJobWidget(StubClock())
    job = FakeJob([])
    widget.startJob(job, widget.finished.append)
    widget.onSceneStartClose(None, None)
    assert job.process.signals == ["TERM"] and widget.parameter_node_released
    assert widget.finished == [] and "scene was closed" in widget.log[-1]
