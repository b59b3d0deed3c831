"""Model folders: weights (safetensors) plus JSON metadata; ensembles of them.

A model folder holds::

    model.json          architecture, preprocessing, classes, how it was trained
                        (command, data, fold, seed, settings), validation metrics,
                        SHA-256 of the weights, versions
    weights.safetensors the network's parameters and batch-norm statistics (float32)

An ensemble folder holds ``ensemble.json`` listing member model folders (relative
paths); its members' logits are averaged at inference (Iriondo et al. 2020 recommend
the ensemble of the cross-validation networks for new data).

The default model ships inside the package (``discvbr/data/models``) and is loaded
without any download.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from discvbr import __version__
from discvbr.errors import DiscVBRError
from discvbr.io import atomic_write, write_json
from discvbr.levels import DISC_LEVELS
from discvbr.resources import DEFAULT_MODEL, MODELS_DIR, default_model_path
from discvbr.segmentation.network import config_as_dict, network_config_from_dict
from discvbr.segmentation.preprocess import PreprocessConfig

__all__ = [
    "MODEL_FORMAT",
    "ENSEMBLE_FORMAT",
    "MODELS_DIR",
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelSet",
    "save_model",
    "write_ensemble",
    "load_model",
    "default_model_path",
    "class_names",
    "combine",
]

MODEL_FORMAT = "discvbr-segmentation-model"
ENSEMBLE_FORMAT = "discvbr-segmentation-ensemble"
FORMAT_VERSION = 1
MODEL_FILE, WEIGHTS_FILE, ENSEMBLE_FILE = "model.json", "weights.safetensors", "ensemble.json"


def class_names(n_classes: int) -> list[str]:
    """Output classes of a network: background then the discs, L5S1 first."""
    if n_classes != len(DISC_LEVELS) + 1:
        raise DiscVBRError(f"a disc network has {len(DISC_LEVELS) + 1} classes (background + 5 discs), got {n_classes}")
    return ["background", *DISC_LEVELS]


@dataclass
class LoadedModel:
    """A network ready for inference with its metadata."""

    network: object  # torch.nn.Module
    metadata: dict
    path: Path

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.metadata["preprocessing"])

    @property
    def n_classes(self) -> int:
        return int(self.metadata["architecture"]["n_classes"])


@dataclass
class ModelSet:
    """One model or an ensemble whose members share preprocessing and classes."""

    members: list[LoadedModel]
    path: Path
    name: str

    def __post_init__(self) -> None:
        if not self.members:
            raise DiscVBRError(f"{self.path}: an ensemble needs at least one member model")
        first = self.members[0]
        for m in self.members[1:]:
            if m.preprocess != first.preprocess or m.n_classes != first.n_classes:
                raise DiscVBRError(
                    f"{m.path}: ensemble members must share preprocessing and classes (differs from {first.path})"
                )

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.members[0].preprocess

    @property
    def n_classes(self) -> int:
        return self.members[0].n_classes

    def describe(self) -> dict:
        """Provenance of the model(s), for reports."""
        return {
            "name": self.name,
            "path": str(self.path),
            "members": [
                {
                    "name": m.metadata.get("name"),
                    "path": str(m.path),
                    "architecture": m.metadata.get("architecture"),
                    "fold": m.metadata.get("training", {}).get("fold"),
                    "weights_sha256": m.metadata.get("weights_sha256"),
                }
                for m in self.members
            ],
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    folder: str | os.PathLike,
    network,
    *,
    architecture,
    preprocess: PreprocessConfig,
    name: str,
    training: dict,
    validation: dict | None = None,
) -> Path:
    """Write a model folder (weights then metadata, each atomically).

    Parameters
    ----------
    folder : path-like
        Created if needed; an existing model there is replaced.
    network : torch.nn.Module
    architecture : CFCMConfig or UNetConfig
    preprocess : PreprocessConfig
    name : str
        Short model name.
    training : dict
        How it was trained: command, data, fold, seed, settings, duration.
    validation : dict, optional
        Metrics on the held-out fold.

    Returns
    -------
    Path
        The folder.
    """
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    with atomic_write(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    arch = config_as_dict(architecture)
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "architecture": arch,
        "classes": class_names(arch["n_classes"]),
        "label_values": {str(i + 1): lvl for i, lvl in enumerate(DISC_LEVELS)},
        "input": "one sagittal slice: first echo of a T1rho/T2 series (or a T2-weighted image)",
        "preprocessing": preprocess.as_dict(),
        "training": training,
        "validation": validation or {},
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": _sha256(folder / WEIGHTS_FILE),
        "n_parameters": int(sum(v.numel() for k, v in tensors.items() if "running" not in k and "num_batches" not in k)),
        "versions": {"discvbr": __version__, "torch": torch.__version__},
    }
    write_json(folder / MODEL_FILE, metadata)
    return folder


def write_ensemble(folder: str | os.PathLike, members: list[str | os.PathLike], *, name: str, description: str) -> Path:
    """Write ``ensemble.json`` in ``folder`` listing member model folders (stored relative)."""
    folder = Path(folder)
    rel = []
    for m in members:
        m = Path(m)
        if not (m / MODEL_FILE).is_file():
            raise DiscVBRError(f"ensemble member {m} has no {MODEL_FILE}")
        rel.append(os.path.relpath(m.resolve(), folder.resolve()))
    write_json(folder / ENSEMBLE_FILE, {"format": ENSEMBLE_FORMAT, "format_version": FORMAT_VERSION, "name": name,
                                        "description": description, "members": rel})
    return folder


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DiscVBRError(f"{what} {path} could not be read: {exc}") from None


def _load_single(folder: Path, device) -> LoadedModel:
    import torch
    from safetensors.torch import load_file

    from discvbr.segmentation.network import build_network

    meta_path = folder / MODEL_FILE
    if not meta_path.is_file():
        raise DiscVBRError(f"model metadata file not found: {meta_path}")
    metadata = _read_json(meta_path, "model metadata")
    if metadata.get("format") != MODEL_FORMAT:
        raise DiscVBRError(f"{meta_path} is not a DiscVBR segmentation model (format {metadata.get('format')!r})")
    weights = folder / metadata.get("weights_file", WEIGHTS_FILE)
    if not weights.is_file():
        raise DiscVBRError(f"model weights file not found: {weights}")
    config = network_config_from_dict(metadata["architecture"])
    class_names(config.n_classes)
    network = build_network(config)
    try:
        state = load_file(str(weights))
        network.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors and torch raise several types for damaged or mismatched files
        raise DiscVBRError(f"model weights {weights} could not be loaded: {exc}") from None
    network.eval().to(device)
    if device.type == "cpu":
        network = network.to(memory_format=torch.channels_last)
    return LoadedModel(network, metadata, folder)


def load_model(path: str | os.PathLike | None = None, *, device="cpu") -> ModelSet:
    """Load a model folder, an ensemble folder, or the shipped default (``path=None``).

    Parameters
    ----------
    path : path-like, optional
        A folder with ``model.json`` (one model) or ``ensemble.json`` (several), or one
        of those files; None for the default model shipped with DiscVBR.
    device : str or torch.device
        Where the networks live.

    Raises
    ------
    DiscVBRError
        When a file is missing (the message names it) or not a model.
    """
    import torch

    device = torch.device(device)
    path = default_model_path() if path is None else Path(path)
    if path.is_file() and path.name in (MODEL_FILE, ENSEMBLE_FILE):
        path = path.parent
    if not path.is_dir():
        raise DiscVBRError(f"model folder not found: {path}")
    if (path / ENSEMBLE_FILE).is_file():
        spec = _read_json(path / ENSEMBLE_FILE, "ensemble file")
        if spec.get("format") != ENSEMBLE_FORMAT:
            raise DiscVBRError(f"{path / ENSEMBLE_FILE} is not a DiscVBR ensemble (format {spec.get('format')!r})")
        members = [_load_single((path / m).resolve(), device) for m in spec.get("members", [])]
        return ModelSet(members, path, spec.get("name", path.name))
    if (path / MODEL_FILE).is_file():
        member = _load_single(path, device)
        return ModelSet([member], path, member.metadata.get("name", path.name))
    raise DiscVBRError(f"model file not found: {path / MODEL_FILE} (nor {ENSEMBLE_FILE})")


def combine(models: list[ModelSet]) -> ModelSet:
    """One ensemble from several loaded models or ensembles (members pooled)."""
    if not models:
        raise DiscVBRError("no model given")
    if len(models) == 1:
        return models[0]
    members = [m for model in models for m in model.members]
    return ModelSet(members, models[0].path, "+".join(m.name for m in models))
