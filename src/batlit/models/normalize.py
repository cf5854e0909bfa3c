"""Input normalisation as a model layer, plus the argument checks shared by all models.

Images enter every model in [0, 1]; attacks work in that space, so normalisation has to
live inside the network rather than in the data pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn


def _as_floats(values: Iterable[float], key: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{key} must be a sequence of floats, got {values!r}")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key} must be a sequence of floats, got {values!r}") from err
    if not out:
        raise ValueError(f"{key} must not be empty")
    return out


def _fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in t.flatten().tolist()) + "]"


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; the identity when both mean and std are None.

    A missing mean defaults to 0 and a missing std to 1. Buffers are shaped (1, C, 1, 1).
    """

    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.channels_last = False  # set by use_channels_last: inputs enter in the weights' layout
        if mean is None and std is None:
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
            return
        mean_l = _as_floats(mean, "model.mean") if mean is not None else None
        std_l = _as_floats(std, "model.std") if std is not None else None
        if mean_l is None:
            mean_l = [0.0] * len(std_l)  # type: ignore[arg-type]
        if std_l is None:
            std_l = [1.0] * len(mean_l)
        if len(mean_l) != len(std_l):
            raise ValueError(
                f"model.mean and model.std must have the same length, got {len(mean_l)} and {len(std_l)}"
            )
        if any(s <= 0 for s in std_l):
            raise ValueError(f"model.std must be > 0 in every channel, got {std_l}")
        self.register_buffer("mean", torch.tensor(mean_l, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std_l, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def num_channels(self) -> int | None:
        return None if self.mean is None else self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.mean is None or self.std is None:
            return x
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if self.mean is None or self.std is None:
            return "identity"
        return f"mean={_fmt(self.mean)}, std={_fmt(self.std)}"


def check_int(value: object, key: str, minimum: int) -> int:
    """Return ``value`` as int, raising ``ValueError`` naming ``key`` if it is not an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return int(value)


def build_input_layer(
    num_classes: int,
    in_channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> Normalize:
    """Validate the arguments every model shares and return its ``Normalize`` layer."""
    check_int(num_classes, "model.num_classes", 2)
    check_int(in_channels, "model.in_channels", 1)
    norm = Normalize(mean, std)
    if norm.num_channels is not None and norm.num_channels != in_channels:
        key = "model.mean" if mean is not None else "model.std"
        raise ValueError(
            f"{key} must have model.in_channels={in_channels} entries, got {norm.num_channels}"
        )
    return norm


def use_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """``model.channels_last``: NHWC weights and inputs (faster convolutions on tensor-core GPUs).

    The model's ``Normalize`` converts every input, so attacks and data need not know; parameters,
    their names and the state dict are unchanged, so checkpoints load either way.
    """
    if enabled:
        model.to(memory_format=torch.channels_last)
        for module in model.modules():
            if isinstance(module, Normalize):
                module.channels_last = True
    return model
