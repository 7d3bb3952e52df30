"""N-gram LM beam search over a closed segment's CTC log-probs, via pyctcdecode and KenLM.

We do not write a decoder of our own: pyctcdecode does the shallow-fusion beam search (acoustic
log-prob + ``alpha`` x LM log-prob + ``beta`` x word count) and KenLM scores the n-grams. Phrase
biasing joins the same beam search as pyctcdecode hotwords (one search, not two); the phrase
matches a final reports are then found in the LM text exactly as for phrase rescoring. Word
times and confidences come from a CTC forced alignment of the LM text, so LM words carry the
same start/end frames and posteriors as greedy or phrase-rescored ones.

pyctcdecode and kenlm are the optional ``lm`` extra, imported only when an LM is loaded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ConfigError
from ..ctc import Token, Word, printable, tokens_to_words
from ..events import PhraseResult
from ..model import ModelInfo
from ..phrases import DEFAULT_BOOST, PhraseBiaser, aligned_words, forced_align
from ..phrases.trie import _alphabet, tokenize_word

__all__ = [
    "DEFAULT_BEAM_WIDTH",
    "DEFAULT_LM_WEIGHT",
    "DEFAULT_WORD_SCORE",
    "LmDecoder",
    "LmRescorer",
    "LmSettings",
    "shared_decoder",
    "shared_rescorer",
]

#: pyctcdecode's ``alpha``: weight of the LM log-prob (natural log) against the acoustic one.
DEFAULT_LM_WEIGHT = 0.5
#: pyctcdecode's ``beta``: bonus per word, against the LM's bias toward short outputs.
DEFAULT_WORD_SCORE = 1.0
#: Beams kept per frame.
DEFAULT_BEAM_WIDTH = 64


@dataclass(frozen=True)
class LmSettings:
    """``--lm PATH --lm-weight A --word-score B --beam-width N`` (path: ARPA text or KenLM binary)."""

    path: str
    weight: float = DEFAULT_LM_WEIGHT
    word_score: float = DEFAULT_WORD_SCORE
    beam_width: int = DEFAULT_BEAM_WIDTH

    def check(self) -> None:
        """ConfigError for a path that is not a readable file or a beam width under 1."""
        if not os.path.isfile(self.path):
            raise ConfigError(f"--lm {self.path!r}: no such file (an ARPA or KenLM binary n-gram model)")
        if self.beam_width < 1:
            raise ConfigError(f"--beam-width must be at least 1, got {self.beam_width}")


@dataclass(frozen=True)
class LmResult:
    """One decoded segment: text, words with frames relative to the segment, and the alignment."""

    text: str
    words: tuple[Word, ...]
    alignment: tuple[tuple[int, int, int, float], ...]  # (label id, first frame, last frame, mean prob)


class LmDecoder:
    """A checkpoint vocabulary + an n-gram LM, loaded once and shared by every session (thread-safe:
    pyctcdecode keeps its search state per call, and KenLM queries are read-only)."""

    def __init__(self, info: ModelInfo, settings: LmSettings) -> None:
        settings.check()
        try:
            import kenlm  # noqa: F401  (the error below names the extra; pyctcdecode would only warn)
            from pyctcdecode.decoder import build_ctcdecoder
        except ImportError as exc:
            raise ConfigError(
                f"--lm needs the 'lm' extra: pip install -e '.[lm]' && pip install --no-deps pyctcdecode==0.5.0 ({exc})"
            ) from None
        self.info = info
        self.settings = settings
        # pyctcdecode's labels: "" for the blank, " " for the word delimiter, one per kept column.
        # Other special tokens (<s>, </s>, <unk>) never reach text: their mass is folded into the blank.
        self._keep = [i for i, t in enumerate(info.vocab) if i in (info.blank_id, info.delimiter_id) or printable(t)]
        self._fold = [i for i in range(len(info.vocab)) if i not in self._keep]
        labels = ["" if i == info.blank_id else " " if i == info.delimiter_id else info.vocab[i] for i in self._keep]
        self._alphabet = _alphabet(info.vocab, info.blank_id, info.delimiter_id)
        quiet = logging.getLogger("pyctcdecode")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "unigrams not provided" for binaries, "arpa is slow": said in the docs
        try:
            self._decoder = build_ctcdecoder(labels, settings.path, alpha=settings.weight, beta=settings.word_score)
        except (OSError, RuntimeError, ValueError) as exc:  # kenlm: "Cannot read model" and friends
            raise ConfigError(f"--lm {settings.path!r}: not a usable ARPA or KenLM binary model: {exc}") from None
        finally:
            quiet.setLevel(level)

    def _columns(self, log_probs: np.ndarray) -> np.ndarray:
        """The kept vocabulary columns, the folded specials' probability added to the blank's."""
        lp = np.asarray(log_probs, dtype=np.float32)
        out = lp[:, self._keep].copy()
        if self._fold:
            b = self._keep.index(self.info.blank_id)
            out[:, b] = np.logaddexp(out[:, b], np.logaddexp.reduce(lp[:, self._fold], axis=1))
        return out

    def decode(self, log_probs: np.ndarray, hotwords: Sequence[str] = (), hotword_weight: float = 0.0) -> LmResult:
        """Best beam of a (T, V) log-prob array: text and words (frames from 0, end exclusive)."""
        if log_probs.shape[0] == 0:
            return LmResult("", (), ())
        beams: list[Any] = self._decoder.decode_beams(
            self._columns(log_probs),
            beam_width=self.settings.beam_width,
            hotwords=list(hotwords) or None,
            hotword_weight=hotword_weight,
        )
        text = " ".join(beams[0][0].split()) if beams else ""
        labels: list[int] = []
        for n, word in enumerate(text.split()):
            if n:
                labels.append(self.info.delimiter_id)
            labels.extend(tokenize_word(word, self._alphabet))
        alignment = tuple(forced_align(log_probs, labels, self.info.blank_id))
        tokens = [Token(label, a, b, prob * (b - a + 1), b - a + 1) for label, a, b, prob in alignment]
        words = tuple(tokens_to_words(tokens, self.info.vocab, self.info.delimiter_id))
        return LmResult(text, words, alignment)


class LmRescorer:
    """SegmentRescorer (segmenter.py): a session's finals through the LM, its phrases (if any) as hotwords.

    ``boost`` is the phrase boost (phrases.DEFAULT_BOOST when None), used as pyctcdecode's
    hotword weight. Without phrases the finals carry no phrase list, as with no rescorer.
    """

    def __init__(
        self, decoder: LmDecoder, info: ModelInfo, phrases: Sequence[str] = (), boost: float | None = None
    ) -> None:
        self.decoder = decoder
        self.info = info
        self.boost = DEFAULT_BOOST if boost is None else float(boost)
        # boost 0: no trie is built; the biaser only normalises the phrases and finds them afterwards
        self.finder = PhraseBiaser(info.vocab, info.blank_id, info.delimiter_id, list(phrases), boost=0.0)
        self.hotwords = [" ".join(words) for _, words in self.finder.phrases]
        self.has_phrases = bool(phrases)

    def rescore(self, log_probs: np.ndarray, first_frame: int) -> tuple[list[Token], list[PhraseResult] | None]:
        result = self.decoder.decode(log_probs, self.hotwords, self.boost)
        tokens = [
            Token(label, first_frame + a, first_frame + b, prob * (b - a + 1), b - a + 1)
            for label, a, b, prob in result.alignment
        ]
        if not self.has_phrases:
            return tokens, None
        fs = self.info.frame_seconds
        matches = self.finder.find(aligned_words(result.alignment, self.info.vocab, self.info.delimiter_id))
        found = [
            PhraseResult(m.phrase, (first_frame + m.start_frame) * fs, (first_frame + m.end_frame + 1) * fs, m.score)
            for m in matches
        ]
        return tokens, found


_decoders: dict[tuple[tuple[str, ...], int, int, LmSettings], LmDecoder] = {}
_decoders_lock = threading.Lock()


def shared_decoder(info: ModelInfo, settings: LmSettings) -> LmDecoder:
    """One LmDecoder per vocabulary and LM settings for the process: the server loads its LM once (on a
    worker thread, at the first session that uses it), not per session."""
    key = (info.vocab, info.blank_id, info.delimiter_id, settings)
    with _decoders_lock:
        decoder = _decoders.get(key)
        if decoder is None:
            decoder = _decoders[key] = LmDecoder(info, settings)
        return decoder


def shared_rescorer(
    info: ModelInfo, settings: LmSettings, phrases: Sequence[str] = (), boost: float | None = None
) -> LmRescorer:
    """A session's LmRescorer over the shared decoder (blocking: call it off the event loop)."""
    return LmRescorer(shared_decoder(info, settings), info, phrases, boost)
