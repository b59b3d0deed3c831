"""Training the disc segmentation network with the paper's recipe.

Iriondo et al. (2020, Supporting Figure S1): full 256 x 256 slices, CLAHE + z-score,
Dice loss, Adam (learning rate 1e-6 in the paper, 1e-5 in the authors' code, epsilon
1e-8), batch 20, Xavier initialisation, augmentations drawn fresh every epoch, 5-fold
cross-validation split by subject. What this implementation adds, each an option
recorded in the model's metadata: a cosine learning-rate schedule, random crops
(the network is fully convolutional; crops cut the cost per step on a CPU), Dice +
cross-entropy loss, initialisation from another model (fine-tuning), checkpoints every
epoch with resume, and mixed precision on CUDA.

Every random step is seeded: network initialisation from ``(seed, fold)``, the
augmentations and batch order of epoch ``e`` from ``(seed, fold, e)``, so a resumed
run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import atomic_write
from discvbr.segmentation.augment import AugmentConfig, augment_slice
from discvbr.segmentation.dataset import N_CLASSES, TrainingSlice, assign_folds
from discvbr.segmentation.infer import autocast, resolve_device, use_mixed_precision
from discvbr.segmentation.model_store import ModelSet, save_model
from discvbr.segmentation.network import CFCMConfig, UNetConfig, build_network, config_as_dict, count_parameters
from discvbr.segmentation.preprocess import PreprocessConfig, clahe_zscore

__all__ = ["TrainConfig", "TrainingOutcome", "dice_loss", "make_batch", "split_slices", "train_network"]

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all stored in the model's metadata).

    Parameters
    ----------
    architecture : CFCMConfig or UNetConfig
    preprocess : PreprocessConfig
    augment : AugmentConfig or None
        None disables augmentation.
    epochs : int
        Passes over the training slices.
    batch_size : int
        Slices per step (paper: 20).
    lr, eps : float
        Adam learning rate and epsilon.
    loss : {"dice", "dice+ce"}
        Soft Dice over the five disc classes (paper), or Dice plus cross-entropy.
    schedule : {"constant", "cosine"}
        Learning rate constant (paper) or cosine-annealed to zero over the epochs.
    crop : (int, int) or None
        Random crop (height, width) of each preprocessed slice, placed to contain the
        discs when they fit; None trains on whole slices (paper).
    n_folds, fold : int
        Cross-validation: slices of the groups in fold ``fold`` (1..n_folds) are held
        out for validation. ``n_folds = 1`` trains on everything.
    cv_sources : tuple of str or None
        Only groups with data from these sources are split into folds; groups from other
        sources (for example synthetic phantoms) are always in training. None: all.
    oversample : tuple of (str, int)
        ``(source, k)`` pairs: every training slice of that source is drawn ``k`` times per
        epoch (each time with fresh augmentation), to weigh scarce real data against
        plentiful synthetic data. Sources not listed are drawn once.
    seed : int
    val_every : int
        Validate every this many epochs (and after the last).
    """

    architecture: CFCMConfig | UNetConfig = field(default_factory=CFCMConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    epochs: int = 100
    batch_size: int = 20
    lr: float = 1e-5
    eps: float = 1e-8
    loss: str = "dice"
    schedule: str = "constant"
    crop: tuple[int, int] | None = None
    n_folds: int = 1
    fold: int = 0
    cv_sources: tuple[str, ...] | None = None
    oversample: tuple[tuple[str, int], ...] = ()
    seed: int = 0
    val_every: int = 5

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or not self.eps > 0:
            raise DiscVBRError(f"epochs, batch size, learning rate and epsilon must be positive: {self}")
        if self.loss not in ("dice", "dice+ce"):
            raise DiscVBRError(f"loss must be 'dice' or 'dice+ce', got {self.loss!r}")
        if self.schedule not in ("constant", "cosine"):
            raise DiscVBRError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.n_folds < 1 or (self.n_folds == 1 and self.fold != 0) or (self.n_folds > 1 and not 1 <= self.fold <= self.n_folds):
            raise DiscVBRError(f"fold {self.fold} of {self.n_folds}: choose 1..{self.n_folds} (or 1 fold, fold 0: no validation)")
        if self.crop is not None:
            multiple = 16
            if len(self.crop) != 2 or any(c < multiple or c % multiple for c in self.crop):
                raise DiscVBRError(f"crop must be two sizes, multiples of {multiple}, got {self.crop}")
        if any(int(k) < 1 for _, k in self.oversample):
            raise DiscVBRError(f"oversampling factors must be whole numbers >= 1, got {self.oversample}")
        if self.architecture.n_classes != N_CLASSES:
            raise DiscVBRError(f"the disc network has {N_CLASSES} classes, got {self.architecture.n_classes}")

    def as_dict(self) -> dict:
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        values["architecture"] = config_as_dict(self.architecture)
        values["preprocess"] = self.preprocess.as_dict()
        values["augment"] = None if self.augment is None else self.augment.as_dict()
        values["crop"] = None if self.crop is None else list(self.crop)
        values["cv_sources"] = None if self.cv_sources is None else list(self.cv_sources)
        values["oversample"] = {source: int(k) for source, k in self.oversample}
        return values

    def key(self) -> str:
        """Hash of every setting: a checkpoint resumes only the same run."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainingOutcome:
    """A trained network with its history and validation metrics."""

    network: object
    history: list[dict]
    validation: dict
    folder: Path | None
    seconds: float


def dice_loss(logits, target, *, smooth: float = 1.0):
    """Soft Dice loss over the disc classes (background excluded), pooled over the batch.

    ``1 - mean_k (2 sum p_k g_k + s) / (sum p_k + sum g_k + s)`` with ``p`` the softmax
    probabilities and ``g`` the target fractions (Milletari et al., V-Net, 3DV 2016).
    """
    import torch

    probs = torch.softmax(logits.float(), dim=1)
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    return 1.0 - dice[1:].mean()


def _loss(logits, target, kind: str):
    import torch

    loss = dice_loss(logits, target)
    if kind == "dice+ce":
        loss = loss - (target * torch.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
    return loss


def _onehot(labels: np.ndarray) -> np.ndarray:
    return (labels[None] == np.arange(N_CLASSES)[:, None, None]).astype(np.float32)


def _crop(image: np.ndarray, target: np.ndarray, size: tuple[int, int], rng: np.random.Generator):
    """Random crop containing the discs when they fit (padding smaller slices)."""
    pads = [(0, max(s - n, 0)) for s, n in zip(size, image.shape)]
    if any(p[1] for p in pads):
        image = np.pad(image, pads, mode="constant", constant_values=float(image.min()))
        target = np.pad(target, [(0, 0)] + pads, mode="constant")
        target[0][target.sum(axis=0) == 0] = 1.0
    discs = target[1:].sum(axis=0) > 0.5
    starts = []
    for axis, (s, n) in enumerate(zip(size, image.shape)):
        lo, hi = 0, n - s
        if discs.any():
            idx = np.flatnonzero(discs.any(axis=1 - axis))
            if idx[-1] - idx[0] + 1 <= s:
                lo, hi = max(lo, idx[-1] + 1 - s), min(hi, idx[0])
        starts.append(int(rng.integers(lo, hi + 1)))
    sl = tuple(slice(st, st + s) for st, s in zip(starts, size))
    return image[sl], target[(slice(None),) + sl]


def make_batch(
    items: list[TrainingSlice], *, config: TrainConfig, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Augment (when ``rng`` is given), preprocess and crop a batch of slices.

    Returns
    -------
    x : ndarray (N, 1, H, W) float32
    y : ndarray (N, 6, H, W) float32
        Target class fractions.
    """
    xs, ys = [], []
    for item in items:
        image, target = item.image, _onehot(item.labels)
        if rng is not None and config.augment is not None:
            image, target = augment_slice(image, target, rng=rng, config=config.augment)
        if float(image.max()) > float(image.min()):
            image = clahe_zscore(image, config.preprocess)
        else:
            image = np.zeros_like(image)
        if config.crop is not None and rng is not None:
            image, target = _crop(image, target, config.crop, rng)
        xs.append(image)
        ys.append(target)
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        # whole slices of different grids: pad to the largest (background)
        h = max(s[0] for s in shapes)
        w = max(s[1] for s in shapes)
        for k in range(len(xs)):
            pad = [(0, h - xs[k].shape[0]), (0, w - xs[k].shape[1])]
            xs[k] = np.pad(xs[k], pad, mode="constant", constant_values=float(xs[k].min()))
            ys[k] = np.pad(ys[k], [(0, 0)] + pad, mode="constant")
            ys[k][0][ys[k].sum(axis=0) == 0] = 1.0
    return np.stack(xs)[:, None].astype(np.float32), np.stack(ys).astype(np.float32)


def split_slices(slices: list[TrainingSlice], config: TrainConfig) -> tuple[list[int], list[int], dict]:
    """Training and validation slice indices for the configured fold.

    Returns
    -------
    train, validation : list of int
    split : dict
        Fold of every group, and the groups on each side (for metadata).
    """
    if not slices:
        raise DiscVBRError("no training slices")
    if config.n_folds == 1:
        return list(range(len(slices))), [], {"n_folds": 1, "fold": 0, "validation_groups": []}
    split_groups = {s.group for s in slices if config.cv_sources is None or s.source in config.cv_sources}
    if not split_groups:
        raise DiscVBRError(f"no training data from the cross-validation sources {list(config.cv_sources or [])}")
    chosen = [s for s in slices if s.group in split_groups]
    folds = assign_folds([s.group for s in chosen], [s.source for s in chosen], n_folds=config.n_folds, seed=config.seed)
    held_out = {g for g, f in folds.items() if f == config.fold}
    train = [i for i, s in enumerate(slices) if s.group not in held_out]
    val = [i for i, s in enumerate(slices) if s.group in held_out]
    return train, val, {
        "n_folds": config.n_folds,
        "fold": config.fold,
        "cv_sources": None if config.cv_sources is None else list(config.cv_sources),
        "group_folds": folds,
        "validation_groups": sorted(held_out),
    }


def _validate(network, slices: list[TrainingSlice], indices: list[int], config: TrainConfig, device) -> dict:
    """Per-disc 2D metrics on validation slices after the full postprocessing, per source."""
    import torch

    from discvbr.metrics import segmentation_metrics, summarise_metrics
    from discvbr.segmentation.postprocess import postprocess

    if not indices:
        return {}
    network.eval()
    records = []
    with torch.inference_mode():
        for start in range(0, len(indices), 8):
            batch = [slices[i] for i in indices[start : start + 8]]
            x, _ = make_batch(batch, config=config, rng=None)
            xt = torch.from_numpy(x).to(device)
            if device.type == "cpu":
                xt = xt.contiguous(memory_format=torch.channels_last)
            probs = torch.softmax(network(xt).float(), dim=1).cpu().numpy()
            for item, p in zip(batch, probs):
                if not item.labels.any():
                    continue
                affine = np.diag([1.0, config.preprocess.pixel_mm, config.preprocess.pixel_mm, 1.0])
                result = postprocess(p[:, None], affine, where=item.subject)
                recs = segmentation_metrics(
                    item.labels[None], result.labels, spacing=np.diag(affine)[:3], mode="2d", subject=item.subject
                )
                for r in recs:
                    r["source"] = item.source
                records.extend(recs)
    network.train()
    out = {"all": summarise_metrics(records)}
    for source in sorted({r["source"] for r in records}):
        out[source] = summarise_metrics([r for r in records if r["source"] == source])
    return out


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, device) -> dict:
    """A training checkpoint, read as tensors and plain containers only (no pickled code).

    Raises
    ------
    DiscVBRError
        When the file holds anything else (a damaged or foreign file): loading it in full
        could run arbitrary code.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError):
        raise DiscVBRError(
            f"checkpoint {path} holds more than tensors and plain values, or is damaged, so it is not loaded "
            "(that could run code): it was not written by discvbr train; start a new run"
        ) from None


def train_network(
    slices: list[TrainingSlice],
    config: TrainConfig,
    *,
    out: str | os.PathLike | None = None,
    name: str = "cfcm",
    command: str = "",
    data: list[dict] | None = None,
    init_from: ModelSet | None = None,
    resume: bool = False,
    device: str = "auto",
    amp: bool | str = "auto",
    log: Callable[[str], None] | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
) -> TrainingOutcome:
    """Train a network on labelled slices; write a model folder when ``out`` is given.

    Parameters
    ----------
    slices : list of TrainingSlice
    config : TrainConfig
    out : path-like, optional
        Model folder to write (weights + ``model.json``); a checkpoint is kept there
        during training and removed once the model is written.
    name : str
        Model name for the metadata.
    command : str
        The command line that ran this training (for the metadata).
    data : list of dict, optional
        Provenance of the training tables.
    init_from : ModelSet, optional
        Start from this model's weights (single model, same architecture).
    resume : bool
        Continue from ``out``'s checkpoint (the settings must be identical).
    device : {"auto", "cpu", "cuda"}
    amp : bool or "auto"
        Mixed precision (CUDA only).
    log : callable, optional
        Receives one line per epoch.
    on_step : callable, optional
        ``on_step(epoch, step, steps_per_epoch, loss)`` after each step.

    Returns
    -------
    TrainingOutcome
    """
    import torch

    torch_device = resolve_device(device)
    use_amp = use_mixed_precision(torch_device, amp)
    train_idx, val_idx, split = split_slices(slices, config)
    if not train_idx:
        raise DiscVBRError("the training side of the split is empty")
    factors = dict(config.oversample)
    epoch_idx = [i for i in train_idx for _ in range(int(factors.get(slices[i].source, 1)))]
    torch.manual_seed(config.seed * 1000 + config.fold)
    network = build_network(config.architecture)
    if init_from is not None:
        if len(init_from.members) != 1:
            raise DiscVBRError(f"{init_from.path}: initialise from a single model, not an ensemble")
        source = init_from.members[0]
        if config_as_dict(config.architecture) != source.metadata["architecture"]:
            raise DiscVBRError(f"{source.path}: its architecture differs from the one being trained")
        network.load_state_dict(source.network.state_dict())
    network.to(torch_device)
    if torch_device.type == "cpu":
        network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr, eps=config.eps)
    steps_per_epoch = int(np.ceil(len(epoch_idx) / config.batch_size))
    scheduler = None
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    out_path = None if out is None else Path(out)
    checkpoint = None if out_path is None else out_path / CHECKPOINT_FILE
    history: list[dict] = []
    start_epoch = 0
    seconds_before = 0.0
    if resume:
        if checkpoint is None or not checkpoint.is_file():
            raise DiscVBRError(f"nothing to resume: checkpoint not found: {checkpoint}")
        state = _load_checkpoint(checkpoint, torch_device)
        if state.get("config_key") != config.key():
            raise DiscVBRError(f"{checkpoint} was written by a run with other settings; start a new run or use them")
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        seconds_before = state.get("seconds", 0.0)
        if log:
            log(f"resumed from {checkpoint} after epoch {start_epoch}")

    started = time.perf_counter()
    network.train()
    validation: dict = {}
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([config.seed, config.fold, epoch])
        order = [epoch_idx[i] for i in rng.permutation(len(epoch_idx))]
        losses = []
        for step in range(steps_per_epoch):
            batch = [slices[i] for i in order[step * config.batch_size : (step + 1) * config.batch_size]]
            x, y = make_batch(batch, config=config, rng=rng)
            xt = torch.from_numpy(x).to(torch_device)
            yt = torch.from_numpy(y).to(torch_device)
            if torch_device.type == "cpu":
                xt = xt.contiguous(memory_format=torch.channels_last)
            with autocast(torch_device, use_amp):
                logits = network(xt)
            loss = _loss(logits, yt, config.loss)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(epoch, step, steps_per_epoch, losses[-1])
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - t0, 2)}
        last = epoch + 1 == config.epochs
        if val_idx and ((epoch + 1) % config.val_every == 0 or last):
            validation = _validate(network, slices, val_idx, config, torch_device)
            record["val_dice"] = {k: v["dice"] for k, v in validation["all"].items()}
        history.append(record)
        if log:
            val = f", validation Dice {record['val_dice']['all']:.3f}" if "val_dice" in record and "all" in record["val_dice"] else ""
            log(f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}{val} ({record['seconds']:.0f} s)")
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "epoch": epoch, "model": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(), "scaler": scaler.state_dict(),
                "history": history, "config_key": config.key(),
                "seconds": seconds_before + time.perf_counter() - started,
            })
    seconds = seconds_before + time.perf_counter() - started
    if val_idx and not validation:
        validation = _validate(network, slices, val_idx, config, torch_device)
    network.eval()

    folder = None
    if out_path is not None:
        sources: dict[str, int] = {}
        for i in train_idx:
            sources[slices[i].source] = sources.get(slices[i].source, 0) + 1
        training = {
            "command": command,
            "settings": config.as_dict(),
            "data": data or [],
            "split": split,
            "training_groups": sorted({slices[i].group for i in train_idx}),
            "n_training_slices": len(train_idx),
            "n_validation_slices": len(val_idx),
            "training_slices_per_source": sources,
            "fold": config.fold,
            "n_folds": config.n_folds,
            "seed": config.seed,
            "init_from": None if init_from is None else {
                "path": str(init_from.members[0].path),
                "name": init_from.members[0].metadata.get("name"),
                "weights_sha256": init_from.members[0].metadata.get("weights_sha256"),
                "training": init_from.members[0].metadata.get("training"),
            },
            "device": torch_device.type,
            "mixed_precision": use_amp,
            "threads": torch.get_num_threads(),
            "seconds": round(seconds, 1),
            "history": history,
            "n_parameters": count_parameters(network),
            "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
            "versions": {"discvbr": __version__, "torch": torch.__version__, "numpy": np.__version__},
        }
        folder = save_model(out_path, network.to("cpu").to(memory_format=torch.contiguous_format),
                            architecture=config.architecture, preprocess=config.preprocess, name=name,
                            training=training, validation=validation)
        if checkpoint is not None and checkpoint.exists():
            checkpoint.unlink()
    return TrainingOutcome(network, history, validation, folder, seconds)

