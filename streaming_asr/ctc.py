"""Greedy CTC decoding over a frame stream, incremental so seams between windows never matter.

The decoder sees one stream of frames (argmax id and its posterior per frame), whatever window
they came from. Collapsing repeats uses the previous frame's id across calls, so a letter whose
frames straddle a seam is emitted once, and a genuine double letter (a blank between) twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Token:
    """One emitted CTC label with the frames it spans (end inclusive)."""

    id: int
    start: int
    end: int
    prob_sum: float
    count: int = 1

    @property
    def prob(self) -> float:
        return self.prob_sum / self.count


@dataclass(frozen=True)
class Word:
    """A recognised word; frame indices are absolute (stream) frames, end exclusive."""

    text: str
    start_frame: int
    end_frame: int
    confidence: float


@dataclass
class GreedyDecoder:
    """Collapses a stream of per-frame argmax ids into tokens, one frame batch at a time."""

    blank_id: int
    tokens: list[Token] = field(default_factory=list)
    prev_id: int = -1  # id of the last frame seen (-1: none / segment start)

    def feed(self, first_frame: int, ids: np.ndarray, probs: np.ndarray) -> None:
        """Append frames `first_frame ...` in order."""
        tokens = self.tokens
        prev = self.prev_id
        blank = self.blank_id
        for i, (tid, p) in enumerate(zip(ids.tolist(), probs.tolist())):
            if tid == blank:
                prev = tid
                continue
            if tid == prev and tokens:
                last = tokens[-1]
                last.end = first_frame + i
                last.prob_sum += p
                last.count += 1
            else:
                tokens.append(Token(tid, first_frame + i, first_frame + i, p))
            prev = tid
        self.prev_id = prev

    def copy(self) -> GreedyDecoder:
        """A copy that can decode provisional frames without touching this one."""
        return GreedyDecoder(self.blank_id, [replace(t) for t in self.tokens], self.prev_id)

    def split(self, keep_from: int) -> GreedyDecoder:
        """Detach tokens[keep_from:] into a new decoder that continues the stream."""
        rest = GreedyDecoder(self.blank_id, self.tokens[keep_from:], self.prev_id)
        self.tokens = self.tokens[:keep_from]
        return rest


def frame_argmax(log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame best id and its posterior probability."""
    ids = log_probs.argmax(axis=-1)
    probs = np.exp(log_probs[np.arange(len(ids)), ids])
    return ids, probs


def tokens_to_words(tokens: Iterable[Token], vocab: Sequence[str], delimiter_id: int) -> list[Word]:
    """Group tokens into words at delimiter tokens; word confidence is its letters' mean posterior."""
    words: list[Word] = []
    letters: list[Token] = []

    def flush() -> None:
        if letters:
            text = "".join(vocab[t.id] for t in letters)
            conf = sum(t.prob for t in letters) / len(letters)
            words.append(Word(text, letters[0].start, letters[-1].end + 1, conf))
            letters.clear()

    for tok in tokens:
        if tok.id == delimiter_id:
            flush()
        elif printable(vocab[tok.id]):
            letters.append(tok)
    flush()
    return words


def printable(token: str) -> bool:
    """Special tokens (<s>, </s>, <unk>, <pad>, and the [UNK] / [PAD] style of some fine-tuned
    checkpoints) never reach text; any other token does, whatever its script or length."""
    return not (len(token) >= 2 and token[0] + token[-1] in ("<>", "[]"))


def words_text(words: Sequence[Word]) -> str:
    return " ".join(w.text for w in words)


def decode_greedy(log_probs: np.ndarray, vocab: Sequence[str], blank_id: int, delimiter_id: int) -> str:
    """Whole-array greedy decode to text (reference decoding for tests and offline use)."""
    dec = GreedyDecoder(blank_id)
    ids, probs = frame_argmax(log_probs)
    dec.feed(0, ids, probs)
    return words_text(tokens_to_words(dec.tokens, vocab, delimiter_id))
