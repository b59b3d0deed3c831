"""Preprocessing, the segment_discs API, model folders, the CLI, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from discvbr.cli import main
from discvbr.errors import DiscVBRError
from discvbr.io import EchoSeries, Image, read_image, write_image
from discvbr.segmentation import load_model, segment_discs
from discvbr.segmentation.model_store import default_model_path, save_model, write_ensemble
from discvbr.segmentation.network import CFCMConfig, build_network
from discvbr.segmentation.preprocess import GridMap, PreprocessConfig, clahe_zscore, from_network_grid, prepare_slice, to_network_grid


# ----------------------------------------------------------------------------- preprocessing


def test_grid_keeps_extent_and_centre_and_pads_to_16():
    config = PreprocessConfig()
    grid = GridMap.build((221, 221), (1.0, 1.0), config)
    assert grid.resampled_shape == (236, 236)  # 221 mm / 0.9375 mm
    assert grid.network_shape == (240, 240) and all(n % 16 == 0 for n in grid.network_shape)
    assert GridMap.build((256, 256), (240 / 256, 240 / 256), config).identity


def test_resampling_round_trip_of_a_smooth_image():
    config = PreprocessConfig()
    yy, zz = np.meshgrid(np.arange(221.0), np.arange(180.0), indexing="ij")
    smooth = np.sin(yy / 15.0) + np.cos(zz / 20.0)  # 1 mm grid
    grid = GridMap.build(smooth.shape, (1.0, 1.0), config)
    on_net = to_network_grid(smooth, grid)
    # a network pixel centre at index j lies at (j + 0.5) * s_out mm from the slice edge
    s_out = 221.0 / grid.resampled_shape[0]
    j = 100
    y_mm = (j + 0.5) * s_out - 0.5  # input index of that centre
    a0 = grid.pad[0][0]
    assert on_net[a0 + j, grid.pad[1][0] + 50] == pytest.approx(
        np.sin(y_mm / 15.0) + np.cos(((50 + 0.5) * 180.0 / grid.resampled_shape[1] - 0.5) / 20.0), abs=2e-3
    )
    back = from_network_grid(on_net[None], grid)[0]
    assert back.shape == smooth.shape
    # linear there and back: error well below the signal's 2-unit range (interior, away from edges)
    assert np.abs(back - smooth)[2:-2, 2:-2].max() < 0.01


def test_clahe_zscore_matches_skimage_and_normalises():
    from skimage.exposure import equalize_adapthist

    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter(rng.random((96, 128)), 3) * 1000.0
    out = clahe_zscore(image, PreprocessConfig())
    scaled = (image - image.min()) / (np.percentile(image, 99.9) - image.min())
    ref = equalize_adapthist(np.clip(scaled, 0, 1), kernel_size=32, clip_limit=0.01, nbins=256)
    np.testing.assert_allclose(out, (ref - ref.mean()) / ref.std(), atol=1e-4)
    assert abs(out.mean()) < 1e-5 and out.std() == pytest.approx(1.0, abs=1e-5)


def test_prepare_slice_of_a_blank_slice_is_zero():
    net_input, grid = prepare_slice(np.zeros((64, 64)), (240 / 256, 240 / 256), PreprocessConfig())
    assert not net_input.any() and grid.network_shape == (64, 64)


# ----------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained tiny CFCM saved as a model folder (for plumbing, not for quality)."""
    torch.manual_seed(0)
    config = CFCMConfig(width=0.0625, blocks=(1, 1, 1, 1))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_model(folder, build_network(config), architecture=config, preprocess=PreprocessConfig(), name="tiny",
               training={"command": "test"})
    return folder


def _phantom_like(shape=(1, 64, 80), spacing=(8.0, 240 / 256, 240 / 256), seed=0):
    rng = np.random.default_rng(seed)
    array = ndimage.gaussian_filter(rng.random(shape), (0, 2, 2)).astype(np.float32) * 100
    return Image(array, np.diag([*spacing, 1.0]))


def test_segment_discs_outputs_on_the_input_grid(tiny_model):
    image = _phantom_like()
    result = segment_discs(image, model=tiny_model, device="cpu", subject="sub-x")
    assert result.labels.shape == image.shape and result.labels.array.dtype == np.uint8
    assert result.probabilities.shape == image.shape + (6,)
    np.testing.assert_allclose(result.probabilities.array.sum(axis=-1), 1.0, atol=1e-4)
    assert result.uncertainty.shape == image.shape
    assert 0.0 <= result.uncertainty.array.min() and result.uncertainty.array.max() <= 1.0
    np.testing.assert_allclose(result.labels.affine, image.affine)
    assert set(result.per_disc_uncertainty) == {"L5S1", "L4L5", "L3L4", "L2L3", "L1L2"}
    assert sorted(result.review_order) == sorted(result.per_disc_uncertainty)
    assert result.report["subject"] == "sub-x" and result.report["model"]["name"] == "tiny"
    # a series: its first echo is segmented, same result as the echo itself
    series = EchoSeries(np.stack([image.array, image.array * 0.5], axis=-1), [0.0, 40.0], image.affine)
    again = segment_discs(series, model=tiny_model, device="cpu")
    np.testing.assert_allclose(again.probabilities.array, result.probabilities.array, atol=1e-5)


def test_ensemble_averages_logits(tiny_model, tmp_path):
    torch.manual_seed(1)
    config = CFCMConfig(width=0.0625, blocks=(1, 1, 1, 1))
    other = save_model(tmp_path / "other", build_network(config), architecture=config, preprocess=PreprocessConfig(),
                       name="other", training={})
    ens = write_ensemble(tmp_path / "ens", [tiny_model, other], name="pair", description="test")
    model = load_model(ens)
    assert len(model.members) == 2
    from discvbr.segmentation.infer import network_logits

    batch = np.random.default_rng(0).standard_normal((2, 32, 32)).astype(np.float32)
    single = [network_logits(load_model(p), batch, device=torch.device("cpu")) for p in (tiny_model, other)]
    np.testing.assert_allclose(network_logits(model, batch, device=torch.device("cpu")), (single[0] + single[1]) / 2,
                               rtol=1e-5, atol=1e-5)


def test_default_model_ships_with_the_package_and_segments_a_phantom_slice(phantom_session_2d):
    folder = default_model_path()
    assert (folder / "ensemble.json").is_file() or (folder / "model.json").is_file()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 25e6
    from discvbr.metrics import dice

    result = segment_discs(phantom_session_2d.t1rho, device="cpu")
    truth = phantom_session_2d.labels.array
    # every disc found at its level; Dice against the phantom's truth (acceptance on held-out data: 0.95)
    assert result.missing == []
    for label in range(1, 6):
        assert dice(truth == label, result.labels.array == label) > 0.9, label


# ----------------------------------------------------------------------------- bad input


def test_axial_and_coronal_images_are_refused(tiny_model):
    volume = np.random.default_rng(0).random((64, 64, 6)).astype(np.float32)
    axial = Image(volume, np.diag([1.0, 1.0, 5.0, 1.0]))  # thick slices along superior
    with pytest.raises(DiscVBRError, match="axial"):
        segment_discs(axial, model=tiny_model, device="cpu")
    coronal = Image(np.moveaxis(volume, 2, 1), np.diag([1.0, 5.0, 1.0, 1.0]))
    with pytest.raises(DiscVBRError, match="coronal"):
        segment_discs(coronal, model=tiny_model, device="cpu")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.ones((64, 64), np.float32), "must be 3D"),
        (np.ones((1, 64, 64, 2), np.float32), "must be 3D"),
        (np.zeros((1, 64, 64), np.float32), "empty"),
        (np.full((1, 64, 64), np.nan, np.float32), "NaN"),
        (np.zeros((1, 0, 64), np.float32), "no voxels"),
    ],
)
def test_bad_arrays_are_clear_errors(tiny_model, array, message):
    with pytest.raises(DiscVBRError, match=message):
        segment_discs(Image(array, np.diag([8.0, 0.94, 0.94, 1.0])), model=tiny_model, device="cpu")


def test_missing_model_files_are_named(tmp_path, tiny_model):
    with pytest.raises(DiscVBRError, match=str(tmp_path / "nowhere")):
        load_model(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((tiny_model / "model.json").read_text())
    with pytest.raises(DiscVBRError, match=f"weights file not found: {broken / 'weights.safetensors'}"):
        load_model(broken)


def test_unavailable_or_unknown_device_is_a_clear_error(tiny_model):
    if torch.cuda.is_available():
        with pytest.raises(DiscVBRError, match="not supported"):
            segment_discs(_phantom_like(), model=tiny_model, device="meta")
    else:
        with pytest.raises(DiscVBRError, match="CUDA is not available"):
            segment_discs(_phantom_like(), model=tiny_model, device="cuda")
    with pytest.raises(DiscVBRError, match="not understood"):
        segment_discs(_phantom_like(), model=tiny_model, device="gpu0")


# ----------------------------------------------------------------------------- CLI


def test_cli_segment_writes_outputs_and_reports_progress(tiny_model, tmp_path, capsys):
    image = _phantom_like()
    path = write_image(tmp_path / "echo1.nii.gz", image)
    status = main(["segment", str(path), "--out", str(tmp_path / "person"), "--model", str(tiny_model), "--device", "cpu"])
    person = capsys.readouterr().out
    # a person's terminal gets no machine lines, but the report's path
    assert status == 0 and f"report: {tmp_path / 'person' / 'segmentation.json'}" in person
    assert not any(line.split(" ")[0] in ("PROGRESS", "WARNING", "RESULT") for line in person.splitlines())
    status = main(["segment", "--machine-output", str(path), "--out", str(tmp_path / "out"), "--model", str(tiny_model),
                   "--device", "cpu"])
    captured = capsys.readouterr().out.splitlines()
    assert status == 0
    assert captured[0].startswith("PROGRESS 0.000") and captured[-1] == f"RESULT {tmp_path / 'out' / 'segmentation.json'}"
    fractions = [float(line.split()[1]) for line in captured if line.startswith("PROGRESS")]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    report = json.loads((tmp_path / "out" / "segmentation.json").read_text())
    assert report["outputs"]["labels"] == "discs.nii.gz"
    labels = read_image(tmp_path / "out" / "discs.nii.gz")
    assert labels.shape == image.shape
    assert read_image(tmp_path / "out" / "disc_probabilities.nii.gz").shape == image.shape + (6,)


def test_cli_segment_bad_input_exits_2_and_writes_nothing(tiny_model, tmp_path, capsys):
    axial = write_image(tmp_path / "axial.nii.gz", Image(np.random.default_rng(0).random((64, 64, 6)), np.diag([1, 1, 5.0, 1])))
    status = main(["segment", str(axial), "--out", str(tmp_path / "out"), "--model", str(tiny_model)])
    assert status == 2 and "axial" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    status = main(["segment", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "out2")])
    assert status == 2 and "missing.nii.gz" in capsys.readouterr().err
    status = main(["segment", str(axial), "--out", str(tmp_path / "o3"), "--model", str(tmp_path / "no-model")])
    assert status == 2


def test_cli_train_records_its_augmentation_and_refuses_a_bad_zoom(phantom_session_2d, tmp_path, capsys):
    image = write_image(tmp_path / "echo1.nii.gz", phantom_session_2d.t1rho.echo(0))
    labels = write_image(tmp_path / "discs.nii.gz", phantom_session_2d.labels)
    table = tmp_path / "train.csv"
    table.write_text(f"subject,image,labels\nsub-01,{image},{labels}\n")
    common = ["train", "--data", str(table), "--folds", "1", "--epochs", "1", "--batch-size", "1",
              "--width", "0.0625", "--blocks", "1,1,1,1", "--pixel-mm", "3.75", "--device", "cpu"]
    status = main([*common, "--out", str(tmp_path / "model"), "--zoom", "0.8,1.25"])
    assert status == 0
    metadata = json.loads((tmp_path / "model" / "model.json").read_text())
    assert metadata["training"]["settings"]["augment"]["scale"] == [0.8, 1.25]
    assert "--zoom 0.8,1.25" in metadata["training"]["command"]
    assert load_model(tmp_path / "model").members[0].metadata["name"] == "cfcm"
    capsys.readouterr()
    for bad in ("1.2,0.8", "0,1", "0.9", "small,big"):
        status = main([*common, "--out", str(tmp_path / f"bad-{bad}"), "--zoom", bad])
        assert status == 2 and "--zoom" in capsys.readouterr().err, bad
        assert not (tmp_path / f"bad-{bad}").exists()
