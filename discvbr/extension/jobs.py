"""The child-process side of the modules' jobs: ``python -m discvbr.extension.jobs <kind> <request>``.

A module logic's ``start`` writes the job's request into a scratch folder and runs this
module on it in a new process (:class:`discvbr.extension.process.Job`), so the Slicer GUI
never waits for registration, fitting or permutations. The job speaks the line protocol of
the ``discvbr`` commands (:func:`discvbr.extension.process.parse_line`):

* ``PROGRESS <fraction> <text>`` at every step of the logic, and repeated by a heartbeat at
  least every :data:`HEARTBEAT_S` seconds while a long step (permutations) runs, with the
  seconds spent in it, so the GUI can tell a busy job from a hung one;
* ``RESULT <path>`` once, the file the parent loads into the scene;
* ``discvbr: error: <message>`` and exit status 2 for bad input (a DiscVBRError).

Kinds: ``statistics`` (request: JSON of
:meth:`discvbr.extension.statistics.DiscStatisticsLogic.analysis_request`) and ``relaxometry``
(request: the pickled inputs of :meth:`discvbr.extension.relaxometry.DiscRelaxometryLogic.prepare`).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from discvbr.errors import DiscVBRError

__all__ = ["HEARTBEAT_S", "ProgressReporter", "run_job", "main"]

#: Longest silence between two progress lines of a running job, seconds.
HEARTBEAT_S = 1.0


class ProgressReporter:
    """Prints ``PROGRESS`` lines: each step at once, the current step again every ``interval`` s.

    Parameters
    ----------
    stream : text stream
        Where the lines go (the job's stdout).
    interval : float
        Seconds between heartbeat lines while no step is reported.
    clock : callable
        Monotonic seconds (``time.monotonic``); the tests give a stub.

    Use as a context manager: the heartbeat thread runs inside the ``with`` block.
    """

    def __init__(self, stream: TextIO, *, interval: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.interval = float(interval)
        self.clock = clock
        self._lock = threading.Lock()
        self._fraction, self._text, self._since = 0.0, "starting", clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> "ProgressReporter":
        self.report(0.0, "starting")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join()
        return False

    def report(self, fraction: float, text: str) -> None:
        """A new step: ``fraction`` 0..1 of the whole job, ``text`` what it does."""
        with self._lock:
            self._fraction, self._text, self._since = float(fraction), str(text), self.clock()
            self._write(f"PROGRESS {self._fraction:.4f} {self._text}")

    def beat(self) -> None:
        """Repeat the current step with the seconds spent in it (what the heartbeat thread calls)."""
        with self._lock:
            self._write(f"PROGRESS {self._fraction:.4f} {self._text} ({self.clock() - self._since:.0f} s)")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def _write(self, line: str) -> None:
        self.stream.write(line.replace("\n", " ") + "\n")
        self.stream.flush()


def _statistics(request: Path, progress) -> Path:
    import json

    from discvbr.extension.statistics import run_analysis_request

    return run_analysis_request(json.loads(request.read_text()), progress=progress)


def _relaxometry(request: Path, progress) -> Path:
    from discvbr.extension.relaxometry import run_relaxometry_request

    return run_relaxometry_request(request, progress=progress)


#: Job kinds and what runs them: ``runner(request_file, progress) -> result file``.
RUNNERS = {"statistics": _statistics, "relaxometry": _relaxometry}


def run_job(kind: str, request: str | Path, *, stream: TextIO, interval: float = HEARTBEAT_S) -> Path:
    """Run one job with progress lines on ``stream``; returns the result file.

    Raises
    ------
    DiscVBRError
        Unknown kind, missing request file, or the job's own error.
    """
    if kind not in RUNNERS:
        raise DiscVBRError(f"unknown job kind {kind!r}; expected one of {', '.join(RUNNERS)}")
    request = Path(request)
    if not request.is_file():
        raise DiscVBRError(f"job request not found: {request}")
    with ProgressReporter(stream, interval=interval) as reporter:
        result = RUNNERS[kind](request, reporter.report)
        reporter.report(1.0, "done")
    return Path(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m discvbr.extension.jobs", description="Run a DiscVBR module job (child process).")
    parser.add_argument("kind", choices=sorted(RUNNERS))
    parser.add_argument("request", type=Path)
    args = parser.parse_args(argv)
    try:
        result = run_job(args.kind, args.request, stream=sys.stdout)
    except DiscVBRError as exc:
        print(f"discvbr: error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"RESULT {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
