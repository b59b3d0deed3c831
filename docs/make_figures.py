"""Regenerate the README's figures and the extension icon: ``python docs/make_figures.py``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from discvbr.levels import DISC_COLOURS, DISC_LEVELS  # noqa: E402
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sagittal(array2d: np.ndarray) -> np.ndarray:
    """(AP, SI) slice -> display orientation: superior up, anterior right."""
    return array2d.T[::-1]


def phantom_example(path: Path) -> None:
    config = PhantomConfig(n_subjects=1, seed=1)
    spec = draw_subject(config, 0)
    session = simulate_session(config, spec)
    first = sagittal(session.t1rho.data[0, :, :, 0])
    labels = sagittal(session.labels.array[0])
    t1rho = np.where(labels > 0, sagittal(session.truth.t1rho[0]), np.nan)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    axes[0].imshow(first, cmap="gray")
    axes[0].set_title("T1rho-weighted, TSL 0 ms")
    axes[1].imshow(first, cmap="gray")
    for label, level in enumerate(DISC_LEVELS, start=1):
        axes[1].contour(labels == label, levels=[0.5], colors=[DISC_COLOURS[level]], linewidths=1.2)
        zy = np.argwhere(labels == label).mean(axis=0)
        axes[1].text(zy[1] + 28, zy[0], level, color=DISC_COLOURS[level], fontsize=8, va="center")
    axes[1].set_title("ground-truth disc labels")
    axes[2].imshow(first, cmap="gray")
    im = axes[2].imshow(t1rho, cmap="magma", vmin=40, vmax=150)
    axes[2].set_title("true T1rho (ms)")
    fig.colorbar(im, ax=axes[2], fraction=0.046, label="T1rho (ms)")
    for ax in axes:
        ax.set_axis_off()
    grades = ", ".join(f"{k} {v}" for k, v in spec.pfirrmann.items())
    fig.suptitle(f"DiscVBR phantom, {spec.subject} (seed 1): Pfirrmann {grades}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def icon(path: Path) -> None:
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 128)
    ax.set_ylim(0, 128)
    ax.add_patch(FancyBboxPatch((4, 4), 120, 120, boxstyle="round,pad=0,rounding_size=18", color="#1d2733"))
    for i, level in enumerate(DISC_LEVELS):
        y = 18 + i * 21
        x = 58 - 10 * np.cos(i / 4 * np.pi * 0.9)
        ax.add_patch(FancyBboxPatch((x - 22, y + 5), 44, 12, boxstyle="round,pad=0,rounding_size=3", color="#c9ced6"))
        ax.add_patch(FancyBboxPatch((x - 24, y - 2), 48, 6, boxstyle="round,pad=0,rounding_size=3", color=DISC_COLOURS[level]))
    ax.set_axis_off()
    fig.savefig(path, dpi=100, transparent=True)
    plt.close(fig)


def _icon_canvas():
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 128)
    ax.set_ylim(0, 128)
    ax.add_patch(FancyBboxPatch((4, 4), 120, 120, boxstyle="round,pad=0,rounding_size=18", color="#1d2733"))
    ax.set_axis_off()
    return fig, ax


def module_icons(folder: Path) -> list[Path]:
    """Icons of the three Slicer modules (written into each module's Resources/Icons)."""
    written = []
    # DiscSegmentation: the five discs outlined in their colours over grey vertebrae
    fig, ax = _icon_canvas()
    for i, level in enumerate(DISC_LEVELS):
        y = 18 + i * 21
        x = 64 - 8 * np.cos(i / 4 * np.pi * 0.9)
        ax.add_patch(FancyBboxPatch((x - 22, y + 6), 44, 11, boxstyle="round,pad=0,rounding_size=3", color="#8a929c"))
        ax.add_patch(FancyBboxPatch((x - 24, y - 2), 48, 6, boxstyle="round,pad=0,rounding_size=3", fill=False, lw=2.2, ec=DISC_COLOURS[level]))
    written.append(folder / "DiscSegmentation" / "Resources" / "Icons" / "DiscSegmentation.png")
    fig.savefig(written[-1], dpi=100, transparent=True)
    plt.close(fig)
    # DiscRelaxometry: a decay curve with its echoes, over a disc
    fig, ax = _icon_canvas()
    ax.add_patch(FancyBboxPatch((22, 18), 84, 16, boxstyle="round,pad=0,rounding_size=6", color=DISC_COLOURS["L4L5"]))
    t = np.linspace(0, 80, 100)
    ax.plot(20 + t * 1.1, 46 + 66 * np.exp(-t / 35), color="#f2f2f2", lw=3)
    echoes = np.array([0, 10, 40, 80])
    ax.plot(20 + echoes * 1.1, 46 + 66 * np.exp(-echoes / 35), "o", color=DISC_COLOURS["L2L3"], ms=7)
    written.append(folder / "DiscRelaxometry" / "Resources" / "Icons" / "DiscRelaxometry.png")
    fig.savefig(written[-1], dpi=100, transparent=True)
    plt.close(fig)
    # DiscStatistics: a disc as a map of r values (blue-white-red) with a colour bar
    fig, ax = _icon_canvas()
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.linspace(-1, 1, 12), np.linspace(-1, 1, 6))
    values = np.clip(0.9 * np.exp(-((xs + 0.3) ** 2 + (ys + 0.4) ** 2) * 2) - 0.3 + 0.1 * rng.standard_normal(xs.shape), -1, 1)
    ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, extent=(16, 96, 40, 88), interpolation="nearest", zorder=2)
    ax.imshow(np.linspace(1, -1, 50)[:, None], cmap="RdBu_r", vmin=-1, vmax=1, extent=(104, 114, 24, 104), zorder=2)
    ax.set_xlim(0, 128)
    ax.set_ylim(0, 128)
    written.append(folder / "DiscStatistics" / "Resources" / "Icons" / "DiscStatistics.png")
    fig.savefig(written[-1], dpi=100, transparent=True)
    plt.close(fig)
    return written


if __name__ == "__main__":
    phantom_example(ROOT / "docs" / "images" / "phantom_example.png")
    icon(ROOT / "DiscRelaxometry.png")
    icons = module_icons(ROOT)
    print("wrote docs/images/phantom_example.png, DiscRelaxometry.png and", ", ".join(str(p.relative_to(ROOT)) for p in icons))
