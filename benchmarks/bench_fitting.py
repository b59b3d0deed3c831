"""Benchmark: discvbr.fitting.fit_monoexp against a scipy curve_fit loop, same data, one run.

Simulates voxels with T uniform in 40-200 ms, S0 = 1000 and Rician noise (SNR = S0 / sigma),
then times

* the baseline most users run: ``scipy.optimize.curve_fit`` (Levenberg-Marquardt) voxel by
  voxel in a Python loop, on a subset, reported per fit;
* ``fit_monoexp``: numpy on all CPU threads and on one, the log-linear preview, torch on the
  CPU, and torch on CUDA when a GPU is present;
* ``fit_monoexp_tensor`` on a series already in device memory (CPU, and CUDA when present):
  the fit alone, without the host-side screening and the copies to and from the GPU, which
  bound ``fit_monoexp`` on CUDA (for the GPU goal run with ``--voxels 134217728`` or so);

and prints fits per second, the speed-up over the curve_fit loop, the agreement with
curve_fit on the subset, and the machine. Wall-clock times are best of ``--repeats``;
CPU seconds per million fits (user + system, all threads) are printed too, because on a
shared machine the wall clock also counts other processes' time.

Optionally (``--volume``) fits one 512x512x64 series of 8 echoes (0.5 GB of float32) and
reports its time and the memory the fit adds at its peak (Linux); ``--profile`` prints a
line-by-line profile of the numpy engine on one thread (needs ``line_profiler``, in the
``bench`` extra).

Run: ``PYTHONPATH=. python benchmarks/bench_fitting.py [--voxels N] [--echoes 4 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from discvbr.fitting import fit_monoexp, fit_monoexp_tensor

TIMES = {
    4: np.array([0.0, 10.0, 40.0, 80.0]),
    8: np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]),
}


def simulate(n: int, times: np.ndarray, snr: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rician magnitudes (n, E) as float32, and the true T (ms)."""
    rng = np.random.default_rng(seed)
    T = rng.uniform(40.0, 200.0, n)
    sigma = 1000.0 / snr
    y = np.empty((n, times.size), np.float32)
    step = 1 << 20
    for start in range(0, n, step):
        nu = 1000.0 * np.exp(-times[None, :] / T[start : start + step, None])
        y[start : start + step] = np.hypot(nu + rng.normal(size=nu.shape) * sigma, rng.normal(size=nu.shape) * sigma)
    return y, T


def monoexp(t, s0, T):
    return s0 * np.exp(-t / T)


def curve_fit_loop(y: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The baseline: one scipy curve_fit (method 'lm', float64) per voxel."""
    out = np.empty(len(y))
    for i, yy in enumerate(y.astype(np.float64)):
        out[i] = curve_fit(monoexp, times, yy, p0=(yy[0], 100.0), method="lm")[0][1]
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function, repeats: int) -> tuple[float, float, object]:
    """Best wall time and the CPU time of that run."""
    best = (np.inf, np.inf, None)
    for _ in range(repeats):
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        result = function()
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        if wall < best[0]:
            best = (wall, cpu, result)
    return best


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MB; NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak_memory() -> None:
    """Reset the peak resident memory (VmHWM) of this process (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def engines(have_torch: bool, have_cuda: bool) -> dict:
    # backend named: "auto" is torch on CUDA where a GPU is present.
    configs = {
        "numpy lm, all threads": {"backend": "numpy"},
        "numpy lm, 1 thread": {"backend": "numpy", "n_threads": 1},
        "numpy loglinear, all threads": {"backend": "numpy", "method": "loglinear"},
        "numpy lm float64, all threads": {"backend": "numpy", "dtype": "float64"},
    }
    if have_torch:
        configs["torch lm, CPU"] = {"backend": "torch", "device": "cpu"}
    if have_cuda:
        configs["torch lm, CUDA"] = {"backend": "torch", "device": "cuda"}
    return configs


def resident_run(y: np.ndarray, times: np.ndarray, device: str, repeats: int) -> dict:
    """``fit_monoexp_tensor`` on a series already on ``device``: the fit without host copies.

    The copy to the device is not timed; on CUDA the clock stops after a synchronisation.
    Returns fits/s (best of ``repeats``), the valid fraction and T on the host.
    """
    import torch

    signal = torch.from_numpy(y).to(device)
    sync = torch.cuda.synchronize if signal.device.type == "cuda" else (lambda: None)
    fit_monoexp_tensor(signal[:4096], times)  # warm-up (kernels, CUDA context)
    best = np.inf
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fit_monoexp_tensor(signal, times)
        sync()
        best = min(best, time.perf_counter() - start)
    return {"fits_per_s": y.shape[0] / best, "valid": float(result.valid.float().mean()), "T": result.T.cpu().numpy()}


def profile(args) -> None:
    """Line-level profile (line_profiler) of the numpy engine, one thread, 8 echoes."""
    from line_profiler import LineProfiler

    from discvbr.fitting import core, kernel, numpy_backend

    y, _ = simulate(min(args.voxels, 1 << 19), TIMES[8], args.snr, args.seed)
    profiler = LineProfiler()
    for function in (
        kernel.fit_block,
        kernel.loglinear_start,
        kernel.levenberg_marquardt,
        numpy_backend.NumpyOps.evaluate,
        numpy_backend.NumpyOps.loglinear_sums,
        core._screen,
    ):
        profiler.add_function(function)
    profiler(fit_monoexp)(y, TIMES[8], n_threads=1)
    print("\nline profile of the numpy engine (1 thread, 8 echoes):")
    profiler.print_stats(output_unit=1e-3, stripzeros=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=1 << 21, help="voxels fitted by the engine (default 2 Mi)")
    parser.add_argument("--baseline-voxels", type=int, default=2000, help="voxels fitted by the curve_fit loop")
    parser.add_argument("--echoes", type=int, nargs="+", default=[4, 8], choices=sorted(TIMES))
    parser.add_argument("--snr", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--volume", action="store_true", help="also fit one 512x512x64x8 series")
    parser.add_argument("--profile", action="store_true", help="line-by-line profile of the numpy engine")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    try:
        import torch

        have_torch, have_cuda = True, torch.cuda.is_available()
    except ImportError:
        have_torch = have_cuda = False
    info = machine()
    print("machine:", json.dumps(info))
    print(f"voxels: {args.voxels} (engine), {args.baseline_voxels} (curve_fit loop); SNR {args.snr:g}; "
          "times are best of", args.repeats)
    results = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}

    for n_echoes in args.echoes:
        times = TIMES[n_echoes]
        y, _ = simulate(args.voxels, times, args.snr, args.seed + n_echoes)
        subset = y[: args.baseline_voxels]
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        reference = curve_fit_loop(subset, times)
        base_wall, base_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        base_rate = len(subset) / base_wall
        print(f"\n{n_echoes} echoes, times {times.tolist()} ms")
        print(f"  {'scipy curve_fit loop (baseline)':34s} {base_rate:14,.0f} fits/s   "
              f"{1e6 * base_cpu / len(subset):10.2f} CPU-s/M fits   1x")
        results["runs"].append({"echoes": n_echoes, "engine": "curve_fit loop", "fits_per_s": base_rate,
                                "cpu_s_per_mfit": 1e6 * base_cpu / len(subset)})
        for name, options in engines(have_torch, have_cuda).items():
            fit_monoexp(y[:4096], times, **options)  # warm-up (imports, CUDA context)
            wall, cpu, result = timed(lambda: fit_monoexp(y, times, **options), args.repeats)
            rate = args.voxels / wall
            diff = np.abs(result.T[: len(subset)] - reference)
            print(f"  {name:34s} {rate:14,.0f} fits/s   {1e6 * cpu / args.voxels:10.2f} CPU-s/M fits   "
                  f"{rate / base_rate:7,.0f}x   |T - curve_fit| median {np.nanmedian(diff):.1e} ms, "
                  f"max {np.nanmax(diff):.1e} ms, valid {result.valid.mean():.4f}")
            results["runs"].append({"echoes": n_echoes, "engine": name, "fits_per_s": rate,
                                    "cpu_s_per_mfit": 1e6 * cpu / args.voxels, "speedup": rate / base_rate,
                                    "median_abs_diff_ms": float(np.nanmedian(diff))})
        for device in (["cpu"] if have_torch else []) + (["cuda"] if have_cuda else []):
            run = resident_run(y, times, device, args.repeats)
            diff = np.abs(run.pop("T")[: len(subset)] - reference)
            print(f"  {'torch lm, data on ' + device + ' (resident)':34s} {run['fits_per_s']:14,.0f} fits/s   "
                  f"{'':>10s}               {run['fits_per_s'] / base_rate:7,.0f}x   |T - curve_fit| median "
                  f"{np.nanmedian(diff):.1e} ms, max {np.nanmax(diff):.1e} ms, valid {run['valid']:.4f}")
            results["runs"].append({"echoes": n_echoes, "engine": f"torch lm resident, {device}", **run,
                                    "speedup": run["fits_per_s"] / base_rate, "median_abs_diff_ms": float(np.nanmedian(diff))})
        del y

    if args.volume:
        shape = (512, 512, 64)
        series = np.empty(shape + (8,), np.float32)
        flat = series.reshape(-1, 8)
        step = 1 << 22
        for start in range(0, flat.shape[0], step):
            flat[start : start + step] = simulate(min(step, flat.shape[0] - start), TIMES[8], args.snr, start)[0]
        rss_before = memory_mb("VmRSS")
        reset_peak_memory()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        result = fit_monoexp(series, TIMES[8])
        wall = time.perf_counter() - wall0
        extra = memory_mb("VmHWM") - rss_before
        maps = sum(getattr(result, name).nbytes for name in ("T", "S0", "r2", "T_sd", "status")) / 1e6
        print(f"\n512x512x64x8 series ({series.nbytes / 1e6:,.0f} MB float32): {wall:.2f} s, "
              f"{series.shape[0] * series.shape[1] * series.shape[2] / wall:,.0f} fits/s; memory added by "
              f"the fit at its peak {extra:,.0f} MB, of which {maps:,.0f} MB are the five maps; "
              f"valid {result.valid.mean():.4f}")
        results["volume"] = {"seconds": wall, "peak_extra_mb": extra, "maps_mb": maps, "cpu_s": cpu_seconds() - cpu0}

    if args.profile:
        profile(args)

    print("\nload average at the end:", os.getloadavg() if hasattr(os, "getloadavg") else None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
