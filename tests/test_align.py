"""Forced alignment (streaming_asr.tasks.align, `streaming-asr align`).

The Viterbi is checked against brute force on tiny trellises and against itself with the moves
checkpointed; spelling against the vocabulary's case and romanisation; the formats by parsing them
back. With the stand-in model: aligned word times agree with the streaming finals' word times, a
file longer than one window aligns like its pieces, and espeak-ng words joined with known silences
get their onsets back.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from helpers import STANDIN_MODEL, espeak_rows, standin_model, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming_asr.audio import read_audio
from streaming_asr.cli import main
from streaming_asr.model import ModelInfo, default_vocab
from streaming_asr.phrases import forced_align
from streaming_asr.tasks.align import (
    AlignError,
    align_audio,
    align_log_probs,
    alphabet,
    file_log_probs,
    min_frames,
    peak_bytes,
    spell,
    viterbi,
)
from streaming_asr.tasks.align_formats import render

VOCAB = default_vocab(32)  # <pad>=0 blank, |=4, upper-case letters, '
ID = {t: i for i, t in enumerate(VOCAB)}
INFO = ModelInfo("test", VOCAB, 0, 4, 16000, (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), True)
FRAME = INFO.frame_seconds  # 0.02 s


def random_log_probs(rng: np.random.Generator, frames: int, vocab: int = 32) -> np.ndarray:
    x = rng.normal(size=(frames, vocab)) * 3
    return (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)


def path_score(lp: np.ndarray, labels: list[int], state: np.ndarray) -> float:
    ext = np.zeros(2 * len(labels) + 1, dtype=np.int64)
    ext[1::2] = labels
    return float(np.asarray(lp, np.float64)[np.arange(len(state)), ext[state]].sum())


def collapse(seq: tuple[int, ...], blank: int = 0) -> list[int]:
    out, prev = [], -1
    for x in seq:
        if x != blank and x != prev:
            out.append(x)
        prev = x
    return out


# ------------------------------------------------------------------ the Viterbi itself
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.lists(st.integers(1, 3), min_size=1, max_size=3))
def test_viterbi_finds_the_best_ctc_path(seed: int, frames: int, labels: list[int]) -> None:
    lp = random_log_probs(np.random.default_rng(seed), frames, 4)
    if frames < min_frames(labels):
        with pytest.raises(AlignError):
            viterbi(lp, labels, 0)
        return
    state = viterbi(lp, labels, 0)
    best = max(
        np.asarray(lp, np.float64)[np.arange(frames), list(seq)].sum()
        for seq in itertools.product(range(4), repeat=frames)
        if collapse(seq) == labels
    )
    assert np.all(np.diff(state) >= 0) and np.all(np.diff(state) <= 2)
    assert path_score(lp, labels, state) == pytest.approx(best, abs=1e-9)
    ext = np.zeros(2 * len(labels) + 1, dtype=np.int64)
    ext[1::2] = labels
    assert collapse(tuple(ext[state].tolist())) == labels  # the path spells the labels


def test_checkpointed_viterbi_gives_the_same_path_as_the_whole_trellis() -> None:
    rng = np.random.default_rng(7)
    lp = random_log_probs(rng, 400)
    labels = rng.integers(5, 32, size=60).tolist()
    whole = viterbi(lp, labels, 0)
    for budget in (1, 121 * 10, 121 * 37):  # one frame, 10 and 37 frames of moves at a time
        assert np.array_equal(viterbi(lp, labels, 0, budget=budget), whole)
    # and the project's reference aligner agrees on every label's span
    ref = forced_align(lp, labels, 0)
    odd = 2 * np.arange(len(labels)) + 1
    assert [(r[1], r[2]) for r in ref] == [
        (int(np.searchsorted(whole, s)), int(np.searchsorted(whole, s, side="right")) - 1) for s in odd
    ]


def test_an_hour_of_speech_fits_a_bounded_trellis() -> None:
    frames, states = 180_000, 2 * 54_000 + 1  # 1 h at 20 ms, ~15 letters a second
    assert frames * states > 19e9  # as one uint8 trellis: ~19 GB
    assert peak_bytes(frames, states) < 400 * 2**20


def test_repeated_letters_need_a_blank_between_them() -> None:
    lp = random_log_probs(np.random.default_rng(0), 2)
    with pytest.raises(AlignError):
        viterbi(lp, [ID["L"], ID["L"]], 0)
    state = viterbi(random_log_probs(np.random.default_rng(0), 3), [ID["L"], ID["L"]], 0)
    assert state.tolist() == [1, 2, 3]


def test_times_come_from_each_characters_frames() -> None:
    # "HI YO": frames H H _ I | _ Y O O _ (a peaky matrix: that path is the only likely one)
    path = ["H", "H", "<pad>", "I", "|", "<pad>", "Y", "O", "O", "<pad>"]
    lp = np.full((len(path), 32), -20.0, dtype=np.float32)
    for t, tok in enumerate(path):
        lp[t, ID[tok]] = 0.0
    a = align_log_probs(lp, INFO, "hi yo")
    assert [(c.char, c.word_index) for c in a.chars] == [("H", 0), ("I", 0), ("Y", 1), ("O", 1)]
    assert [(round(c.start / FRAME), round(c.end / FRAME)) for c in a.chars] == [(0, 2), (3, 4), (6, 7), (7, 9)]
    assert [(w.word, round(w.start / FRAME), round(w.end / FRAME)) for w in a.words if w.start is not None] == [
        ("hi", 0, 4),
        ("yo", 6, 9),
    ]
    assert all(c.score == pytest.approx(1.0, abs=1e-6) for c in a.chars)


# ------------------------------------------------------------------ transcript -> vocabulary
def test_spelling_romanises_matches_case_and_reports_what_it_skips() -> None:
    words = spell("Café naïve ÆON 42 don’t Straße", alphabet(INFO))
    spelled = ["".join(VOCAB[i] for i in w.ids) for w in words]
    assert spelled == ["CAFE", "NAIVE", "ON", "", "DON'T", "STRASSE"]
    assert [w.unknown for w in words] == ["", "", "Æ", "42", "", ""]
    lower = ModelInfo("lc", tuple(t.lower() for t in VOCAB), 0, 4, 16000, INFO.conv_kernels, INFO.conv_strides, True)
    assert ["".join(lower.vocab[i] for i in w.ids) for w in spell("ÉTÉ Hé", alphabet(lower))] == ["ete", "he"]


def test_unspellable_words_get_null_times_and_are_listed() -> None:
    lp = random_log_probs(np.random.default_rng(1), 50)
    a = align_log_probs(lp, INFO, "call 911 now!")
    out = a.to_json()
    assert [w["word"] for w in out["words"]] == ["call", "911", "now!"]
    assert out["words"][1] == {"word": "911", "start": None, "end": None, "score": None}
    assert all(out["words"][i]["start"] is not None for i in (0, 2))
    assert out["skipped"] == [
        {"word_index": 1, "word": "911", "chars": "911"},
        {"word_index": 2, "word": "now!", "chars": "!"},
    ]
    assert "".join(c["char"] for c in out["chars"]) == "CALLNOW"


@pytest.mark.parametrize(
    ("transcript", "frames", "message"),
    [("", 50, "empty"), ("   ", 50, "empty"), ("42 !!", 50, "vocabulary"), ("hello world", 0, "too short")],
)
def test_bad_input_is_an_align_error(transcript: str, frames: int, message: str) -> None:
    with pytest.raises(AlignError, match=message):
        align_log_probs(random_log_probs(np.random.default_rng(2), frames), INFO, transcript)


def test_a_transcript_longer_than_the_audio_can_hold() -> None:
    # "AA B": A _ A | B = 5 frames at least
    lp = random_log_probs(np.random.default_rng(3), 4)
    with pytest.raises(AlignError, match="too long.*5 frames"):
        align_log_probs(lp, INFO, "aa b")
    assert len(align_log_probs(random_log_probs(np.random.default_rng(3), 5), INFO, "aa b").chars) == 3


# ------------------------------------------------------------------ formats
def _sample_alignment():  # type: ignore[no-untyped-def]
    path = ["<pad>"] * 10 + ["H", "I", "<pad>", "|", "Y", "O"] + ["<pad>"] * 20
    lp = np.full((len(path), 32), -20.0, dtype=np.float32)
    for t, tok in enumerate(path):
        lp[t, ID[tok]] = 0.0
    return align_log_probs(lp, INFO, 'hi 7 "yo"', duration=0.75)


def test_textgrid_tiers_cover_the_file_without_gaps() -> None:
    text = render(_sample_alignment(), "textgrid")
    assert text.startswith('File type = "ooTextFile"\nObject class = "TextGrid"\n')
    tiers = re.split(r"\n    item \[\d\]:\n", text)[1:]
    assert [re.search(r'name = "(\w+)"', t).group(1) for t in tiers] == ["words", "chars"]  # type: ignore[union-attr]
    for tier in tiers:
        xs = re.findall(r"intervals \[\d+\]:\n\s+xmin = ([\d.]+) \n\s+xmax = ([\d.]+) \n\s+text = \"(.*)\" ", tier)
        assert int(re.search(r"intervals: size = (\d+)", tier).group(1)) == len(xs)  # type: ignore[union-attr]
        assert xs[0][0] == "0" and xs[-1][1] == "0.75"
        assert all(a[1] == b[0] for a, b in zip(xs, xs[1:]))  # contiguous
        assert all(float(a) < float(b) for a, b, _ in xs)
    words = re.findall(r'text = "(.*)" ', tiers[0])
    assert [w for w in words if w] == ["hi", '""yo""']  # quotes doubled, the unspellable "7" left out
    assert re.findall(r"xmin = ([\d.]+) \n\s+xmax = ([\d.]+) \n\s+text = \"hi\"", tiers[0]) == [("0.2", "0.24")]


def test_captions_have_one_cue_per_aligned_word() -> None:
    a = _sample_alignment()
    srt = render(a, "srt")
    assert srt.startswith("1\n00:00:00,200 --> 00:00:00,240\nhi\n\n2\n00:00:00,280 --> 00:00:00,320\n")
    assert srt.count(" --> ") == 2
    vtt = render(a, "vtt")
    assert vtt.startswith("WEBVTT\n\n1\n00:00:00.200 --> 00:00:00.240\nhi\n\n")
    out = json.loads(render(a, "json"))
    assert set(out) == {"words", "chars", "skipped"} and len(out["words"]) == 3


# ------------------------------------------------------------------ the model layer
def test_file_log_probs_is_the_models_own_output_up_to_30_s_and_frame_exact_beyond() -> None:
    model = tiny_model()
    info = model.info
    rng = np.random.default_rng(4)
    short = rng.normal(scale=0.1, size=16000 * 12).astype(np.float32)
    assert np.array_equal(file_log_probs(model, info, short), model([info.normalize(short)])[0])
    long = rng.normal(scale=0.1, size=16000 * 36 + 123).astype(np.float32)
    lp = file_log_probs(model, info, long)
    assert lp.shape == (info.frames_for(long.size), len(info.vocab))
    first = model([info.normalize(long[: info.samples_for(1250)])])[0]  # window 1: 20 s kept + 5 s right context
    assert np.array_equal(lp[:1000], first[:1000])


# ------------------------------------------------------------------ the stand-in model
def _pairs(ref: list[str], hyp: list[str]) -> list[tuple[int, int]]:
    """(ref index, hyp index) of words both sides spell the same, in order."""
    sm = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    return [(b.a + k, b.b + k) for b in sm.get_matching_blocks() for k in range(b.size)]


@pytest.mark.standin
def test_aligned_word_times_agree_with_the_streaming_finals() -> None:
    from streaming_asr.offline import transcribe_streaming

    model = standin_model()
    matched = 0
    for row in espeak_rows(6.0)[:16]:
        if matched >= 20:
            break
        audio, _ = read_audio(row["wav"], 16000)
        finals = transcribe_streaming(model, model.info, audio).finals
        streamed = [w for f in finals for w in f.words]
        a = align_audio(model, model.info, audio, row["reference"])
        assert [w.word for w in a.words] == row["reference"].split()
        for i, j in _pairs(row["reference"].split(), [w.word for w in streamed]):
            aligned, heard = a.words[i], streamed[j]
            assert aligned.start is not None and aligned.end is not None
            assert abs(aligned.start - heard.start) <= 2 * FRAME + 1e-6, (row["id"], heard)
            assert abs(aligned.end - heard.end) <= 2 * FRAME + 1e-6, (row["id"], heard)
            matched += 1
    assert matched >= 20


@pytest.mark.standin
def test_a_file_longer_than_one_window_aligns_like_its_pieces() -> None:
    model = standin_model()
    gap = np.zeros(16000, dtype=np.float32)
    pieces, refs, offsets, t = [], [], [], 0
    for row in espeak_rows(6.0):
        audio, _ = read_audio(row["wav"], 16000)
        pieces += [audio, gap]
        refs.append(row["reference"])
        offsets.append(t)
        t += audio.size + gap.size
        if t > 16000 * 34:
            break
    joined = np.concatenate(pieces)
    assert joined.size > 16000 * 30  # more than one window
    whole = align_audio(model, model.info, joined, " ".join(refs))
    alone = []
    for audio, ref, off in zip(pieces[::2], refs, offsets):
        a = align_audio(model, model.info, audio, ref)
        alone += [(w.start + off / 16000, w.end + off / 16000) for w in a.words]  # type: ignore[operator]
    got = [(w.start, w.end) for w in whole.words]
    assert len(got) == len(alone)
    close = [abs(g[0] - e[0]) <= 2 * FRAME + 1e-6 and abs(g[1] - e[1]) <= 2 * FRAME + 1e-6 for g, e in zip(got, alone)]
    assert sum(close) >= 0.95 * len(close)


ONSET_WORDS = "seven market yellow number garden window people basket orange doctor little morning".split()


@pytest.mark.standin
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_onsets_of_espeak_words_joined_with_known_silences(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    signal = [np.zeros(8000, dtype=np.float32)]
    at = 8000
    onsets = []
    for word in ONSET_WORDS:
        wav = tmp_path / f"{word}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), word], check=True, capture_output=True)
        audio, _ = read_audio(wav, 16000)
        loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
        audio = audio[loud[0] : loud[-1] + 1]  # the word from its first to its last loud sample
        onsets.append(at / 16000)
        gap = np.zeros(int(rng.uniform(0.3, 0.6) * 16000), dtype=np.float32)
        signal += [audio, gap]
        at += audio.size + gap.size
    model = standin_model()
    a = align_audio(model, model.info, np.concatenate(signal), " ".join(ONSET_WORDS))
    errors = [abs(w.start - t) for w, t in zip(a.words, onsets)]  # type: ignore[operator]
    assert float(np.median(errors)) <= 0.040, [round(e, 3) for e in errors]  # the target
    assert max(errors) <= 0.100, [round(e, 3) for e in errors]  # and no word lost to a neighbour


# ------------------------------------------------------------------ the command
def _align(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["align", *args, "--model", str(STANDIN_MODEL), "--device", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.standin
def test_cli_json_and_captions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = espeak_rows(6.0)[0]
    audio, _ = read_audio(row["wav"], 16000)
    flac = tmp_path / "utt.flac"
    sf.write(flac, np.concatenate([np.zeros(8000, np.float32), audio]), 16000)  # half a second later
    words = row["reference"].split()
    code, out, err = _align(capsys, str(flac), row["reference"].lower())
    assert code == 0, err
    result = json.loads(out)
    assert [w["word"] for w in result["words"]] == [w.lower() for w in words]
    assert "".join(c["char"] for c in result["chars"]) == "".join(words)
    starts = [w["start"] for w in result["words"]]
    assert starts == sorted(starts) and starts[0] >= 0.45
    assert all(w["start"] < w["end"] <= audio.size / 16000 + 0.5 for w in result["words"])
    transcript = tmp_path / "t.txt"
    transcript.write_text(row["reference"] + "\n", encoding="utf-8")
    code, srt, err = _align(capsys, str(flac), f"@{transcript}", "--format", "srt")
    assert code == 0, err
    assert srt.count(" --> ") == len(words) and srt.startswith("1\n00:00:00,")


@pytest.mark.standin
def test_cli_bad_input_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = str(espeak_rows(6.0)[0]["wav"])
    not_audio = tmp_path / "not-audio.wav"
    not_audio.write_text("hello")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(8000, np.float32), 16000)  # 0.5 s: 24 frames
    cases = [
        ((good, ""), "transcript is empty"),
        ((good, f"@{tmp_path / 'missing.txt'}"), "cannot read the transcript"),
        ((str(not_audio), "hello"), "cannot read"),
        ((str(empty), "hello"), "no audio"),
        ((good, "1234"), "vocabulary"),
        ((str(short), "a much longer transcript than half a second holds"), "too long"),
    ]
    for args, message in cases:
        code, out, err = _align(capsys, *args)
        assert code == 2 and message in err and "Traceback" not in err and not out, (args, err)


def _post_form(url: str, parts: list[tuple[str, bytes]]) -> tuple[int, str, bytes]:
    """multipart/form-data POST (test_embed's form builder); (status, content type, body)."""
    import urllib.error
    import urllib.request

    from test_embed import multipart

    body, ctype = multipart(parts)
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.mark.standin
def test_http_align_equals_the_cli(standin_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """POST /v1/align (windows through the server's batcher) gives the CLI's alignment; bad input is 4xx JSON."""
    import io

    row = espeak_rows(6.0)[1]
    audio, _ = read_audio(row["wav"], 16000)
    wav = tmp_path / "utt.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    code, out, err = _align(capsys, str(wav), row["reference"])
    assert code == 0, err
    cli = json.loads(out)
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="FLOAT")
    url = standin_server.http_url + "/v1/align"
    status, ctype, body = _post_form(url, [("file", buf.getvalue()), ("transcript", row["reference"].encode())])
    assert status == 200 and ctype.startswith("application/json"), body[:300]
    served = json.loads(body)
    assert [(w["word"], w["start"], w["end"]) for w in served["words"]] == [
        (w["word"], w["start"], w["end"]) for w in cli["words"]
    ]
    assert [w["score"] for w in served["words"]] == pytest.approx([w["score"] for w in cli["words"]], abs=1e-3)
    status, ctype, body = _post_form(
        url, [("file", buf.getvalue()), ("transcript", row["reference"].encode()), ("format", b"vtt")]
    )
    assert status == 200 and ctype.startswith("text/vtt") and body.startswith(b"WEBVTT")
    assert body.count(b" --> ") == len(row["reference"].split())
    bad = [
        ([("file", buf.getvalue())], 400, "missing_transcript"),
        ([("file", buf.getvalue()), ("transcript", b"word " * 2000)], 400, "invalid_transcript"),
        ([("file", buf.getvalue()), ("transcript", b"a"), ("format", b"doc")], 400, "invalid_parameter"),
        ([("file", b"not audio at all" * 100), ("transcript", b"a")], 415, "not_audio"),
    ]
    for parts, want_status, want_code in bad:
        status, ctype, body = _post_form(url, parts)
        assert (status, json.loads(body)["error"]) == (want_status, want_code), body[:300]
