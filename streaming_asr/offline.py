"""Offline reference: the whole utterance in one forward pass, HF-style chunking beyond ~25 s.

Offline is the streaming session driven differently: all audio is pushed, then flushed. With a
20 s chunk, 5 s left context and 5 s look-ahead, an utterance up to 25 s is one window (exactly what
the HF processor + model do), and longer files are cut like `pipeline(chunk_length_s=30,
stride_length_s=5)`, stitched frame-exactly. Segments come from the same endpointing as streaming.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from .config import StreamConfig
from .events import Final, Partial
from .model import ModelInfo, ModelInput, ModelOutput
from .session import StreamingSession

OFFLINE_CONFIG = StreamConfig(chunk_s=20.0, left_context_s=5.0, lookahead_s=5.0, max_segment_s=60.0)

ForwardFn = Callable[[Sequence[ModelInput]], list[ModelOutput]]


@dataclass(frozen=True)
class Transcript:
    """Finals of one file plus its joined text."""

    finals: tuple[Final, ...]
    duration_s: float

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.finals if f.text)


def transcribe_offline(
    forward: ForwardFn,
    info: ModelInfo,
    audio: np.ndarray,
    endpoint_silence_s: float = StreamConfig.endpoint_silence_s,
    progress: Callable[[float], None] | None = None,
) -> Transcript:
    """Recognise a whole model-rate signal; `progress(fraction)` is called as windows complete."""
    cfg = replace(OFFLINE_CONFIG, endpoint_silence_s=endpoint_silence_s)
    session = StreamingSession(info, cfg, interim_results=False)
    session.push(audio)
    session.finish("stop")
    finals: list[Final] = []
    total = max(1, session.available_frames())
    while (win := session.next_window()) is not None:
        session.accept(win, forward([win.model_input])[0])
        finals.extend(e for e in session.pop_events() if isinstance(e, Final))
        if progress:
            progress(min(1.0, session.next_frame / total))
    finals.extend(e for e in session.pop_events() if isinstance(e, Final))
    return Transcript(tuple(_drop_empty(finals)), audio.size / info.sample_rate)


def transcribe_streaming(
    forward: ForwardFn,
    info: ModelInfo,
    audio: np.ndarray,
    config: StreamConfig | None = None,
    push_samples: int = 1600,
    on_event: Callable[[Partial | Final, float], None] | None = None,
) -> Transcript:
    """Feed a signal through the streaming algorithm in `push_samples` pieces (as the server does).

    `on_event(event, audio_time)` sees every partial/final with the audio time at which it was
    produced (end of the audio pushed so far), for latency accounting.
    """
    session = StreamingSession(info, config or StreamConfig(), interim_results=on_event is not None)
    finals: list[Final] = []
    for start, piece in _pieces(audio, push_samples):
        session.push(piece)
        for ev in session.run(forward):
            _collect(ev, finals, on_event, (start + piece.size) / info.sample_rate)
    session.finish("stop")
    for ev in session.run(forward):
        _collect(ev, finals, on_event, audio.size / info.sample_rate)
    return Transcript(tuple(_drop_empty(finals)), audio.size / info.sample_rate)


def _collect(ev: Partial | Final, finals: list[Final], on_event: Callable[[Partial | Final, float], None] | None,
             t: float) -> None:
    if isinstance(ev, Final):
        finals.append(ev)
    if on_event is not None:
        on_event(ev, t)


def _pieces(audio: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    size = max(1, size)
    for start in range(0, audio.size, size):
        yield start, audio[start:start + size]


def _drop_empty(finals: list[Final]) -> list[Final]:
    """The closing final of a file that ends in silence has no words; keep it only if it is the only one."""
    kept = [f for f in finals if f.text]
    return kept or finals[-1:]
