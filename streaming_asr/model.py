"""Loading a CTC checkpoint and running it: the one place that touches torch.

Everything the engine needs to know about a checkpoint (vocabulary, blank id, word delimiter,
sample rate, frame stride and receptive field, input normalisation) is read from the checkpoint
into :class:`ModelInfo`, so the rest of the package has no model constants.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/wav2vec2-base-960h"


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs to know about a CTC checkpoint."""

    name: str
    vocab: tuple[str, ...]  # token string by id
    blank_id: int
    delimiter_id: int
    sample_rate: int
    conv_kernels: tuple[int, ...]
    conv_strides: tuple[int, ...]
    do_normalize: bool

    @property
    def frame_stride(self) -> int:
        """Samples between consecutive output frames (320 for wav2vec2)."""
        stride = 1
        for s in self.conv_strides:
            stride *= s
        return stride

    @property
    def receptive_field(self) -> int:
        """Samples one output frame looks at (400 for wav2vec2)."""
        field = 1
        jump = 1
        for k, s in zip(self.conv_kernels, self.conv_strides):
            field += (k - 1) * jump
            jump *= s
        return field

    @property
    def frame_seconds(self) -> float:
        return self.frame_stride / self.sample_rate

    def frames_for(self, num_samples: int) -> int:
        """Number of output frames the feature encoder yields for `num_samples` input samples.

        Unpadded convolutions: frame t covers samples [t*stride, t*stride + receptive_field).
        """
        if num_samples < self.receptive_field:
            return 0
        return (num_samples - self.receptive_field) // self.frame_stride + 1

    def samples_for(self, num_frames: int) -> int:
        """Fewest input samples that yield `num_frames` frames."""
        if num_frames <= 0:
            return 0
        return (num_frames - 1) * self.frame_stride + self.receptive_field

    def normalize(self, audio: np.ndarray) -> np.ndarray:
        """Zero-mean unit-variance, exactly as Wav2Vec2FeatureExtractor does when do_normalize is set."""
        audio = audio.astype(np.float32, copy=False)
        if not self.do_normalize or audio.size == 0:
            return audio
        return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)


@dataclass(frozen=True)
class CachedInput:
    """A window whose earlier frames' feature-encoder output is already known (feature cache).

    Only `audio` (the new frames' samples, normalised on their own) goes through the CNN feature
    encoder; `context` (frames x conv channels) is prepended before the transformer, which still
    attends over the whole window.
    """

    audio: np.ndarray
    context: np.ndarray


ModelInput = np.ndarray | CachedInput
ModelOutput = np.ndarray | tuple[np.ndarray, np.ndarray]  # log-probs, or (log-probs, new features)


def batch_key(item: ModelInput) -> tuple[int, ...]:
    """Inputs with equal keys can share one batched forward without padding."""
    if isinstance(item, CachedInput):
        return (len(item.audio), len(item.context))
    return (len(item),)


class Forward(Protocol):
    """Anything that turns a batch of same-shape model inputs into CTC log-probs."""

    info: ModelInfo

    def __call__(self, windows: Sequence[ModelInput]) -> list[ModelOutput]: ...


def _is_local(name: str) -> bool:
    return os.path.isdir(name) or name.startswith((".", "/", "~"))


class CtcModel:
    """A HuggingFace CTC checkpoint (`AutoModelForCTC` + `AutoProcessor`) ready for inference.

    Calling it with windows returns per-window log-probabilities of shape (frames, vocab).
    Windows of one call must be the same length: wav2vec2-base has no attention mask and its first
    GroupNorm spans the whole input, so zero padding would change the result.
    """

    def __init__(self, model: object, info: ModelInfo, device: str = "cpu", fp16: bool = False) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.info = info
        self.device = device
        self.dtype = torch.float16 if fp16 else torch.float32

    @classmethod
    def load(
        cls,
        name: str = DEFAULT_MODEL,
        device: str = "auto",
        threads: int | None = None,
        fp16: bool | None = None,
        quantize: bool = False,
    ) -> "CtcModel":
        """Load from a hub id or a local directory; device 'auto' picks cuda when present.

        `quantize` (CPU only): dynamic int8 quantisation of the Linear layers, about 2x faster on
        CPU for the base-size model; bench/accuracy.py measures what it costs in accuracy.
        """
        import torch
        from transformers import AutoModelForCTC, AutoProcessor

        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        local = _is_local(name)
        if local and not Path(name).expanduser().is_dir():
            raise ModelLoadError(f"model directory {name!r} does not exist")
        path = str(Path(name).expanduser()) if local else name
        try:
            processor = AutoProcessor.from_pretrained(path)
            model = AutoModelForCTC.from_pretrained(path)
        except OSError as exc:
            if local:
                raise ModelLoadError(f"cannot load model from directory {path!r}: {exc}") from exc
            raise ModelLoadError(
                f"cannot load {name!r} from the HuggingFace hub ({type(exc).__name__}); "
                "download it where the hub is reachable (e.g. `huggingface-cli download "
                f"{name} --local-dir ./model`) and pass the directory: --model ./model"
            ) from exc
        info = info_from(model.config, processor, name)
        fp16 = device.startswith("cuda") if fp16 is None else fp16
        model.eval().to(device)
        if fp16:
            model.half()
        if quantize:
            if device != "cpu":
                raise ModelLoadError("--quantize int8 is for CPU inference; on GPU use fp16 (the default there)")
            model = quantize_int8(model)
        return cls(model, info, device=device, fp16=fp16)

    @classmethod
    def from_config(cls, config: object, name: str = "random", seed: int = 0, quantize: bool = False) -> "CtcModel":
        """A randomly initialised model (tests, speed benchmarks of the real architecture)."""
        import torch
        from transformers import Wav2Vec2ForCTC

        torch.manual_seed(seed)
        model = Wav2Vec2ForCTC(config).eval()
        if quantize:
            model = quantize_int8(model)
        vocab = _default_vocab(config.vocab_size)
        info = ModelInfo(
            name=name,
            vocab=vocab,
            blank_id=config.pad_token_id if config.pad_token_id is not None else 0,
            delimiter_id=vocab.index("|") if "|" in vocab else -1,
            sample_rate=16000,
            conv_kernels=tuple(config.conv_kernel),
            conv_strides=tuple(config.conv_stride),
            do_normalize=True,
        )
        return cls(model, info)

    def __call__(self, windows: Sequence[ModelInput]) -> list[ModelOutput]:  # type: ignore[override]
        """Normalised same-shape windows in, log-probs (frames, vocab) out.

        CachedInput windows return (log-probs, feature-encoder output of their new frames).
        """
        if not windows:
            return []
        keys = {batch_key(w) for w in windows}
        if len(keys) != 1:
            raise ValueError(f"windows in one batch must have the same shape, got {sorted(keys)}")
        if isinstance(windows[0], CachedInput):
            return self._cached(windows)  # type: ignore[arg-type]
        torch = self.torch
        batch = torch.from_numpy(np.stack(windows).astype(np.float32)).to(self.device, self.dtype)
        with torch.inference_mode():
            logits = self.model(batch).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
        out = logp.cpu().numpy()
        return [out[i] for i in range(out.shape[0])]

    def _cached(self, windows: Sequence[CachedInput]) -> list[ModelOutput]:
        """The HF forward split at the feature encoder: CNN on new audio only, transformer on all."""
        torch = self.torch
        w2v = self.model.wav2vec2
        audio = torch.from_numpy(np.stack([w.audio for w in windows]).astype(np.float32)).to(self.device, self.dtype)
        with torch.inference_mode():
            new = w2v.feature_extractor(audio).transpose(1, 2)
            feats = new
            if len(windows[0].context):  # (a stream's first window has nothing cached yet)
                context = torch.from_numpy(np.stack([w.context for w in windows])).to(self.device, new.dtype)
                feats = torch.cat([context, new], dim=1)
            hidden, _ = w2v.feature_projection(feats)
            hidden = w2v.encoder(hidden)[0]
            if getattr(w2v, "adapter", None) is not None:
                hidden = w2v.adapter(hidden)
            logp = torch.log_softmax(self.model.lm_head(hidden).float(), dim=-1).cpu().numpy()
        feats = new.float().cpu().numpy()
        return [(logp[i], feats[i]) for i in range(len(windows))]

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.conv_dim[-1])


def quantize_int8(model: object) -> object:
    """Dynamic int8 quantisation of every Linear layer (weights int8, activations quantised on the fly)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _default_vocab(size: int) -> tuple[str, ...]:
    """wav2vec2-base-960h's vocabulary, padded/truncated to `size` (for random test models)."""
    base = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L",
            "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]
    base += [f"<extra{i}>" for i in range(max(0, size - len(base)))]
    return tuple(base[:size])


def info_from(config: object, processor: object, name: str) -> ModelInfo:
    """Read the engine's facts from a transformers config and processor."""
    tokenizer = getattr(processor, "tokenizer", processor)
    extractor = getattr(processor, "feature_extractor", processor)
    vocab_map: dict[str, int] = tokenizer.get_vocab()
    size = max(vocab_map.values()) + 1
    vocab = ["<unused>"] * size
    for token, idx in vocab_map.items():
        vocab[idx] = token
    blank = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    delimiter_token = getattr(tokenizer, "word_delimiter_token", "|") or "|"
    return ModelInfo(
        name=name,
        vocab=tuple(vocab),
        blank_id=int(blank),
        delimiter_id=vocab_map.get(delimiter_token, -1),
        sample_rate=int(getattr(extractor, "sampling_rate", 16000)),
        conv_kernels=tuple(config.conv_kernel),
        conv_strides=tuple(config.conv_stride),
        do_normalize=bool(getattr(extractor, "do_normalize", True)),
    )


def tiny_config() -> object:
    """A very small wav2vec2 config with base-960h's frame geometry (plumbing tests)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=32,
        pad_token_id=0,
    )
