"""Numeric precision as one setting: which one `auto` means on this hardware, and applying it.

`auto` is fp16 on CUDA, bf16 on CPUs that execute BF16 natively (AVX-512 BF16 or AMX on x86, the
BF16 extension on Arm), else fp32. The CPU check reads the kernel's CPU flags rather than asking
torch: oneDNN also runs bf16 on CPUs without native support, by emulation, 30x slower than fp32
(measured on an AVX2-only Zen 3), so "torch can do bf16" is not the question.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


class PrecisionError(ValueError):
    """A precision that this device cannot run; the message says what to use instead."""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where bf16 matrix products run in hardware (AVX-512 BF16, AMX-BF16, Arm BF16)."""
    flags = cpu_flags() if flags is None else flags
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "bf16" in flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(requested: str, device: str, flags: frozenset[str] | None = None) -> str:
    """The concrete precision (fp32, bf16, fp16 or int8) that `requested` means on `device`."""
    if requested not in PRECISIONS:
        raise PrecisionError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    cuda = device.startswith("cuda")
    if requested == "auto":
        if cuda:
            return "fp16"
        return "bf16" if cpu_has_native_bf16(flags) else "fp32"
    if requested == "int8" and cuda:
        raise PrecisionError("int8 (dynamic quantisation) is for CPU inference; on GPU use fp16")
    return requested


def apply_precision(model: Any, precision: str) -> Any:
    """Put `model` (already on its device, eval mode) into `precision`; returns the model to use."""
    import torch

    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "fp16":
        return model.to(torch.float16)
    if precision == "int8":
        return quantize_int8(model)
    return model


def torch_dtype(precision: str) -> object:
    """The dtype activations are fed in: int8 keeps fp32 activations (quantised on the fly)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every Linear layer (weights int8, activations quantised on the fly)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice
        quantize: Any = torch.ao.quantization.quantize_dynamic  # untyped in torch
        return quantize(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
