"""n-gram LM decoding of finals (--lm): a tiny 2-gram ARPA written here, the stand-in model, real pyctcdecode/KenLM."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from helpers import STANDIN_MODEL, TTS_DEV, standin_model, start_server_thread
from test_server import drain, pcm16, send_audio, start

from streaming_asr.audio import read_audio
from streaming_asr.config import ConfigError
from streaming_asr.offline import transcribe_offline

pytest.importorskip("pyctcdecode")
pytest.importorskip("kenlm")

from streaming_asr.decoding.lm import LmDecoder, LmRescorer, LmSettings  # noqa: E402

pytestmark = pytest.mark.standin

WAV = TTS_DEV / "wav" / "dev-0008.wav"  # "AN UNDEFEATED TEAM"; greedy: "AN UNDIFETED TEM"
SENTENCES = ["AN UNDEFEATED TEAM", "THE TEAM WON", "A TEAM"]


def write_arpa(path: Path, sentences: list[str]) -> Path:
    """A 2-gram ARPA: uniform unigrams over the sentences' words, their bigrams seen."""
    words = sorted({w for s in sentences for w in s.split()})
    unigrams = ["<s>", "</s>", "<unk>", *words]
    bigrams = sorted({pair for s in sentences for pair in zip(["<s>", *s.split()], [*s.split(), "</s>"])})
    p = math.log10(1 / len(unigrams))
    lines = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    for w in unigrams:
        logp = -99.0 if w == "<s>" else -10.0 if w == "<unk>" else p
        lines.append(f"{logp:.4f}\t{w}" + ("" if w == "</s>" else "\t-0.3000"))
    lines += ["", "\\2-grams:", *(f"-0.3000\t{a} {b}" for a, b in bigrams), "", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def arpa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_arpa(tmp_path_factory.mktemp("lm") / "tiny.arpa", SENTENCES)


def test_lm_fixes_greedy_non_words_with_word_times(arpa: Path) -> None:
    model = standin_model()
    audio, _ = read_audio(WAV, model.info.sample_rate)
    greedy = transcribe_offline(model, model.info, audio)
    assert greedy.text != "AN UNDEFEATED TEAM"  # the premise: greedy misspells it
    lm = transcribe_offline(
        model, model.info, audio, rescorer=LmRescorer(LmDecoder(model.info, LmSettings(str(arpa))), model.info)
    )
    assert lm.text == "AN UNDEFEATED TEAM"
    final = lm.finals[0].to_dict()
    assert "phrases" not in final  # an LM alone reports no phrase list
    words = final["words"]
    assert [w["word"] for w in words] == ["AN", "UNDEFEATED", "TEAM"]
    for a, b in zip(words, words[1:]):
        assert a["end"] <= b["start"]
    assert all(0 <= w["start"] < w["end"] <= 1.0 and 0 < w["confidence"] <= 1 for w in words)


def test_decoder_picks_the_lm_word_on_constructed_log_probs(arpa: Path) -> None:
    info = standin_model().info
    ids = {t: i for i, t in enumerate(info.vocab)}
    # "TEM": acoustically a bit better than "TEAM" (the E-A frame leans to M); the LM knows only TEAM
    frames = []
    for ch, alt in [("T", None), ("E", None), ("M", "A"), ("M", None)]:
        row = np.full(len(info.vocab), -12.0, dtype=np.float32)
        row[ids[ch]] = math.log(0.6 if alt else 0.98)
        if alt:
            row[ids[alt]] = math.log(0.4)
        frames.append(row)
    lp = np.stack(frames)
    lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
    from streaming_asr.ctc import decode_greedy

    assert decode_greedy(lp, info.vocab, info.blank_id, info.delimiter_id) == "TEM"
    result = LmDecoder(info, LmSettings(str(arpa))).decode(lp)
    assert result.text == "TEAM"
    assert [(w.text, w.start_frame, w.end_frame) for w in result.words] == [("TEAM", 0, 4)]


def test_phrases_are_hotwords_of_the_same_search(arpa: Path) -> None:
    model = standin_model()
    audio, _ = read_audio(WAV, model.info.sample_rate)
    rescorer = LmRescorer(LmDecoder(model.info, LmSettings(str(arpa))), model.info, ["undefeated team"], 5.0)
    final = transcribe_offline(model, model.info, audio, rescorer=rescorer).finals[0].to_dict()
    assert final["text"] == "AN UNDEFEATED TEAM"
    assert [p["phrase"] for p in final["phrases"]] == ["undefeated team"]


def test_phrases_join_the_lm_in_the_trie_search(arpa: Path) -> None:
    """The default phrase mode: one search, the phrase trie's bonus and the LM's word scores together."""
    from streaming_asr.decoding.lm import shared_rescorer
    from streaming_asr.phrase_rescore import PhraseRescorer

    model = standin_model()
    audio, _ = read_audio(WAV, model.info.sample_rate)
    rescorer = shared_rescorer(model.info, LmSettings(str(arpa)), ["undefeated team"])
    assert isinstance(rescorer, PhraseRescorer) and rescorer.words is not None
    final = transcribe_offline(model, model.info, audio, rescorer=rescorer).finals[0].to_dict()
    assert final["text"] == "AN UNDEFEATED TEAM"
    assert [p["phrase"] for p in final["phrases"]] == ["undefeated team"]
    # a phrase word the LM has never seen is not an OOV there: it still wins over the LM's words
    odd = shared_rescorer(model.info, LmSettings(str(arpa)), ["undifeted tem"], 3.0)
    assert transcribe_offline(model, model.info, audio, rescorer=odd).text == "AN UNDIFETED TEM"
    # without phrases, or in hotword mode, pyctcdecode's search
    assert isinstance(shared_rescorer(model.info, LmSettings(str(arpa))), LmRescorer)
    assert isinstance(shared_rescorer(model.info, LmSettings(str(arpa), phrases="hotwords"), ["team"]), LmRescorer)


def test_lm_word_scores_keep_words_apart(arpa: Path) -> None:
    """Without pyctcdecode's partial-word penalty, unknown words would merge (one OOV costs less than
    several): the trie search applies the same penalty, so known words keep their delimiters."""
    from streaming_asr.decoding.lm import LmWords, shared_decoder
    from streaming_asr.phrases import PhraseBiaser

    info = standin_model().info
    words = LmWords(shared_decoder(info, LmSettings(str(arpa))))
    assert words.partial("TEA") == 0.0 and words.partial("TQX") < 0.0
    ids = {t: i for i, t in enumerate(info.vocab)}
    rows = []
    for ch in "THE|TEAM|WON":
        row = np.full(len(info.vocab), -12.0, dtype=np.float32)
        row[ids[ch]] = math.log(0.55 if ch == "|" else 0.98)
        row[info.blank_id] = math.log(0.45) if ch == "|" else -12.0
        rows.append(row)
    lp = np.stack(rows)
    lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
    biaser = PhraseBiaser(info.vocab, info.blank_id, info.delimiter_id, ["a team"], beam_width=16)
    assert biaser.text(biaser.decode(lp, words)) == "THE TEAM WON"


def test_bad_lm_settings_are_config_errors(tmp_path: Path) -> None:
    info = standin_model().info
    with pytest.raises(ConfigError, match="no such file"):
        LmDecoder(info, LmSettings(str(tmp_path / "missing.arpa")))
    with pytest.raises(ConfigError, match="--lm-phrases"):
        LmSettings(str(tmp_path / "missing.arpa"), phrases="both").check()
    junk = tmp_path / "junk.arpa"
    junk.write_text("not an arpa file\n")
    with pytest.raises(ConfigError, match="not a usable"):
        LmDecoder(info, LmSettings(str(junk)))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming_asr", "transcribe", "--model", str(STANDIN_MODEL), "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_lm(arpa: Path, tmp_path: Path) -> None:
    plain = cli(str(WAV))
    assert plain.returncode == 0 and plain.stdout.strip() != "AN UNDEFEATED TEAM"
    out = cli("--lm", str(arpa), "--lm-weight", "0.5", "--word-score", "1.0", "--beam-width", "32", "--json", str(WAV))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["text"] == "AN UNDEFEATED TEAM"
    assert [w["word"] for w in doc["segments"][0]["words"]] == ["AN", "UNDEFEATED", "TEAM"]
    missing = cli("--lm", str(tmp_path / "nope.arpa"), str(WAV))
    assert missing.returncode == 2 and "nope.arpa" in missing.stderr and "Traceback" not in missing.stderr


async def transcribe(url: str, data: bytes, **fields: Any) -> tuple[list[dict[str, Any]], Any]:
    """Events of one session, `ready` first."""
    async with websockets.connect(url) as ws:
        ready = await start(ws, **fields)
        await send_audio(ws, data)
        await ws.send(json.dumps({"type": "stop"}))
        return [ready, *await drain(ws)], ws.close_code


@pytest.fixture(scope="module")
def lm_server(arpa: Path) -> Any:
    handle = start_server_thread("standin", lm=LmSettings(str(arpa)))
    yield handle
    handle.stop()


async def test_server_finals_use_the_lm_partials_stay_greedy(lm_server: Any) -> None:
    events, code = await transcribe(lm_server.ws_url, pcm16(WAV), chunk_s=0.5)
    assert code == 1000
    ready = next(e for e in events if e["type"] == "ready")
    assert ready["lm"] is True
    finals = " ".join(e["text"] for e in events if e["type"] == "final" and e["text"])
    assert finals == "AN UNDEFEATED TEAM"
    partials = [e["text"] for e in events if e["type"] == "partial"]
    assert partials and "UNDEFEATED" not in " ".join(partials)  # greedy spelling in the partials


async def test_server_lm_false_gives_the_greedy_final(lm_server: Any) -> None:
    model = standin_model()
    greedy = transcribe_offline(model, model.info, read_audio(WAV, model.info.sample_rate)[0]).text
    events, _ = await transcribe(lm_server.ws_url, pcm16(WAV), lm=False)
    assert next(e for e in events if e["type"] == "ready")["lm"] is False
    finals = " ".join(e["text"] for e in events if e["type"] == "final" and e["text"])
    assert finals == greedy != "AN UNDEFEATED TEAM"


async def test_server_without_lm_reports_false(standin_server: Any) -> None:
    events, _ = await transcribe(standin_server.ws_url, pcm16(WAV))
    assert next(e for e in events if e["type"] == "ready")["lm"] is False
