"""Training precision: what `auto` means on this device, autocast around the forward, the fp16 loss scaler.

Weights and the optimizer stay fp32 in every mode (mixed precision): bf16 and fp16 only change what the
forward and backward compute in. `auto` is bf16 on CUDA devices that support it, fp16 with a gradient
scaler on older ones, bf16 on CPUs that execute it natively (AVX-512 BF16 / AMX: the check in
model/precision.py, which reads the CPU's flags, because emulated bf16 runs far slower than fp32) and
fp32 on other CPUs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from ..config import ConfigError
from ..model import cpu_has_native_bf16

TRAINING_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA device here (use --device cpu)")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def resolve_training_precision(requested: str, device: str, flags: frozenset[str] | None = None) -> str:
    """fp32, bf16 or fp16: what `requested` means for training on `device` (ConfigError if it cannot run)."""
    if requested not in TRAINING_PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {requested!r}")
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        bf16 = bool(torch.cuda.is_bf16_supported())
        if requested == "auto":
            return "bf16" if bf16 else "fp16"
        if requested == "bf16" and not bf16:
            raise ConfigError("--precision bf16: this GPU has no bf16 support; use fp16 or fp32")
        return requested
    if requested == "auto":
        return "bf16" if cpu_has_native_bf16(flags) else "fp32"
    if requested == "fp16":
        raise ConfigError("--precision fp16 trains on CUDA only (it needs a loss scaler); on CPU use bf16 or fp32")
    return requested


class Precision:
    """autocast for the forward (a no-op in fp32) and, for fp16, the gradient scaler."""

    def __init__(self, precision: str, device: str) -> None:
        import torch

        self.name = precision
        self.device_type = "cuda" if device.startswith("cuda") else "cpu"
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        self.scaler: Any = torch.amp.GradScaler(self.device_type, enabled=precision == "fp16")

    def autocast(self) -> AbstractContextManager[Any]:
        import torch

        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.name != "fp32")
