"""``discvbr`` commands as child processes: progress lines in, cancel out.

Heavy work the GUI must not wait on (network inference, a whole pipeline run) runs as
``python -m discvbr <command>`` in its own process. The commands print machine-readable
lines (``PROGRESS <fraction> <text>``, ``WARNING <text>``, ``RESULT <path>``; see
``discvbr segment --help``) and one ``discvbr: error: <message>`` line for bad input.
:class:`CommandProcess` reads them on background threads; the GUI polls it from a timer
(:meth:`CommandProcess.poll` never blocks) and kills it on Cancel, the tests and scripts
simply wait.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["ProcessEvent", "parse_line", "CommandProcess", "python_executable", "discvbr_command", "discvbr_environment"]

#: Seconds a cancelled process gets to stop before it is killed.
TERMINATE_GRACE_S = 3.0


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

    def cancel(self) -> None:
        """Stop the process (and its children): terminate, then kill after a grace period."""
        if self._process.poll() is not None:
            return
        self.cancelled = True
        if os.name == "nt":
            self._process.terminate()
        else:
            os.killpg(self._process.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_S
        while self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._process.poll() is None:
            if os.name == "nt":
                self._process.kill()
            else:
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
