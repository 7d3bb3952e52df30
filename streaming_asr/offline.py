"""Offline reference: the whole utterance in one forward pass, HF-style chunking beyond ~25 s.

Offline is the streaming session driven differently: all audio is pushed, then flushed. With a
20 s chunk, 5 s left context and 5 s look-ahead, an utterance up to 25 s is one window (exactly what
the HF processor + model do), and longer files are cut like `pipeline(chunk_length_s=30,
stride_length_s=5)`, stitched frame-exactly. Segments come from the same endpointing as streaming.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .config import StreamConfig
from .events import Final, Partial
from .model import ModelInfo, ModelInput, ModelOutput
from .segmenter import SegmentRescorer
from .session import StreamingSession, Window

OFFLINE_CONFIG = StreamConfig(chunk_s=20.0, left_context_s=5.0, lookahead_s=5.0, max_segment_s=60.0)

ForwardFn = Callable[[Sequence[ModelInput]], list[ModelOutput]]
Offload = Callable[..., Awaitable[Any]]  # offload(fn, *args) -> fn(*args), run somewhere


@dataclass(frozen=True)
class Transcript:
    """Finals of one file plus its joined text."""

    finals: tuple[Final, ...]
    duration_s: float

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.finals if f.text)


class OfflineRun:
    """The offline window loop's state, stepped by its caller.

    One place for the chunking, so the CLI (a sync forward, `transcribe_offline`) and the server's
    file endpoint (windows through the batcher, `transcribe_offline_async`) cut, stitch and
    endpoint a file identically and give the same transcript.
    """

    def __init__(
        self,
        info: ModelInfo,
        audio: np.ndarray,
        endpoint_silence_s: float = StreamConfig.endpoint_silence_s,
        window_s: float = OFFLINE_CONFIG.chunk_s,
        rescorer: SegmentRescorer | None = None,
    ) -> None:
        cfg = replace(OFFLINE_CONFIG, endpoint_silence_s=endpoint_silence_s)
        if window_s != cfg.chunk_s:  # shorter windows, context a quarter of them on each side
            cfg = replace(cfg, chunk_s=window_s, left_context_s=window_s / 4, lookahead_s=window_s / 4)
        self.session = StreamingSession(info, cfg, interim_results=False, rescorer=rescorer)
        self.session.push(audio)
        self.session.finish("stop")
        self.duration_s = audio.size / info.sample_rate
        self.finals: list[Final] = []
        self._total = max(1, self.session.available_frames())

    def next_window(self) -> Window | None:
        return self.session.next_window()

    def accept(self, win: Window, output: ModelOutput) -> None:
        self.session.accept(win, output)
        self.finals.extend(e for e in self.session.pop_events() if isinstance(e, Final))

    @property
    def progress(self) -> float:
        return min(1.0, self.session.next_frame / self._total)

    def transcript(self) -> Transcript:
        self.finals.extend(e for e in self.session.pop_events() if isinstance(e, Final))
        return Transcript(tuple(_drop_empty(self.finals)), self.duration_s)


def transcribe_offline(
    forward: ForwardFn,
    info: ModelInfo,
    audio: np.ndarray,
    endpoint_silence_s: float = StreamConfig.endpoint_silence_s,
    progress: Callable[[float], None] | None = None,
    rescorer: SegmentRescorer | None = None,
) -> Transcript:
    """Recognise a whole model-rate signal; `progress(fraction)` is called as windows complete.
    `rescorer` re-decodes each final (an LM: decoding/lm.py), as in a server session."""
    run = OfflineRun(info, audio, endpoint_silence_s, rescorer=rescorer)
    while (win := run.next_window()) is not None:
        run.accept(win, forward([win.model_input])[0])
        if progress:
            progress(run.progress)
    return run.transcript()


async def transcribe_offline_async(
    infer: Callable[[ModelInput], Awaitable[ModelOutput]],
    info: ModelInfo,
    audio: np.ndarray,
    endpoint_silence_s: float = StreamConfig.endpoint_silence_s,
    offload: Offload | None = None,
    window_s: float = OFFLINE_CONFIG.chunk_s,
) -> Transcript:
    """`transcribe_offline` with one window at a time through `infer` (e.g. the server's batcher).

    `offload(fn, *args)` runs the CPU work (setup, window cutting, accepting) off the event loop,
    e.g. in a thread pool; without it that work runs inline. `window_s` below the CLI's 20 s trades
    a little accuracy for shorter forwards (less memory traffic next to live sessions).
    """
    step: Offload = offload or _inline
    run: OfflineRun = await step(OfflineRun, info, audio, endpoint_silence_s, window_s)
    while (win := await step(run.next_window)) is not None:
        await step(run.accept, win, await infer(win.model_input))
    transcript: Transcript = await step(run.transcript)
    return transcript


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def transcribe_streaming(
    forward: ForwardFn,
    info: ModelInfo,
    audio: np.ndarray,
    config: StreamConfig | None = None,
    push_samples: int = 1600,
    on_event: Callable[[Partial | Final, float], None] | None = None,
    rescorer: SegmentRescorer | None = None,
) -> Transcript:
    """Feed a signal through the streaming algorithm in `push_samples` pieces (as the server does).

    `on_event(event, audio_time)` sees every partial/final with the audio time at which it was
    produced (end of the audio pushed so far), for latency accounting.
    """
    session = StreamingSession(info, config or StreamConfig(), interim_results=on_event is not None, rescorer=rescorer)
    finals: list[Final] = []
    for start, piece in _pieces(audio, push_samples):
        session.push(piece)
        for ev in session.run(forward):
            _collect(ev, finals, on_event, (start + piece.size) / info.sample_rate)
    session.finish("stop")
    for ev in session.run(forward):
        _collect(ev, finals, on_event, audio.size / info.sample_rate)
    return Transcript(tuple(_drop_empty(finals)), audio.size / info.sample_rate)


def _collect(
    ev: Partial | Final, finals: list[Final], on_event: Callable[[Partial | Final, float], None] | None, t: float
) -> None:
    if isinstance(ev, Final):
        finals.append(ev)
    if on_event is not None:
        on_event(ev, t)


def _pieces(audio: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    size = max(1, size)
    for start in range(0, audio.size, size):
        yield start, audio[start : start + size]


def _drop_empty(finals: list[Final]) -> list[Final]:
    """The closing final of a file that ends in silence has no words; keep it only if it is the only one."""
    kept = [f for f in finals if f.text]
    return kept or finals[-1:]
