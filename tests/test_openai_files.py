"""POST /v1/audio/transcriptions with the official `openai` client: formats, errors, limits, priority.

Plumbing runs on the tiny random model (fast; its text is gibberish but deterministic, so the
server's answer must still equal the CLI's offline transcript of the same samples); one test on the
stand-in model checks recognition end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
import soundfile as sf
from helpers import ServerHandle, standin_model, start_server_thread, tiny_model, tts_dev_rows

from streaming_asr.audio import read_audio
from streaming_asr.config import SERVE_DEFAULT
from streaming_asr.model.runtime import WorkerPlan
from streaming_asr.offline import transcribe_offline
from streaming_asr.server import add_server_args, settings_from_args

KEY = "sk-test-key"


def client(server: ServerHandle, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.http_url}/v1", api_key=key, max_retries=0, timeout=60)


def transcribe(server: ServerHandle, data: bytes, name: str = "a.wav", **kw: Any) -> Any:
    return client(server).audio.transcriptions.create(file=(name, data, "audio/wav"), model="whisper-1", **kw)


def error_of(server: ServerHandle, data: bytes, **kw: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        transcribe(server, data, **kw)
    return info.value


class SlowForward:
    """The tiny model, slowed by `delay_s` per forward; `started` is set once a forward has begun."""

    def __init__(self, delay_s: float) -> None:
        self.model, self.delay_s = tiny_model(), delay_s
        self.info = self.model.info
        self.started = threading.Event()

    def __call__(self, items: Any) -> Any:
        self.started.set()
        time.sleep(self.delay_s)
        return self.model(items)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    handle = start_server_thread("tiny", token=KEY)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def short_wav() -> bytes:
    return Path(tts_dev_rows()[0]["wav"]).read_bytes()


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """~70 s of speech as a 16-bit WAV (over 1 MiB, several windows, two 60 s-capped segments) and the
    CLI's offline text of it with the tiny model."""
    pieces, total = [], 0
    for row in tts_dev_rows():
        audio, _ = sf.read(row["wav"], dtype="int16")
        pieces += [audio, np.zeros(8000, np.int16)]
        total += audio.size + 8000
        if total > 70 * 16000:
            break
    path = tmp_path_factory.mktemp("openai") / "long.wav"
    sf.write(path, np.concatenate(pieces), 16000, subtype="PCM_16")
    model = tiny_model()
    return path.read_bytes(), transcribe_offline(model, model.info, read_audio(path, 16000)[0]).text


# ------------------------------------------------------------ response formats
def test_json_is_the_default_and_equals_the_cli_transcript(server: ServerHandle, long_wav: tuple[bytes, str]) -> None:
    data, expected = long_wav
    assert len(data) > 1 << 20  # beyond the app's client_max_size: multipart is read as a stream
    r = transcribe(server, data)
    assert isinstance(r, openai.types.audio.Transcription)
    assert r.text == expected and expected
    assert r.usage.type == "duration" and r.usage.seconds == 71
    assert transcribe(server, data, response_format="json").text == expected


def test_shorter_upload_windows_are_the_offline_run_with_that_window(
    long_wav: tuple[bytes, str], tmp_path: Path
) -> None:
    from streaming_asr.offline import OfflineRun

    handle = start_server_thread("tiny", upload_window_s=4.0)
    try:
        text = client(handle).audio.transcriptions.create(file=("a.wav", long_wav[0]), model="m").text
    finally:
        handle.stop()
    model = tiny_model()
    (tmp_path / "a.wav").write_bytes(long_wav[0])
    run = OfflineRun(model.info, read_audio(tmp_path / "a.wav", 16000)[0], window_s=4.0)
    windows = 0
    while (win := run.next_window()) is not None:
        run.accept(win, model([win.model_input])[0])
        windows += 1
    assert text == run.transcript().text and windows > 10  # 4 s windows (the CLI's 20 s chunking: 4)


def test_text(server: ServerHandle, long_wav: tuple[bytes, str]) -> None:
    data, expected = long_wav
    assert transcribe(server, data, response_format="text") == expected + "\n"


def _cues(body: str, sep: str) -> list[tuple[str, str, str]]:
    stamp = rf"\d\d:\d\d:\d\d{re.escape(sep)}\d\d\d"
    cues = re.findall(rf"(\d+)\n({stamp}) --> ({stamp})\n(.+)\n\n", body)
    assert "".join(f"{i}\n{a} --> {b}\n{t}\n\n" for i, a, b, t in cues) == body.removeprefix("WEBVTT\n\n")
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    return [(a, b, t) for _, a, b, t in cues]


@pytest.mark.parametrize("fmt,sep", [("srt", ","), ("vtt", ".")])
def test_srt_and_vtt(server: ServerHandle, long_wav: tuple[bytes, str], fmt: str, sep: str) -> None:
    data, expected = long_wav
    body = transcribe(server, data, response_format=fmt)
    assert body.startswith("WEBVTT\n\n1\n") if fmt == "vtt" else body.startswith("1\n")
    cues = _cues(body, sep)
    assert len(cues) == 2 and cues[0][:2] == (f"00:00:00{sep}000", f"00:01:00{sep}000")
    assert cues[1][0] == f"00:01:00{sep}020" and " ".join(t for _, _, t in cues) == expected


def test_verbose_json_with_words_and_segments(server: ServerHandle, long_wav: tuple[bytes, str]) -> None:
    data, expected = long_wav
    r = transcribe(
        server, data, response_format="verbose_json", language="en", timestamp_granularities=["word", "segment"]
    )
    assert isinstance(r, openai.types.audio.TranscriptionVerbose)
    assert (r.task, r.language, r.text) == ("transcribe", "english", expected)  # type: ignore[attr-defined]
    assert r.duration == pytest.approx(70.693, abs=0.01) and r.usage.seconds == math.ceil(r.duration)
    segs = r.segments
    assert [s.id for s in segs] == [0, 1] and [s.seek for s in segs] == [round(s.start * 100) for s in segs]
    assert " ".join(s.text.strip() for s in segs) == expected and all(s.text.startswith(" ") for s in segs)
    for s in segs:
        assert s.start < s.end <= r.duration and s.tokens == [] and s.temperature == 0.0
        assert s.avg_logprob < 0 and s.compression_ratio == 1.0 and s.no_speech_prob == 0.0
    assert " ".join(w.word for w in r.words) == expected
    assert all(w.start <= w.end for w in r.words) and r.words[0].start == segs[0].start


def test_verbose_json_granularity(server: ServerHandle, short_wav: bytes) -> None:
    default = transcribe(server, short_wav, response_format="verbose_json")
    assert len(default.segments) == 1 and default.words is None  # segments are the default granularity
    words = transcribe(server, short_wav, response_format="verbose_json", timestamp_granularities=["word"])
    assert words.segments is None and words.words and words.text == default.text


@pytest.mark.parametrize(
    "fmt,subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("OGG", "OPUS"), ("MP3", "MPEG_LAYER_III")]
)
def test_compressed_uploads(server: ServerHandle, short_wav: bytes, fmt: str, subtype: str) -> None:
    """Any container libsndfile reads, recognised by content (the part's name and type say WAV here)."""
    audio, rate = sf.read(io.BytesIO(short_wav), dtype="int16")
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    text = transcribe(server, buf.getvalue(), name="misnamed.wav").text
    assert isinstance(text, str) and text
    if fmt == "FLAC":  # lossless: the same samples, so the same text
        assert text == transcribe(server, short_wav).text


# ---------------------------------------------------------------- errors
def test_wrong_key(server: ServerHandle, short_wav: bytes) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(server, key="wrong").audio.transcriptions.create(file=("a.wav", short_wav), model="whisper-1")
    e = info.value
    assert e.status_code == 401 and e.code == "invalid_api_key" and e.type == "invalid_request_error"


def _wav(samples: np.ndarray, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data,code,words",
    [
        (b"", "empty_file", "is empty"),
        (b"RIFF\x00 this is not audio" * 20, "invalid_audio", "not recognised"),
        (_wav(np.zeros(0, np.int16)), "empty_file", "no audio samples"),
    ],
)
def test_not_audio(server: ServerHandle, data: bytes, code: str, words: str) -> None:
    e = error_of(server, data)
    assert isinstance(e, openai.BadRequestError) and (e.code, e.param) == (code, "file") and words in e.message


@pytest.mark.parametrize(
    "language,ok", [("en", True), ("EN", True), ("English", True), ("en-US", True), ("fr", False), ("german", False)]
)
def test_language(server: ServerHandle, short_wav: bytes, language: str, ok: bool) -> None:
    if ok:
        assert transcribe(server, short_wav, language=language).text
        return
    e = error_of(server, short_wav, language=language)
    assert e.status_code == 400 and (e.code, e.param) == ("unsupported_language", "language")
    assert "only English" in e.message


def test_bad_options(server: ServerHandle, short_wav: bytes) -> None:
    e = error_of(server, short_wav, response_format="xml")
    assert e.status_code == 400 and (e.code, e.param) == ("invalid_value", "response_format")
    e = error_of(server, short_wav, response_format="verbose_json", timestamp_granularities=["char"])
    assert e.status_code == 400 and e.param == "timestamp_granularities"
    e = error_of(server, short_wav, stream=True)
    assert e.status_code == 400 and e.param == "stream" and "not supported" in e.message
    # accepted and ignored: model, prompt, temperature, unknown fields
    r = client(server).audio.transcriptions.create(
        file=("a.wav", short_wav), model="any", prompt="hi", temperature=0.3, extra_body={"foo": "bar"}
    )
    assert r.text


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "XbOuNdArY") -> tuple[bytes, str]:
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
            + (b'; filename="x"\r\nContent-Type: application/octet-stream' if name == "file" else b"")
            + b"\r\n\r\n"
            + value
            + b"\r\n"
            for name, value in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def _post(server: ServerHandle, body: Any, ctype: str, key: str = KEY) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.http_url}/v1/audio/transcriptions",
            data=body,
            headers={"Content-Type": ctype, "Authorization": f"Bearer {key}"},
        ) as resp:
            text = await resp.text()
            body = json.loads(text) if resp.content_type == "application/json" else text
            return resp.status, body, resp.headers


async def test_raw_forms(server: ServerHandle, short_wav: bytes) -> None:
    """What other clients (curl) may send: fields after the file, a missing file, not a form at all."""
    status, body, _ = await _post(server, *_multipart([("file", short_wav), ("response_format", b"text")]))
    assert status == 200 and body.endswith("\n") and body.strip()
    status, body, _ = await _post(server, *_multipart([("model", b"whisper-1")]))
    assert status == 400 and body["error"]["code"] == "missing_required_parameter"
    assert body["error"]["param"] == "file" and body["error"]["type"] == "invalid_request_error"
    status, body, _ = await _post(server, b'{"file": "x"}', "application/json")
    assert status == 400 and body["error"]["code"] == "invalid_content_type"
    status, body, _ = await _post(server, b"--XbOuNdArY\r\nbroken", "multipart/form-data; boundary=XbOuNdArY")
    assert status == 400 and body["error"]["code"] in ("invalid_request", "missing_required_parameter")


def test_an_internal_error_is_a_500_in_the_api_shape(server: ServerHandle, short_wav: bytes) -> None:
    batcher = server.server.batcher
    real = batcher.forward

    def broken(items: Any) -> Any:
        raise RuntimeError("simulated model failure")

    batcher.forward = broken
    try:
        e = error_of(server, short_wav)
    finally:
        batcher.forward = real
    assert isinstance(e, openai.InternalServerError) and e.status_code == 500 and e.type == "server_error"
    assert "Traceback" not in e.response.text and "simulated" not in e.response.text
    assert transcribe(server, short_wav).text  # the server is fine afterwards


def test_while_stopping_new_uploads_get_503(server: ServerHandle, short_wav: bytes) -> None:
    server.server._stopping = True
    try:
        e = error_of(server, short_wav)
    finally:
        server.server._stopping = False
    assert e.status_code == 503 and e.code == "shutting_down" and e.response.headers["Retry-After"]


# ---------------------------------------------------------------- limits
@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerHandle]:
    handle = start_server_thread("tiny", max_upload_mb=0.05, max_upload_s=3.0, idle_timeout_s=1.0)
    yield handle
    handle.stop()


def test_too_large_by_content_length(small_server: ServerHandle, short_wav: bytes) -> None:
    assert len(short_wav) > 0.05 * (1 << 20)
    e = error_of(small_server, short_wav)
    assert type(e) is openai.APIStatusError and e.status_code == 413 and e.code == "file_too_large"


async def test_too_large_while_streaming(small_server: ServerHandle, short_wav: bytes) -> None:
    """A chunked body has no Content-Length: the server counts as it reads and stops at the limit."""
    body, ctype = _multipart([("file", short_wav * 4)])

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    status, err, _ = await _post(small_server, chunks(), ctype)
    assert status == 413 and err["error"]["code"] == "file_too_large"


async def test_a_stalled_body_is_dropped(small_server: ServerHandle) -> None:
    """A client that stops sending mid-body cannot hold an upload slot: 408 after --idle-timeout."""
    body, ctype = _multipart([("file", b"RIFF" * 1000)])

    async def stalling() -> AsyncIterator[bytes]:
        yield body[:1000]
        await asyncio.sleep(3.0)  # the server waits 1 s (idle_timeout_s) for more
        yield body[1000:]

    status, err, _ = await _post(small_server, stalling(), ctype)
    assert status == 408 and err["error"]["code"] == "timeout"


def test_too_long(small_server: ServerHandle) -> None:
    e = error_of(small_server, _wav(np.zeros(4 * 8000, np.int16), 8000, "FLAC"))  # 4 s in a few hundred bytes
    assert e.status_code == 400 and e.code == "audio_too_long" and "3 s" in e.message


def test_upload_flags() -> None:
    p = argparse.ArgumentParser()
    add_server_args(p)
    s = settings_from_args(p.parse_args([]), SERVE_DEFAULT, WorkerPlan(1, 1))
    assert (s.max_upload_mb, s.max_upload_s, s.max_uploads) == (25.0, 3600.0, 2)
    args = p.parse_args(["--max-upload-mb", "5", "--max-upload-s", "60", "--max-uploads", "3"])
    s = settings_from_args(args, SERVE_DEFAULT, WorkerPlan(1, 1))
    assert (s.max_upload_mb, s.max_upload_s, s.max_uploads) == (5.0, 60.0, 3)


def test_too_many_uploads_at_once(short_wav: bytes) -> None:
    slow = SlowForward(1.0)
    handle = start_server_thread("tiny", forward=slow, max_uploads=1)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(transcribe, handle, short_wav)
            assert slow.started.wait(30)  # the first upload holds the only slot
            e = error_of(handle, short_wav)
            assert isinstance(e, openai.RateLimitError) and e.status_code == 429
            assert (e.code, e.type) == ("rate_limit_exceeded", "requests") and e.response.headers["Retry-After"] == "1"
            assert first.result(60).text
        assert transcribe(handle, short_wav).text  # the slot is free again
    finally:
        handle.stop()


def test_an_upload_during_stop_ends_not_hangs(long_wav: tuple[bytes, str]) -> None:
    slow = SlowForward(0.5)
    handle = start_server_thread("tiny", forward=slow)
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(transcribe, handle, long_wav[0])
        assert slow.started.wait(30)
        handle.stop()
        try:
            assert upload.result(60).text == long_wav[1]
        except openai.APIStatusError as e:
            assert e.status_code == 503 and e.code == "shutting_down"


# ---------------------------------------------------------------- recognition
@pytest.mark.standin
def test_recognition_equals_the_cli(standin_server: ServerHandle) -> None:
    row = tts_dev_rows()[3]
    model = standin_model()
    expected = transcribe_offline(model, model.info, read_audio(row["wav"], 16000)[0]).text
    with open(row["wav"], "rb") as f:
        r = openai.OpenAI(
            base_url=f"{standin_server.http_url}/v1", api_key="unused", max_retries=0, timeout=60
        ).audio.transcriptions.create(file=f, model="whisper-1")
    assert r.text == expected and len(expected.split()) >= 3
