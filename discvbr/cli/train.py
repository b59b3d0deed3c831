"""``discvbr train``: train the disc segmentation network (one fold or all, as an ensemble)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from discvbr.cli import app


def _numbers(text: str, what: str, kind: type = int) -> tuple:
    from discvbr.errors import DiscVBRError

    try:
        return tuple(kind(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        noun = "integers" if kind is int else "numbers"
        raise DiscVBRError(f"{what}: {text!r} is not a comma-separated list of {noun}") from None


@app.command("train")
def train_command(
    data: List[Path] = typer.Option(..., "--data", "-d", help="Training table: a cohort manifest with masks, or a training list (subject,image,labels[,group,source,echo]). Repeat for several."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder (one fold) or ensemble folder (fold-1..fold-K inside)."),
    folds: int = typer.Option(5, "--folds", min=1, help="Cross-validation folds, split by subject group (1: train on everything)."),
    fold: Optional[int] = typer.Option(None, "--fold", min=1, help="Train only this fold (1..folds); default: every fold, then write the ensemble."),
    cv_sources: Optional[str] = typer.Option(None, "--cv-sources", help="Comma-separated sources whose subject groups are split into folds; groups of other sources always train (default: all sources)."),
    oversample: Optional[str] = typer.Option(None, "--oversample", help="SOURCE=K,...: draw every training slice of SOURCE K times per epoch (fresh augmentation each time)."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Passes over the training slices."),
    batch_size: int = typer.Option(20, "--batch-size", min=1, help="Slices per step (paper: 20)."),
    lr: float = typer.Option(1e-5, "--lr", min=0.0, help="Adam learning rate (paper 1e-6, authors' code 1e-5)."),
    eps: float = typer.Option(1e-8, "--eps", min=0.0, help="Adam epsilon."),
    loss: str = typer.Option("dice", "--loss", help="dice (paper) or dice+ce (Dice plus cross-entropy)."),
    schedule: str = typer.Option("constant", "--schedule", help="Learning rate: constant (paper) or cosine (annealed to 0)."),
    crop: Optional[str] = typer.Option(None, "--crop", help="Random crop HEIGHT,WIDTH (anterior, superior; multiples of 16) of each slice; default whole slices."),
    architecture: str = typer.Option("cfcm", "--architecture", help="cfcm or unet (baseline)."),
    width: float = typer.Option(1.0, "--width", help="CFCM channel multiplier (1: the reference 64-512 channels, about 49 M parameters)."),
    blocks: str = typer.Option("3,4,6,3", "--blocks", help="CFCM residual blocks per stage (ResNet34: 3,4,6,3)."),
    unet_filters: int = typer.Option(16, "--unet-filters", min=1, help="U-Net base filters."),
    pixel_mm: float = typer.Option(240.0 / 256.0, "--pixel-mm", help="In-plane pixel size of the network grid, mm."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="The paper's augmentations (rotation, elastic, Gaussian brightening)."),
    extra_augment: bool = typer.Option(True, "--extra-augment/--no-extra-augment", help="Also zoom, gamma and noise (helps synthetic-to-real transfer)."),
    zoom: str = typer.Option("0.9,1.1", "--zoom", help="MIN,MAX of the extra augmentation's isotropic zoom (disc size differs between people)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, the initialisation, the augmentations and the batch order."),
    val_every: int = typer.Option(5, "--val-every", min=1, help="Validate every this many epochs."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this model's weights (fine-tuning)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    amp: str = typer.Option("auto", "--amp", help="Mixed precision: auto (CUDA only), on or off."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's choice)."),
    name: str = typer.Option("cfcm", "--name", help="Model name stored in the metadata."),
) -> None:
    """Train the CFCM disc segmentation network with the paper's recipe.

    Dice loss, Adam, Xavier initialisation, augmentations drawn fresh every epoch,
    k-fold cross-validation split by subject group; a checkpoint every epoch (--resume).
    Writes model folders (weights.safetensors + model.json with the architecture,
    preprocessing, data, fold, seed, this command and the validation metrics).
    """
    import torch

    from discvbr.errors import DiscVBRError
    from discvbr.segmentation.augment import AugmentConfig
    from discvbr.segmentation.dataset import load_training_slices
    from discvbr.segmentation.model_store import load_model, write_ensemble
    from discvbr.segmentation.network import CFCMConfig, UNetConfig
    from discvbr.segmentation.preprocess import PreprocessConfig
    from discvbr.segmentation.train import TrainConfig, train_network

    if threads is not None:
        torch.set_num_threads(threads)
    if fold is not None and fold > folds:
        raise DiscVBRError(f"--fold {fold} is beyond --folds {folds}")
    amp_value = {"auto": "auto", "on": True, "off": False}.get(amp)
    if amp_value is None:
        raise DiscVBRError(f"--amp must be auto, on or off, got {amp!r}")
    if architecture == "cfcm":
        arch = CFCMConfig(width=width, blocks=_numbers(blocks, "--blocks"))
    elif architecture == "unet":
        arch = UNetConfig(base_filters=unet_filters)
    else:
        raise DiscVBRError(f"--architecture must be cfcm or unet, got {architecture!r}")
    crop_size = None if crop is None else _numbers(crop, "--crop")
    factors = []
    for part in (oversample or "").split(","):
        if not part.strip():
            continue
        source, _, k = part.partition("=")
        if not source.strip() or not k.strip().isdigit():
            raise DiscVBRError(f"--oversample: {part!r} is not SOURCE=K with K a whole number")
        factors.append((source.strip(), int(k)))
    zoom_range = _numbers(zoom, "--zoom", float)
    if len(zoom_range) != 2 or not 0 < zoom_range[0] <= zoom_range[1]:
        raise DiscVBRError(f"--zoom must be MIN,MAX with 0 < MIN <= MAX, got {zoom!r}")
    if augment:
        aug = AugmentConfig(scale=zoom_range) if extra_augment else AugmentConfig(scale=(1.0, 1.0), gamma=(1.0, 1.0), noise_sd=(0.0, 0.0))
    else:
        aug = None
    preprocess = PreprocessConfig(pixel_mm=pixel_mm)

    args = [
        "discvbr", "train", *[x for d in data for x in ("--data", str(d))], "--out", str(out), "--folds", str(folds),
        *(["--fold", str(fold)] if fold is not None else []),
        *(["--cv-sources", cv_sources] if cv_sources else []), *(["--oversample", oversample] if oversample else []),
        "--epochs", str(epochs), "--batch-size", str(batch_size),
        "--lr", repr(lr), "--eps", repr(eps), "--loss", loss, "--schedule", schedule,
        *(["--crop", crop] if crop else []), "--architecture", architecture, "--width", repr(width), "--blocks", blocks,
        "--unet-filters", str(unet_filters), "--pixel-mm", repr(pixel_mm),
        "--augment" if augment else "--no-augment", "--extra-augment" if extra_augment else "--no-extra-augment",
        "--zoom", zoom,
        "--seed", str(seed), "--val-every", str(val_every), *(["--init-from", str(init_from)] if init_from else []),
        "--device", device, "--amp", amp, *(["--threads", str(threads)] if threads else []), "--name", name,
    ]
    command = shlex.join(args)

    typer.echo(f"loading training data from {len(data)} table(s)")
    slices, provenance = load_training_slices([Path(d) for d in data], config=preprocess)
    typer.echo(f"{len(slices)} slices from {len({s.group for s in slices})} subject groups")
    init_model = load_model(init_from) if init_from is not None else None

    todo = [0] if folds == 1 else ([fold] if fold is not None else list(range(1, folds + 1)))
    for k in todo:
        config = TrainConfig(
            architecture=arch, preprocess=preprocess, augment=aug, epochs=epochs, batch_size=batch_size, lr=lr, eps=eps,
            loss=loss, schedule=schedule, crop=crop_size, n_folds=folds, fold=k, seed=seed, val_every=val_every,
            oversample=tuple(factors),
            cv_sources=None if not cv_sources else tuple(v.strip() for v in cv_sources.split(",") if v.strip()),
        )
        folder = out if folds == 1 else out / f"fold-{k}"
        label = "all data" if folds == 1 else f"fold {k}/{folds}"
        typer.echo(f"training {label} -> {folder}")
        outcome = train_network(
            slices, config, out=folder, name=name if folds == 1 else f"{name}-fold{k}", command=command,
            data=provenance, init_from=init_model, resume=resume and (folder / "checkpoint.pt").is_file(),
            device=device, amp=amp_value, log=lambda line, label=label: typer.echo(f"{label}: {line}"),
        )
        typer.echo(f"{label}: done in {outcome.seconds / 60:.1f} min -> {outcome.folder}")
    if folds > 1:
        members = [out / f"fold-{k}" for k in range(1, folds + 1)]
        if all((m / "model.json").is_file() for m in members):
            write_ensemble(out, members, name=name,
                           description=f"{folds}-fold cross-validation ensemble (logits averaged); command: {command}")
            typer.echo(f"ensemble of {folds} folds -> {out / 'ensemble.json'}")
