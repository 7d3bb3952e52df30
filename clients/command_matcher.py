"""Fuzzy spoken-command matching on streaming transcripts (pure: no I/O, no clock).

Recognisers misspell (``TERN ON THE LIGHS``), so a command fires when some window of the
heard words is close enough to its phrase: text is normalised (upper case, letters, digits and
apostrophes), and each window of the phrase's word count ±1 is compared with the phrase by
character-level edit distance, ``similarity = 1 - distance / longer length``.

Example::

    >>> from clients.command_matcher import Command, CommandMatcher
    >>> matcher = CommandMatcher([Command("turn on the lights"), Command("stop the music")],
    ...                          threshold=0.8, wake_word="computer", cooldown_s=2.0)
    >>> [h.command.phrase for h in matcher.feed_final(0, "COMPUTER TERN ON THE LIGHS PLEASE", now=10.0)]
    ['turn on the lights']
    >>> matcher.feed_final(1, "TURN ON THE LIGHTS", now=11.0)   # within the cooldown
    []

Partials fire too, but only on their *stable* prefix and only on whole words (a committed
word followed by a committed space), so a command fires early yet never on text that may
still change. A command fires at most once per segment, and when two commands claim the same
words only the better match fires (``turn off the lights`` does not also fire
``turn on the lights``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from streaming_asr.textmetrics import edit_distance

Source = Literal["partial", "final", "server"]


@dataclass(frozen=True)
class Command:
    """A phrase and what to do when it is heard (the action is carried out by the caller)."""

    phrase: str
    action: str = "print"
    run: tuple[str, ...] = ()
    url: str | None = None
    name: str | None = None
    threshold: float | None = None  # overrides the matcher's threshold for this command

    @property
    def label(self) -> str:
        return self.name or self.phrase


@dataclass(frozen=True)
class CommandHit:
    """A command that fired: where, how well, and on which words."""

    command: Command
    segment: int
    score: float
    heard: str
    source: Source
    time: float


def normalize(text: str) -> str:
    """Upper case, accents removed, only letters, digits and apostrophes, single spaces."""
    text = unicodedata.normalize("NFKD", text)
    chars = [c if (c.isalnum() or c == "'") else " " for c in text if not unicodedata.combining(c)]
    return " ".join("".join(chars).upper().split())


@lru_cache(maxsize=65536)
def similarity(a: str, b: str) -> float:
    """``1 - levenshtein(a, b) / max(len)``: 1.0 for equal strings, 0.0 for nothing in common."""
    if a == b:
        return 1.0
    longest = max(len(a), len(b))
    if not a or not b:
        return 0.0
    return 1.0 - edit_distance(a, b) / longest


@dataclass(frozen=True)
class _Match:
    score: float
    start: int  # word index, inclusive
    end: int  # word index, exclusive


def best_window(words: Sequence[str], phrase: str, threshold: float, first: int = 0) -> _Match | None:
    """The best-scoring window of ``words[first:]`` (phrase length ±1 words) at or above ``threshold``."""
    target_words = phrase.split()
    n = len(target_words)
    best: _Match | None = None
    for size in (n, n - 1, n + 1):  # exact length first: it wins ties
        if size < 1:
            continue
        for start in range(first, len(words) - size + 1):
            window = " ".join(words[start : start + size])
            # edit distance is at least the length difference: skip hopeless windows cheaply
            if 1.0 - abs(len(window) - len(phrase)) / max(len(window), len(phrase)) < threshold:
                continue
            score = similarity(window, phrase)
            if score >= threshold and (best is None or score > best.score):
                best = _Match(score, start, start + size)
    return best


@dataclass
class _SegmentState:
    spans: list[tuple[int, int]] = field(default_factory=list)  # word spans already used by hits
    fired: set[int] = field(default_factory=set)  # command indexes fired in this segment
    wake_end: int | None = None  # word index after the first wake word heard in this segment


class CommandMatcher:
    """Turns partials and finals into :class:`CommandHit` s. Feed it events in order.

    ``now`` is any monotonic clock in seconds (wall clock or audio time): it is only used for the
    per-command ``cooldown_s`` and for ``wake_window_s``, the time after a wake word during which
    later segments may give commands without repeating it.
    """

    def __init__(
        self,
        commands: Iterable[Command],
        threshold: float = 0.8,
        wake_word: str | None = None,
        cooldown_s: float = 2.0,
        wake_window_s: float = 5.0,
    ) -> None:
        self.commands = list(commands)
        if not self.commands:
            raise ValueError("at least one command is needed")
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.wake_word = normalize(wake_word) if wake_word else None
        self.cooldown_s = cooldown_s
        self.wake_window_s = wake_window_s
        self._phrases = [normalize(c.phrase) for c in self.commands]
        self._last_fired: dict[int, float] = {}
        self._last_wake: float | None = None
        self._segments: dict[int, _SegmentState] = {}

    @property
    def phrases(self) -> list[str]:
        """Phrases to send in ``start`` so the server biases decoding toward them."""
        phrases = [c.phrase for c in self.commands]
        return phrases + [self.wake_word.lower()] if self.wake_word else phrases

    def feed_partial(self, segment: int, text: str, stable: int, now: float) -> list[CommandHit]:
        """Match the whole committed words of a partial (its first ``stable`` characters)."""
        prefix = text[: max(0, stable)]
        cut = prefix.rfind(" ")
        if cut < 0:
            return []  # not even one word is complete yet
        return self._feed(segment, normalize(prefix[:cut]).split(), now, "partial")

    def feed_final(
        self,
        segment: int,
        text: str,
        now: float,
        phrases: Sequence[tuple[str, float]] = (),
    ) -> list[CommandHit]:
        """Match a final; ``phrases`` are the server's ``(phrase, score)`` matches for it, if any."""
        words = normalize(text).split()
        hits = self._feed(segment, words, now, "final")
        state = self._segments.get(segment) or _SegmentState()
        for phrase, score in phrases:
            key = normalize(phrase)
            for index, own in enumerate(self._phrases):
                if own == key and score >= self._threshold(index) and self._may_fire(index, state, now):
                    if self.wake_word and state.wake_end is None and not self._wake_recent(now):
                        continue
                    state.fired.add(index)
                    self._last_fired[index] = now
                    hits.append(CommandHit(self.commands[index], segment, score, key, "server", now))
        self._segments.pop(segment, None)  # a segment ends with its final
        return hits

    # -- internals

    def _threshold(self, index: int) -> float:
        own = self.commands[index].threshold
        return own if own is not None else self.threshold

    def _may_fire(self, index: int, state: _SegmentState, now: float) -> bool:
        if index in state.fired:
            return False
        last = self._last_fired.get(index)
        return last is None or now - last >= self.cooldown_s

    def _wake_recent(self, now: float) -> bool:
        return self._last_wake is not None and now - self._last_wake <= self.wake_window_s

    def _split_wake_word(self, words: list[str]) -> list[str]:
        """Split a word the recogniser glued onto the wake word (``COMPUTERSTOP`` → ``COMPUTER STOP``)."""
        assert self.wake_word is not None
        last = self.wake_word.split()[-1]
        out = []
        for word in words:
            if len(word) > len(last) + 1 and similarity(word[: len(last)], last) >= self.threshold:
                out += [word[: len(last)], word[len(last) :]]
            else:
                out.append(word)
        return out

    def _feed(self, segment: int, words: list[str], now: float, source: Source) -> list[CommandHit]:
        state = self._segments.setdefault(segment, _SegmentState())
        while len(self._segments) > 8:  # forget segments whose final never came
            self._segments.pop(min(self._segments))
        first = 0
        if self.wake_word:
            words = self._split_wake_word(words)
            if state.wake_end is None:
                wake = best_window(words, self.wake_word, self.threshold)
                if wake is not None:
                    state.wake_end = wake.end
                    state.spans.append((wake.start, wake.end))
            if state.wake_end is not None:
                self._last_wake = now
                first = state.wake_end
            elif not self._wake_recent(now):
                return []
        candidates: list[tuple[_Match, int]] = []
        for index, phrase in enumerate(self._phrases):
            if self._may_fire(index, state, now):
                match = best_window(words, phrase, self._threshold(index), first)
                if match is not None:
                    candidates.append((match, index))
        hits = []
        for match, index in sorted(candidates, key=lambda c: -c[0].score):
            if any(match.start < end and start < match.end for start, end in state.spans):
                continue  # these words already triggered a better (or earlier) command
            state.spans.append((match.start, match.end))
            state.fired.add(index)
            self._last_fired[index] = now
            heard = " ".join(words[match.start : match.end])
            hits.append(CommandHit(self.commands[index], segment, round(match.score, 3), heard, source, now))
        return hits
