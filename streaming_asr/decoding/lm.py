"""N-gram LM beam search over a closed segment's CTC log-probs, via pyctcdecode and KenLM.

We do not write a decoder of our own: pyctcdecode does the shallow-fusion beam search (acoustic
log-prob + ``alpha`` x LM log-prob + ``beta`` x word count) and KenLM scores the n-grams. A session
with phrases gets one search, not two: by default (``phrases="trie"``) the phrase trie search
(phrases/biaser.py) with this LM's word scores added at each word end (:class:`LmWords`, the
same alpha/beta/OOV scoring as pyctcdecode's); with ``phrases="hotwords"``, pyctcdecode's
hotwords. The trie measured better (bench/lm.py: pyctcdecode's hotwords boost single words, and
its per-frame token pruning drops the letters a misheard command needs). The phrase matches a
final reports are then found in the final's text exactly as for phrase rescoring. Word
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
from typing import Any, cast

import numpy as np

from ..config import ConfigError
from ..ctc import Token, Word, printable, tokens_to_words
from ..events import PhraseResult
from ..model import ModelInfo
from ..phrase_rescore import PhraseRescorer
from ..phrases import DEFAULT_BOOST, PhraseBiaser, aligned_words, forced_align
from ..phrases.trie import _alphabet, tokenize_word

LOG10_TO_LN = 2.302585092994046  # KenLM scores are log10; the search adds natural-log scores

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
#: How phrases meet the LM: our phrase trie search with LM word scores, or pyctcdecode's hotwords.
PHRASE_MODES = ("trie", "hotwords")
#: Beams of the phrase trie search when it carries LM scores (a Python loop: T x beams x 6 tokens).
TRIE_LM_BEAM_WIDTH = 16


@dataclass(frozen=True)
class LmSettings:
    """``--lm PATH --lm-weight A --word-score B --beam-width N`` (path: ARPA text or KenLM binary)."""

    path: str
    weight: float = DEFAULT_LM_WEIGHT
    word_score: float = DEFAULT_WORD_SCORE
    beam_width: int = DEFAULT_BEAM_WIDTH
    phrases: str = "trie"  # how a session's phrases join the LM search: "trie" or "hotwords"

    def check(self) -> None:
        """ConfigError for a path that is not a readable file, a beam width under 1, an unknown phrases mode."""
        if self.phrases not in PHRASE_MODES:
            raise ConfigError(f"--lm-phrases must be one of {', '.join(PHRASE_MODES)}, got {self.phrases!r}")
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


class LmWords:
    """The LM's word scores for the phrase trie search (phrases.biaser.WordScorer): pyctcdecode's
    own LanguageModel scoring (alpha x log-prob + beta, OOV offset), except that phrase words the LM
    does not know are not penalised as OOV (a phrase names what the client expects to hear)."""

    def __init__(self, decoder: LmDecoder, exempt: Sequence[str] = ()) -> None:
        self._lm: Any = cast(Any, decoder._decoder._language_model)  # pyctcdecode 0.5.0 LanguageModel
        self._exempt = {w for w in exempt if w not in self._lm._kenlm_model}
        self._exempt_prefixes = {w[:n] for w in self._exempt for n in range(1, len(w) + 1)}
        self._refund = -self._lm.unk_score_offset * self._lm.alpha * LOG10_TO_LN

    def start(self) -> Any:
        return self._lm.get_start_state()

    def word(self, state: Any, word: str) -> tuple[float, Any]:
        score, out = self._lm.score(state, word)
        return (score + self._refund if word in self._exempt else score), out

    def partial(self, prefix: str) -> float:
        """pyctcdecode's penalty for a word in progress that no LM word (or phrase word) starts with."""
        return 0.0 if prefix in self._exempt_prefixes else float(self._lm.score_partial_token(prefix))

    def end(self, state: Any) -> float:
        return float(self._lm.alpha * self._lm._get_raw_end_score(state) * LOG10_TO_LN)


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
) -> LmRescorer | PhraseRescorer:
    """A session's rescorer over the shared decoder (blocking: call it off the event loop): without
    phrases (or with ``phrases="hotwords"``) pyctcdecode's search, else the phrase trie search with
    LM word scores."""
    decoder = shared_decoder(info, settings)
    if not phrases or settings.phrases == "hotwords":
        return LmRescorer(decoder, info, phrases, boost)
    rescorer = PhraseRescorer(info, list(phrases), boost, beam_width=TRIE_LM_BEAM_WIDTH)
    rescorer.words = LmWords(decoder, [w for _, words in rescorer.biaser.phrases for w in words])
    return rescorer
