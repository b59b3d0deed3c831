"""Matplotlib figures and the HTML report: panels, plotted data, numbers against references."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from scipy import stats

from discvbr.errors import DiscVBRError
from discvbr.io import Image
from discvbr.levels import DISC_COLOURS, DISC_LEVELS
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
from discvbr.render.figures import (
    agreement_table,
    normalised_entropy,
    plot_agreement,
    plot_group_comparison,
    plot_registration_qc,
    plot_segmentation,
    plot_voxel_correlation,
    save_figure,
)
from discvbr.render.report import ReportSection, write_report


@pytest.fixture(scope="module")
def session():
    config = PhantomConfig(n_subjects=1, matrix=128, seed=2)
    return simulate_session(config, draw_subject(config, 0))


@pytest.fixture(scope="module")
def agreement_data():
    rng = np.random.default_rng(4)
    manual = {lvl: rng.normal(90 - 8 * i, 12, 25) for i, lvl in enumerate(DISC_LEVELS)}
    automatic = {lvl: v + rng.normal(-0.7, 1.8, v.size) for lvl, v in manual.items()}
    return manual, automatic


def _images(ax):
    return [a for a in ax.get_images()]


def test_agreement_table_against_scipy_and_pingouin(agreement_data):
    import pingouin as pg
    from matplotlib.figure import Figure

    manual, automatic = agreement_data
    table = agreement_table(manual, automatic)
    assert list(table.index) == [*DISC_LEVELS, "all"]
    for level in DISC_LEVELS:
        r, p = stats.pearsonr(manual[level], automatic[level])
        assert table.loc[level, "r"] == pytest.approx(r, rel=1e-12)
        assert table.loc[level, "p"] == pytest.approx(p, rel=1e-9)
        # pingouin draws bias and limits of agreement as horizontal lines (x - y, 1.96 SD, ddof 1)
        ax = Figure().subplots()
        pg.plot_blandaltman(automatic[level], manual[level], ax=ax)
        drawn = {round(float(line.get_ydata()[0]), 9) for line in ax.get_lines() if np.ptp(line.get_ydata()) == 0}
        for key in ("bias", "loa_low", "loa_high"):
            assert round(float(table.loc[level, key]), 9) in drawn, key
    pooled = np.concatenate([automatic[lvl] - manual[lvl] for lvl in DISC_LEVELS])
    assert table.loc["all", "bias"] == pytest.approx(pooled.mean(), rel=1e-12)
    assert table.loc["all", "n"] == 5 * 25


def test_plot_agreement_panels_hold_the_data(agreement_data, tmp_path):
    manual, automatic = agreement_data
    fig = plot_agreement(manual, automatic)
    assert len(fig.axes) == 1 + len(DISC_LEVELS)
    scatter = fig.axes[0]
    assert len(scatter.collections) == len(DISC_LEVELS)
    for collection, level in zip(scatter.collections, DISC_LEVELS):
        np.testing.assert_allclose(collection.get_offsets(), np.column_stack([manual[level], automatic[level]]))
        np.testing.assert_allclose(collection.get_facecolor()[0, :3], DISC_COLOURS[level])
    table = agreement_table(manual, automatic)
    for ax, level in zip(fig.axes[1:], DISC_LEVELS):
        m, a = manual[level], automatic[level]
        np.testing.assert_allclose(ax.collections[0].get_offsets(), np.column_stack([(m + a) / 2, a - m]))
        lines = sorted(float(line.get_ydata()[0]) for line in ax.get_lines())
        np.testing.assert_allclose(lines, sorted(table.loc[level, ["bias", "loa_low", "loa_high"]].astype(float)))
    out = save_figure(fig, tmp_path / "agreement.png")
    assert out.read_bytes().startswith(b"\x89PNG")


def test_registration_qc_histograms_and_kde(session):
    from scipy.stats import gaussian_kde

    t1 = session.truth.t1rho.astype(np.float64)
    before = {lvl: Image(np.where(session.labels.array == i + 1, t1, np.nan), session.labels.affine) for i, lvl in enumerate(DISC_LEVELS[:2])}
    # "after": the same values on a shifted grid, a third of them dropped
    after = {lvl: np.where(np.arange(img.array.size).reshape(img.shape) % 3 == 0, np.nan, img.array) for lvl, img in before.items()}
    fig = plot_registration_qc(before, after, bins=20)
    hist_axes = [ax for ax in fig.axes if ax.get_ylabel() == "density"]
    assert len(hist_axes) == 2 and len([ax for ax in fig.axes if _images(ax)]) == 4
    for ax, level in zip(hist_axes, DISC_LEVELS[:2]):
        b = before[level].array[np.isfinite(before[level].array)]
        a = after[level][np.isfinite(after[level])]
        edges = np.histogram_bin_edges(np.concatenate([b, a]), bins=20)
        heights = np.array([patch.get_height() for patch in ax.patches])
        expected = np.concatenate([np.histogram(b, edges, density=True)[0], np.histogram(a, edges, density=True)[0]])
        np.testing.assert_allclose(heights, expected, rtol=1e-12)
        kde_lines = ax.get_lines()
        assert len(kde_lines) == 2
        for line, values in zip(kde_lines, (b, a)):
            np.testing.assert_allclose(line.get_ydata(), gaussian_kde(values)(line.get_xdata()), rtol=1e-10)


def test_segmentation_overlay_and_uncertainty(session):
    from scipy import ndimage

    labels = session.labels.array[0]
    onehot = np.stack([(labels == c).astype(float) for c in range(6)])
    logits = 6.0 * np.stack([ndimage.gaussian_filter(o, 1.0) for o in onehot])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    fig = plot_segmentation(session.t1rho.echo(0), probabilities)
    image_axes = [ax for ax in fig.axes if _images(ax)]
    assert len(image_axes) == 3
    overlay = _images(image_axes[1])[-1].get_array()
    np.testing.assert_allclose(np.transpose(overlay, (1, 0, 2))[..., 3], probabilities[1:].max(axis=0))
    entropy = stats.entropy(probabilities, axis=0) / np.log(6)
    np.testing.assert_allclose(normalised_entropy(probabilities), entropy, atol=1e-12)
    shown = _images(image_axes[2])[-1].get_array()
    np.testing.assert_allclose(np.ma.filled(shown, np.nan).T[entropy >= 0.02], entropy[entropy >= 0.02], atol=1e-12)
    # uncertainty is highest at the disc borders, not inside the discs or far from them
    border = ndimage.binary_dilation(labels > 0) & ~ndimage.binary_erosion(labels > 0)
    assert entropy[border].mean() > 5 * entropy[ndimage.binary_erosion(labels > 0, iterations=2)].mean()
    with pytest.raises(DiscVBRError, match="do not fit"):
        plot_segmentation(session.t1rho.echo(0), probabilities[:, :10])


def test_sagittal_orientation_matches_the_spine_mesh(session):
    """Anterior (high y) on the left and superior (high z) up, as the "sagittal" camera shows."""
    discs = session.labels
    values = np.full(discs.shape, np.nan)
    values[0, 100, 30] = 1.0  # anterior and inferior
    values[0, 20, 90] = 0.6  # posterior and superior
    fig = plot_voxel_correlation(Image(values, discs.affine), Image(np.where(np.isfinite(values), 0.01, np.nan), discs.affine))
    ax = fig.axes[0]
    fig.canvas.draw()
    spacing = discs.spacing
    (x_ant, y_inf), (x_post, y_sup) = ax.transData.transform([[100 * spacing[1], 30 * spacing[2]], [20 * spacing[1], 90 * spacing[2]]])
    assert x_ant < x_post and y_inf < y_sup


def test_group_means_share_a_scale_next_to_log_p(session):
    discs = session.labels
    inside = discs.array > 0
    mean_a = Image(np.where(inside, session.truth.t1rho, np.nan), discs.affine)
    mean_b = Image(np.where(inside, session.truth.t1rho - 10.0, np.nan), discs.affine)
    p = Image(np.where(inside, 10 ** -np.linspace(0, 4, inside.size).reshape(inside.shape), np.nan), discs.affine)
    fig = plot_group_comparison(mean_a, mean_b, p, names=("ODI 0-40", "ODI > 40"), labels=discs)
    image_axes = [ax for ax in fig.axes if _images(ax)]
    assert len(image_axes) == 3
    a_img, b_img, p_img = (_images(ax)[0] for ax in image_axes)
    assert (a_img.norm.vmin, a_img.norm.vmax) == (b_img.norm.vmin, b_img.norm.vmax)
    assert type(p_img.norm).__name__ == "LogNorm"
    # the shown data are the maps' values (cropped to the discs)
    shown_a = np.ma.filled(a_img.get_array(), np.nan)
    assert np.nanmax(shown_a) == pytest.approx(np.nanmax(mean_a.array))
    assert np.nanmin(np.ma.filled(b_img.get_array(), np.nan)) == pytest.approx(np.nanmin(mean_b.array))
    # every disc outlined in its colour
    outline_colours = {tuple(np.round(c.get_edgecolor()[0][:3], 3)) for ax in image_axes[:1] for c in ax.collections}
    assert outline_colours == {tuple(np.round(DISC_COLOURS[lvl], 3)) for lvl in DISC_LEVELS}


def test_voxel_correlation_ranges(session):
    discs = session.labels
    r = Image(np.where(discs.array > 0, 0.8, np.nan), discs.affine)
    p = Image(np.where(discs.array > 0, 1e-3, np.nan), discs.affine)
    fig = plot_voxel_correlation(r, p, p_range=(1e-5, 0.005), alpha=0.005)
    r_img, p_img = (_images(ax)[0] for ax in fig.axes if _images(ax))
    assert (r_img.norm.vmin, r_img.norm.vmax) == (0.5, 1.0)
    assert (p_img.norm.vmin, p_img.norm.vmax) == (1e-5, 0.005)


def test_report_embeds_figures_and_tables(agreement_data, tmp_path):
    manual, automatic = agreement_data
    fig = plot_agreement(manual, automatic)
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :, 0] = 200
    png = tmp_path / "x.png"
    save_figure(plot_voxel_correlation(np.full((8, 9), 0.7), np.full((8, 9), 0.01)), png)
    table = agreement_table(manual, automatic)
    out = write_report(
        tmp_path / "report.html",
        title="VBR <test>",
        sections=[
            ReportSection("Agreement", "Manual & automatic.", figures=[fig, rgb], captions=["Bland-Altman"], tables=[table]),
            ReportSection("Maps", figures=[png]),
        ],
        parameters={"alpha": 0.05},
    )
    text = out.read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3
    decoded = [base64.b64decode(b) for b in images]
    assert all(d.startswith(b"\x89PNG\r\n\x1a\n") for d in decoded)
    # PNG header: width and height of the embedded array
    assert int.from_bytes(decoded[1][16:20], "big") == 30 and int.from_bytes(decoded[1][20:24], "big") == 20
    assert decoded[2] == png.read_bytes()
    assert "VBR &lt;test&gt;" in text and "Manual &amp; automatic." in text
    assert f"{table.loc['L4L5', 'bias']:.4g}" in text
    assert "parameter: alpha" in text and "vtk" in text
    assert "http" not in text.replace("http-equiv", "")  # self-contained
    with pytest.raises(DiscVBRError, match="PNG"):
        write_report(tmp_path / "bad.html", title="x", sections=[ReportSection("s", figures=[b"GIF89a"])])
