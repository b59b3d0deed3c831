"""Benchmark: one spine-mesh figure off screen on the CPU (goal: under 2 s).

Times, for a 2D (one 8 mm slice, 256 x 256) and a 3D (6 x 4 mm slices) phantom atlas with a
T1rho map: building the spine mesh from the label map, building the scene, rendering
900 x 1000 pixels and writing the PNG, and the whole figure from labels to file. The
baseline, measured in the same run, is the same map as a flat matplotlib figure
(:func:`discvbr.render.figures.plot_voxel_correlation` saved as PNG at 150 dpi), so the
ratio says what the 3D figure costs over a 2D one.

Run: ``PYTHONPATH=. python benchmarks/bench_render.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from discvbr.io import Image
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
from discvbr.render.figures import plot_voxel_correlation, save_figure
from discvbr.render.mesh import spine_mesh
from discvbr.render.scene import build_scene, render_scene, render_spine_maps, write_png


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", default="900x1000")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    from importlib.metadata import version

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, VTK {version('vtk')}")
    out = Path(tempfile.mkdtemp(prefix="bench-render-"))
    # warm-up: first OpenGL context and shader compilation are one-off costs of a process
    warm = simulate_session(PhantomConfig(n_subjects=1, matrix=64), draw_subject(PhantomConfig(n_subjects=1, matrix=64), 0))
    render_spine_maps(warm.labels, Image(np.where(warm.labels.array > 0, 1.0, np.nan).astype(np.float32), warm.labels.affine), size=(200, 200))
    for mode in ("2d", "3d"):
        config = PhantomConfig(n_subjects=1, mode=mode, matrix=256, n_slices=6)
        session = simulate_session(config, draw_subject(config, 0))
        atlas = Image(session.truth.spine, session.labels.affine)
        t1 = Image(np.where(session.labels.array > 0, session.truth.t1rho, np.nan).astype(np.float32), session.labels.affine)
        t_mesh, mesh = _timed(lambda: spine_mesh(atlas), args.repeats)
        t_scene, scene = _timed(lambda: build_scene(atlas, t1, kind="T", mesh=mesh), args.repeats)
        t_render, figure = _timed(lambda: render_scene(scene, size=size), args.repeats)
        t_png, _ = _timed(lambda: write_png(out / f"{mode}.png", figure.image), args.repeats)
        t_total, _ = _timed(lambda: render_spine_maps(atlas, t1, kind="T", size=size, out=out / f"{mode}-full.png"), args.repeats)
        p = Image(np.where(np.isfinite(t1.array), 0.01, np.nan), t1.affine)
        t_base, _ = _timed(lambda: save_figure(plot_voxel_correlation(t1, p, r_range=(40, 140)), out / f"{mode}-mpl.png"), args.repeats)
        print(
            f"{mode}: atlas {atlas.shape}, {size[0]}x{size[1]} px, window {figure.window_class}, median of {args.repeats}\n"
            f"  mesh {t_mesh:.3f} s, scene {t_scene:.3f} s, render {t_render:.3f} s, png {t_png:.3f} s\n"
            f"  whole figure {t_total:.3f} s (goal < 2 s: {'met' if t_total < 2.0 else 'NOT met'}); "
            f"matplotlib baseline {t_base:.3f} s; ratio {t_total / t_base:.2f}"
        )


if __name__ == "__main__":
    main()
