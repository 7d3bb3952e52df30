"""The streaming session: windows in, partials and finals out. Pure and synchronous.

A session owns a sample buffer at the model's rate and a frame cursor `next_frame` (the first
frame not yet committed). Each window covers

    [next_frame - left, next_frame + k*chunk + lookahead)   frames (k = 1, or more when catching up)

and is cut from the buffer on the model's frame grid, so its output frame j *is* stream frame
`first_frame + j`. From each window's output only the frames it owns, [next_frame, next_frame +
k*chunk), are committed; the look-ahead frames only feed the provisional tail of the partial. The
stitcher is therefore exact: each stream frame is committed by exactly one window, keyed by its
absolute index, and a single greedy decoder runs over the committed frames in order.

Input normalisation (zero mean, unit variance, as the HF processor does) is applied per window to
the window's own samples, so a window that covers the whole utterance is bit-identical to offline.

With feature or state reuse (config.reuse), the session also keeps the model state of the last
`left` committed frames (an opaque FrameCache the model returned) and hands it out with the next
window, so the model computes only the new frames (see model/reuse.py). The window's audio still
spans the left context: the CNN's GroupNorm statistics are taken over all of it.

Model calls happen outside: `next_window()` hands out a window, the caller runs the model (alone
or batched with other sessions) and gives the log-probs back with `accept()`. What the committed
frames say (greedy decoding, endpointing, partials and finals) is the Segmenter's (segmenter.py);
its events collect in an outbox read with `pop_events()`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .config import FrameGeometry, StreamConfig
from .events import Event
from .model import FrameCache, ModelInfo, ModelInput, ModelOutput, ReuseInput
from .segmenter import Segmenter, _Segment
from .segmenter import SegmentRescorer as SegmentRescorer


class SessionError(RuntimeError):
    """The session was driven out of order (a bug in the caller)."""


@dataclass(frozen=True)
class Window:
    """One model input: normalised audio plus which stream frames it yields and owns.

    `audio` always covers the whole window [window start, tail_end), as a recompute would see it.
    With feature or state reuse (`reuse` != 'recompute'), the first `new_from` frames' state comes
    from `cache`; with state reuse the model returns only the new frames, so `first_frame` (the
    stream frame of the output's frame 0) is then `own_start`.
    """

    audio: np.ndarray
    first_frame: int  # stream frame of the model output's frame 0
    own_start: int
    own_end: int  # committed frames: [own_start, own_end)
    tail_end: int  # provisional look-ahead frames: [own_end, tail_end)
    forced: bool  # cut short by a flush (finalize / end of stream)
    reuse: str = "recompute"
    new_from: int = 0
    cache: FrameCache | None = None
    refresh: int = 0  # state reuse: cached frames the transformer runs again
    ahead: FrameCache | None = None  # state reuse: the previous look-ahead's projected features

    @property
    def num_frames(self) -> int:
        return self.tail_end - self.first_frame

    @property
    def model_input(self) -> ModelInput:
        if self.reuse == "recompute":
            return self.audio
        return ReuseInput(
            self.audio, self.new_from, self.cache, state=self.reuse == "state", refresh=self.refresh, ahead=self.ahead
        )


class _SampleBuffer:
    """The stream's samples from `start` on, so a window can be cut on the frame grid and old audio dropped."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._pending: list[np.ndarray] = []  # joined lazily: pushing 1 sample at a time stays O(n)
        self.start = 0  # stream sample index of _buf[0]

    @property
    def size(self) -> int:
        return self._buf.size + sum(p.size for p in self._pending)

    def append(self, samples: np.ndarray) -> None:
        self._pending.append(samples.copy())

    def cut(self, start: int, end: int) -> np.ndarray:
        """Stream samples [start, end); they must still be held."""
        if self._pending:
            self._buf = np.concatenate([self._buf, *self._pending])
            self._pending = []
        lo, hi = start - self.start, end - self.start
        if lo < 0 or hi > self._buf.size:
            raise SessionError("window outside the buffered audio")  # cannot happen: buffer invariant
        return self._buf[lo:hi]

    def drop_before(self, keep_from: int) -> None:
        drop = keep_from - self.start
        if drop > 0:
            self._buf = self._buf[drop:].copy()
            self.start = keep_from

    def clear(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._pending = []


class StreamingSession:
    """Incremental recognition of one audio stream (see module docstring)."""

    def __init__(
        self,
        info: ModelInfo,
        config: StreamConfig | None = None,
        interim_results: bool = True,
        rescorer: SegmentRescorer | None = None,
        on_commit: Callable[[int, np.ndarray], None] | None = None,
    ) -> None:
        self.info = info
        self.config = (config or StreamConfig()).validate()
        self.geo = FrameGeometry.of(self.config, info.frame_seconds)
        self.interim_results = interim_results
        self.on_commit = on_commit  # sees every committed (first_frame, log_probs) piece: tests, benches
        self._samples = _SampleBuffer()
        self.total_samples = 0
        self.next_frame = 0
        self._in_flight: Window | None = None
        self._flushes: deque[tuple[int, str]] = deque()  # (cut sample, reason), oldest first
        self._closed = False
        self.segmenter = Segmenter(info, self.geo, rescorer)  # decoding, endpointing, partials and finals
        self._cache: FrameCache | None = None  # reuse: model state of the last `left` committed frames
        self._ahead: FrameCache | None = None  # look-ahead reuse: projected features of frames from next_frame

    @property
    def rescorer(self) -> SegmentRescorer | None:
        """Phrase rescoring at finals; lives in the segmenter, kept here for callers of the session."""
        return self.segmenter.rescorer

    @rescorer.setter
    def rescorer(self, rescorer: SegmentRescorer | None) -> None:
        self.segmenter.rescorer = rescorer

    @property
    def _seg(self) -> _Segment:
        """The open segment (tests peek at its decoder)."""
        return self.segmenter.segment

    # ----------------------------------------------------------------- input
    def push(self, samples: np.ndarray) -> None:
        """Append mono float32 samples at the model's sample rate (any count, even 0 or 1)."""
        if self._closed:
            raise SessionError("push() after finish()")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self._samples.append(samples)
            self.total_samples += samples.size

    def finalize(self, reason: str = "finalize") -> None:
        """Close the open segment at the audio pushed so far (final reason `reason`).

        The cut is where the stream is *now*: audio pushed later belongs to the next segment, even
        if it arrives before the flush has been computed. Several flushes queue up in order.
        """
        if self._closed:
            return
        self._flushes.append((self.total_samples, reason))
        self._maybe_complete_flush()

    def finish(self, reason: str = "stop") -> None:
        """End of stream: recognise everything, send the last final; no more input after this."""
        self.finalize(reason)
        self._closed = True
        self._release_if_done()

    @property
    def flushing(self) -> bool:
        return bool(self._flushes)

    @property
    def buffered_samples(self) -> int:
        """Samples held in memory (bounded by the window size plus unprocessed input)."""
        return self._samples.size

    @property
    def backlog_seconds(self) -> float:
        """Audio received but not yet committed."""
        done = self.info.samples_for(self.next_frame) if self.next_frame else 0
        return max(0, self.total_samples - done) / self.info.sample_rate

    # --------------------------------------------------------------- windows
    def available_frames(self) -> int:
        return self.info.frames_for(self.total_samples)

    def next_window_ready(self, max_chunks: int = 1) -> bool:
        return self._in_flight is None and self._plan(max_chunks) is not None

    def next_window(self, max_chunks: int = 1) -> Window | None:
        """The next window to run, or None. At most one window is in flight per session."""
        if self._in_flight is not None:
            return None
        plan = self._plan(max_chunks)
        if plan is None:
            return None
        own_end, tail_end, forced, end_sample = plan
        first = max(0, self.next_frame - self.geo.left)
        audio = self.info.normalize(self._samples.cut(first * self.info.frame_stride, end_sample))
        reuse = self.config.reuse
        if reuse == "recompute":
            win = Window(audio, first, self.next_frame, own_end, tail_end, forced)
        else:
            n_ctx = self.next_frame - first
            cache = self._cache
            if n_ctx and (cache is None or cache.frames != n_ctx):
                raise SessionError("reuse cache does not cover the left context")  # cannot happen: see accept()
            out_first = self.next_frame if reuse == "state" else first
            refresh = min(self.geo.refresh, n_ctx) if reuse == "state" else 0
            ahead = self._ahead if self._ahead is not None and self._ahead.frames < tail_end - self.next_frame else None
            win = Window(
                audio,
                out_first,
                self.next_frame,
                own_end,
                tail_end,
                forced,
                reuse,
                n_ctx,
                cache if n_ctx else None,
                refresh,
                ahead,
            )
        self._in_flight = win
        return win

    def _cut_frame(self) -> int | None:
        """Last frame (exclusive) of the segment a pending flush closes."""
        return self.info.frames_for(self._flushes[0][0]) if self._flushes else None

    def _plan(self, max_chunks: int) -> tuple[int, int, bool, int] | None:
        """(own_end, tail_end, forced, end sample) of the next window, or None."""
        avail = self.available_frames()
        g = self.geo
        cut = self._cut_frame()
        room = avail - self.next_frame - g.lookahead
        limit = room if cut is None else min(room, cut - self.next_frame)  # never own frames past a cut
        if limit >= g.chunk:
            k = max(1, min(max_chunks, g.max_catchup, limit // g.chunk))
            own_end = self.next_frame + k * g.chunk
            return own_end, own_end + g.lookahead, False, self.info.samples_for(own_end + g.lookahead)
        if cut is not None and cut > self.next_frame:
            # a flush window runs to the cut sample, so its normalisation sees what offline would
            return cut, cut, True, self._flushes[0][0]
        return None

    def accept(self, window: Window, output: ModelOutput) -> None:
        """Take the model's output for the window handed out last: log-probs (frames, vocab), or
        (log-probs, cache of the new frames) for a reuse window."""
        if window is not self._in_flight:
            raise SessionError("accept() for a window that is not in flight")
        self._in_flight = None
        if isinstance(output, tuple):
            log_probs, cache = output
            self._keep_cache(window, cache)
        else:
            log_probs = output
        if log_probs.shape[0] != window.num_frames:
            raise SessionError(f"model gave {log_probs.shape[0]} frames, window expects {window.num_frames}")
        off = window.first_frame
        owned = log_probs[window.own_start - off : window.own_end - off]
        if self.on_commit is not None:
            self.on_commit(window.own_start, owned)
        self.segmenter.commit(window.own_start, owned)
        self.next_frame = window.own_end
        self._trim_buffer()
        cut = self._cut_frame()
        if not self._maybe_complete_flush() and self.interim_results:
            tail_end = window.tail_end if cut is None else min(window.tail_end, cut)
            tail = log_probs[window.own_end - off : max(window.own_end, tail_end) - off]
            self.segmenter.partial(tail, window.own_end)

    def run(self, forward: Callable[[Sequence[ModelInput]], list[ModelOutput]], max_chunks: int = 1) -> list[Event]:
        """Convenience driver: run every ready window through `forward`, return the events."""
        while (win := self.next_window(max_chunks)) is not None:
            self.accept(win, forward([win.model_input])[0])
        return self.pop_events()

    def _keep_cache(self, window: Window, cache: FrameCache) -> None:
        """Keep the committed frames' model state, only as many frames as the left context needs.

        `cache` covers the window's refreshed and new frames; the refreshed ones replace the newest
        kept frames. One allocation per window: the kept state is ~20 MiB for base at 5.12 s in fp32.
        """
        self._ahead = None
        new = window.refresh + window.own_end - window.own_start  # refreshed + committed frames
        if self.config.lookahead_reuse and window.reuse == "state" and window.tail_end > window.own_end:
            self._ahead = FrameCache(cache.data[:1, new:].clone())
        left = self.geo.left
        if not left:
            return
        old = self._cache.frames - window.refresh if self._cache is not None else 0
        drop = max(0, old + new - left)
        pieces = [(cache, max(0, drop - old), new)]
        if self._cache is not None and drop < old:
            pieces.insert(0, (self._cache, drop, old))
        self._cache = FrameCache.join(pieces)

    def pop_events(self) -> list[Event]:
        return self.segmenter.pop_events()

    def _maybe_complete_flush(self) -> bool:
        """Close the segment(s) whose flush cut has been reached by the committed frames."""
        done = False
        while self._flushes and self._in_flight is None and self._cut_frame() <= self.next_frame:  # type: ignore[operator]
            _, reason = self._flushes.popleft()
            self.segmenter.close(reason, cut_frame=self.next_frame)
            done = True
        if done:
            self._release_if_done()
        return done

    def _release_if_done(self) -> None:
        """After the last final, drop the audio and the model state (the kept keys/values are ~20 MiB
        for base): a finished session then holds no large buffers, however long its owner keeps it
        (a server's connection objects can stay alive until the cyclic garbage collector runs)."""
        if self._closed and not self._flushes and self._in_flight is None:
            self._cache = self._ahead = None
            self._samples.clear()
            self.segmenter.release()

    def _trim_buffer(self) -> None:
        """Drop audio no future window needs (bounded memory however long the stream)."""
        self._samples.drop_before(max(0, self.next_frame - self.geo.left) * self.info.frame_stride)
