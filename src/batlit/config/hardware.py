"""The machine a run is on: the device, and whether bf16 is fast there (the defaults of the fast paths)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError


def resolve_device(name: str):
    """``auto``: the GPU when there is one, else the CPU; anything else as torch spells it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: {name!r} is not a device ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r}, but no CUDA GPU is available here (device=auto uses one when there is)")
    return device


def on_gpu(accelerator: str = "auto") -> bool:
    """True where the run will use a CUDA GPU: one is visible and ``trainer.accelerator`` is not cpu.

    The default of every GPU fast path (``model.channels_last``, ``data.on_device``, bf16).
    """
    if str(accelerator) == "cpu":
        return False
    import torch

    return bool(torch.cuda.is_available())


def gpu_or(on_gpu_value: Any, otherwise: Any, accelerator: str = "auto") -> Any:
    """``${batlit_gpu_or:a,b,${.accelerator}}``: the first value on a GPU, else the second."""
    return on_gpu_value if on_gpu(accelerator) else otherwise


def cpu_has_bf16() -> bool:
    """The CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), as torch detects it.

    On such a CPU (the project's 2-core Xeons list ``amx_bf16``) bf16 autocast and channels_last
    make convolutions several times faster; elsewhere bf16 is emulated and slower than fp32.
    ``BATLIT_CPU_BF16=0`` (or ``1``) overrides the detection.
    """
    forced = os.environ.get("BATLIT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def fast_bf16(accelerator: str = "auto") -> bool:
    """``${batlit_fast_bf16:${.accelerator}}``: the run's device computes bf16 fast — a GPU, or a
    CPU with bf16 in hardware. The default of ``trainer.precision`` (bf16-mixed) and of
    ``model.channels_last``."""
    return on_gpu(accelerator) or cpu_has_bf16()


def fast_precision(accelerator: str = "auto") -> str:
    """``${batlit_precision:${.accelerator}}``, the default ``trainer.precision``: ``bf16-mixed``
    where bf16 is fast (a GPU with bf16, Ampere and later; a CPU with bf16 in hardware);
    ``16-mixed`` (fp16 autocast with a gradient scaler) on a GPU with fp16 tensor cores but no bf16
    (V100, T4), where bf16 runs emulated and slowly; else ``32-true``."""
    if on_gpu(accelerator):
        import torch

        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed"
        return "16-mixed" if torch.cuda.get_device_capability() >= (7, 0) else "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


