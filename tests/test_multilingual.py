"""Multilingual checkpoints: any vocabulary (Cyrillic, lower case, "▁" delimiter, tokens of several
characters) in UTF-8 end to end, and MMS-style adapters (two languages on one shared model).

Both checkpoints are tiny random ones built here and saved with `save_pretrained`; the adapter
outputs are checked against transformers' own loading of one language (`target_lang=`) and its
tokenizer's decoding.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import websockets
from helpers import REPO

from streaming_asr.config import StreamConfig
from streaming_asr.model import CtcModel, LanguageInput, ModelLoadError, batch_key, tiny_config
from streaming_asr.model.adapters import match_language
from streaming_asr.offline import transcribe_offline, transcribe_streaming
from streaming_asr.phrases import PhraseBiaser, normalize_phrase

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CYRILLIC = [*SPECIALS, "▁", *"абвгдежзиклмнопрстуя", "ст", "при", "ого"]  # lower case, "▁" between words
ADAPTER_VOCABS = {
    "rus": [*SPECIALS, "|", *"абвгдежзиклмн", "ст", "при"],
    "hin": [*SPECIALS, "|", *"कखगचजटडतदनपबमयरलवसह", "क्ष", "त्र", "ज्ञ"],  # another size: the lm_head changes shape
}
# Whole utterance in every window, recomputed: the streamed text is the offline text (model-level and over the wire)
FULL = StreamConfig(
    chunk_s=0.5, left_context_s=5, lookahead_s=5, endpoint_silence_s=0, feature_reuse=False, state_reuse=False
)
SR = 16000


def _signal() -> np.ndarray:
    """3 s of tones and noise bursts with pauses."""
    rng = np.random.default_rng(7)
    t = np.arange(3 * SR) / SR
    envelope = (np.sin(2 * np.pi * 1.3 * t) > -0.3).astype(np.float32)
    audio = envelope * (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.1 * rng.standard_normal(t.size))
    return audio.astype(np.float32)


def _head(base: Any, tokens: list[str]) -> tuple[Any, Any]:
    """A random lm_head (weight, bias) for `base`'s hidden states on the test signal that spells a
    varied text: biases centred so that the letters take turns, the delimiter wins ~15 % of the
    frames and the blank ~40 %; the other specials never."""
    import torch

    x = _signal()
    with torch.no_grad():
        hidden = base(torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))[None])[0][0]
        weight = torch.randn(len(tokens), hidden.shape[-1]) * 3.0 / hidden.std()
        bias = -(hidden @ weight.T).mean(0)
        for i, tok in enumerate(tokens):
            if tok in ("<s>", "</s>", "<unk>"):
                bias[i] = -100.0
        for name, share in (("▁" if "▁" in tokens else "|", 0.15), ("<pad>", 0.4)):
            i = tokens.index(name)
            logits = hidden @ weight.T + bias
            rest = torch.cat([logits[:, :i], logits[:, i + 1 :]], 1).max(1).values
            bias[i] = torch.quantile(rest - hidden @ weight[i], share)  # token i wins `share` of the frames
    return weight, bias


def _processor(folder: Path, vocab: Any, **tokenizer: Any) -> None:
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True)
    Wav2Vec2Processor(extractor, Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), **tokenizer)).save_pretrained(folder)


@pytest.fixture(scope="module")
def cyrillic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import Wav2Vec2ForCTC

    folder = tmp_path_factory.mktemp("cyrillic")
    _processor(folder, {t: i for i, t in enumerate(CYRILLIC)}, word_delimiter_token="▁")
    torch.manual_seed(3)
    model = Wav2Vec2ForCTC(tiny_config(vocab_size=len(CYRILLIC))).eval()  # type: ignore[no-untyped-call]
    model.lm_head.weight.data, model.lm_head.bias.data = _head(model.wav2vec2, CYRILLIC)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MMS-layout checkpoint: pre-LN layers with attention adapters, a nested vocabulary, one
    adapter.<lang>.safetensors per language (random, its lm_head as long as its vocabulary)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Wav2Vec2ForCTC

    folder = tmp_path_factory.mktemp("adapters")
    nested = {lang: {t: i for i, t in enumerate(tokens)} for lang, tokens in ADAPTER_VOCABS.items()}
    _processor(folder, nested, target_lang="rus")
    torch.manual_seed(4)
    config = tiny_config(
        adapter_attn_dim=8, vocab_size=len(ADAPTER_VOCABS["rus"]), do_stable_layer_norm=True, feat_extract_norm="layer"
    )
    model = Wav2Vec2ForCTC(config).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(folder)
    for seed, (lang, tokens) in enumerate(ADAPTER_VOCABS.items()):
        torch.manual_seed(10 + seed)
        weights = {}
        for key, param in model._get_adapters().items():
            if not key.startswith("lm_head"):
                weights[key] = torch.randn(param.shape) * (0.3 if key.endswith("bias") else 1.0)
        model.load_state_dict(weights, strict=False)  # this language's adapters, for its head's calibration
        weights["lm_head.weight"], weights["lm_head.bias"] = _head(model.wav2vec2, tokens)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / f"adapter.{lang}.safetensors"))
    return folder


@pytest.fixture(scope="module")
def audio_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test signal as a 16-bit WAV file."""
    audio = _signal()
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    sf.write(path, audio.astype(np.float32), SR, subtype="PCM_16")
    return path


def _audio(path: Path) -> np.ndarray:
    from streaming_asr.audio import read_audio

    return read_audio(str(path), SR)[0]


def _words(text: str) -> str:
    return " ".join(text.split())


def reference_text(folder: Path, language: str, audio: np.ndarray) -> str:
    """transformers alone: the checkpoint loaded with only `language`, greedy argmax, its tokenizer's decode."""
    import torch
    from transformers import AutoProcessor, Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC.from_pretrained(str(folder), target_lang=language).eval()
    processor = AutoProcessor.from_pretrained(str(folder), target_lang=language)
    values = processor(audio, sampling_rate=SR, return_tensors="pt").input_values
    with torch.no_grad():
        ids = model(values).logits[0].argmax(-1).tolist()
    return _words(processor.tokenizer.decode(ids))


@pytest.fixture(scope="module")
def references(adapter_dir: Path, audio_file: Path) -> dict[str, str]:
    audio = _audio(audio_file)
    refs = {lang: reference_text(adapter_dir, lang, audio) for lang in ADAPTER_VOCABS}
    assert refs["rus"] != refs["hin"] and all(len(r.split()) >= 2 for r in refs.values()), refs
    return refs


def _finals_text(events: list[dict[str, Any]]) -> str:
    return _words(" ".join(e["text"] for e in events if e["type"] == "final"))


async def _session(url: str, audio: np.ndarray, **fields: Any) -> tuple[dict[str, Any], list[str]]:
    """One v1 session: the `ready`, then every later message as the raw text the server sent."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": SR, "interim_results": False, **fields}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert ready["type"] == "ready", ready
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        for i in range(0, len(pcm), 6400):
            await ws.send(pcm[i : i + 6400])
        await ws.send(json.dumps({"type": "stop"}))
        raw: list[str] = []
        try:
            while True:
                raw.append(str(await asyncio.wait_for(ws.recv(), 60)))
        except websockets.ConnectionClosed:
            return ready, raw


# ------------------------------------------------------------------ any vocabulary


def test_cyrillic_vocabulary_streams_as_offline(cyrillic_dir: Path, audio_file: Path) -> None:
    model = CtcModel.load(str(cyrillic_dir), device="cpu", precision="fp32")
    info = model.info
    assert info.vocab[info.delimiter_id] == "▁" and info.vocab[info.blank_id] == "<pad>"
    audio = _audio(audio_file)
    offline = transcribe_offline(model, info, audio, endpoint_silence_s=0).text
    streamed = transcribe_streaming(model, info, audio, FULL, push_samples=1234).text
    assert streamed == offline
    assert len(offline.split()) >= 2 and set(offline) <= set("".join(CYRILLIC[5:])) | {" "}, offline
    emitted = {CYRILLIC[i] for i in model([info.normalize(audio)])[0].argmax(-1)}
    assert emitted & {"ст", "при", "ого"}  # tokens of several characters reach the text whole


def test_phrases_in_a_lower_case_vocabulary_with_tokens_of_several_characters() -> None:
    alphabet = {t: i for i, t in enumerate(CYRILLIC) if i > 4}
    assert normalize_phrase("ПРИСТАНЬ, Мост-7!", alphabet) == ["пристан", "мост"]
    biaser = PhraseBiaser(CYRILLIC, 0, 4, ["Пристань"])
    assert biaser.phrases == [("Пристань", ["пристан"])]
    ids = {t: i for i, t in enumerate(CYRILLIC)}
    assert biaser._labels_of(["пристан"]) == [ids["при"], ids["ст"], ids["а"], ids["н"]]
    # frames spelling при|ст|а|н with blanks between: the boosted decode gives exactly those tokens
    labels = [ids[t] for t in ("при", "ст", "а", "н")]
    lp = np.full((2 * len(labels), len(CYRILLIC)), -8.0, np.float32)
    for j, label in enumerate(labels):
        lp[2 * j, label], lp[2 * j + 1, 0] = -0.2, -0.1
    assert biaser.decode(lp) == labels and biaser.text(labels) == "пристан"


def test_cyrillic_text_is_utf8_on_the_wire_cli_and_vtt(
    cyrillic_dir: Path, audio_file: Path, server_factory: Any, tmp_path: Path
) -> None:
    model = CtcModel.load(str(cyrillic_dir), device="cpu", precision="fp32")
    audio = _audio(audio_file)
    offline = transcribe_offline(model, model.info, audio, endpoint_silence_s=0).text
    server = server_factory("tiny", forward=model, engine=FULL)
    ready, raw = asyncio.run(_session(server.ws_url, audio))
    assert ready["language"] == "en"  # a monolingual checkpoint reports --model-language
    finals = [m for m in raw if '"final"' in m]
    assert finals and all("\\u" not in m for m in finals)  # real UTF-8, not escapes
    assert _finals_text([json.loads(m) for m in raw]) == offline and any(ch in finals[-1] for ch in CYRILLIC[5:])
    # phrase biasing over multi-character tokens (a beam search: its text may differ from greedy's)
    _, raw = asyncio.run(_session(server.ws_url, audio, phrases=["Пристань", "сприяр"]))
    finals = [json.loads(m) for m in raw if '"final"' in m]
    assert _finals_text(finals) and all("phrases" in f for f in finals) and all("\\u" not in m for m in raw)

    # CLI stdout is UTF-8 even where Python would write ASCII
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    cli = [sys.executable, "-m", "streaming_asr", "transcribe", str(audio_file), "--model", str(cyrillic_dir)]
    cli += ["--threads", "1", "--precision", "fp32", "--endpoint-silence", "0"]
    text = subprocess.run(cli, capture_output=True, env=env, timeout=300, cwd=REPO)
    as_json = subprocess.run([*cli, "--json"], capture_output=True, env=env, timeout=300, cwd=REPO)
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr.decode() + as_json.stderr.decode()
    assert text.stdout.decode("utf-8").strip().splitlines()[-1] == offline
    line = as_json.stdout.decode("utf-8").strip().splitlines()[-1]
    assert "\\u" not in line and json.loads(line)["text"] == offline

    # the file client's WebVTT file
    from clients.file import main as file_client

    vtt = tmp_path / "out.vtt"
    assert file_client([str(audio_file), "--url", server.ws_url, "--output", str(vtt)]) == 0
    cues = vtt.read_text(encoding="utf-8").split("\n\n")[1:]
    assert _words(" ".join(c.split("\n", 2)[2] for c in cues if c.strip())) == offline


# ------------------------------------------------------------------ adapters


def test_adapter_languages_and_switching_on_one_model(
    adapter_dir: Path, audio_file: Path, references: dict[str, str]
) -> None:
    audio = _audio(audio_file)
    shared = CtcModel.load(str(adapter_dir), device="cpu", precision="fp32")
    adapters = shared.adapters
    assert adapters is not None and adapters.languages == ("hin", "rus") and adapters.default == "rus"
    hin_info = adapters.info("hin")
    assert len(hin_info.vocab) == len(ADAPTER_VOCABS["hin"]) and hin_info.vocab[hin_info.delimiter_id] == "|"
    hindi = CtcModel.load(str(adapter_dir), device="cpu", precision="fp32", language="hi")  # ISO 639-1 maps
    assert hindi.info == hin_info and hindi.adapters is not None and hindi.adapters.default == "hin"
    assert batch_key(LanguageInput("hin", audio)) != batch_key(LanguageInput("rus", audio)) != batch_key(audio)

    def in_hindi(windows: Any) -> Any:
        return shared([LanguageInput("hin", w) for w in windows])

    for _ in range(2):  # back and forth: nothing of one language stays behind in the other
        assert transcribe_offline(shared, shared.info, audio, 0).text == references["rus"]
        assert transcribe_offline(in_hindi, hin_info, audio, 0).text == references["hin"]
    assert adapters.switches >= 4
    # the reuse paths (state reuse: the adapters run inside the taken-apart layers) as with a Hindi-only model
    reuse = StreamConfig(endpoint_silence_s=0)
    assert (
        transcribe_streaming(in_hindi, hin_info, audio, reuse).text
        == transcribe_streaming(hindi, hindi.info, audio, reuse).text
    )


def test_cli_language(adapter_dir: Path, cyrillic_dir: Path, audio_file: Path, references: dict[str, str]) -> None:
    cli = [sys.executable, "-m", "streaming_asr", "transcribe", str(audio_file), "--model", str(adapter_dir)]
    cli += ["--threads", "1", "--precision", "fp32", "--endpoint-silence", "0"]
    hindi = subprocess.run([*cli, "--language", "hin"], capture_output=True, timeout=300, cwd=REPO)
    assert hindi.returncode == 0, hindi.stderr.decode()
    assert hindi.stdout.decode("utf-8").strip().splitlines()[-1] == references["hin"]
    bad = subprocess.run([*cli, "--language", "fra"], capture_output=True, timeout=300, cwd=REPO)
    err = bad.stderr.decode("utf-8")
    assert bad.returncode == 2 and "fra" in err and "hin, rus" in err and "Traceback" not in err
    with pytest.raises(ModelLoadError, match="no per-language adapters"):  # a monolingual checkpoint
        CtcModel.load(str(cyrillic_dir), device="cpu", language="rus")


def test_two_languages_at_once_on_one_server(
    adapter_dir: Path, audio_file: Path, references: dict[str, str], server_factory: Any
) -> None:
    audio = _audio(audio_file)
    model = CtcModel.load(str(adapter_dir), device="cpu", precision="fp32")
    server = server_factory("tiny", forward=model, engine=FULL, model_workers=2, max_batch=4)

    async def together() -> list[tuple[dict[str, Any], list[str]]]:
        runs = [_session(server.ws_url, audio, language=lang) for lang in ("hin", "rus", "hin", "rus")]
        runs.append(_session(server.ws_url, audio))  # no language: the checkpoint's own (rus)
        return list(await asyncio.gather(*runs))

    results = asyncio.run(together())
    for (ready, raw), lang in zip(results, ("hin", "rus", "hin", "rus", "rus")):
        assert ready["language"] == lang
        assert _finals_text([json.loads(m) for m in raw]) == references[lang]
        assert all("\\u" not in m for m in raw)

    async def refused() -> dict[str, Any]:
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": SR, "language": "fra"}))
            error: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
            await ws.send(json.dumps({"type": "start", "sample_rate": SR, "language": "ru"}))  # may start again
            again = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert again["type"] == "ready" and again["language"] == "rus"
            return error

    error = asyncio.run(refused())
    assert (error["type"], error["code"], error["fatal"]) == ("error", "invalid_option", False)
    assert "fra" in error["message"] and "hin, rus" in error["message"]


def test_allow_list_and_deepgram_language(
    adapter_dir: Path, audio_file: Path, references: dict[str, str], server_factory: Any
) -> None:
    from streaming_asr.config import ConfigError

    audio = _audio(audio_file)
    model = CtcModel.load(str(adapter_dir), device="cpu", precision="fp32")
    with pytest.raises(ConfigError, match="languages it has: hin, rus"):
        server_factory("tiny", forward=model, languages=("deu",))
    server = server_factory("tiny", forward=model, engine=FULL, languages=("hin",))

    async def run() -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
        async with websockets.connect(server.ws_url) as ws:  # rus is the default, so allowed; deu is not
            await ws.send(json.dumps({"type": "start", "sample_rate": SR, "language": "deu"}))
            error = json.loads(await asyncio.wait_for(ws.recv(), 30))
        ready, raw = await _session(server.ws_url, audio, language="rus")
        url = f"ws://127.0.0.1:{server.port}/v1/listen?encoding=linear16&sample_rate=16000&language=hi"
        results: list[dict[str, Any]] = []
        async with websockets.connect(url) as ws:
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
            await ws.send(pcm)
            await ws.send(json.dumps({"type": "CloseStream"}))
            try:
                while True:
                    results.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            except websockets.ConnectionClosed:
                pass
        return error, raw, [r for r in results if r.get("type") == "Results"]

    error, raw, results = asyncio.run(run())
    assert error["code"] == "invalid_option" and "rus, hin" in error["message"]
    assert _finals_text([json.loads(m) for m in raw]) == references["rus"]
    transcript = " ".join(r["channel"]["alternatives"][0]["transcript"] for r in results if r["is_final"])
    assert _words(transcript) == references["hin"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{server.port}/v1/listen?language=fr",
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            ),
            timeout=30,
        )
    assert refused.value.code == 400 and "rus, hin" in json.loads(refused.value.read())["err_msg"]


def test_match_language() -> None:
    languages = ("eng", "fra", "hin", "rus")
    assert [match_language(c, languages) for c in ("fra", "FR", "fr-CA", "ru_RU", "hi", "de", "")] == [
        "fra",
        "fra",
        "fra",
        "rus",
        "hin",
        None,
        None,
    ]
    assert match_language("en-US", ("en",)) == match_language("eng", ("en",)) == "en"


def test_download_keeps_every_language_adapter(adapter_dir: Path, tmp_path: Path) -> None:
    """`streaming-asr download` of an adapter checkpoint saves every adapter.<lang> file, so the copy
    serves the same languages."""
    from streaming_asr.cli import main
    from streaming_asr.model import CtcModel

    out = tmp_path / "copy"
    assert main(["download", str(adapter_dir), "--to", str(out)]) == 0
    assert sorted(p.name for p in out.glob("adapter.*.safetensors")) == sorted(
        p.name for p in adapter_dir.glob("adapter.*.safetensors")
    )
    copy = CtcModel.load(str(out), device="cpu", precision="fp32")
    assert copy.adapters is not None and set(copy.adapters.languages) == {"hin", "rus"}
