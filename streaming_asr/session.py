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
or batched with other sessions) and gives the log-probs back with `accept()`. Events collect in an
outbox read with `pop_events()`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .config import FrameGeometry, StreamConfig
from .ctc import GreedyDecoder, Token, frame_argmax, tokens_to_words, words_text
from .events import Event, Final, Partial, PhraseResult, WordResult
from .model import FrameCache, ModelInfo, ModelInput, ModelOutput, ReuseInput


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


class SegmentRescorer(Protocol):
    """Re-decodes a closed segment's log-probs (phrase biasing); returns tokens and phrase matches."""

    def rescore(self, log_probs: np.ndarray, first_frame: int) -> tuple[list[Token], list[PhraseResult]]: ...


@dataclass
class _Segment:
    index: int
    start_frame: int
    decoder: GreedyDecoder
    logp: list[tuple[int, np.ndarray]] = field(default_factory=list)  # kept only when rescoring


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
        self.rescorer = rescorer
        self.on_commit = on_commit  # sees every committed (first_frame, log_probs) piece: tests, benches
        self._buf = np.zeros(0, dtype=np.float32)
        self._pending: list[np.ndarray] = []
        self._buf_start = 0  # stream sample index of _buf[0]
        self.total_samples = 0
        self.next_frame = 0
        self._in_flight: Window | None = None
        self._flushes: deque[tuple[int, str]] = deque()  # (cut sample, reason), oldest first
        self._closed = False
        self._seg = _Segment(0, 0, GreedyDecoder(info.blank_id))
        self._last_speech_end: int | None = None  # frame after the last letter of the open segment
        self._outbox: list[Event] = []
        self._cache: FrameCache | None = None  # reuse: model state of the last `left` committed frames
        self._ahead: FrameCache | None = None  # look-ahead reuse: projected features of frames from next_frame
        self._last_partial: tuple[int, str] | None = None
        letters = [
            not (t.startswith("<") and t.endswith(">")) and i != info.delimiter_id for i, t in enumerate(info.vocab)
        ]
        self._is_letter: Callable[[int], bool] = lambda tid: letters[tid]

    # ----------------------------------------------------------------- input
    def push(self, samples: np.ndarray) -> None:
        """Append mono float32 samples at the model's sample rate (any count, even 0 or 1)."""
        if self._closed:
            raise SessionError("push() after finish()")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self._pending.append(samples.copy())  # joined lazily: pushing 1 sample at a time stays O(n)
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
        return self._buf.size + sum(p.size for p in self._pending)

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
        if self._pending:
            self._buf = np.concatenate([self._buf, *self._pending])
            self._pending = []
        first = max(0, self.next_frame - self.geo.left)
        start = first * self.info.frame_stride - self._buf_start
        end = end_sample - self._buf_start
        if start < 0 or end > self._buf.size:
            raise SessionError("window outside the buffered audio")  # cannot happen: buffer invariant
        audio = self.info.normalize(self._buf[start:end])
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
        self._commit(window.own_start, owned)
        self.next_frame = window.own_end
        self._trim_buffer()
        cut = self._cut_frame()
        if not self._maybe_complete_flush() and self.interim_results:
            tail_end = window.tail_end if cut is None else min(window.tail_end, cut)
            tail = log_probs[window.own_end - off : max(window.own_end, tail_end) - off]
            self._emit_partial(tail, window.own_end)

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
        out, self._outbox = self._outbox, []
        return out

    # ------------------------------------------------------------ stitching
    def _commit(self, first_frame: int, owned: np.ndarray) -> None:
        if self.on_commit is not None:
            self.on_commit(first_frame, owned)
        ids, probs = frame_argmax(owned)
        seg = self._seg
        n_before = len(seg.decoder.tokens)
        seg.decoder.feed(first_frame, ids, probs)
        if self.rescorer is not None and owned.shape[0]:
            seg.logp.append((first_frame, owned))
        self._endpoint_gaps(n_before)
        end = first_frame + owned.shape[0]
        self._endpoint_trailing(end)
        self._endpoint_max_length(end)

    def _endpoint_gaps(self, n_before: int) -> None:
        """Silence endpoints inside the newly committed frames: a long gap before a new letter."""
        g = self.geo
        i = max(0, n_before - 1)
        while i < len(self._seg.decoder.tokens):
            tok = self._seg.decoder.tokens[i]
            if self._is_letter(tok.id):
                if g.endpoint and self._last_speech_end is not None and tok.start - self._last_speech_end >= g.endpoint:
                    rest = self._seg.decoder.split(i)
                    self._close_segment("silence", cut_frame=tok.start, rest=rest)
                    self._last_speech_end = None
                    i = 0
                    continue
                self._last_speech_end = tok.end + 1
            i += 1

    def _endpoint_trailing(self, end: int) -> None:
        g = self.geo
        if self._last_speech_end is None:
            # no speech yet in this segment: slide its start so silence never counts toward max length
            self._seg.start_frame = end
            self._seg.decoder.tokens.clear()
            self._seg.logp.clear()
            return
        if g.endpoint and end - self._last_speech_end >= g.endpoint:
            self._close_segment("silence", cut_frame=end)

    def _endpoint_max_length(self, end: int) -> None:
        seg = self._seg
        if end - seg.start_frame < self.geo.max_segment:
            return
        tokens = seg.decoder.tokens
        cut = next((i for i in range(len(tokens) - 1, 0, -1) if tokens[i].id == self.info.delimiter_id), None)
        if cut is None or not any(self._is_letter(t.id) for t in tokens[:cut]):
            self._close_segment("max_length", cut_frame=end)
            return
        rest = seg.decoder.split(cut + 1)
        self._close_segment("max_length", cut_frame=tokens[cut].end + 1, rest=rest)

    def _close_segment(self, reason: str, cut_frame: int, rest: GreedyDecoder | None = None) -> None:
        """Emit the open segment's final; the next segment starts at `cut_frame` with `rest`'s tokens."""
        seg = self._seg
        tokens = seg.decoder.tokens
        phrases: list[PhraseResult] | None = None
        if self.rescorer is not None:
            logp = _slice_frames(seg.logp, seg.start_frame, cut_frame)
            if logp.shape[0]:
                tokens, phrases = self.rescorer.rescore(logp, seg.start_frame)
            else:
                phrases = []
        words = tokens_to_words(tokens, self.info.vocab, self.info.delimiter_id)
        fs = self.info.frame_seconds
        if words:
            start, end = words[0].start_frame * fs, words[-1].end_frame * fs
        else:
            start = end = cut_frame * fs
        self._outbox.append(
            Final(
                segment=seg.index,
                text=words_text(words),
                start=start,
                end=end,
                reason=reason,
                words=tuple(WordResult(w.text, w.start_frame * fs, w.end_frame * fs, w.confidence) for w in words),
                phrases=tuple(phrases) if phrases is not None else None,
            )
        )
        decoder = rest if rest is not None else GreedyDecoder(self.info.blank_id, [], seg.decoder.prev_id)
        new = _Segment(seg.index + 1, cut_frame, decoder)
        if self.rescorer is not None:
            new.logp = [(cut_frame, _slice_frames(seg.logp, cut_frame, None))] if rest is not None else []
        self._seg = new
        letters = [t for t in decoder.tokens if self._is_letter(t.id)]
        self._last_speech_end = letters[-1].end + 1 if letters else None
        self._last_partial = None

    def _maybe_complete_flush(self) -> bool:
        """Close the segment(s) whose flush cut has been reached by the committed frames."""
        done = False
        while self._flushes and self._in_flight is None and self._cut_frame() <= self.next_frame:  # type: ignore[operator]
            _, reason = self._flushes.popleft()
            self._close_segment(reason, cut_frame=self.next_frame)
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
            self._buf = np.zeros(0, dtype=np.float32)
            self._pending = []
            self._seg.logp = []

    def _emit_partial(self, tail: np.ndarray, tail_first: int) -> None:
        words = tokens_to_words(self._seg.decoder.tokens, self.info.vocab, self.info.delimiter_id)
        committed = words_text(words)
        text = committed
        if tail.shape[0]:
            dec = self._seg.decoder.copy()
            ids, probs = frame_argmax(tail)
            dec.feed(tail_first, ids, probs)
            words = tokens_to_words(dec.tokens, self.info.vocab, self.info.delimiter_id)
            text = words_text(words)
        if not text and self._last_partial is None:
            return
        key = (self._seg.index, text)
        if key == self._last_partial:
            return
        self._last_partial = key
        stable = _common_prefix(committed, text)
        fs = self.info.frame_seconds
        self._outbox.append(
            Partial(
                self._seg.index,
                text,
                stable,
                (tail_first + tail.shape[0]) * fs,
                tuple(WordResult(w.text, w.start_frame * fs, w.end_frame * fs, w.confidence) for w in words),
            )
        )

    def _trim_buffer(self) -> None:
        """Drop audio no future window needs (bounded memory however long the stream)."""
        first = max(0, self.next_frame - self.geo.left)
        keep_from = first * self.info.frame_stride
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:].copy()
            self._buf_start = keep_from


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _slice_frames(chunks: list[tuple[int, np.ndarray]], start: int, end: int | None) -> np.ndarray:
    """Frames [start, end) from a list of (first_frame, array) pieces in order."""
    parts = []
    for first, arr in chunks:
        lo = max(start, first) - first
        hi = arr.shape[0] if end is None else min(end, first + arr.shape[0]) - first
        if hi > lo:
            parts.append(arr[lo:hi])
    if not parts:
        width = chunks[0][1].shape[1] if chunks else 0
        return np.zeros((0, width), dtype=np.float32)
    return np.concatenate(parts)
