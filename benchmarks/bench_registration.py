"""Seconds per disc of the per-disc registration, 2D and 3D, serial and in parallel processes.

Baselines measured in the same run:
* serial (one process) for the parallel runs: the ratio is the speed-up over ``--jobs``;
* the same affine + B-spline registration with mutual information only (no
  TransformRigidityPenalty): the ratio shows what the rigidity penalty costs.

Discs come from phantom subjects (default 256 x 256 over 240 mm; 3D: 6 slices of 4 mm)
registered to the shipped healthy phantom atlas with the paper's parameters.

    PYTHONPATH=. python benchmarks/bench_registration.py --subjects 2 --discs-3d 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def _machine() -> dict:
    import itk
    import scipy

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "itk": itk.__version__,
    }


def _tasks(mode: str, subjects: int, discs: int, seed: int):
    from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
    from discvbr.registration import DiscTask, load_atlas

    atlas = load_atlas("phantom-healthy", mode=mode)
    config = PhantomConfig(n_subjects=subjects, mode=mode, seed=seed)
    tasks = []
    for index in range(subjects):
        session = simulate_session(config, draw_subject(config, index))
        labels = [int(v) for v in np.unique(session.labels.array) if v > 0][:discs]
        tasks += [DiscTask(session.labels, v, atlas, f"sub-{index + 1:02d}") for v in labels]
    return tasks


def _time_tasks(tasks, jobs: int) -> tuple[float, list]:
    from discvbr.registration import run_disc_tasks

    start = time.perf_counter()
    results = run_disc_tasks(tasks, jobs=jobs)
    return time.perf_counter() - start, results


def _time_mi_only(tasks) -> float:
    """Serial seconds for the same discs without the rigidity penalty (mutual information only)."""
    from discvbr.io import Image
    from discvbr.registration import build_parameter_maps
    from discvbr.registration.crop import bounding_box, crop
    from discvbr.registration.disc import disc_mask
    from discvbr.registration.engine import registration_ndim, run_elastix

    start = time.perf_counter()
    for task in tasks:
        ndim = registration_ndim(task.mask.shape)
        fixed = task.atlas.disc(task.label, margin_mm=task.margin_mm)
        binary = disc_mask(task.mask, task.label, subject=task.subject)
        moving = crop(Image(binary.astype(np.float32), task.mask.affine), bounding_box(binary, task.mask.spacing, margin_mm=task.margin_mm))
        shape = fixed.shape[1:] if ndim == 2 else fixed.shape
        spacing = fixed.spacing[1:] if ndim == 2 else fixed.spacing
        affine_map, bspline_map = build_parameter_maps(task.params, ndim=ndim, spacing=spacing, shape=shape)
        bspline_map = dict(bspline_map, Registration=("MultiResolutionRegistration",), Metric=("AdvancedMattesMutualInformation",))
        bspline_map.pop("Metric0Weight", None)
        bspline_map.pop("Metric1Weight", None)
        run_elastix(fixed.array, fixed.affine, moving.array, moving.affine, [affine_map, bspline_map], ndim=ndim)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=2, help="2D phantom subjects (5 discs each)")
    parser.add_argument("--discs-3d", type=int, default=2, help="3D discs (from one phantom subject)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for the parallel runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    from discvbr.registration.engine import load_itk

    load_itk()  # the wrapping loads once, before timing and before forking workers
    machine = _machine()
    print("machine:", json.dumps(machine))
    rows = []
    for mode, subjects, discs in (("2d", args.subjects, 5), ("3d", 1, args.discs_3d)):
        if subjects < 1 or discs < 1:
            continue
        tasks = _tasks(mode, subjects, discs, args.seed)
        serial, results = _time_tasks(tasks, jobs=1)
        parallel, _ = _time_tasks(tasks, jobs=args.jobs)
        mi_only = _time_mi_only(tasks)
        ok = [r for r in results if hasattr(r, "qc")]
        row = {
            "mode": mode,
            "discs": len(tasks),
            "failed": len(tasks) - len(ok),
            "serial_s_per_disc": serial / len(tasks),
            f"parallel_{args.jobs}_s_per_disc": parallel / len(tasks),
            "speedup_parallel_vs_serial": serial / parallel,
            "mi_only_s_per_disc": mi_only / len(tasks),
            "rigidity_penalty_cost_ratio": serial / mi_only,
            "mean_dice": float(np.mean([r.qc.dice for r in ok])) if ok else float("nan"),
            "mean_det_jacobian_sd": float(np.mean([r.qc.det_jacobian_sd for r in ok])) if ok else float("nan"),
        }
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
    machine["load_average_1min_at_end"] = os.getloadavg()[0]
    print(f"load average (1 min) at start {machine['load_average_1min_at_start']:.2f}, at end {machine['load_average_1min_at_end']:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "results": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
