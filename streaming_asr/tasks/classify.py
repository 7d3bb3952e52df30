"""Audio classification (language id, emotion, speaker...): labels and softmax scores, best first.

The head (wav2vec2-family `...ForSequenceClassification`) projects each frame, mean-pools over the
file and applies a linear classifier. A file up to 30 s is one window: exactly the model's own
logits. A longer one is not truncated: every frame's projection comes from its window of the
offline windowing (tasks/embed.frame_outputs), the mean runs over all the file's frames, then the
classifier: the same pooling as one forward over the whole file, with 30 s of attention per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .embed import TaskInputError, frame_outputs

if TYPE_CHECKING:
    from ..model.encoder import Encoder

DEFAULT_TOP_K = 5


def logits(encoder: Encoder, audio: np.ndarray) -> np.ndarray:
    """(labels,) float32 logits of model-rate mono audio."""
    frames = frame_outputs(audio, encoder.info, encoder.head_frames)
    pooled = frames.mean(axis=0, dtype=np.float64).astype(np.float32)
    return encoder.classify_pooled(pooled)


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values.astype(np.float64) - np.max(values))
    out: np.ndarray = shifted / shifted.sum()
    return out


def ranked(labels: tuple[str, ...], scores: np.ndarray, top_k: int = DEFAULT_TOP_K) -> list[dict[str, Any]]:
    """`[{"label", "score"}, ...]` by score, highest first (ties by label index); top_k 0 = all."""
    if top_k < 0:
        raise TaskInputError("invalid_top_k", f"top_k must be 0 (all labels) or more, got {top_k}")
    order = np.argsort(-scores, kind="stable")
    if top_k:
        order = order[:top_k]
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


def classify(encoder: Encoder, audio: np.ndarray, top_k: int = DEFAULT_TOP_K) -> list[dict[str, Any]]:
    """Labels (the checkpoint's id2label) with softmax scores, best first."""
    return ranked(encoder.labels, softmax(logits(encoder, audio)), top_k)
