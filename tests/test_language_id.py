"""`--language auto` with `--lid-model`: the server holds an auto session's first --lid-seconds, the
LID model picks the adapter, the session decodes from sample 0 in it; the CLI does the same per file.

Built here: a tiny random adapter checkpoint with "deu" and "rus" (rus its own default, so "deu"
runs as LanguageInput windows), and a tiny random Wav2Vec2ForSequenceClassification with id2label
{0: "rus", 1: "deu"} whose classifier says "deu" whatever it hears (weights 0, bias [-100, 100]).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import websockets
from test_multilingual import FULL, SPECIALS, SR, _head, _processor, _signal, _words, reference_text

from streaming_asr.cli import build_parser, main
from streaming_asr.config import SERVE_DEFAULT, ConfigError
from streaming_asr.model import CtcModel, tiny_config
from streaming_asr.model.runtime import WorkerPlan
from streaming_asr.server.settings import settings_from_args
from streaming_asr.tasks.language_id import choose_language, seconds_arg

VOCABS = {
    "deu": [*SPECIALS, "|", *"abdeghiklmnorstuäöüß"],
    "rus": [*SPECIALS, "|", *"абвгдежзиклмн", "ст", "при"],
}
LID_LABELS = {0: "rus", 1: "deu"}


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MMS layout (as test_multilingual's): shared model, one adapter.<lang>.safetensors per language."""
    import torch
    from safetensors.torch import save_file
    from transformers import Wav2Vec2ForCTC

    folder = tmp_path_factory.mktemp("deu-rus")
    _processor(folder, {lang: {t: i for i, t in enumerate(v)} for lang, v in VOCABS.items()}, target_lang="rus")
    torch.manual_seed(6)
    config = tiny_config(
        adapter_attn_dim=8, vocab_size=len(VOCABS["rus"]), do_stable_layer_norm=True, feat_extract_norm="layer"
    )
    model = Wav2Vec2ForCTC(config).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(folder)
    for seed, (lang, tokens) in enumerate(VOCABS.items()):
        torch.manual_seed(20 + seed)
        weights = {
            key: torch.randn(param.shape) * (0.3 if key.endswith("bias") else 1.0)
            for key, param in model._get_adapters().items()
            if not key.startswith("lm_head")
        }
        model.load_state_dict(weights, strict=False)
        weights["lm_head.weight"], weights["lm_head.bias"] = _head(model.wav2vec2, tokens)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / f"adapter.{lang}.safetensors"))
    return folder


@pytest.fixture(scope="module")
def lid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A language-ID classifier that always answers "deu"."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(7)
    config = tiny_config(
        num_labels=2, id2label=LID_LABELS, label2id={v: k for k, v in LID_LABELS.items()}, classifier_proj_size=8
    )
    model = Wav2Vec2ForSequenceClassification(config).eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-100.0, 100.0]))
    folder = tmp_path_factory.mktemp("lid")
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    sf.write(path, _signal(), SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def audio(wav: Path) -> np.ndarray:
    from streaming_asr.audio import read_audio

    return read_audio(str(wav), SR)[0]


@pytest.fixture(scope="module")
def model(adapter_dir: Path) -> CtcModel:
    return CtcModel.load(str(adapter_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def references(adapter_dir: Path, audio: np.ndarray) -> dict[str, str]:
    """transformers alone, one language loaded (test_multilingual.reference_text)."""
    refs = {lang: reference_text(adapter_dir, lang, audio) for lang in VOCABS}
    assert refs["deu"] != refs["rus"] and all(len(r.split()) >= 2 for r in refs.values()), refs
    return refs


@pytest.fixture(scope="module")
def auto_server(server_factory: Any, model: CtcModel, lid_dir: Path) -> Any:
    """`serve --language auto --lid-model M --lid-seconds 1`: sessions that name no language detect it.

    One chunk per window (no catch-up windows): an auto session starts a second behind, and results
    must not depend on how far behind a session is when it is compared with one that is not."""
    engine = dataclasses.replace(FULL, max_catchup_chunks=1)
    return server_factory(
        "tiny", forward=model, engine=engine, lid_model=str(lid_dir), lid_seconds=1.0, auto_language=True
    )


def _pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def _send(ws: Any, audio: np.ndarray) -> None:
    pcm = _pcm(audio)
    for i in range(0, len(pcm), 6400):
        await ws.send(pcm[i : i + 6400])


async def _recv(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 60))
    return message


async def _session(url: str, pieces: list[np.ndarray], **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One v1 session with partials: each piece of audio but the last is followed by `finalize` and
    its final (received before the next piece is sent); then `stop`. The ready, then every message."""
    got: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": SR, "interim_results": True, **fields}))
        ready = await _recv(ws)
        assert ready["type"] == "ready", ready
        for i, piece in enumerate(pieces):
            await _send(ws, piece)
            if i < len(pieces) - 1:
                await ws.send(json.dumps({"type": "finalize"}))
                while not (got and got[-1]["type"] == "final" and got[-1]["reason"] == "finalize"):
                    got.append(await _recv(ws))
        await ws.send(json.dumps({"type": "stop"}))
        try:
            while True:
                got.append(await _recv(ws))
        except websockets.ConnectionClosed:
            pass
    return ready, got


def _finals(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["reason"], _words(m["text"])) for m in messages if m["type"] == "final"]


def _text(messages: list[dict[str, Any]]) -> str:
    return _words(" ".join(text for _, text in _finals(messages)))


def _detected(messages: list[dict[str, Any]], seconds: float) -> None:
    """Exactly one `language` message, before any partial or final: deu, from `seconds` of audio."""
    types = [m["type"] for m in messages]
    assert types.count("language") == 1 and types[0] == "language", types
    found = messages[0]
    assert (found["language"], found["label"], found["fallback"]) == ("deu", "deu", False), found
    assert found["score"] > 0.99 and found["detected_from_s"] == pytest.approx(seconds, abs=1e-3), found


# ------------------------------------------------------------------ server


def test_auto_session_switches_to_the_detected_adapter(
    auto_server: Any, audio: np.ndarray, references: dict[str, str]
) -> None:
    async def run() -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
        asked = {"auto": {"language": "auto"}, "default": {}, "deu": {"language": "deu"}, "rus": {"language": "rus"}}
        return {name: await _session(auto_server.ws_url, [audio], **fields) for name, fields in asked.items()}

    async def short_windows() -> list[list[dict[str, Any]]]:  # the server's default look-ahead: partials
        short = {"lookahead_s": 0.24, "left_context_s": 2.0}
        return [(await _session(auto_server.ws_url, [audio], language=lang, **short))[1] for lang in ("auto", "deu")]

    runs = asyncio.run(run())
    for name in ("auto", "default"):  # `"language": "auto"`, and no language on a --language auto server
        ready, messages = runs[name]
        assert ready["language"] == "auto"
        _detected(messages, 1.0)
        assert _finals(messages) == _finals(runs["deu"][1])
    auto, deu = asyncio.run(short_windows())
    _detected(auto, 1.0)  # before the first partial
    assert any(m["type"] == "partial" for m in auto) and _finals(auto) == _finals(deu)
    for lang in ("deu", "rus"):
        ready, messages = runs[lang]
        assert ready["language"] == lang and all(m["type"] != "language" for m in messages)
        assert _text(messages) == references[lang]
    assert _text(runs["auto"][1]) != _text(runs["rus"][1])


def test_finalize_or_stop_before_the_lid_window_detects_on_what_there_is(auto_server: Any, audio: np.ndarray) -> None:
    cut = int(0.6 * SR)

    async def run() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        url, pieces = auto_server.ws_url, [audio[:cut], audio[cut:]]
        return [
            await _session(url, pieces, language="auto"),  # finalize after 0.6 s: its final comes at once
            await _session(url, pieces, language="deu"),
            await _session(url, [audio[: SR // 2]], language="auto"),  # stop after 0.5 s
            await _session(url, [audio[: SR // 2]], language="deu"),
        ]

    (_, held), (_, deu), (_, stopped), (_, deu_short) = asyncio.run(run())
    _detected(held, 0.6)
    assert [reason for reason, _ in _finals(held)] == ["finalize", "stop"]
    assert _finals(held) == _finals(deu)
    _detected(stopped, 0.5)
    last = [m for m in stopped if m["type"] == "final"][-1]
    assert last["reason"] == "stop" and last["audio_s"] == 0.5
    assert _finals(stopped) == _finals(deu_short) and stopped[-1]["type"] == "closed"


def test_disconnect_and_shutdown_while_the_audio_is_held(
    server_factory: Any, model: CtcModel, lid_dir: Path, audio: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streaming_asr.server")
    handle = server_factory("tiny", forward=model, engine=FULL, lid_model=str(lid_dir), lid_seconds=10.0)

    async def held(ws: Any) -> str:
        await ws.send(json.dumps({"type": "start", "sample_rate": SR, "language": "auto"}))
        ready = await _recv(ws)
        await _send(ws, audio[: SR // 2])
        await ws.send(json.dumps({"type": "ping"}))  # answered in order: the audio is in
        assert (await _recv(ws))["type"] == "pong"
        return str(ready["session_id"])

    async def run() -> tuple[str, list[dict[str, Any]], int | None]:
        async with websockets.connect(handle.ws_url) as ws:
            gone = await held(ws)
        async with websockets.connect(handle.ws_url) as ws:
            await held(ws)
            stopping = asyncio.ensure_future(asyncio.to_thread(handle.stop))
            got: list[dict[str, Any]] = []
            try:
                while True:
                    got.append(await _recv(ws))
            except websockets.ConnectionClosed:
                pass
            await stopping
            return gone, got, ws.close_code

    gone, got, code = asyncio.run(run())
    assert [m["type"] for m in got] == ["language", "final", "error"] and code == 1001
    assert got[0]["detected_from_s"] == 0.5 and got[1]["reason"] == "shutdown" and got[1]["audio_s"] == 0.5
    assert got[2]["code"] == "shutting_down"
    logged = [r.getMessage() for r in caplog.records if f"session={gone}" in r.getMessage()]
    assert any("event=language" in m and 'language="deu"' in m for m in logged), logged
    assert any("event=final" in m and 'reason="disconnect"' in m for m in logged), logged  # decoded all the same


def test_deepgram_and_vosk_sessions_on_an_auto_server(
    auto_server: Any, audio: np.ndarray, references: dict[str, str]
) -> None:
    """Their wire has no language message: they just get the detected language's text (vosk's
    one-reply-per-chunk lockstep goes on while the audio is held)."""

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        url = f"ws://127.0.0.1:{auto_server.port}/v1/listen?encoding=linear16&sample_rate={SR}"
        deepgram: list[dict[str, Any]] = []
        async with websockets.connect(url) as ws:
            await ws.send(_pcm(audio))
            await ws.send(json.dumps({"type": "CloseStream"}))
            try:
                while True:
                    deepgram.append(await _recv(ws))
            except websockets.ConnectionClosed:
                pass
        vosk: list[dict[str, Any]] = []
        async with websockets.connect(f"ws://127.0.0.1:{auto_server.port}/vosk") as ws:
            await ws.send(json.dumps({"config": {"sample_rate": SR}}))
            pcm = _pcm(audio)
            for i in range(0, len(pcm), 6400):
                await ws.send(pcm[i : i + 6400])
                vosk.append(await _recv(ws))
            await ws.send('{"eof" : 1}')
            vosk.append(await _recv(ws))
        return deepgram, vosk

    deepgram, vosk = asyncio.run(run())
    assert {m.get("type") for m in deepgram} <= {"Results", "Metadata", "SpeechStarted", "UtteranceEnd"}, deepgram
    finals = [m["channel"]["alternatives"][0]["transcript"] for m in deepgram if m.get("is_final")]
    assert _words(" ".join(finals)) == references["deu"].lower()
    assert len(vosk) == len(range(0, len(_pcm(audio)), 6400)) + 1
    assert _words(" ".join(m["text"] for m in vosk if m.get("text"))) == references["deu"].lower()


def test_auto_needs_adapters_and_a_lid_model(server_factory: Any, model: CtcModel, lid_dir: Path) -> None:
    without_lid = server_factory("tiny", forward=model)
    monolingual = server_factory("tiny")

    async def refused(url: str) -> dict[str, Any]:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": SR, "language": "auto"}))
            return await _recv(ws)

    for handle, why in ((without_lid, "no --lid-model"), (monolingual, "no per-language adapters")):
        error = asyncio.run(refused(handle.ws_url))
        assert (error["type"], error["code"], error["fatal"]) == ("error", "invalid_option", False)
        assert "'auto'" in error["message"] and why in error["message"], error
    with pytest.raises(ConfigError, match="--language auto needs --lid-model"):
        server_factory("tiny", forward=model, auto_language=True)
    with pytest.raises(ConfigError, match="no per-language adapters"):
        server_factory("tiny", lid_model=str(lid_dir))


def test_serve_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--language", "auto", "--lid-model", "m", "--lid-seconds", "2.5"])
    settings = settings_from_args(args, SERVE_DEFAULT, WorkerPlan(1, 1))
    assert (settings.auto_language, settings.lid_model, settings.lid_seconds) == (True, "m", 2.5)
    assert settings.languages == ()  # "auto" is no allow-list entry
    defaults = settings_from_args(parser.parse_args(["serve"]), SERVE_DEFAULT, WorkerPlan(1, 1))
    assert (defaults.auto_language, defaults.lid_model, defaults.lid_seconds) == (False, None, 3.0)
    for bad in ("0.1", "31", "nan", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="--lid-seconds"):
            seconds_arg(bad)


# ------------------------------------------------------------------ the decision and the CLI


def test_the_best_served_label_wins_else_the_default() -> None:
    ranked = [{"label": "fra", "score": 0.7}, {"label": "de", "score": 0.2}, {"label": "rus", "score": 0.1}]
    found = choose_language(ranked, ("deu", "rus"), "rus", 3.0)
    assert (found.language, found.score, found.label, found.fallback) == ("deu", 0.2, "de", False)
    fallback = choose_language(ranked[:1], ("deu", "rus"), "rus", 1.5)
    assert (fallback.language, fallback.score, fallback.label, fallback.fallback) == ("rus", None, "fra", True)
    assert fallback.to_dict() == {
        "language": "rus",
        "score": None,
        "label": "fra",
        "detected_from_s": 1.5,
        "fallback": True,
    }


def test_cli_transcribe_language_auto(
    adapter_dir: Path, lid_dir: Path, wav: Path, references: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli = ["transcribe", str(wav), "--model", str(adapter_dir), "--threads", "1", "--precision", "fp32"]
    cli += ["--endpoint-silence", "0", "--language", "auto", "--lid-model", str(lid_dir)]
    assert main(cli) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == references["deu"] != references["rus"]
    assert "language deu (score 1.000, from 3 s)" in err
    assert main([*cli, "--json", "--lid-seconds", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["text"] == references["deu"] and result["language"] == "deu"
    assert result["language_detection"]["detected_from_s"] == 1.0 and not result["language_detection"]["fallback"]

    for args, message in (
        (cli[:-2], "--language auto needs --lid-model"),
        ([*cli[:-4], "--lid-model", str(lid_dir)], "add --language auto"),
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
