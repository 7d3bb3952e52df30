"""Greedy CTC decoding: collapsing, seams between feeds, words and confidences."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streaming_asr.ctc import GreedyDecoder, decode_greedy, tokens_to_words, words_text
from streaming_asr.model import default_vocab

VOCAB = default_vocab(32)
BLANK, DELIM = 0, 4
IDS = {c: i for i, c in enumerate(VOCAB)}


def ids_of(s: str) -> np.ndarray:
    """'_' is blank, ' ' the delimiter, letters themselves."""
    return np.array([BLANK if c == "_" else DELIM if c == " " else IDS[c] for c in s])


def decode(s: str, cuts: list[int] = ()) -> str:
    ids = ids_of(s)
    dec = GreedyDecoder(BLANK)
    bounds = [0, *sorted(cuts), len(ids)]
    for a, b in zip(bounds, bounds[1:]):
        dec.feed(a, ids[a:b], np.ones(b - a))
    return words_text(tokens_to_words(dec.tokens, VOCAB, DELIM))


def test_collapses_repeats_and_keeps_double_letters() -> None:
    assert decode("HHEE_LL_LLOO") == "HELLO"
    assert decode("HELO") == "HELO"


def test_delimiters_split_words_and_repeated_delimiters_collapse() -> None:
    assert decode("__HI__  __THERE_ _") == "HI THERE"


def test_repeat_across_a_seam_is_one_letter() -> None:
    assert decode("AAAA", cuts=[2]) == "A"
    assert decode("A_A", cuts=[1]) == "AA"
    assert decode("A_A", cuts=[2]) == "AA"


@given(st.text(alphabet="AB_ ", max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_any_split_of_the_frame_stream_decodes_the_same(frames: str, cuts: list[int]) -> None:
    cuts = sorted({c for c in cuts if c <= len(frames)})
    assert decode(frames, cuts) == decode(frames)


def test_word_times_and_confidence() -> None:
    ids = ids_of("_HH_I_ __OK")
    probs = np.array([1, 0.8, 0.6, 1, 0.5, 1, 1, 1, 1, 0.9, 0.7])
    dec = GreedyDecoder(BLANK)
    dec.feed(100, ids, probs)
    words = tokens_to_words(dec.tokens, VOCAB, DELIM)
    assert [(w.text, w.start_frame, w.end_frame) for w in words] == [("HI", 101, 105), ("OK", 109, 111)]
    assert abs(words[0].confidence - (0.7 + 0.5) / 2) < 1e-9


def test_special_tokens_never_reach_text() -> None:
    logp = np.log(np.full((3, 32), 1e-6))
    logp[0, 1] = logp[1, IDS["A"]] = logp[2, 3] = 0.0  # <s>, A, <unk>
    assert decode_greedy(logp, VOCAB, BLANK, DELIM) == "A"
