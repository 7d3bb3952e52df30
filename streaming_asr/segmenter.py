"""The segment half of a streaming session: committed frames in, partials and finals out. Pure and synchronous.

The session (session.py) decides which stream frames are committed and when; this module decides
what they say. A single greedy CTC decoder runs over the committed frames in order, inside the
open segment. A segment closes, with a Final, on

* silence: a gap of `endpoint` frames between two letters, or after the last letter (trailing);
* max length: at the last word boundary once the segment spans `max_segment` frames;
* a flush (finalize / end of stream), which the session requests with `close()` at its cut.

With a rescorer (phrase biasing) the segment's log-probs are kept and re-decoded when it closes,
so the Final carries the biased text and the phrase matches; partials stay greedy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .config import FrameGeometry
from .ctc import GreedyDecoder, Token, Word, frame_argmax, tokens_to_words, words_text
from .events import Event, Final, Partial, PhraseResult, WordResult
from .model import ModelInfo


class SegmentRescorer(Protocol):
    """Re-decodes a closed segment's log-probs (phrase biasing); returns tokens and phrase matches."""

    def rescore(self, log_probs: np.ndarray, first_frame: int) -> tuple[list[Token], list[PhraseResult] | None]:
        """Phrase matches None: the rescorer has no phrases (an LM alone), so finals carry no phrase list."""
        ...


@dataclass
class _Segment:
    index: int
    start_frame: int
    decoder: GreedyDecoder
    logp: list[tuple[int, np.ndarray]] = field(default_factory=list)  # kept only when rescoring


class Segmenter:
    """Decodes committed frames into segments and events (see module docstring)."""

    def __init__(self, info: ModelInfo, geo: FrameGeometry, rescorer: SegmentRescorer | None = None) -> None:
        self.info = info
        self.geo = geo
        self.rescorer = rescorer
        self.segment = _Segment(0, 0, GreedyDecoder(info.blank_id))
        self._last_speech_end: int | None = None  # frame after the last letter of the open segment
        self._last_partial: tuple[int, str] | None = None
        self._outbox: list[Event] = []
        letters = [
            not (t.startswith("<") and t.endswith(">")) and i != info.delimiter_id for i, t in enumerate(info.vocab)
        ]
        self._is_letter: Callable[[int], bool] = lambda tid: letters[tid]

    def pop_events(self) -> list[Event]:
        out, self._outbox = self._outbox, []
        return out

    def release(self) -> None:
        """Drop the kept log-probs once the last final is out (bounded memory for a finished session)."""
        self.segment.logp = []

    # ------------------------------------------------------------ commit
    def commit(self, first_frame: int, owned: np.ndarray) -> None:
        """Decode newly committed frames [first_frame, first_frame + len(owned)) and endpoint on them."""
        ids, probs = frame_argmax(owned)
        seg = self.segment
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
        while i < len(self.segment.decoder.tokens):
            tok = self.segment.decoder.tokens[i]
            if self._is_letter(tok.id):
                if g.endpoint and self._last_speech_end is not None and tok.start - self._last_speech_end >= g.endpoint:
                    rest = self.segment.decoder.split(i)
                    self.close("silence", cut_frame=tok.start, rest=rest)
                    self._last_speech_end = None
                    i = 0
                    continue
                self._last_speech_end = tok.end + 1
            i += 1

    def _endpoint_trailing(self, end: int) -> None:
        g = self.geo
        if self._last_speech_end is None:
            # no speech yet in this segment: slide its start so silence never counts toward max length
            self.segment.start_frame = end
            self.segment.decoder.tokens.clear()
            self.segment.logp.clear()
            return
        if g.endpoint and end - self._last_speech_end >= g.endpoint:
            self.close("silence", cut_frame=end)

    def _endpoint_max_length(self, end: int) -> None:
        seg = self.segment
        if end - seg.start_frame < self.geo.max_segment:
            return
        tokens = seg.decoder.tokens
        cut = next((i for i in range(len(tokens) - 1, 0, -1) if tokens[i].id == self.info.delimiter_id), None)
        if cut is None or not any(self._is_letter(t.id) for t in tokens[:cut]):
            self.close("max_length", cut_frame=end)
            return
        rest = seg.decoder.split(cut + 1)
        self.close("max_length", cut_frame=tokens[cut].end + 1, rest=rest)

    # ------------------------------------------------------------ events
    def close(self, reason: str, cut_frame: int, rest: GreedyDecoder | None = None) -> None:
        """Emit the open segment's final; the next segment starts at `cut_frame` with `rest`'s tokens."""
        seg = self.segment
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
                words=self._word_results(words),
                phrases=tuple(phrases) if phrases is not None else None,
            )
        )
        decoder = rest if rest is not None else GreedyDecoder(self.info.blank_id, [], seg.decoder.prev_id)
        new = _Segment(seg.index + 1, cut_frame, decoder)
        if self.rescorer is not None:
            new.logp = [(cut_frame, _slice_frames(seg.logp, cut_frame, None))] if rest is not None else []
        self.segment = new
        letters = [t for t in decoder.tokens if self._is_letter(t.id)]
        self._last_speech_end = letters[-1].end + 1 if letters else None
        self._last_partial = None

    def partial(self, tail: np.ndarray, tail_first: int) -> None:
        """Emit a partial: the committed text plus the provisional look-ahead `tail` (not when unchanged)."""
        seg = self.segment
        words = tokens_to_words(seg.decoder.tokens, self.info.vocab, self.info.delimiter_id)
        committed = words_text(words)
        text = committed
        if tail.shape[0]:
            dec = seg.decoder.copy()
            ids, probs = frame_argmax(tail)
            dec.feed(tail_first, ids, probs)
            words = tokens_to_words(dec.tokens, self.info.vocab, self.info.delimiter_id)
            text = words_text(words)
        if not text and self._last_partial is None:
            return
        key = (seg.index, text)
        if key == self._last_partial:
            return
        self._last_partial = key
        stable = _common_prefix(committed, text)
        fs = self.info.frame_seconds
        self._outbox.append(
            Partial(seg.index, text, stable, (tail_first + tail.shape[0]) * fs, self._word_results(words))
        )

    def _word_results(self, words: list[Word]) -> tuple[WordResult, ...]:
        fs = self.info.frame_seconds
        return tuple(WordResult(w.text, w.start_frame * fs, w.end_frame * fs, w.confidence) for w in words)


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
