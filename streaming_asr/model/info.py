"""What the engine knows about a CTC checkpoint, read from its config and processor (no model constants)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
    conv_kernels: tuple[int, ...]  # the front end as unpadded convs, in samples: the waveform CNN, or
    conv_strides: tuple[int, ...]  # w2v-BERT's fbank as a virtual stack (families.py: conv_stack)
    do_normalize: bool  # the engine normalises each window (not for fbank front ends: they do it)

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
        out: np.ndarray = ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)
        return out


def default_vocab(size: int) -> tuple[str, ...]:
    """wav2vec2-base-960h's vocabulary, padded/truncated to `size` (for random test models)."""
    base = [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "|",
        "E",
        "T",
        "A",
        "O",
        "N",
        "I",
        "H",
        "S",
        "R",
        "D",
        "L",
        "U",
        "M",
        "W",
        "C",
        "F",
        "G",
        "Y",
        "P",
        "B",
        "V",
        "K",
        "'",
        "X",
        "J",
        "Q",
        "Z",
    ]
    base += [f"<extra{i}>" for i in range(max(0, size - len(base)))]
    return tuple(base[:size])


def word_delimiter(tokenizer: Any, vocab_map: dict[str, int]) -> str:
    """The tokenizer's word delimiter as saved ("|", "▁", ...). transformers 5 loads a non-default
    `word_delimiter_token` only into the special-tokens map and leaves the attribute at "|"."""
    saved = getattr(tokenizer, "_special_tokens_map", None) or {}
    for token in (saved.get("word_delimiter_token"), getattr(tokenizer, "word_delimiter_token", None)):
        if token is not None and str(token) in vocab_map:
            return str(token)
    return "|"


def info_from(config: Any, processor: Any, name: str) -> ModelInfo:
    """Read the engine's facts from a transformers config and processor."""
    from .families import conv_stack, normalizes_waveform  # families.py imports ModelLoadError from here

    tokenizer = getattr(processor, "tokenizer", processor)
    extractor = getattr(processor, "feature_extractor", processor)
    vocab_map: dict[str, int] = tokenizer.get_vocab()
    size = max(vocab_map.values()) + 1
    vocab = ["<unused>"] * size
    for token, idx in vocab_map.items():
        vocab[idx] = token
    blank = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    delimiter_token = word_delimiter(tokenizer, vocab_map)
    return ModelInfo(
        name=name,
        vocab=tuple(vocab),
        blank_id=int(blank),
        delimiter_id=vocab_map.get(delimiter_token, -1),
        sample_rate=int(getattr(extractor, "sampling_rate", 16000)),
        conv_kernels=conv_stack(config, extractor)[0],  # families.py: the front end as a conv stack
        conv_strides=conv_stack(config, extractor)[1],
        do_normalize=normalizes_waveform(config, extractor),
    )


def info_from_config(config: Any, name: str) -> ModelInfo:
    """ModelInfo of a randomly initialised model (no processor files): base-960h's vocabulary."""
    from .families import conv_stack, normalizes_waveform

    vocab = default_vocab(config.vocab_size)
    return ModelInfo(
        name=name,
        vocab=vocab,
        blank_id=config.pad_token_id if config.pad_token_id is not None else 0,
        delimiter_id=vocab.index("|") if "|" in vocab else -1,
        sample_rate=16000,
        conv_kernels=conv_stack(config)[0],
        conv_strides=conv_stack(config)[1],
        do_normalize=normalizes_waveform(config),
    )


def tiny_config(**overrides: Any) -> Any:
    """A very small wav2vec2 config with base-960h's frame geometry (plumbing tests)."""
    from transformers import Wav2Vec2Config

    settings: dict[str, Any] = dict(
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
    settings.update(overrides)
    return Wav2Vec2Config(**settings)
