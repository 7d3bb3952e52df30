"""Embeddings: a file's hidden states per frame (or mean-pooled), from any layer of the encoder.

Long files go through the offline windowing (chunking.py: 20 s windows with 5 s context on each
side, each window normalised on its own as the feature extractor would); a file up to 30 s is one
window, exactly transformers' own `hidden_states` for the whole file. `frame_outputs` is that loop
for every frame-level task here (units and classification use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..chunking import plan_chunks, stitch
from ..model import ModelInfo

if TYPE_CHECKING:
    from ..model.encoder import Encoder

POOLS = ("none", "mean")


class TaskInputError(ValueError):
    """Input a task cannot use (audio too short, a layer out of range); `code` names it for HTTP (400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame_outputs(
    audio: np.ndarray, info: ModelInfo, run: Callable[[np.ndarray], np.ndarray], axis: int = 0
) -> np.ndarray:
    """`run(normalised window)` over the file's windows, stitched into one per-frame array (frames on `axis`)."""
    chunks = plan_chunks(int(audio.size), info)
    if not chunks:
        need = info.receptive_field
        raise TaskInputError(
            "audio_too_short",
            f"the audio has {audio.size} samples; one frame needs at least {need} "
            f"({1000 * need / info.sample_rate:g} ms at {info.sample_rate} Hz)",
        )
    outputs = [run(info.normalize(audio[c.start : c.end])) for c in chunks]
    return stitch(chunks, outputs, axis=axis)


def select_layers(layer: int | None, all_layers: bool, num_layers: int) -> list[int]:
    """hidden_states indices: `layer` (0 ... num_layers, default the last), or all of them."""
    if all_layers:
        return list(range(num_layers + 1))
    if layer is None:
        return [num_layers]
    if not 0 <= layer <= num_layers:
        raise TaskInputError(
            "invalid_layer",
            f"layer {layer} is out of range: this model's hidden states are 0 (the transformer's input) "
            f"to {num_layers} (its last layer)",
        )
    return [layer]


def embed(encoder: Encoder, audio: np.ndarray, layers: Sequence[int], all_layers: bool, pool: str) -> np.ndarray:
    """Model-rate mono audio -> float32 (frames, dim), (dim,) pooled; with `all_layers` a leading
    (layers,) axis: (layers, frames, dim) or (layers, dim)."""
    if pool not in POOLS:
        raise TaskInputError("invalid_pool", f"pool {pool!r} is not one of {', '.join(POOLS)}")
    frames = frame_outputs(audio, encoder.info, lambda w: encoder.hidden_states(w, layers), axis=1)
    out = frames.mean(axis=1, dtype=np.float64).astype(np.float32) if pool == "mean" else frames
    result: np.ndarray = out if all_layers else out[0]
    return result


def npz_keys(paths: Sequence[str]) -> list[str]:
    """One key per file: its name (`dir/a.wav` -> `a.wav`); files whose names collide are keyed by
    their path as given instead. The same path twice is an error (one array per input file)."""
    names = [Path(p).name for p in paths]
    keys = [p if names.count(n) > 1 else n for p, n in zip(paths, names)]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise TaskInputError("duplicate_file", f"the same file is given twice: {repeated[0]}")
    return keys
