"""The model layer: checkpoint facts, loading, precision, and the reuse-path forward.

The engine above it sees only :class:`ModelInfo`, the input/output types in :mod:`.inputs` and a
callable ``forward(windows)``; nothing above this package imports torch.
"""

from .checkpoint import load_pretrained
from .ctc_model import CtcModel
from .info import DEFAULT_MODEL, ModelInfo, ModelLoadError, default_vocab, info_from, tiny_config
from .inputs import Forward, FrameCache, LanguageInput, ModelInput, ModelOutput, ReuseInput, batch_key
from .precision import PRECISIONS, PrecisionError, cpu_has_native_bf16, quantize_int8, resolve_precision

__all__ = [
    "CtcModel",
    "load_pretrained",
    "DEFAULT_MODEL",
    "ModelInfo",
    "ModelLoadError",
    "default_vocab",
    "info_from",
    "tiny_config",
    "FrameCache",
    "Forward",
    "LanguageInput",
    "ModelInput",
    "ModelOutput",
    "ReuseInput",
    "batch_key",
    "PRECISIONS",
    "PrecisionError",
    "cpu_has_native_bf16",
    "quantize_int8",
    "resolve_precision",
]
