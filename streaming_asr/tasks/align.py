"""Forced alignment: word and character times for a known transcript, by CTC Viterbi.

The whole file's log-probs come from the offline windows (chunking.py: one window up to 30 s, the
model's own output; longer files stitched frame-exactly), then one Viterbi runs over all of them, so
nothing is cut at window seams. Memory: log-probs are frames x vocab (1 h: 180k x 32 float32 = 23 MB);
the Viterbi keeps scores over the S = 2 x labels + 1 states only (float64) and one uint8 move per
frame and state. When those moves would pass `MOVES_BUDGET` the forward pass keeps its score vector
every K frames instead, and the backtrace recomputes the moves of one K-frame segment at a time
(checkpointed Viterbi: the same path, twice the time; 1 h of speech, ~54k letters: ~260 MB and
about 0.4 ms a frame on one core, a few minutes). Result types and output formats: align_formats.py.

Timing convention (as the streaming finals): a character spans the frames the path spends on it,
start = first frame x frame_seconds, end = (last frame + 1) x frame_seconds; a word runs from its
first character's start to its last character's end. Blank frames belong to no character.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunking import plan_chunks, stitch
from ..model.info import ModelInfo
from .align_formats import FORMATS, Alignment, CharTime, Skipped, WordTime, render

__all__ = [
    "FORMATS",
    "AlignError",
    "Alignment",
    "CharTime",
    "Skipped",
    "WordTime",
    "align_audio",
    "align_log_probs",
    "file_log_probs",
    "render",
    "spell",
    "viterbi",
]

MOVES_BUDGET = 256 * 1024 * 1024  # bytes of uint8 moves kept at once before checkpointing
NEG_INF = -np.inf
APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"}

WindowForward = Callable[[Sequence[np.ndarray]], Sequence[Any]]  # normalised windows -> log-probs each


class AlignError(ValueError):
    """Input that cannot be aligned (empty audio or transcript, a transcript the audio cannot hold)."""


# ------------------------------------------------------------------ transcript -> vocabulary labels
@dataclass(frozen=True)
class Spelling:
    """A transcript word in vocabulary ids, and what could not be spelled."""

    word: str
    ids: tuple[int, ...]
    unknown: str


def alphabet(info: ModelInfo) -> dict[str, int]:
    """Single-character tokens a transcript can use (no blank, delimiter or <special> tokens)."""
    out: dict[str, int] = {}
    for i, tok in enumerate(info.vocab):
        if i in (info.blank_id, info.delimiter_id) or len(tok) != 1 or tok.isspace():
            continue
        out.setdefault(tok, i)
    return out


def spell(transcript: str, letters: dict[str, int]) -> list[Spelling]:
    """Each whitespace-separated word in vocabulary ids: a character as it is, else in the vocabulary's
    case, else romanised (NFKD, combining marks dropped, curly apostrophes straightened); characters
    still unknown are skipped and reported."""
    alpha = [c for c in letters if c.isalpha()]
    cases: tuple[Callable[[str], str], ...]
    if alpha and all(c == c.upper() for c in alpha):
        cases = (str.upper, str.lower)
    elif alpha and all(c == c.lower() for c in alpha):
        cases = (str.lower, str.upper)
    else:
        cases = ()

    def known(c: str) -> str | None:
        for form in (c, *(f(c) for f in cases)):
            if form and all(x in letters for x in form):
                return form
        return None

    def romanised(c: str) -> str | None:
        parts = [APOSTROPHES.get(x, x) for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x)]
        return "".join(f for f in map(known, parts) if f) or None

    words = []
    for word in transcript.split():
        ids: list[int] = []
        unknown: list[str] = []
        for c in word:
            form = known(c) or romanised(c)
            if form is None:
                unknown.append(c)
            else:
                ids.extend(letters[x] for x in form)
        words.append(Spelling(word, tuple(ids), "".join(unknown)))
    return words


def min_frames(labels: Sequence[int]) -> int:
    """Frames CTC needs for `labels`: one per label plus a blank between equal neighbours."""
    return len(labels) + sum(1 for a, b in zip(labels, labels[1:]) if a == b)


# ------------------------------------------------------------------ Viterbi
def segment_frames(frames: int, states: int, budget: int = MOVES_BUDGET) -> int:
    """Frames of moves kept at once: all of them within `budget`, else ~sqrt(8 T) (at most what the
    budget holds), which minimises checkpoints (T / K x S float64) plus one segment's moves (K x S uint8)."""
    if frames * states <= budget:
        return max(1, frames)
    return max(1, min(math.isqrt(8 * frames), budget // max(1, states)))


def peak_bytes(frames: int, states: int, budget: int = MOVES_BUDGET) -> int:
    """Bytes the Viterbi's trellis holds at most (moves of one segment + checkpointed scores)."""
    k = segment_frames(frames, states, budget)
    checkpoints = 0 if k >= frames else -(-frames // k)
    return k * states + checkpoints * states * 8 + 4 * states * 8


class _Trellis:
    """States blank, l1, blank, l2, ..., lL, blank; moves 0 stay, 1 from s-1, 2 from s-2."""

    def __init__(self, log_probs: np.ndarray, labels: Sequence[int], blank_id: int) -> None:
        self.lp = np.asarray(log_probs, dtype=np.float64)
        ext = np.full(2 * len(labels) + 1, blank_id, dtype=np.int64)
        ext[1::2] = labels
        self.ext = ext
        self.S = ext.size
        skip = np.zeros(self.S, dtype=bool)
        skip[3::2] = ext[3::2] != ext[1:-2:2]  # into a label unlike the one two states back
        self.skip_pen = np.where(skip[2:], 0.0, NEG_INF)  # added to s-2 scores: -inf where no skip
        self._step = np.full(self.S, NEG_INF)
        self._skip = np.full(self.S, NEG_INF)

    def first(self) -> np.ndarray:
        delta = np.full(self.S, NEG_INF)
        delta[:2] = self.lp[0, self.ext[:2]]
        return delta

    def advance(self, delta: np.ndarray, t: int, moves: np.ndarray | None) -> np.ndarray:
        """Scores after frame t from those after t - 1 (ties: stay, then step, then skip)."""
        step, skip = self._step, self._skip  # their first one / two entries stay -inf
        step[1:] = delta[:-1]
        np.add(delta[:-2], self.skip_pen, out=skip[2:])
        best = np.maximum(delta, step)
        if moves is not None:
            np.greater(step, delta, out=moves, casting="unsafe")
            moves[skip > best] = 2
        np.maximum(best, skip, out=best)
        best += self.lp[t].take(self.ext)
        out: np.ndarray = best
        return out


def viterbi(log_probs: np.ndarray, labels: Sequence[int], blank_id: int, budget: int = MOVES_BUDGET) -> np.ndarray:
    """The best CTC path's state per frame (state 2k+1 = label k, even states blanks).

    Raises AlignError when the labels cannot fit in the frames."""
    labels = [int(x) for x in labels]
    T = int(log_probs.shape[0])
    if not labels:
        raise AlignError("nothing to align")
    if T < min_frames(labels):
        raise AlignError(f"{len(labels)} labels need at least {min_frames(labels)} frames, the audio has {T}")
    tr = _Trellis(log_probs, labels, blank_id)
    S = tr.S
    k = segment_frames(T, S, budget)
    # forward pass: the scores before each segment start (the whole trellis of moves when it fits)
    whole = np.zeros((T, S), dtype=np.uint8) if k >= T else None
    checkpoints: dict[int, np.ndarray] = {}
    delta = tr.first()
    for t in range(1, T):
        if whole is None and t % k == 0:
            checkpoints[t] = delta
        delta = tr.advance(delta, t, whole[t] if whole is not None else None)
    end = S - 1 if delta[S - 1] >= delta[S - 2] else S - 2
    if not np.isfinite(delta[end]):
        raise AlignError(f"{len(labels)} labels cannot be aligned to {T} frames")
    state = np.empty(T, dtype=np.int64)
    s = end
    for a in range(((T - 1) // k) * k, -1, -k):  # segments last to first
        b = min(T, a + k)
        if whole is not None:
            moves = whole
            base = 0
        else:  # recompute this segment's moves from its checkpoint
            moves = np.zeros((b - a, S), dtype=np.uint8)
            base = a
            d = checkpoints[a] if a else tr.first()
            for t in range(max(a, 1), b):
                d = tr.advance(d, t, moves[t - a])
        for t in range(b - 1, a - 1, -1):
            state[t] = s
            if t:
                s -= int(moves[t - base, s])
    return state


# ------------------------------------------------------------------ log-probs -> alignment
def file_log_probs(forward: WindowForward, info: ModelInfo, audio: np.ndarray) -> np.ndarray:
    """The whole file's log-probs (frames, vocab), window by window as offline transcription cuts it,
    each window normalised on its own; `forward` takes a list of windows (a CtcModel, or the server's
    batcher behind a sync wrapper)."""
    chunks = plan_chunks(int(audio.size), info)
    outs = []
    for c in chunks:
        out = forward([info.normalize(audio[c.start : c.end])])[0]
        outs.append(np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float32))
    if not outs:
        return np.zeros((0, len(info.vocab)), dtype=np.float32)
    return stitch(chunks, outs)


def _labels(transcript: str, info: ModelInfo) -> tuple[list[Spelling], list[int], list[int]]:
    """(spelled words, label ids with delimiters between words, transcript word of each label or -1)."""
    words = spell(transcript, alphabet(info))
    if not words:
        raise AlignError("the transcript is empty")
    labels: list[int] = []
    owner: list[int] = []
    for i, w in enumerate(words):
        if not w.ids:
            continue
        if labels and info.delimiter_id >= 0:
            labels.append(info.delimiter_id)
            owner.append(-1)
        labels.extend(w.ids)
        owner.extend([i] * len(w.ids))
    if not labels:
        raise AlignError("no character of the transcript is in the model's vocabulary")
    return words, labels, owner


def _check_fits(labels: Sequence[int], frames: int, info: ModelInfo) -> None:
    need = min_frames(labels)
    fs = info.frame_seconds
    if frames == 0:
        raise AlignError("the audio is too short to yield a single frame")
    if frames < need:
        raise AlignError(
            f"the transcript is too long for the audio: its {len(labels)} labels need at least {need} frames "
            f"({need * fs:.2f} s), the audio has {frames} ({frames * fs:.2f} s)"
        )


def align_log_probs(
    log_probs: np.ndarray, info: ModelInfo, transcript: str, duration: float | None = None, budget: int = MOVES_BUDGET
) -> Alignment:
    """Align `transcript` to a file's log-probs (frames, vocab); words are joined by the vocabulary's
    delimiter, which the path must pass through between words."""
    T = int(log_probs.shape[0])
    fs = info.frame_seconds
    words, labels, owner = _labels(transcript, info)
    _check_fits(labels, T, info)
    state = viterbi(log_probs, labels, info.blank_id, budget)
    odd = 2 * np.arange(len(labels)) + 1
    first = np.searchsorted(state, odd, side="left")
    last = np.searchsorted(state, odd, side="right") - 1
    ext = np.full(2 * len(labels) + 1, info.blank_id, dtype=np.int64)
    ext[1::2] = labels
    post = np.exp(np.asarray(log_probs, dtype=np.float64)[np.arange(T), ext[state]])
    csum = np.concatenate([[0.0], np.cumsum(post)])
    scores = (csum[last + 1] - csum[first]) / (last - first + 1)
    chars: list[CharTime] = []
    by_word: dict[int, list[CharTime]] = {}
    for k, (lab, i) in enumerate(zip(labels, owner)):
        if i < 0:
            continue
        ch = CharTime(info.vocab[lab], i, float(first[k]) * fs, float(last[k] + 1) * fs, float(scores[k]))
        chars.append(ch)
        by_word.setdefault(i, []).append(ch)
    out_words = []
    for i, w in enumerate(words):
        cs = by_word.get(i)
        if cs:
            out_words.append(WordTime(w.word, cs[0].start, cs[-1].end, sum(c.score for c in cs) / len(cs)))
        else:
            out_words.append(WordTime(w.word, None, None, None))
    skipped = tuple(Skipped(i, w.word, w.unknown) for i, w in enumerate(words) if w.unknown)
    return Alignment(tuple(out_words), tuple(chars), skipped, max(T * fs if duration is None else duration, T * fs))


def align_audio(
    model: WindowForward, info: ModelInfo, audio: np.ndarray, transcript: str, budget: int = MOVES_BUDGET
) -> Alignment:
    """Align `transcript` to model-rate mono `audio`: the HTTP-endpoint-ready entry point.

    Checks the input before running the model, so bad input costs no forward pass."""
    _, labels, _ = _labels(transcript, info)
    _check_fits(labels, info.frames_for(int(audio.size)), info)
    log_probs = file_log_probs(model, info, audio)
    return align_log_probs(log_probs, info, transcript, audio.size / info.sample_rate, budget)
