"""The CFCM network and its training: shapes, size of the reference network, the loss
falling on a small phantom, folds split by subject, resume, mixed precision refused on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discvbr.errors import DiscVBRError
from discvbr.phantom import PhantomConfig, draw_subject, simulate_session
from discvbr.segmentation.augment import AugmentConfig, augment_slice
from discvbr.segmentation.dataset import TrainingSlice, assign_folds, slices_from_volume
from discvbr.segmentation.infer import use_mixed_precision
from discvbr.segmentation.network import CFCMConfig, UNetConfig, build_network, count_parameters
from discvbr.segmentation.preprocess import PreprocessConfig
from discvbr.segmentation.train import TrainConfig, dice_loss, make_batch, split_slices, train_network

TINY = CFCMConfig(width=0.0625, blocks=(1, 1, 1, 1))


def test_reference_cfcm_size_and_output_shape():
    torch.manual_seed(0)
    net = build_network(CFCMConfig(width=1.0))
    # METHODS: about 49 M parameters (ResNet34 encoder + four ConvLSTMs + hand-over + head)
    assert 45e6 < count_parameters(net) < 52e6
    assert [len(s) for s in net.stages] == [3, 4, 6, 3]
    assert [m.hidden_channels for m in net.memories] == [64, 128, 256, 512]
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 48))
    assert out.shape == (1, 6, 32, 48)


def test_compact_cfcm_and_unet_shapes_and_initialisation():
    net = build_network(CFCMConfig(width=0.125, blocks=(1, 1, 2, 1)))
    assert net.config.channels == (8, 16, 32, 64)
    for cell in net.memories:
        h = cell.hidden_channels
        # forget gate bias starts at 1, the others at 0 (gate order i, f, o, g)
        assert torch.all(cell.gates.bias[h : 2 * h] == 1.0) and torch.all(cell.gates.bias[:h] == 0.0)
    with torch.no_grad():
        assert net(torch.randn(2, 1, 64, 80)).shape == (2, 6, 64, 80)
        unet = build_network(UNetConfig(base_filters=4, depth=3))
        assert unet(torch.randn(1, 1, 40, 48)).shape == (1, 6, 40, 48)


def test_bad_network_inputs_and_settings():
    net = build_network(TINY)
    with pytest.raises(DiscVBRError, match="multiple of 16"):
        net(torch.zeros(1, 1, 40, 64))
    with pytest.raises(DiscVBRError, match=r"\(N, 1, H, W\)"):
        net(torch.zeros(1, 64, 64))
    with pytest.raises(DiscVBRError, match="four stages"):
        CFCMConfig(blocks=(1, 1, 1))
    with pytest.raises(DiscVBRError, match="width"):
        CFCMConfig(width=0.0)


def test_dice_loss_is_zero_for_a_perfect_prediction_and_high_for_a_wrong_one():
    target = torch.zeros(1, 6, 8, 8)
    target[0, 0] = 1.0
    target[0, 0, 2:6, 2:6] = 0.0
    target[0, 3, 2:6, 2:6] = 1.0
    perfect = 50.0 * (2 * target - 1)
    assert float(dice_loss(perfect, target)) < 1e-3
    mislabelled = perfect.clone()
    mislabelled[0, [3, 4]] = mislabelled[0, [4, 3]]  # the disc called L2L3 instead of L3L4
    # two of five disc classes score ~0 (smoothing 1 over 16 voxels: 1/17 each): loss ~ 2/5 * 16/17
    assert float(dice_loss(mislabelled, target)) == pytest.approx(2 / 5 * 16 / 17, abs=1e-3)


@pytest.fixture(scope="module")
def small_phantom_slices():
    """Four 2D phantom subjects on a 64 x 64 grid (3.75 mm pixels), as training slices."""
    config = PhantomConfig(n_subjects=4, matrix=64, seed=21, supersample=2)
    pre = PreprocessConfig(pixel_mm=240.0 / 64)
    slices = []
    for i in range(4):
        s = simulate_session(config, draw_subject(config, i))
        slices += slices_from_volume(s.t1rho.echo(0), s.labels, config=pre, subject=s.subject, group=s.subject, source="phantom")
    return slices, pre


def test_a_few_training_steps_lower_the_loss(small_phantom_slices):
    slices, pre = small_phantom_slices
    config = TrainConfig(architecture=TINY, preprocess=pre, augment=None, epochs=6, batch_size=4, lr=2e-2,
                         loss="dice+ce", seed=3)
    outcome = train_network(slices, config, device="cpu")
    losses = [h["loss"] for h in outcome.history]
    # deterministic given the seed; the last epochs sit well below the first
    assert np.mean(losses[-3:]) < 0.75 * losses[0], losses


def test_resume_continues_exactly(small_phantom_slices, tmp_path):
    slices, pre = small_phantom_slices
    settings = dict(architecture=TINY, preprocess=pre, augment=AugmentConfig(), batch_size=4, lr=1e-3, seed=5)
    straight = train_network(slices, TrainConfig(epochs=2, **settings), device="cpu")
    # interrupted after one epoch: emulate by running a 2-epoch config whose checkpoint we stop at epoch 1
    folder = tmp_path / "model"
    config = TrainConfig(epochs=2, **settings)
    import discvbr.segmentation.train as train_module

    calls = {"n": 0}

    def stop_after_first_epoch(epoch, step, steps, loss):
        if epoch == 1 and step == 0:
            calls["n"] += 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_network(slices, config, out=folder, device="cpu", on_step=stop_after_first_epoch)
    assert (folder / train_module.CHECKPOINT_FILE).is_file() and not (folder / "model.json").exists()
    resumed = train_network(slices, config, out=folder, device="cpu", resume=True)
    for (k, a), b in zip(straight.network.state_dict().items(), resumed.network.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=0, msg=k)
    assert (folder / "model.json").is_file() and not (folder / train_module.CHECKPOINT_FILE).exists()
    with pytest.raises(DiscVBRError, match="checkpoint not found"):
        train_network(slices, config, out=tmp_path / "other", device="cpu", resume=True)


def test_mixed_precision_is_cuda_only(small_phantom_slices):
    cpu = torch.device("cpu")
    assert use_mixed_precision(cpu, "auto") is False
    assert use_mixed_precision(torch.device("cuda"), "auto") is True  # the CUDA path (not run here)
    with pytest.raises(DiscVBRError, match="mixed precision needs a CUDA device"):
        use_mixed_precision(cpu, True)
    slices, pre = small_phantom_slices
    with pytest.raises(DiscVBRError, match="mixed precision"):
        train_network(slices, TrainConfig(architecture=TINY, preprocess=pre, epochs=1), device="cpu", amp=True)


def test_folds_split_by_group_and_spread_each_source():
    groups = [f"ph:{i}" for i in range(12) for _ in range(3)] + ["real:a"] * 4 + ["real:b"] * 4 + ["real:c"] * 4
    sources = ["phantom"] * 36 + ["real"] * 12
    folds = assign_folds(groups, sources, n_folds=3, seed=0)
    assert set(folds) == set(groups)
    assert sorted(folds[g] for g in ("real:a", "real:b", "real:c")) == [1, 2, 3]  # leave one subject out
    assert sorted(np.bincount([folds[f"ph:{i}"] for i in range(12)])[1:]) == [4, 4, 4]
    assert assign_folds(groups, sources, n_folds=3, seed=0) == folds
    with pytest.raises(DiscVBRError, match="cannot fill"):
        assign_folds(["a", "b"], ["x", "x"], n_folds=3, seed=0)


def test_split_slices_keeps_groups_on_one_side():
    img = np.zeros((32, 32), np.float32)
    slices = [TrainingSlice(img, img.astype(np.uint8), f"s{i}", f"g{i // 2}", "src", i) for i in range(12)]
    for fold in (1, 2, 3):
        train, val, split = split_slices(slices, TrainConfig(architecture=TINY, n_folds=3, fold=fold))
        assert not {slices[i].group for i in train} & {slices[i].group for i in val}
        assert sorted(train + val) == list(range(12)) and val
    with pytest.raises(DiscVBRError, match="fold"):
        TrainConfig(n_folds=3, fold=4)


def test_augmentation_keeps_labels_a_partition_and_moves_them_with_the_image(small_phantom_slices):
    slices, pre = small_phantom_slices
    item = next(s for s in slices if s.labels.any())
    onehot = (item.labels[None] == np.arange(6)[:, None, None]).astype(np.float32)
    rng = np.random.default_rng(0)
    image, target = augment_slice(item.image, onehot, rng=rng, config=AugmentConfig(gamma=(1, 1), noise_sd=(0, 0),
                                                                                brightening_probability=0.0))
    np.testing.assert_allclose(target.sum(axis=0), 1.0, atol=1e-5)
    # discs stay bright after the warp: mean intensity inside the moved discs is above the image mean
    discs = target[1:].sum(axis=0) > 0.5
    assert discs.sum() > 0.5 * (item.labels > 0).sum()
    assert image[discs].mean() > image.mean()
    x, y = make_batch([item], config=TrainConfig(architecture=TINY, preprocess=pre, crop=(32, 48)), rng=rng)
    assert x.shape == (1, 1, 32, 48) and y.shape == (1, 6, 32, 48)
    assert y[0, 1:].sum() > 0  # the crop is placed on the discs


def test_cv_sources_keep_other_groups_always_in_training():
    img = np.zeros((32, 32), np.float32)
    slices = [TrainingSlice(img, img.astype(np.uint8), f"p{i}", f"ph:{i}", "phantom", 0) for i in range(6)]
    slices += [TrainingSlice(img, img.astype(np.uint8), f"r{i}", f"real:{i}", "real-t2w", 0) for i in range(3)]
    held = []
    for fold in (1, 2, 3):
        config = TrainConfig(architecture=TINY, n_folds=3, fold=fold, cv_sources=("real-t2w",))
        train, val, split = split_slices(slices, config)
        assert set(range(6)) <= set(train)  # every phantom slice trains in every fold
        assert [slices[i].group for i in val] == split["validation_groups"] and len(val) == 1
        held += split["validation_groups"]
    assert sorted(held) == ["real:0", "real:1", "real:2"]


def test_oversampling_draws_a_source_k_times_per_epoch(small_phantom_slices):
    slices, pre = small_phantom_slices  # 4 phantom slices
    steps = []
    config = TrainConfig(architecture=TINY, preprocess=pre, augment=None, epochs=1, batch_size=2, lr=1e-3,
                         oversample=(("phantom", 3),))
    train_network(slices, config, device="cpu", on_step=lambda e, s, n, loss: steps.append(n))
    assert steps == [6] * 6  # 4 slices x 3 draws / batch 2
    with pytest.raises(DiscVBRError, match="oversampling"):
        TrainConfig(oversample=(("phantom", 0),))
