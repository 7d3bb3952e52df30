"""Glue between the session's SegmentRescorer hook and the phrase-biased decoder in phrases.py.

A closed segment's log-probs are re-decoded with the phrase trie, force-aligned for word times,
and searched for the client's phrases; the result replaces the greedy tokens in the final.
"""

from __future__ import annotations

import numpy as np

from .ctc import Token
from .events import PhraseResult
from .model import ModelInfo
from .phrases import DEFAULT_BOOST, PhraseBiaser, aligned_words, forced_align

MAX_BOOST = 10.0


class PhraseRescorer:
    """SegmentRescorer for one session's phrase list."""

    def __init__(self, info: ModelInfo, phrases: list[str], boost: float | None = None) -> None:
        if boost is None:
            boost = DEFAULT_BOOST
        if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not 0 <= boost <= MAX_BOOST:
            from .config import ConfigError

            raise ConfigError(f"phrase_boost must be a number between 0 and {MAX_BOOST:g}, got {boost!r}")
        self.info = info
        self.biaser = PhraseBiaser(info.vocab, info.blank_id, info.delimiter_id, phrases, boost=float(boost))

    def rescore(self, log_probs: np.ndarray, first_frame: int) -> tuple[list[Token], list[PhraseResult]]:
        labels = self.biaser.decode(log_probs)
        alignment = forced_align(log_probs, labels, self.info.blank_id)
        tokens = [Token(label, first_frame + a, first_frame + b, prob * (b - a + 1), b - a + 1)
                  for label, a, b, prob in alignment]
        fs = self.info.frame_seconds
        matches = self.biaser.find(aligned_words(alignment, self.info.vocab, self.info.delimiter_id))
        found = [PhraseResult(m.phrase, (first_frame + m.start_frame) * fs, (first_frame + m.end_frame + 1) * fs,
                              m.score) for m in matches]
        return tokens, found
