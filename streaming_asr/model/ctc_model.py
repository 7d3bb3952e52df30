"""Loading a CTC checkpoint and running it: the one place that touches torch.

Everything the engine needs to know about a checkpoint is read into :class:`~.info.ModelInfo`; the
precision is one setting (:mod:`.precision`); reuse windows go through :mod:`.reuse`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .checkpoint import load_pretrained
from .info import DEFAULT_MODEL, ModelInfo, ModelLoadError, info_from, info_from_config
from .inputs import ModelInput, ModelOutput, ReuseInput, batch_key
from .precision import PrecisionError, apply_precision, resolve_precision, torch_dtype
from .runtime import HeapTrimmer, bound_kernel_caches

if TYPE_CHECKING:
    from .reuse import ReuseForward


class CtcModel:
    """A HuggingFace CTC checkpoint (`AutoModelForCTC` + `AutoProcessor`) ready for inference.

    Calling it with windows returns per-window log-probabilities of shape (frames, vocab).
    Windows of one call must share a batch key: wav2vec2-base has no attention mask and its first
    GroupNorm spans the whole input, so zero padding would change the result.
    """

    def __init__(self, model: Any, info: ModelInfo, device: str = "cpu", precision: str = "fp32") -> None:
        import torch

        bound_kernel_caches()  # before any forward: RSS must not grow with every flush-window length
        self.torch = torch
        self.model = model
        self.info = info
        self.device = device
        self.precision = precision
        self.dtype = torch_dtype(precision)
        self._reuse: ReuseForward | None = None
        self.heap = HeapTrimmer()  # freed forward memory goes back to the OS every ~30 s (runtime.py)

    @classmethod
    def load(
        cls,
        name: str = DEFAULT_MODEL,
        device: str = "auto",
        threads: int | None = None,
        precision: str = "fp32",
        quantize: bool = False,
    ) -> CtcModel:
        """Load from a hub id or a local directory; device 'auto' picks cuda when present.

        `precision`: fp32 (the library default: exact), bf16, fp16, int8 (dynamic quantisation of the
        Linear layers, CPU only) or auto (see :mod:`.precision`). `quantize=True` is int8.
        """
        import torch

        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            precision = resolve_precision("int8" if quantize else precision, device)
        except PrecisionError as exc:
            raise ModelLoadError(str(exc)) from exc
        model, processor = load_pretrained(name, "AutoModelForCTC")
        info = info_from(model.config, processor, name)
        model = apply_precision(model.eval().to(device), precision)
        return cls(model, info, device=device, precision=precision)

    @classmethod
    def from_config(
        cls, config: Any, name: str = "random", seed: int = 0, quantize: bool = False, precision: str = "fp32"
    ) -> CtcModel:
        """A randomly initialised model (tests, speed benchmarks of the real architecture)."""
        import torch
        from transformers import Wav2Vec2ForCTC

        torch.manual_seed(seed)
        precision = resolve_precision("int8" if quantize else precision, "cpu")
        model = apply_precision(Wav2Vec2ForCTC(config).eval(), precision)  # type: ignore[no-untyped-call]
        return cls(model, info_from_config(config, name), precision=precision)

    def __call__(self, windows: Sequence[ModelInput]) -> list[ModelOutput]:
        """Same-key windows in (see inputs.batch_key); log-probs (frames, vocab) out, with a cache for reuse inputs."""
        if not windows:
            return []
        keys = {batch_key(w) for w in windows}
        if len(keys) != 1:
            raise ValueError(f"windows in one batch must share a batch key, got {sorted(keys)}")
        if isinstance(windows[0], ReuseInput):
            outs: list[ModelOutput] = list(self.reuse(cast(Sequence[ReuseInput], windows)))
            self.heap.maybe_trim()
            return outs
        torch = self.torch
        arrays = cast(Sequence[np.ndarray], windows)  # one batch key: all plain windows
        batch = torch.from_numpy(np.stack(arrays).astype(np.float32)).to(self.device, self.dtype)
        with torch.inference_mode():
            logits = self.model(batch).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
        out = logp.cpu().numpy()
        self.heap.maybe_trim()
        return [out[i] for i in range(out.shape[0])]

    @property
    def reuse(self) -> ReuseForward:
        """The reuse-path forward (built on first use; raises ModelLoadError for unsupported models)."""
        if self._reuse is None:
            from .reuse import ReuseForward

            self._reuse = ReuseForward(self.model, self.dtype, self.device)
        return self._reuse

    @property
    def supports_reuse(self) -> bool:
        try:
            _ = self.reuse
        except ModelLoadError:
            return False
        return True

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.conv_dim[-1])

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)
