"""Loading a CTC checkpoint and running it: the one place that touches torch.

Everything the engine needs to know about a checkpoint is read into :class:`~.info.ModelInfo`; the
precision is one setting (:mod:`.precision`); reuse windows go through :mod:`.reuse`. Any CTC family in
:mod:`.families` loads here (wav2vec2, HuBERT, WavLM, data2vec-audio, Wav2Vec2-Conformer, w2v-BERT 2.0):
the engine still sends waveform windows, and the family's front end turns them into the model's input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .adapters import Adapters
from .checkpoint import load_pretrained
from .families import family_of, front_end
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

    def __init__(
        self, model: Any, info: ModelInfo, device: str = "cpu", precision: str = "fp32", extractor: Any = None
    ) -> None:
        import torch

        bound_kernel_caches()  # before any forward: RSS must not grow with every flush-window length
        self.torch = torch
        self.model = model
        self.info = info
        self.device = device
        self.precision = precision
        self.dtype = torch_dtype(precision)
        self._reuse: ReuseForward | None = None
        self.adapters: Adapters | None = None  # MMS-style per-language adapters (adapters.py), or None
        self.front_end = front_end(model.config, extractor)  # windows -> input_values, or w2v-BERT's fbank
        self.heap = HeapTrimmer()  # freed forward memory goes back to the OS every ~30 s (runtime.py)

    @classmethod
    def load(
        cls,
        name: str = DEFAULT_MODEL,
        device: str = "auto",
        threads: int | None = None,
        precision: str = "fp32",
        quantize: bool = False,
        language: str | None = None,
    ) -> CtcModel:
        """Load from a hub id or a local directory; device 'auto' picks cuda when present.

        `precision`: fp32 (the library default: exact), bf16, fp16, int8 (dynamic quantisation of the
        Linear layers, CPU only) or auto (see :mod:`.precision`). `quantize=True` is int8.
        `language`: an adapter checkpoint's default language (ModelLoadError, listing the languages
        it has, if it lacks it); `info` is then that language's. Other languages: `adapters`.
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
        adapters = Adapters.find(model, processor, name, language)  # None: no per-language adapters
        if adapters is None:
            info = info_from(model.config, processor, name)
            model = apply_precision(model.eval().to(device), precision)
        else:
            model = adapters.attach(model.eval().to(device), precision)
            info = adapters.info(adapters.default)
        loaded = cls(model, info, device=device, precision=precision, extractor=processor)
        loaded.adapters = adapters
        return loaded

    @classmethod
    def from_config(
        cls, config: Any, name: str = "random", seed: int = 0, quantize: bool = False, precision: str = "fp32"
    ) -> CtcModel:
        """A randomly initialised model of the config's family (tests, speed benchmarks of the real architecture)."""
        import torch
        from transformers import AutoModelForCTC

        torch.manual_seed(seed)
        precision = resolve_precision("int8" if quantize else precision, "cpu")
        model = apply_precision(AutoModelForCTC.from_config(config).eval(), precision)  # type: ignore[no-untyped-call]
        return cls(model, info_from_config(config, name), precision=precision)

    def __call__(self, windows: Sequence[ModelInput]) -> list[ModelOutput]:
        """Same-key windows in (see inputs.batch_key); log-probs (frames, vocab) out, with a cache for reuse inputs."""
        if not windows:
            return []
        if self.adapters is not None and not self.adapters.inside():  # switch to the windows' language
            return self.adapters.run(self.__call__, windows)
        keys = {batch_key(w) for w in windows}
        if len(keys) != 1:
            raise ValueError(f"windows in one batch must share a batch key, got {sorted(keys)}")
        if isinstance(windows[0], ReuseInput):
            outs: list[ModelOutput] = list(self.reuse(cast(Sequence[ReuseInput], windows)))
            self.heap.maybe_trim()
            return outs
        torch = self.torch
        arrays = cast(Sequence[np.ndarray], windows)  # one batch key: all plain windows
        batch = torch.from_numpy(self.front_end(arrays)).to(self.device, self.dtype)
        with torch.inference_mode():
            logits = self.model(batch).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
        out = logp.cpu().numpy()
        self.heap.maybe_trim()
        return [out[i] for i in range(out.shape[0])]

    @property
    def supports_padding(self) -> bool:
        """Padding with an attention mask leaves each item's output as it is alone (to float tolerance).

        True for layer-norm feature encoders (`feat_extract_norm="layer"`, the checkpoints whose
        feature extractor returns attention masks) of the families marked `masked_padding` (families.py):
        nothing there mixes time steps but masked attention and the positional convolution, which sees
        zeros past the end either way. A group-norm encoder (base-960h) normalises conv-0 over the whole input, padding
        included, so it must never be padded; nor data2vec-audio and the conformers, whose stacked
        positional / per-layer convolutions read the padded frames after they stop being zeros.
        """
        config = self.model.config
        return family_of(config).masked_padding and getattr(config, "feat_extract_norm", None) == "layer"

    def forward_padded(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Plain windows of any lengths in one forward: zero-padded after normalisation (as the HF
        feature extractor pads), with an attention mask; each output is cut to its own
        `info.frames_for(len(window))` frames. Equal lengths take the unpadded path (`__call__`)."""
        if not windows:
            return []
        if self.adapters is not None and not self.adapters.inside():  # the default language
            return self.adapters.run(self.forward_padded, windows)
        lengths = [len(w) for w in windows]
        if len(set(lengths)) == 1:
            return cast(list[np.ndarray], self(windows))
        if not self.supports_padding:
            raise ValueError("this checkpoint's feature encoder uses group norm: padding would change its output")
        torch = self.torch
        batch = np.zeros((len(windows), max(lengths)), np.float32)
        mask = np.zeros(batch.shape, np.int64)
        for i, (w, n) in enumerate(zip(windows, lengths)):
            batch[i, :n] = w
            mask[i, :n] = 1
        with torch.inference_mode():
            inputs = torch.from_numpy(batch).to(self.device, self.dtype)
            logits = self.model(inputs, attention_mask=torch.from_numpy(mask).to(self.device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
        out = logp.cpu().numpy()
        self.heap.maybe_trim()
        return [out[i, : self.info.frames_for(n)].copy() for i, n in enumerate(lengths)]

    @property
    def reuse(self) -> ReuseForward:
        """The reuse-path forward (built on first use; raises ModelLoadError for unsupported models)."""
        if self._reuse is None:
            from .reuse import ReuseForward

            self._reuse = ReuseForward(self.model, self.dtype, self.device)
        return self._reuse

    @property
    def supports_reuse(self) -> bool:
        """Feature reuse is exact for this family's CNN (families.py); False falls back to recompute."""
        try:
            _ = self.reuse
        except ModelLoadError:
            return False
        return True

    @property
    def supports_state_reuse(self) -> bool:
        """reuse.py runs this family's transformer layers as the HF model does (WavLM, conformers: no)."""
        return self.supports_reuse and self.reuse.state

    @property
    def feature_dim(self) -> int:
        config = self.model.config
        return int(getattr(config, "feature_projection_input_dim", None) or config.conv_dim[-1])

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)
