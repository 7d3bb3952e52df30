"""Limits on a session's phrase list and boost (streaming_asr.phrase_rescore), and that the
largest lists inside them still compile and rescore a full 20 s segment correctly.

No timing asserts: the limits were sized by measurement (see phrase_rescore's docstring); these
tests pin down what is refused, with which message, and what is still accepted and works.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from streaming_asr.config import ConfigError
from streaming_asr.model import ModelInfo, default_vocab
from streaming_asr.phrase_rescore import (
    MAX_BOOST,
    MAX_PHRASE_CHARS,
    MAX_PHRASE_TOTAL_CHARS,
    MAX_PHRASE_WORDS,
    MAX_PHRASES,
    PhraseRescorer,
    check_boost,
    check_phrases,
)
from streaming_asr.phrases import DEFAULT_BOOST

INFO = ModelInfo(
    name="limits",
    vocab=default_vocab(32),
    blank_id=0,
    delimiter_id=4,
    sample_rate=16000,
    conv_kernels=(10, 3, 3, 3, 3, 2, 2),
    conv_strides=(5, 2, 2, 2, 2, 2, 2),
    do_normalize=True,
)
ID = {tok: i for i, tok in enumerate(INFO.vocab)}
FRAMES = 1000  # max_segment_s = 20 s at 50 frames/s
LETTERS = "ETAONIHSRDLUMWCFGYPBVKXJQZ"


def spell(text: str, frames: int = FRAMES, start: int = 0) -> np.ndarray:
    """Clear-cut log-probs: blank everywhere, ``text`` spelled from frame ``start`` (one frame
    per character, ' ' = delimiter, a blank between doubled letters)."""
    ids = [0] * start
    prev = None
    for ch in text:
        tok = "|" if ch == " " else ch
        if tok == prev:
            ids.append(0)
        ids.append(ID[tok])
        prev = tok
    ids = (ids + [0] * frames)[:frames]
    lp = np.full((frames, len(INFO.vocab)), math.log(0.03 / 31), dtype=np.float32)
    lp[np.arange(frames), ids] = math.log(0.97)
    return lp


def text_of(tokens) -> str:  # type: ignore[no-untyped-def]
    return "".join(INFO.vocab[t.id] for t in tokens).replace("|", " ").strip()


def distinct(n: int, make) -> list[str]:  # type: ignore[no-untyped-def]
    out: set[str] = set()
    while len(out) < n:
        out.add(make())
    return sorted(out)


def random_phrase(rng: random.Random, chars: int, words: int) -> str:
    """``words`` random words, ``chars`` characters in all (spaces included)."""
    lens = [1] * words
    for _ in range(chars - (2 * words - 1)):
        lens[rng.randrange(words)] += 1
    return " ".join("".join(rng.choice(LETTERS) for _ in range(n)) for n in lens)


# ---------------------------------------------------------------------- the limits


def test_limit_values() -> None:
    assert (MAX_PHRASES, MAX_PHRASE_CHARS, MAX_PHRASE_TOTAL_CHARS, MAX_PHRASE_WORDS) == (1000, 100, 20_000, 16)
    assert MAX_BOOST == 10.0


@pytest.mark.parametrize(
    ("phrases", "names"),
    [
        (["play music"] * (MAX_PHRASES + 1), ("MAX_PHRASES", "1000", "1001")),
        (["a" * (MAX_PHRASE_CHARS + 1)], ("MAX_PHRASE_CHARS", "100 characters", "phrases[0]")),
        (["ok", "x" * 1024], ("MAX_PHRASE_CHARS", "1024", "phrases[1]")),
        ([" ".join(["go"] * (MAX_PHRASE_WORDS + 1))], ("MAX_PHRASE_WORDS", "16 words", "17")),
        (["-".join("abcdefghijklmnopq")], ("MAX_PHRASE_WORDS", "17")),  # '-' separates words too
        (
            ["a" * MAX_PHRASE_CHARS] * (MAX_PHRASE_TOTAL_CHARS // MAX_PHRASE_CHARS + 1),
            ("MAX_PHRASE_TOTAL_CHARS", "20000", "20100"),
        ),
        (["fine", 3], ("string", "phrases[1]", "int")),
        (["fine", None], ("string", "NoneType")),
        (["fine", ["nested"]], ("string", "list")),
        ("turn on the lights", ("list of strings", "str")),
        ({"phrases": 1}, ("list of strings", "dict")),
        (7, ("list of strings", "int")),
    ],
)
def test_over_limit_lists_are_refused_naming_the_limit(phrases: object, names: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        check_phrases(phrases)
    for name in names:
        assert name in str(excinfo.value)
    # The rescorer enforces the same limits itself.
    with pytest.raises(ConfigError) as again:
        PhraseRescorer(INFO, phrases)  # type: ignore[arg-type]
    assert str(again.value) == str(excinfo.value)


def test_long_message_values_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as excinfo:
        check_phrases(["y" * 1_000_000])
    assert len(str(excinfo.value)) < 200
    with pytest.raises(ConfigError) as excinfo:
        check_boost([1.0] * 100_000)
    assert len(str(excinfo.value)) < 200


def test_lists_at_the_limits_are_accepted() -> None:
    assert check_phrases(None) == []
    assert check_phrases([]) == []
    given = ["turn on the lights", "", "Set a timer, 10 min!"]
    got = check_phrases(given)
    assert got == given and got is not given
    assert check_phrases(tuple(given)) == given
    assert check_phrases(["go"] * MAX_PHRASES) == ["go"] * MAX_PHRASES
    assert check_phrases(["a" * MAX_PHRASE_CHARS] * (MAX_PHRASE_TOTAL_CHARS // MAX_PHRASE_CHARS))
    assert check_phrases([" ".join(["go"] * MAX_PHRASE_WORDS)])
    assert check_phrases(["  spaces   around   words  "])  # runs of separators count once


# ---------------------------------------------------------------------- boost


@pytest.mark.parametrize(
    "value", [-1, -0.5, 10.5, 11, 10**400, "x", "2", float("nan"), float("inf"), float("-inf"), [], {}, True, False]
)
def test_check_boost_refuses(value: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        check_boost(value)
    assert "phrase_boost" in str(excinfo.value) and "10" in str(excinfo.value)
    with pytest.raises(ConfigError):
        PhraseRescorer(INFO, ["play music"], value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "expected"), [(None, None), (2, 2.0), (0, 0.0), (1.5, 1.5), (10, 10.0)])
def test_check_boost_accepts(value: object, expected: float | None) -> None:
    got = check_boost(value)
    assert got == expected
    assert got is None or type(got) is float


def test_rescorer_boost_default_and_value() -> None:
    assert PhraseRescorer(INFO, ["play music"]).biaser.boost == DEFAULT_BOOST
    assert PhraseRescorer(INFO, ["play music"], None).biaser.boost == DEFAULT_BOOST
    assert PhraseRescorer(INFO, ["play music"], 3).biaser.boost == 3.0


# ---------------------------------------------------------------------- worst cases inside the limits

TARGET = "turn on the kitchen lights"


def _check_found(rescorer: PhraseRescorer, text: str, start: int, phrase: str) -> None:
    tokens, found = rescorer.rescore(spell(text, start=start), first_frame=100)
    assert text_of(tokens) == text.upper()
    assert [f.phrase for f in found] == [phrase]
    assert found[0].score == 1.0
    # Frame times: the phrase starts at frame 100 + start (20 ms frames).
    assert found[0].start == pytest.approx((100 + start) * 0.02)


def test_longest_phrases_inside_the_limits_compile_and_rescore() -> None:
    rng = random.Random(0)
    # 199 phrases of 100 characters and 16 words, plus one real command: at the total limit.
    fillers = distinct(199, lambda: random_phrase(rng, MAX_PHRASE_CHARS, MAX_PHRASE_WORDS))
    phrases = check_phrases(fillers + [TARGET])
    assert sum(map(len, phrases)) <= MAX_PHRASE_TOTAL_CHARS
    rescorer = PhraseRescorer(INFO, phrases)
    _check_found(rescorer, TARGET.upper(), 400, TARGET)
    # A filler phrase spoken is found too (100 characters: more than one 64-bit word).
    _check_found(rescorer, fillers[7], 300, fillers[7])


def test_most_phrases_inside_the_limits_compile_and_rescore() -> None:
    rng = random.Random(1)
    fillers = distinct(MAX_PHRASES - 1, lambda: random_phrase(rng, 19, 3))
    phrases = check_phrases(fillers + [TARGET])
    rescorer = PhraseRescorer(INFO, phrases)
    _check_found(rescorer, TARGET.upper(), 500, TARGET)
    # Two phrases in one segment: both found, in score order, non-overlapping.
    tokens, found = rescorer.rescore(spell(f"{fillers[3]} AND {TARGET.upper()}", start=50), 0)
    assert sorted(f.phrase for f in found) == sorted([fillers[3], TARGET])


def test_biasing_still_works_with_a_full_list() -> None:
    rng = random.Random(3)
    phrases = check_phrases([TARGET] + distinct(MAX_PHRASES - 1, lambda: random_phrase(rng, 19, 3)))
    # 'LIGHTS' whose G frame leans to blank (0.6 vs 0.35): read LIHTS without the phrase.
    lp = spell("TURN ON THE KITCHEN LIXHTS", start=300)
    g = 300 + len("TURN ON THE KITCHEN LI")
    lp[g] = math.log(0.05 / 30)
    lp[g, 0], lp[g, ID["G"]] = math.log(0.6), math.log(0.35)
    plain, _ = PhraseRescorer(INFO, ["play some music"]).rescore(lp, 0)
    assert text_of(plain) == "TURN ON THE KITCHEN LIHTS"
    tokens, found = PhraseRescorer(INFO, phrases).rescore(lp, 0)
    assert text_of(tokens) == "TURN ON THE KITCHEN LIGHTS"
    assert [f.phrase for f in found] == [TARGET]


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_random_segment_with_a_full_list(scale: float) -> None:
    rng = np.random.default_rng(0)
    prng = random.Random(4)
    phrases = check_phrases(distinct(MAX_PHRASES, lambda: random_phrase(prng, 20, 4)))
    logits = rng.normal(0.0, scale, size=(FRAMES, 32))
    lp = (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)
    tokens, found = PhraseRescorer(INFO, phrases).rescore(lp, 0)
    assert all(0 <= t.start <= t.end < FRAMES for t in tokens)
    assert all(f.phrase in phrases and 0.7 <= f.score <= 1.0 for f in found)


def test_pathological_list_stays_correct() -> None:
    # 1000 phrases of 10 one-letter words against 20 s of the same letters: every window is
    # close to hundreds of phrases, so find() works to its caps; what it reports is still right.
    rng = random.Random(2)
    words = lambda k: " ".join(rng.choice("ABC") for _ in range(k))  # noqa: E731
    phrases = check_phrases(distinct(MAX_PHRASES, lambda: words(10)))
    spoken = words(500)
    tokens, found = PhraseRescorer(INFO, phrases).rescore(spell(spoken), 0)
    assert len(tokens) > 500 and all(0 <= t.start <= t.end < FRAMES for t in tokens)
    assert found
    spans = sorted((f.start, f.end) for f in found)
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:]))  # non-overlapping
    assert all(f.phrase in phrases and f.score >= 0.7 for f in found)
