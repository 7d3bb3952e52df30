"""Transcripts to a checkpoint's labels: what the model can spell, and a report of everything it cannot.

A reference is NFKC-normalised, put in the vocabulary's case (upper for base-960h, lower where the
letters are lower case), hyphens, underscores and slashes become spaces (unless the vocabulary has them
as tokens), typographic apostrophes become "'" when the vocabulary has it, and whitespace becomes the
word delimiter. Each word is tokenised by longest match (as phrases are: `phrases/trie.py`'s alphabet),
so vocabularies with multi-character tokens work. A character no token covers is, in this order:
romanised (NFKD without its accents, when that is spellable: "é" -> "E"), removed and reported
(punctuation and invisible format characters), or reported as unknown (digits, symbols, letters of
another script), which the caller turns into an error unless unknown characters are to be dropped.
Nothing disappears without being counted.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..model import ModelInfo
from ..phrases.trie import SEPARATORS, _alphabet

APOSTROPHES = "\u2019\u2018\u02bc\u0060\u00b4"  # ’ ‘ ʼ ` ´ -> ' when the vocabulary spells "'"


@dataclass
class Normalised:
    """One reference as labels, the text the model would decode for them, and what was changed."""

    labels: tuple[int, ...]
    text: str  # words of vocabulary tokens joined by spaces (what WER/CER compare against)
    removed: Counter[str] = field(default_factory=Counter)  # punctuation / format characters taken out
    unknown: Counter[str] = field(default_factory=Counter)  # characters the vocabulary cannot spell
    romanised: Counter[str] = field(default_factory=Counter)  # characters spelled without their accents


def vocabulary_case(tokens: Sequence[str]) -> str:
    """ "upper", "lower" or "keep" (mixed or caseless): the case the vocabulary's letters are in."""
    cased = [ch for tok in tokens for ch in tok if ch.lower() != ch.upper()]
    if cased and all(ch.isupper() for ch in cased):
        return "upper"
    if cased and all(ch.islower() for ch in cased):
        return "lower"
    return "keep"


class TextNormaliser:
    """Normalises references to one vocabulary (see the module docstring)."""

    def __init__(self, vocab: Sequence[str], blank_id: int, delimiter_id: int) -> None:
        self.vocab = tuple(vocab)
        self.alphabet = _alphabet(vocab, blank_id, delimiter_id)
        self.delimiter_id = delimiter_id
        self.case = vocabulary_case(list(self.alphabet))
        self.longest = max(map(len, self.alphabet), default=1)
        self.separators = {c for c in SEPARATORS if c not in self.alphabet}
        self.apostrophe = "'" if "'" in self.alphabet else None

    @classmethod
    def from_info(cls, info: ModelInfo) -> TextNormaliser:
        return cls(info.vocab, info.blank_id, info.delimiter_id)

    def _cased(self, text: str) -> str:
        return text.upper() if self.case == "upper" else text.lower() if self.case == "lower" else text

    def _is_separator(self, ch: str) -> bool:
        return ch.isspace() or ch in self.separators or (unicodedata.category(ch) == "Pd" and ch not in self.alphabet)

    def normalise(self, text: str) -> Normalised:
        """`text` as labels; unknown characters are left out here and counted (the caller decides)."""
        out = Normalised((), "")
        text = self._cased(unicodedata.normalize("NFKC", text))
        if self.apostrophe:
            text = text.translate({ord(c): self.apostrophe for c in APOSTROPHES})
        words: list[list[int]] = []
        current: list[int] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if self._is_separator(ch):
                if current:
                    words.append(current)
                    current = []
                i += 1
                continue
            match = self._longest(text, i)
            if match is not None:
                token, size = match
                current.append(self.alphabet[token])
                i += size
                continue
            romanised = self._romanise(ch)
            if romanised is not None:
                out.romanised[ch] += 1
                text = text[:i] + romanised + text[i + 1 :]
                continue
            if unicodedata.category(ch)[0] == "P" or unicodedata.category(ch) == "Cf":
                out.removed[ch] += 1
            else:
                out.unknown[ch] += 1
            i += 1
        if current:
            words.append(current)
        labels: list[int] = []
        for n, word in enumerate(words):
            if n and self.delimiter_id >= 0:
                labels.append(self.delimiter_id)
            labels.extend(word)
        out.labels = tuple(labels)
        out.text = " ".join("".join(self.vocab[t] for t in word) for word in words)
        return out

    def _longest(self, text: str, i: int) -> tuple[str, int] | None:
        """The longest vocabulary token at `text[i:]` and how many characters of `text` it takes."""
        for size in range(min(self.longest, len(text) - i), 0, -1):
            piece = text[i : i + size]
            forms = (piece,) if self.case != "keep" else (piece, piece.upper(), piece.lower())
            for form in forms:
                if form in self.alphabet:
                    return form, size
        return None

    def _romanise(self, ch: str) -> str | None:
        """`ch` without its combining marks (NFKD), when that differs and every character is spellable."""
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        base = self._cased(base)
        if not base or base == ch:
            return None
        i = 0
        while i < len(base):
            match = self._longest(base, i)
            if match is None:
                return None
            i += match[1]
        return base


def describe_characters(counts: Counter[str], limit: int = 12) -> str:
    """`',' x40, '.' x12, '1' (U+0031 DIGIT ONE) x3` for messages: the most frequent first."""
    parts = []
    for ch, n in counts.most_common(limit):
        name = unicodedata.name(ch, "")
        shown = repr(ch) if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
        parts.append(f"{shown} ({name.lower()}) x{n}" if name and not ch.isascii() else f"{shown} x{n}")
    more = len(counts) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")
