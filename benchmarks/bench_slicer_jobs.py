"""Benchmark: how long the DiscStatistics module keeps Slicer busy, before and after the child-process jobs.

On a phantom study (``--subjects`` subjects, 2D, built here with the scene demo's ``make_study``),
one analysis with ``--permutations`` permutations and TFCE (the module's defaults) is

* run in this process (``DiscStatisticsLogic.run_analysis``, what the module's Apply did
  before: the GUI is frozen for the whole run), timed as the baseline;
* started as a job (``start_analysis``): the time until control returns, the largest gap
  between two progress lines while it runs, and after ``--cancel-after`` seconds the time
  ``Job.cancel`` takes until the child process is gone.

Prints one JSON line per measurement and the ratio baseline / time-to-return.

Run: ``PYTHONPATH=. python benchmarks/bench_slicer_jobs.py [--subjects 12] [--permutations 1000] [--cancel-after 4]``
(needs slicer-core, in the test extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _make_study(out: Path, subjects: int):
    spec = importlib.util.spec_from_file_location("slicer_scene_demo", REPO / "scripts" / "slicer_scene_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_study(out, subjects=subjects, seed=4, iterations=10)


def main() -> None:
    from discvbr.extension import statistics as T
    from discvbr.extension.statistics import DiscStatisticsLogic
    from discvbr.mrml.scene import new_scene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--cancel-after", type=float, default=4.0, help="seconds the job runs before Cancel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="discvbr-bench-jobs-") as folder:
        manifest, study = _make_study(Path(folder), args.subjects)

        def logic_for(name):
            logic = DiscStatisticsLogic(new_scene())
            node = logic.parameter_node()
            for key, value in {T.STUDY: str(study), T.NAME: name, T.PERMUTATIONS: str(args.permutations),
                               T.TFCE: "true", T.CORRECTION: "fwe_tfce_joint"}.items():
                node.SetParameter(key, value)
            return logic, node

        logic, node = logic_for("bench_inline")
        start = time.monotonic()
        logic.run_analysis(node)
        inline_s = time.monotonic() - start
        print(json.dumps({"what": "in-process analysis (GUI blocked)", "subjects": args.subjects, "permutations": args.permutations,
                          "seconds": round(inline_s, 3)}))

        logic, node = logic_for("bench_job")
        start = time.monotonic()
        job = logic.start_analysis(node)
        returned_s = time.monotonic() - start
        seen = []
        while job.running and time.monotonic() - start < args.cancel_after:
            seen += [time.monotonic() for e in job.poll() if e.kind == "progress"]
            time.sleep(0.02)
        gaps = np.diff([start, *seen])
        running = job.running
        cancel_start = time.monotonic()
        job.cancel()
        cancel_s = time.monotonic() - cancel_start
        print(json.dumps({
            "what": "analysis job", "permutations": args.permutations, "control_back_s": round(returned_s, 3),
            "progress_lines": len(seen), "largest_progress_gap_s": round(float(gaps.max()), 2),
            "still_running_at_cancel": running, "cancel_to_exit_s": round(cancel_s, 3),
            "gui_blocked_ratio": round(inline_s / returned_s, 1),
        }))


if __name__ == "__main__":
    main()
