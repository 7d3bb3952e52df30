"""Phrase-biased CTC decoding, forced alignment and phrase spotting (streaming_asr.phrases).

Hand-made log-prob matrices pin down the search semantics; one test runs the stand-in model on
espeak-ng speech to show that biasing helps on real posteriors.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streaming_asr.model import default_vocab
from streaming_asr.phrases import (
    PhraseBiaser,
    PhraseMatch,
    aligned_words,
    forced_align,
    normalize_phrase,
)

# wav2vec2's character vocabulary, indexed by id (as in tts-ctc-small/vocab.json).
VOCAB = list(default_vocab(32))
ID = {tok: i for i, tok in enumerate(VOCAB)}
BLANK, DELIM = 0, 4


def frames(*spec: str | dict[str, float]) -> np.ndarray:
    """Log-probs, one row per item: a token string ("_" = blank) gets 0.97, or a dict of
    token -> prob; the rest of each row's mass is spread evenly over the other tokens."""
    rows = []
    for item in spec:
        probs = {item: 0.97} if isinstance(item, str) else dict(item)
        probs = {(VOCAB[BLANK] if k == "_" else k): v for k, v in probs.items()}
        rest = (1.0 - sum(probs.values())) / (len(VOCAB) - len(probs))
        row = np.full(len(VOCAB), rest)
        for tok, p in probs.items():
            row[ID[tok]] = p
        rows.append(np.log(row))
    return np.asarray(rows, dtype=np.float32)


def spell(word_frames: str) -> np.ndarray:
    """Clear-cut frames from a string, one frame per character ("_" = blank, " " = delimiter)."""
    return frames(*("|" if ch == " " else ch for ch in word_frames))


def greedy(log_probs: np.ndarray, blank: int = BLANK) -> list[int]:
    """Argmax per frame, repeats collapsed, blanks removed."""
    out, prev = [], -1
    for i in log_probs.argmax(axis=1).tolist():
        if i != prev and i != blank:
            out.append(i)
        prev = i
    return out


def text(labels: list[int]) -> str:
    return "".join(VOCAB[i] for i in labels).replace("|", " ")


def biaser(phrases: list[str], **kw) -> PhraseBiaser:
    return PhraseBiaser(VOCAB, BLANK, DELIM, phrases, **kw)


# ---------------------------------------------------------------------- decode without phrases


@pytest.mark.parametrize("seed", range(12))
def test_decode_without_phrases_equals_greedy_on_clear_cut_input(seed: int) -> None:
    rng = np.random.default_rng(seed)
    T, V = int(rng.integers(5, 200)), len(VOCAB)
    allowed = [BLANK, DELIM] + list(range(5, V))
    best = rng.choice(allowed, size=T, p=None)
    best[rng.random(T) < 0.5] = BLANK  # CTC output is mostly blank
    logits = rng.normal(0.0, 1.0, size=(T, V))
    logits[np.arange(T), best] += 8.0  # clear-cut: the winner has ~0.9+ of the mass
    log_probs = (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)
    assert biaser([]).decode(log_probs) == greedy(log_probs)
    # Phrases that the audio never approaches change nothing either.
    assert biaser(["quiz jukebox"]).decode(log_probs) == greedy(log_probs)


def test_repeated_letter_needs_a_blank_between() -> None:
    b = biaser([])
    assert text(b.decode(spell("HHEL_LLO"))) == "HELLO"
    assert text(b.decode(spell("HHELLLO"))) == "HELO"
    assert text(b.decode(spell("_SSSSS_TOOOOOL"))) == "STOL"  # a held letter is one label
    # The same holds with a phrase containing the double letter.
    assert text(biaser(["hello"]).decode(spell("HHEL_LLO_"))) == "HELLO"


def test_special_tokens_are_never_emitted() -> None:
    lp = frames("C", {"<unk>": 0.9}, "A", "T")
    assert text(biaser([]).decode(lp)) == "CAT"


# ---------------------------------------------------------------------- biasing


def lihts() -> np.ndarray:
    """'LIGHTS' whose G frame leans to blank (0.6 vs 0.35): greedy reads LIHTS."""
    return frames("_", "L", "I", {"_": 0.6, "G": 0.35}, "H", "T", "S", "_")


def test_biasing_flips_an_ambiguous_frame_toward_the_phrase() -> None:
    lp = lihts()
    assert text(greedy(lp)) == "LIHTS"
    assert text(biaser([]).decode(lp)) == "LIHTS"
    assert text(biaser(["lights"]).decode(lp)) == "LIGHTS"
    assert text(biaser(["Kitchen lights", "lights"]).decode(lp)) == "LIGHTS"


def test_biasing_within_a_multi_word_phrase() -> None:
    lp = np.concatenate([spell("_TURN_ ON_ THE_ "), lihts()])
    assert text(greedy(lp)) == "TURN ON THE LIHTS"
    assert text(biaser(["turn on the lights"]).decode(lp)) == "TURN ON THE LIGHTS"
    assert text(biaser(["boost"], boost=0.0).decode(lp)) == "TURN ON THE LIHTS"


def test_biasing_does_not_fire_for_unrelated_audio() -> None:
    # Same ambiguous G, but the word is SIGHTS-like: no phrase path starts there.
    lp = frames("_", "S", "I", {"_": 0.6, "G": 0.35}, "H", "T", "S", "_")
    assert text(biaser(["lights", "turn on the lights"]).decode(lp)) == "SIHTS"
    # A phrase may start only at a word start: "LIGHTS" inside "FLIHTS" is not boosted (the F
    # lasts 3 frames, so dropping it would cost more than the whole phrase bonus).
    lp = np.concatenate([spell("_FFF"), lihts()])
    assert text(biaser(["lights"]).decode(lp)) == "FLIHTS"


def test_partial_phrase_that_breaks_off_keeps_no_bonus() -> None:
    # K vs C: C is slightly more likely. "KAT" is a prefix of the phrase "KATMANDU" only.
    cat = frames("_", {"C": 0.5, "K": 0.45}, "A", "T", "_")
    assert text(biaser([]).decode(cat)) == "CAT"
    # Completing a phrase "KAT" would flip it: the bonus is large enough to matter ...
    assert text(biaser(["kat"]).decode(cat)) == "KAT"
    # ... but a path that only runs along part of a phrase gets its bonus taken back: at the
    # segment end ...
    assert text(biaser(["katmandu"]).decode(cat)) == "CAT"
    # ... and when the next word breaks off the phrase.
    cat_is = np.concatenate([cat, spell(" IS_")])
    assert text(biaser(["katmandu", "kat mandu"]).decode(cat_is)) == "CAT IS"
    assert text(biaser(["kat is"]).decode(cat_is)) == "KAT IS"


def test_break_off_falls_back_to_a_word_start_suffix() -> None:
    # "THE THE THEATR": the match "THE THE" breaks at the second space, but its last word starts
    # the phrase again, so THEATER can still complete (and its ambiguous E flips).
    lp = np.concatenate([spell("_THE_ THE_ THEAT"), frames({"_": 0.6, "E": 0.35}), spell("R_")])
    assert text(greedy(lp)) == "THE THE THEATR"
    assert text(biaser(["the theater"]).decode(lp)) == "THE THE THEATER"


def test_long_partial_match_does_not_crowd_out_the_true_words() -> None:
    # 20 matched characters hold a large pending bonus when FAN breaks off the phrase; the
    # search must still keep FAN (and then take the bonus back).
    # The FAN frames leave some room for the phrase's next letters, as real posteriors do.
    fan = frames(
        {"F": 0.6, "L": 0.1, "_": 0.1},
        {"A": 0.6, "I": 0.1, "_": 0.1},
        {"N": 0.6, "G": 0.1, "H": 0.1},
        {"_": 0.6, "T": 0.1, "N": 0.1},
        "_",
    )
    lp = np.concatenate([spell("_TURN_ ON_ THE_ KITCHEN_ "), fan])
    assert text(greedy(lp)) == "TURN ON THE KITCHEN FAN"
    assert text(biaser(["turn on the kitchen lights"]).decode(lp)) == "TURN ON THE KITCHEN FAN"


def test_phrase_completes_only_at_a_word_end() -> None:
    # "KAT" followed by more letters of the same word is not the phrase "KAT".
    catch = np.concatenate([frames("_", {"C": 0.5, "K": 0.45}, "A", "T"), spell("CH_")])
    assert text(biaser(["kat"]).decode(catch)) == "CATCH"


def test_other_vocabulary_layouts_are_honoured() -> None:
    # Lower-case letters, blank last, "_" as delimiter.
    vocab = ["a", "b", "c", "_", "<blank>"]
    lp = np.log(
        np.array(
            [
                [0.97, 0.01, 0.01, 0.005, 0.005],  # a
                [0.01, 0.35, 0.01, 0.01, 0.62],  # b?  (blank wins)
                [0.01, 0.01, 0.97, 0.005, 0.005],  # c
            ],
            dtype=np.float32,
        )
    )
    assert PhraseBiaser(vocab, 4, 3, []).decode(lp) == [0, 2]
    assert PhraseBiaser(vocab, 4, 3, ["ABC"]).decode(lp) == [0, 1, 2]


def test_normalize_phrase() -> None:
    alphabet = {tok: i for i, tok in enumerate(VOCAB) if len(tok) == 1 and tok != "|"}
    assert normalize_phrase("  Don't stop-the music, 10x!", alphabet) == ["DON'T", "STOP", "THE", "MUSIC", "X"]
    assert normalize_phrase("123 ?!", alphabet) == []
    assert [p for p, _ in biaser(["123", "Play music", "PLAY  music!"]).phrases] == ["Play music"]


# ---------------------------------------------------------------------- forced alignment


def test_forced_align_returns_exact_frame_spans() -> None:
    lp = frames("_", "A", "A", "_", "B", "B", "B", "|", "C", "_", "A", "_", "A")
    labels = [ID["A"], ID["B"], ID["|"], ID["C"], ID["A"], ID["A"]]
    al = forced_align(lp, labels, BLANK)
    assert [(VOCAB[a], s, e) for a, s, e, _ in al] == [
        ("A", 1, 2),
        ("B", 4, 6),
        ("|", 7, 7),
        ("C", 8, 8),
        ("A", 10, 10),
        ("A", 12, 12),
    ]
    assert all(abs(p - 0.97) < 1e-4 for *_, p in al)


def test_forced_align_mean_posterior_and_words() -> None:
    lp = frames("_", {"O": 0.6, "_": 0.3}, "O", "N", "|", "I", {"T": 0.5, "S": 0.3}, "_")
    labels = [ID[c] for c in "ON|IT"]
    al = forced_align(lp, labels, BLANK)
    assert [(s, e) for _, s, e, _ in al] == [(1, 2), (3, 3), (4, 4), (5, 5), (6, 6)]
    assert al[0][3] == pytest.approx((0.6 + 0.97) / 2, abs=1e-4)
    words = aligned_words(al, VOCAB, DELIM)
    assert [(w, s, e) for w, s, e, _ in words] == [("ON", 1, 3), ("IT", 5, 6)]
    assert words[1][3] == pytest.approx((0.97 + 0.5) / 2, abs=1e-4)


def test_forced_align_edge_cases() -> None:
    lp = spell("AB")
    assert forced_align(lp, [], BLANK) == []
    with pytest.raises(ValueError):
        forced_align(lp, [ID["A"], ID["A"]], BLANK)  # a double letter needs 3 frames


# ---------------------------------------------------------------------- find


def words_of(sentence: str, conf: float = 0.9) -> list[tuple[str, int, int, float]]:
    """Words 10 frames apart, 8 frames long."""
    return [(w, 10 * i, 10 * i + 7, conf) for i, w in enumerate(sentence.split())]


PHRASES = ["turn on the kitchen lights", "play some music", "set a timer for ten minutes"]


def test_find_matches_misspellings() -> None:
    b = biaser(PHRASES)
    got = b.find(words_of("OKAY TERN ON THE KICHEN LIHTS PLEASE"))
    assert len(got) == 1
    assert got[0].phrase == "turn on the kitchen lights"
    assert (got[0].start_frame, got[0].end_frame) == (10, 57)
    assert 0.8 < got[0].score < 1.0
    # Word boundaries may be off ("SOM MUSIK", "TIMAR", "MINITS" and split/merged words).
    assert [m.phrase for m in b.find(words_of("PLAYSOME MUSIK"))] == ["play some music"]
    assert [m.phrase for m in b.find(words_of("SET A TIMAR FOR TEN MINITS"))] == ["set a timer for ten minutes"]


def test_find_rejects_distractors() -> None:
    b = biaser(PHRASES)
    assert b.find(words_of("TURN ON THE KITCHEN FAN")) == []
    assert b.find(words_of("PLAY SOME NEWS")) == []
    assert b.find(words_of("SET AN ALARM FOR SEVEN")) == []
    assert b.find(words_of("WHAT TIME IS IT")) == []
    assert b.find([]) == []
    assert biaser([]).find(words_of("PLAY SOME MUSIC")) == []


def test_find_is_non_overlapping_and_best_first() -> None:
    b = biaser(PHRASES + ["turn on the lights"])
    got = b.find(words_of("PLAY SOM MUSIC AND TURN ON THE KITCHEN LIGHTS"))
    assert [m.phrase for m in got] == ["turn on the kitchen lights", "play some music"]
    assert got[0].score == 1.0 and got[0].score > got[1].score
    assert isinstance(got[0], PhraseMatch)
    # The same phrase twice is found twice.
    twice = b.find(words_of("PLAY SOME MUSIC PLAY SOME MUSIC"))
    assert [(m.phrase, m.start_frame) for m in twice] == [("play some music", 0), ("play some music", 30)]


# ---------------------------------------------------------------------- stand-in model


def _standin_model() -> Path:
    try:
        from helpers import STANDIN_MODEL  # provided by the test suite's helpers

        return Path(STANDIN_MODEL)
    except ImportError:
        return Path(__file__).resolve().parents[2] / "shared" / "models" / "tts-ctc-small"


def _cer(hyp: str, ref: str) -> float:
    d = list(range(len(ref) + 1))
    for i, a in enumerate(hyp, 1):
        prev, d[0] = d[0], i
        for j, b in enumerate(ref, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a != b))
    return d[len(ref)] / max(1, len(ref))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_biasing_helps_the_standin_model_on_espeak_commands(tmp_path: Path) -> None:
    soundfile = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model_dir = _standin_model()
    if not model_dir.is_dir():
        pytest.skip(f"stand-in model not found at {model_dir}")
    processor = transformers.AutoProcessor.from_pretrained(model_dir)
    model = transformers.AutoModelForCTC.from_pretrained(model_dir).eval()
    token_ids = processor.tokenizer.get_vocab()
    vocab = sorted(token_ids, key=token_ids.get)
    blank, delim = token_ids["<pad>"], token_ids["|"]

    def log_probs(sentence: str) -> np.ndarray:
        wav = tmp_path / "say.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), sentence], check=True)
        audio, rate = soundfile.read(wav, dtype="float32")
        audio = soxr.resample(audio, rate, 16000)
        inputs = processor(audio, sampling_rate=16000, return_tensors="pt").input_values
        with torch.no_grad():
            logits = model(inputs).logits[0]
        return torch.log_softmax(logits, dim=-1).numpy()

    biased = PhraseBiaser(vocab, blank, delim, PHRASES)
    plain = PhraseBiaser(vocab, blank, delim, [])
    cer_greedy, cer_biased, found = [], [], 0
    for phrase in PHRASES:
        lp = log_probs(phrase)
        ref = phrase.upper()
        greedy_text = plain.text(greedy(lp, blank))
        labels = biased.decode(lp)
        cer_greedy.append(_cer(greedy_text, ref))
        cer_biased.append(_cer(biased.text(labels), ref))
        words = aligned_words(forced_align(lp, labels, blank), vocab, delim)
        assert " ".join(w for w, *_ in words) == biased.text(labels)
        matches = biased.find(words)
        found += bool(matches) and matches[0].phrase == phrase
    # The stand-in misspells these commands greedily (CER ~0.2); biased decoding fixes them.
    assert sum(cer_biased) < sum(cer_greedy)
    assert all(b <= g for b, g in zip(cer_biased, cer_greedy))
    assert found >= 2
    # Unrelated speech is left as plain beam search decodes it.
    lp = log_probs("close the front window")
    assert biased.decode(lp) == plain.decode(lp)
