"""Glue between the session's SegmentRescorer hook and the phrase-biased decoder in the phrases package.

A closed segment's log-probs are re-decoded with the phrase trie, force-aligned for word times,
and searched for the client's phrases; the result replaces the greedy tokens in the final.

A client's ``start`` chooses the phrase list and boost, so both are checked against the limits
below before anything is compiled (:func:`check_phrases`, :func:`check_boost`; the server calls
them, and :class:`PhraseRescorer` calls them again). Measured on one core: the worst lists within
the limits compile in under 0.1 s, and rescoring a 20 s segment (1000 frames) with them takes
0.2-0.3 s on random or speech-like log-probs and at most ~0.6 s on adversarial ones (segments
made of the phrases' own few words, where ``PhraseBiaser.find`` works up to its caps,
FIND_SCAN_STEPS and FIND_CHECK_CELLS in phrases/matching.py). The beam search itself (~0.2 s of that) does
not depend on the phrase list. For scale: before the limits (and before the trie's failure links
were built in linear time), 1000 phrases of 1 KB took 196 s of CPU and 4.7 GB to compile.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .config import ConfigError
from .ctc import Token
from .events import PhraseResult
from .model import ModelInfo
from .phrases import DEFAULT_BOOST, PhraseBiaser, aligned_words, forced_align
from .phrases.biaser import WordScorer

__all__ = [
    "MAX_BOOST",
    "MAX_PHRASES",
    "MAX_PHRASE_CHARS",
    "MAX_PHRASE_TOTAL_CHARS",
    "MAX_PHRASE_WORDS",
    "PhraseRescorer",
    "check_boost",
    "check_phrases",
]

#: Largest ``phrase_boost`` (nats per matched character); the default is phrases.DEFAULT_BOOST.
MAX_BOOST = 10.0
#: Most phrases in one session's list.
MAX_PHRASES = 1000
#: Most characters in one phrase, as sent (a voice command, not a paragraph).
MAX_PHRASE_CHARS = 100
#: Most characters in all of a session's phrases together (1000 phrases of 20 characters).
MAX_PHRASE_TOTAL_CHARS = 20_000
#: Most words in one phrase: runs of characters between whitespace, ``-``, ``_``, ``/`` or ``|``,
#: the separators phrase normalisation splits on (so never fewer than the normalised phrase has).
MAX_PHRASE_WORDS = 16

_SEPARATORS = re.compile(r"[\s\-_/|]+")


def _show(value: object) -> str:
    """A short repr for error messages (the value comes from a client)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _word_count(phrase: str) -> int:
    return sum(1 for word in _SEPARATORS.split(phrase) if word)


def check_boost(value: object) -> float | None:
    """``phrase_boost`` as given by a client: None (use the default) or a finite int/float
    (not a bool) in [0, MAX_BOOST], returned as a float; ConfigError otherwise."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or not 0 <= value <= MAX_BOOST
    ):
        raise ConfigError(
            f"phrase_boost must be a finite number between 0 and {MAX_BOOST:g} (MAX_BOOST), got {_show(value)}"
        )
    return float(value)


def check_phrases(phrases: object) -> list[str]:
    """A client's ``phrases`` within the limits, as a new list; None counts as no phrases.

    Raises ConfigError naming the limit broken: not a list (or tuple) of strings, more than
    MAX_PHRASES phrases, a phrase over MAX_PHRASE_CHARS characters or MAX_PHRASE_WORDS words,
    or more than MAX_PHRASE_TOTAL_CHARS characters in all. Lengths are checked before any
    normalisation, so refusing an oversized list costs next to nothing.
    """
    if phrases is None:
        return []
    if not isinstance(phrases, (list, tuple)):
        raise ConfigError(f"phrases must be a list of strings, got {type(phrases).__name__}")
    if len(phrases) > MAX_PHRASES:
        raise ConfigError(f"phrases: {len(phrases)} given, at most {MAX_PHRASES} phrases allowed (MAX_PHRASES)")
    total = 0
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, str):
            raise ConfigError(f"phrases must be a list of strings, phrases[{i}] is {type(phrase).__name__}")
        if len(phrase) > MAX_PHRASE_CHARS:
            raise ConfigError(
                f"phrases[{i}] has {len(phrase)} characters, at most {MAX_PHRASE_CHARS} characters"
                " per phrase allowed (MAX_PHRASE_CHARS)"
            )
        words = _word_count(phrase)
        if words > MAX_PHRASE_WORDS:
            raise ConfigError(
                f"phrases[{i}] has {words} words, at most {MAX_PHRASE_WORDS} words per phrase allowed"
                " (MAX_PHRASE_WORDS)"
            )
        total += len(phrase)
    if total > MAX_PHRASE_TOTAL_CHARS:
        raise ConfigError(
            f"phrases have {total} characters in all, at most {MAX_PHRASE_TOTAL_CHARS} characters"
            " allowed in all (MAX_PHRASE_TOTAL_CHARS)"
        )
    return list(phrases)


class PhraseRescorer:
    """SegmentRescorer for one session's phrase list.

    ``phrases`` and ``boost`` are checked with :func:`check_phrases` / :func:`check_boost`
    (ConfigError when over a limit); ``boost`` None means phrases.DEFAULT_BOOST.
    """

    def __init__(self, info: ModelInfo, phrases: list[str], boost: float | None = None, beam_width: int = 8) -> None:
        checked_boost = check_boost(boost)
        phrases = check_phrases(phrases)
        self.info = info
        self.biaser = PhraseBiaser(
            info.vocab,
            info.blank_id,
            info.delimiter_id,
            phrases,
            boost=DEFAULT_BOOST if checked_boost is None else checked_boost,
            beam_width=beam_width,
        )
        self.words: WordScorer | None = None  # an LM's word scores in the same search (decoding/lm.py)

    def rescore(self, log_probs: np.ndarray, first_frame: int) -> tuple[list[Token], list[PhraseResult]]:
        labels = self.biaser.decode(log_probs, self.words)
        alignment = forced_align(log_probs, labels, self.info.blank_id)
        tokens = [
            Token(label, first_frame + a, first_frame + b, prob * (b - a + 1), b - a + 1)
            for label, a, b, prob in alignment
        ]
        fs = self.info.frame_seconds
        matches = self.biaser.find(aligned_words(alignment, self.info.vocab, self.info.delimiter_id))
        found = [
            PhraseResult(m.phrase, (first_frame + m.start_frame) * fs, (first_frame + m.end_frame + 1) * fs, m.score)
            for m in matches
        ]
        return tokens, found
