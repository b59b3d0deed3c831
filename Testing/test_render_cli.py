"""``discvbr render`` on files: a PNG with its provenance JSON; user errors on one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from discvbr.cli import main
from discvbr.io import Image, read_image, write_image
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("render-cli")
    config = PhantomConfig(n_subjects=1, matrix=128, seed=9)
    session = simulate_session(config, draw_subject(config, 0))
    write_image(out / "atlas.nii.gz", session.labels)
    t1 = np.where(session.labels.array > 0, session.truth.t1rho, np.nan).astype(np.float32)
    write_image(out / "t1rho.nii.gz", Image(t1, session.labels.affine))
    write_image(out / "l4l5.nii.gz", Image(np.where(session.labels.array == 2, -0.6, np.nan).astype(np.float32), session.labels.affine))
    return out


def test_render_writes_png_and_provenance(files, capsys):
    out = files / "figs" / "t1rho.png"
    code = main(["render", "--atlas", str(files / "atlas.nii.gz"), "--map", str(files / "t1rho.nii.gz"), "--out", str(out), "--size", "300x360", "--vmin", "40", "--vmax", "140"])
    assert code == 0
    from matplotlib.image import imread

    image = imread(out)
    assert image.shape[:2] == (360, 300)
    assert np.mean(np.all(image[..., :3] > 0.98, axis=-1)) < 0.95  # not blank
    meta = json.loads((files / "figs" / "t1rho.json").read_text())
    assert meta["colour_range"] == [40.0, 140.0] and meta["kind"] == "T" and meta["versions"]["vtk"].startswith("9.")
    assert "wrote" in capsys.readouterr().out


def test_render_per_level_map(files):
    from matplotlib.image import imread

    def render(name: str, value: float) -> np.ndarray:
        atlas = read_image(files / "atlas.nii.gz")
        level_map = files / f"{name}.nii.gz"
        write_image(level_map, Image(np.where(atlas.array == 2, value, np.nan).astype(np.float32), atlas.affine))
        out = files / f"{name}.png"
        assert main(["render", "-a", str(files / "atlas.nii.gz"), "-m", f"L4L5={level_map}", "-k", "r", "-o", str(out),
                     "--size", "300x360", "--camera", "oblique"]) == 0
        assert json.loads(out.with_suffix(".json").read_text())["colour_range"] == [-1.0, 1.0]
        return imread(out)[..., :3].astype(float)

    negative, positive = render("r_negative", -0.6), render("r_positive", 0.6)
    # only the L4L5 plane differs between the two figures: blue where r = -0.6, red where r = +0.6
    # on the diverging scale (the spine mesh in front of it tints the colours, hence the margins)
    changed = np.abs(negative - positive).sum(axis=-1) > 0.3
    changed[:, 240:] = False  # the colour bar is the same in both
    assert changed.sum() >= 100
    blue = negative[..., 2] - negative[..., 0]
    red = positive[..., 0] - positive[..., 2]
    assert np.median(blue[changed]) > 0.1 and np.median(red[changed]) > 0.1


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "L6S1=x.nii.gz"], "unknown disc level 'L6S1'"),
        (["-m", "missing.nii.gz"], "map file not found"),
        (["-m", "{t1}", "-k", "q"], "unknown map kind 'q'"),
        (["-m", "{t1}", "--size", "big"], "--size must be WIDTHxHEIGHT"),
    ],
)
def test_user_errors_are_one_line(files, capsys, args, message):
    args = [a.replace("{t1}", str(files / "t1rho.nii.gz")) for a in args]
    out = files / "bad.png"
    code = main(["render", "-a", str(files / "atlas.nii.gz"), "-o", str(out), *args])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
