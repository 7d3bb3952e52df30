"""What goes into a model call and what comes out, and which inputs can share one batched forward.

Three kinds of window input, one per streaming variant:

- a plain ``np.ndarray`` of normalised audio: the whole window is recomputed (exact vs offline);
- :class:`ReuseInput` with ``state=False`` (feature reuse): the CNN feature encoder runs only on the
  new frames (conv-0 still spans the window, for its GroupNorm statistics) and cached features stand
  in for the left context; the transformer still attends over the whole window;
- :class:`ReuseInput` with ``state=True`` (state reuse, limited left-context attention): only the new
  frames go through the transformer; cached keys/values of the left-context frames are attended to.

Any of them may be wrapped in a :class:`LanguageInput` (a session of an adapter checkpoint in a
language other than the model's default).

Reuse outputs come back with a :class:`FrameCache` of the new frames (with state reuse, of the
refreshed frames too), which the session keeps for the next window. The engine treats the cache as opaque:
it only slices and joins it by frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .info import ModelInfo


@dataclass(frozen=True)
class FrameCache:
    """Per-frame model state of consecutive stream frames; ``data`` is (rows, frames, width), time on dim 1.

    Rows: feature reuse keeps one row (CNN features); state reuse keeps 1 + 2 x layers rows (the
    projected features the positional convolution reads, then each layer's keys and values).
    """

    data: Any  # a torch tensor; the engine never looks inside

    @property
    def frames(self) -> int:
        return int(self.data.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.data.numel() * self.data.element_size())

    def take(self, start: int, end: int) -> FrameCache:
        """Frames [start, end) (a copy, so the source window's buffers can be freed)."""
        return FrameCache(self.data[:, start:end].clone())

    @staticmethod
    def join(pieces: Sequence[tuple[FrameCache, int, int]]) -> FrameCache:
        """Frames [start, end) of each piece, in order, in one new allocation (no intermediate copies)."""
        import torch

        views = [c.data[:, a:b] for c, a, b in pieces if b > a]
        return FrameCache(torch.cat(views, dim=1) if len(views) > 1 else views[0].clone())


@dataclass(frozen=True)
class ReuseInput:
    """A window whose first `new_from` frames' state is cached (see module docstring).

    `audio` is the whole window's normalised audio, as the recompute path would see it: conv-0 runs
    over all of it so that its GroupNorm statistics, and so every new frame's features, equal a full
    recompute's.
    """

    audio: np.ndarray
    new_from: int  # window frame where computation starts; frames before it come from `cache`
    cache: FrameCache | None  # None only when new_from == 0
    state: bool  # True: transformer state reuse; False: feature reuse only
    refresh: int = 0  # state reuse: the last `refresh` cached frames go through the transformer again
    ahead: FrameCache | None = None  # state reuse: projected features of the first new frames (1 row)


@dataclass(frozen=True)
class LanguageInput:
    """A window of a session in `language` (an MMS-style adapter checkpoint, model/adapters.py):
    the model switches to that language's adapter before it runs `inner`. Plain inputs run in the
    model's default language; one batch never mixes languages (see batch_key)."""

    language: str
    inner: np.ndarray | ReuseInput


ModelInput = np.ndarray | ReuseInput | LanguageInput
ModelOutput = np.ndarray | tuple[np.ndarray, FrameCache]  # log-probs, or (log-probs, cache of new frames)


def batch_key(item: ModelInput) -> tuple[Any, ...]:
    """Inputs with equal keys can share one batched forward without padding."""
    if isinstance(item, LanguageInput):
        return ("language", item.language, *batch_key(item.inner))
    if isinstance(item, ReuseInput):
        ahead = item.ahead.frames if item.ahead is not None else 0
        return ("state" if item.state else "features", len(item.audio), item.new_from, item.refresh, ahead)
    return ("window", len(item))


class Forward(Protocol):
    """Anything that turns a batch of same-key model inputs into CTC log-probs."""

    info: ModelInfo

    def __call__(self, windows: Sequence[ModelInput]) -> list[ModelOutput]: ...
