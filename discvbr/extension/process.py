"""``discvbr`` commands as child processes: progress lines in, cancel out.

Heavy work the GUI must not wait on (network inference, registration and fitting,
permutation statistics, a whole pipeline run) runs as ``python -m discvbr <command>`` or
``python -m discvbr.extension.jobs <kind> <request>`` in its own process. The commands print machine-readable
lines (``PROGRESS <fraction> <text>``, ``WARNING <text>``, ``RESULT <path>``; see
``discvbr segment --help``) and one ``discvbr: error: <message>`` line for bad input.
:class:`CommandProcess` reads them on background threads; the GUI polls it from a timer
(:meth:`CommandProcess.poll` never blocks) and kills it on Cancel, the tests and scripts
simply wait. :class:`Job` is what a module logic's ``start`` returns: the process, its
scratch folder and the latest progress.
"""

from __future__ import annotations

import os
import queue
import tempfile
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["ProcessEvent", "parse_line", "CommandProcess", "Job", "python_executable", "discvbr_command", "job_command", "discvbr_environment"]

#: Seconds a cancelled process gets to stop before it is killed (Cancel ends a job within 1 s).
TERMINATE_GRACE_S = 0.5


@dataclass(frozen=True)
class ProcessEvent:
    """One line of a command's output.

    Attributes
    ----------
    kind : {"progress", "warning", "result", "error", "log"}
    text : str
        The message (for ``"result"``: the path).
    fraction : float or None
        Progress 0..1 of ``"progress"`` events.
    """

    kind: str
    text: str
    fraction: float | None = None


def parse_line(line: str, *, stream: str = "stdout") -> ProcessEvent:
    """Classify one output line of a ``discvbr`` command."""
    text = line.rstrip("\r\n")
    head, _, rest = text.partition(" ")
    if stream == "stdout" and head == "PROGRESS":
        value, _, what = rest.partition(" ")
        try:
            return ProcessEvent("progress", what, min(max(float(value), 0.0), 1.0))
        except ValueError:
            return ProcessEvent("log", text)
    if stream == "stdout" and head == "WARNING":
        return ProcessEvent("warning", rest)
    if stream == "stdout" and head == "RESULT":
        return ProcessEvent("result", rest)
    if text.startswith("discvbr: error:"):
        return ProcessEvent("error", text.removeprefix("discvbr: error:").strip())
    return ProcessEvent("log", text)


def python_executable() -> str:
    """The Python to run commands with: ``PythonSlicer`` inside 3D Slicer, else this interpreter."""
    if "slicer" in sys.modules and hasattr(sys.modules["slicer"], "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def discvbr_environment() -> dict[str, str]:
    """This process's environment with the folder holding the ``discvbr`` package first on PYTHONPATH.

    Inside Slicer the package lies in the extension's scripted-modules folder, which a new
    Python process would not search otherwise.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def discvbr_command(*args: str, python: str | None = None) -> list[str]:
    """``[python, "-m", "discvbr", *args]``."""
    return [python or python_executable(), "-m", "discvbr", *[str(a) for a in args]]


def job_command(kind: str, request: str | os.PathLike, *, python: str | None = None) -> list[str]:
    """``[python, "-m", "discvbr.extension.jobs", kind, request]``: a module's job in a child process."""
    return [python or python_executable(), "-m", "discvbr.extension.jobs", kind, str(request)]


class CommandProcess:
    """A running command whose output lines arrive as :class:`ProcessEvent` s.

    Parameters
    ----------
    args : sequence of str
        The command line.
    env : dict, optional
        Environment (default :func:`discvbr_environment`).
    cwd : path-like, optional
    """

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.args = [str(a) for a in args]
        self._events: queue.Queue[ProcessEvent] = queue.Queue()
        self.error: str | None = None
        self.result: Path | None = None
        self.warnings: list[str] = []
        self.cancelled = False
        options: dict = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        self._process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=env if env is not None else discvbr_environment(),
            cwd=cwd,
            **options,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self._process.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self._process.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, name: str) -> None:
        for line in stream:
            event = parse_line(line, stream=name)
            if event.kind == "error":
                self.error = event.text
            elif event.kind == "result":
                self.result = Path(event.text)
            elif event.kind == "warning":
                self.warnings.append(event.text)
            self._events.put(event)
        stream.close()

    @property
    def running(self) -> bool:
        """True until the process has exited and all its output has been read."""
        return self._process.poll() is None or any(r.is_alive() for r in self._readers)

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def poll(self) -> list[ProcessEvent]:
        """The events that arrived since the last call (never blocks)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process and its output; returns the exit status.

        Raises
        ------
        subprocess.TimeoutExpired
            When it is still running after ``timeout`` seconds.
        """
        code = self._process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=None if timeout is None else max(timeout, 1.0))
        return code

    def terminate(self) -> None:
        """Ask the process (and its children) to stop (SIGTERM), without waiting: what a GUI's Cancel calls."""
        if self._process.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            self._process.terminate()
        else:
            os.killpg(self._process.pid, signal.SIGTERM)

    def kill(self) -> None:
        """Kill the process (and its children) if it is still alive, without waiting."""
        if self._process.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            self._process.kill()
        else:
            os.killpg(self._process.pid, signal.SIGKILL)

    def cancel(self, *, grace: float = TERMINATE_GRACE_S) -> None:
        """Stop the process and wait for it: terminate, then kill after ``grace`` seconds."""
        self.terminate()
        deadline = time.monotonic() + grace
        while self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill()
        self._process.wait()


class Job:
    """A module's computation running in its own process: poll it, cancel it, or let it finish.

    Parameters
    ----------
    process : CommandProcess
    workdir : tempfile.TemporaryDirectory
        The job's scratch folder (inputs handed to the process, its results); deleted by
        :meth:`close` and :meth:`cancel`.
    name : str
        What the job works on, for messages (the input volume, the analysis).

    Attributes
    ----------
    fraction : float
        Progress 0..1 of the last progress line.
    text : str
        Text of the last progress line.
    """

    def __init__(self, process: CommandProcess, workdir: tempfile.TemporaryDirectory, name: str):
        self.process = process
        self.workdir = workdir
        self.name = name
        self.fraction = 0.0
        self.text = ""

    @property
    def folder(self) -> Path:
        return Path(self.workdir.name)

    @property
    def running(self) -> bool:
        return self.process.running

    def poll(self) -> list[ProcessEvent]:
        """New output lines (progress lines update :attr:`fraction` and :attr:`text`); never blocks."""
        events = self.process.poll()
        for event in events:
            if event.kind == "progress" and event.fraction is not None:
                self.fraction, self.text = event.fraction, event.text
        return events

    def cancel(self) -> None:
        """Stop the process (killed after :data:`TERMINATE_GRACE_S`) and delete its files."""
        self.process.cancel()
        self.close()

    def close(self) -> None:
        """Delete the job's scratch folder."""
        self.workdir.cleanup()

    def wait(self, *, progress=None, timeout: float | None = None) -> int:
        """Wait for the process (scripts, tests, self-tests), passing progress lines on.

        Parameters
        ----------
        progress : callable, optional
            ``progress(fraction, text)`` for every progress line.
        timeout : float, optional
            Seconds; the job is cancelled and :class:`~discvbr.errors.DiscVBRError` raised after it.

        Returns
        -------
        int
            The exit status.
        """
        from discvbr.errors import DiscVBRError

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            for event in self.poll():
                if event.kind == "progress" and progress is not None:
                    progress(self.fraction, event.text)
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise DiscVBRError(f"{self.name} took longer than {timeout:g} s and was stopped")
            time.sleep(0.05)
        code = self.process.wait()
        for event in self.poll():
            if event.kind == "progress" and progress is not None:
                progress(self.fraction, event.text)
        return code

    def result_path(self, what: str) -> Path:
        """The result the process announced, after it finished.

        Raises
        ------
        DiscVBRError
            Cancelled, or the process's error message, or an exit without a result.
        """
        from discvbr.errors import DiscVBRError

        code = self.process.wait()
        self.poll()
        if self.process.cancelled:
            raise DiscVBRError(f"{what} cancelled")
        if code != 0 or self.process.result is None:
            raise DiscVBRError(self.process.error or f"the {what} process stopped with status {code}")
        return self.process.result
