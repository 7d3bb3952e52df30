"""Long files in overlapping windows on the model's frame grid, for frame-level outputs (hidden states,
log-probs for alignment): the plan and the stitch.

The same windowing offline transcription uses (offline.OFFLINE_CONFIG: 20 s of new audio with 5 s of
context on each side, like `pipeline(chunk_length_s=30, stride_length_s=5)`): a file up to
`window_s + 2 * context_s` is one window, exactly the model's own output for the whole file; longer
files are cut so that every output frame comes from the one window where it sits furthest from an
edge. Window starts are on the frame stride, so a window's frame j is the file's frame
`first_frame + j`: nothing is doubled or lost at seams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .model import ModelInfo

WINDOW_S = 20.0
CONTEXT_S = 5.0


@dataclass(frozen=True)
class Chunk:
    """One window: its audio `[start, end)` in samples; frames `[keep_from, keep_to)` of the file come
    from it, at window frame index `keep_from - first_frame` on."""

    start: int
    end: int
    first_frame: int
    keep_from: int
    keep_to: int


def plan_chunks(
    num_samples: int, info: ModelInfo, window_s: float = WINDOW_S, context_s: float = CONTEXT_S
) -> list[Chunk]:
    """Windows covering a file of `num_samples`; one window when it fits in window + 2 x context."""
    stride = info.frame_stride
    total = info.frames_for(num_samples)
    if total <= 0:
        return []
    step = max(1, int(round(window_s / info.frame_seconds)))
    context = max(0, int(round(context_s / info.frame_seconds)))
    if total <= step + 2 * context:
        return [Chunk(0, num_samples, 0, 0, total)]
    chunks = []
    for keep_from in range(0, total, step):
        keep_to = min(total, keep_from + step)
        first = max(0, keep_from - context)
        last = min(total, keep_to + context)  # exclusive
        start = first * stride
        end = min(num_samples, info.samples_for(last - first) + start)
        chunks.append(Chunk(start, end, first, keep_from, keep_to))
    return chunks


def stitch(chunks: Sequence[Chunk], outputs: Sequence[np.ndarray], axis: int = 0) -> np.ndarray:
    """The file's frames from each window's output (frames along `axis`), in order."""
    pieces = []
    for c, out in zip(chunks, outputs, strict=True):
        lo = c.keep_from - c.first_frame
        hi = c.keep_to - c.first_frame
        if out.shape[axis] < hi:
            raise ValueError(f"window output has {out.shape[axis]} frames, the plan needs {hi}")
        pieces.append(np.take(out, np.arange(lo, hi), axis=axis))
    return np.concatenate(pieces, axis=axis)
