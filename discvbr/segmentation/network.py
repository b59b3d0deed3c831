"""The CFCM segmentation network (and a small U-Net baseline) in PyTorch.

CFCM, "coarse-to-fine context memory" (Milletari et al., MICCAI 2018), as used by
Iriondo et al. (MRM 2020) for lumbar discs: a pre-activation ResNet34 encoder whose
decoder is a convolutional LSTM that walks the encoder's feature maps from the
coarsest stage to the finest.

Layout (reference widths, ``width = 1``)::

    input (1, H, W)
    stem      7x7 conv stride 1 -> 64, 2x2 max-pool            (H/2)
    stage 1   3 pre-activation residual blocks,  64 channels   (H/2)
    stage 2   4 blocks, 128 channels, after a 2x2 max-pool      (H/4)
    stage 3   6 blocks, 256 channels                             (H/8)
    stage 4   3 blocks, 512 channels                             (H/16)
    memory    one ConvLSTM per stage (hidden = stage channels, 3x3 gates, forget bias 1),
              walked stage 4 -> stage 1; each LSTM reads its stage's block outputs,
              last block first; its final (h, c) are upsampled by 2x2 stride-2
              transposed convolutions to initialise the next finer stage's LSTM
    head      2x2 stride-2 transposed conv to H, 3x3 conv + ReLU, 3x3 conv -> class logits

That is about 49 M parameters and 100 GMAC per 256 x 256 slice. ``width`` scales every
channel count (a compact variant for CPUs) and ``blocks`` the residual blocks per stage
(and so the number of LSTM steps); both are stored in a model's metadata.

References
----------
Milletari F, Rieke N, Baust M, Esposito M, Navab N. CFCM: segmentation via coarse to
fine context memory. MICCAI 2018, LNCS 11073:667-674.
He K, Zhang X, Ren S, Sun J. Identity mappings in deep residual networks. ECCV 2016.
Shi X et al. Convolutional LSTM network. NeurIPS 2015.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from discvbr.errors import DiscVBRError

__all__ = [
    "CFCMConfig",
    "UNetConfig",
    "CFCM",
    "UNet",
    "build_network",
    "network_config_from_dict",
    "count_parameters",
    "input_multiple",
]

#: Reference channels of the four encoder stages (ResNet34) at width 1.
STAGE_CHANNELS = (64, 128, 256, 512)
#: Reference residual blocks per stage (ResNet34).
RESNET34_BLOCKS = (3, 4, 6, 3)


@dataclass(frozen=True)
class CFCMConfig:
    """Architecture of a CFCM network.

    Parameters
    ----------
    width : float
        Multiplier of every channel count (1 = the reference 64/128/256/512).
    blocks : tuple of int
        Pre-activation residual blocks in each of the four stages (reference 3, 4, 6, 3).
    in_channels : int
        Input channels (1: the first echo).
    n_classes : int
        Output classes (6: background + five discs).
    """

    width: float = 1.0
    blocks: tuple[int, ...] = RESNET34_BLOCKS
    in_channels: int = 1
    n_classes: int = 6
    architecture: str = field(default="cfcm", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if not 0 < self.width <= 4:
            raise DiscVBRError(f"CFCM width multiplier must be within (0, 4], got {self.width}")
        if len(self.blocks) != len(STAGE_CHANNELS) or min(self.blocks) < 1:
            raise DiscVBRError(f"CFCM needs four stages of at least one block each, got blocks={self.blocks}")
        if self.in_channels < 1 or self.n_classes < 2:
            raise DiscVBRError(f"CFCM needs >= 1 input channel and >= 2 classes, got {self.in_channels}, {self.n_classes}")

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of the four stages (at least 4 each)."""
        return tuple(max(4, int(round(c * self.width))) for c in STAGE_CHANNELS)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net baseline (the paper's comparison, Supporting Figures S7-S9).

    Parameters
    ----------
    base_filters : int
        Channels of the first level; doubled at each of the ``depth`` downsamplings.
    depth : int
        Number of 2x2 max-pool downsamplings.
    in_channels, n_classes : int
        As for :class:`CFCMConfig`.
    """

    base_filters: int = 16
    depth: int = 4
    in_channels: int = 1
    n_classes: int = 6
    architecture: str = field(default="unet", init=False)

    def __post_init__(self) -> None:
        if self.base_filters < 1 or not 1 <= self.depth <= 6:
            raise DiscVBRError(f"U-Net needs base_filters >= 1 and depth 1..6, got {self.base_filters}, {self.depth}")


def network_config_from_dict(values: dict) -> CFCMConfig | UNetConfig:
    """Rebuild an architecture from the ``architecture`` block of a model's metadata."""
    values = dict(values)
    kind = values.pop("architecture", None)
    try:
        if kind == "cfcm":
            return CFCMConfig(**values)
        if kind == "unet":
            return UNetConfig(**values)
    except TypeError as exc:
        raise DiscVBRError(f"model metadata: architecture fields are not understood: {exc}") from None
    raise DiscVBRError(f"model metadata: unknown architecture {kind!r}; expected 'cfcm' or 'unet'")


def config_as_dict(config: CFCMConfig | UNetConfig) -> dict:
    """The architecture as plain JSON values (``architecture`` key first)."""
    values = asdict(config)
    kind = values.pop("architecture")
    if "blocks" in values:
        values["blocks"] = list(values["blocks"])
    return {"architecture": kind, **values}


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell with 3x3 gates; the forget gate's bias starts at 1."""

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class CFCM(nn.Module):
    """Coarse-to-fine context memory network; see the module docstring for the layout.

    Input ``(N, in_channels, H, W)`` with H and W multiples of 16; output logits
    ``(N, n_classes, H, W)``.
    """

    def __init__(self, config: CFCMConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        self.stem = nn.Conv2d(config.in_channels, ch[0], 7, padding=3)
        stages = []
        for s, (n_blocks, out_ch) in enumerate(zip(config.blocks, ch)):
            in_ch = ch[max(s - 1, 0)]
            stages.append(nn.ModuleList([PreActBlock(in_ch if b == 0 else out_ch, out_ch) for b in range(n_blocks)]))
        self.stages = nn.ModuleList(stages)
        self.memories = nn.ModuleList([ConvLSTMCell(c, c) for c in ch])
        # state hand-over from stage s+1 (coarser) to stage s
        self.up_h = nn.ModuleList([nn.ConvTranspose2d(ch[s + 1], ch[s], 2, stride=2) for s in range(len(ch) - 1)])
        self.up_c = nn.ModuleList([nn.ConvTranspose2d(ch[s + 1], ch[s], 2, stride=2) for s in range(len(ch) - 1)])
        self.head_up = nn.ConvTranspose2d(ch[0], ch[0], 2, stride=2)
        self.head_conv = nn.Conv2d(ch[0], ch[0], 3, padding=1)
        self.head_out = nn.Conv2d(ch[0], config.n_classes, 3, padding=1)
        _xavier_init(self)
        for cell in self.memories:
            hidden = cell.hidden_channels
            with torch.no_grad():
                cell.gates.bias[hidden : 2 * hidden].fill_(1.0)  # forget gate (order i, f, o, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels, 16)
        out = F.max_pool2d(self.stem(x), 2)
        features: list[list[torch.Tensor]] = []
        for s, blocks in enumerate(self.stages):
            if s > 0:
                out = F.max_pool2d(out, 2)
            outputs = []
            for block in blocks:
                out = block(out)
                outputs.append(out)
            features.append(outputs)
        h = c = None
        for s in reversed(range(len(self.stages))):
            first = features[s][-1]
            if h is None:
                h = first.new_zeros(first.shape)
                c = first.new_zeros(first.shape)
            else:
                h, c = self.up_h[s](h), self.up_c[s](c)
            for feature in reversed(features[s]):
                h, c = self.memories[s](feature, (h, c))
        out = F.relu(self.head_conv(self.head_up(h)))
        return self.head_out(out)


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A standard U-Net (Ronneberger et al., MICCAI 2015) with batch normalisation."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        chans = [config.base_filters * 2**d for d in range(config.depth + 1)]
        self.down = nn.ModuleList([_DoubleConv(config.in_channels, chans[0])])
        self.down.extend(_DoubleConv(chans[d - 1], chans[d]) for d in range(1, config.depth + 1))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[d], chans[d - 1], 2, stride=2) for d in range(config.depth, 0, -1))
        self.merge = nn.ModuleList(_DoubleConv(2 * chans[d - 1], chans[d - 1]) for d in range(config.depth, 0, -1))
        self.out = nn.Conv2d(chans[0], config.n_classes, 1)
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels, 2**self.config.depth)
        skips = []
        out = x
        for d, block in enumerate(self.down):
            if d > 0:
                out = F.max_pool2d(out, 2)
            out = block(out)
            skips.append(out)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            out = merge(torch.cat([up(out), skip], dim=1))
        return self.out(out)


def input_multiple(config: CFCMConfig | UNetConfig) -> int:
    """In-plane sizes the network accepts are multiples of this (16 for CFCM)."""
    return 16 if isinstance(config, CFCMConfig) else 2**config.depth


def build_network(config: CFCMConfig | UNetConfig) -> nn.Module:
    """Instantiate the network of an architecture (Xavier-initialised)."""
    if isinstance(config, CFCMConfig):
        return CFCM(config)
    if isinstance(config, UNetConfig):
        return UNet(config)
    raise DiscVBRError(f"unknown network configuration {config!r}")


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_input(x: torch.Tensor, in_channels: int, multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise DiscVBRError(f"network input must be (N, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise DiscVBRError(f"network input size {tuple(x.shape[2:])} must be a multiple of {multiple} in both axes")
