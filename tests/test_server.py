"""The WebSocket server end to end: real server on 127.0.0.1, real model, raw protocol messages."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import websockets
from helpers import cer, espeak_rows, standin_model, wer
from websockets.exceptions import InvalidStatus

from streaming_asr.audio import read_audio
from streaming_asr.offline import transcribe_offline

pytestmark = pytest.mark.standin


def pcm16(path: Any) -> bytes:
    audio, _ = read_audio(path, 16000)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def recv_json(ws: Any, timeout: float = 60) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def start(ws: Any, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "start", "sample_rate": 16000, **fields}))
    ready = await recv_json(ws)
    assert ready["type"] == "ready", ready
    return ready


async def send_audio(ws: Any, data: bytes, frame_bytes: int = 3200) -> None:
    for i in range(0, len(data), frame_bytes):
        await ws.send(data[i : i + frame_bytes])


async def drain(ws: Any) -> list[dict[str, Any]]:
    """All messages until the server closes the connection."""
    out = []
    try:
        while True:
            out.append(await recv_json(ws))
    except websockets.ConnectionClosed:
        return out


async def keep_sending(ws: Any, period_s: float, frame: bytes = b"\x01\x00" * 1600) -> None:
    """Send `frame` every `period_s` until the server closes the connection."""
    try:
        while True:
            await ws.send(frame)
            await asyncio.sleep(period_s)
    except websockets.ConnectionClosed:
        pass


async def transcribe(url: str, data: bytes, **start_fields: Any) -> tuple[list[dict[str, Any]], Any]:
    async with websockets.connect(url) as ws:
        await start(ws, **start_fields)
        await send_audio(ws, data)
        await ws.send(json.dumps({"type": "stop"}))
        events = await drain(ws)
        return events, ws.close_code


async def test_end_to_end_final_matches_offline(standin_server: Any) -> None:
    row = espeak_rows()[3]
    events, code = await transcribe(standin_server.ws_url, pcm16(row["wav"]))
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["final", "closed"] and code == 1000
    assert "partial" in kinds
    finals = [e for e in events if e["type"] == "final"]
    text = " ".join(f["text"] for f in finals if f["text"])
    model = standin_model()
    offline = transcribe_offline(model, model.info, read_audio(row["wav"], 16000)[0]).text
    assert wer(row["reference"], text) <= wer(row["reference"], offline) + 0.25
    assert cer(offline, text) < 0.2
    last = finals[-1]
    assert last["reason"] == "stop"
    assert [f["segment"] for f in finals] == list(range(len(finals)))
    for w in (w for f in finals for w in f["words"]):
        assert 0 <= w["start"] < w["end"] <= row["duration_s"] + 0.05 and 0 < w["confidence"] <= 1
    closed = events[-1]
    assert closed["segments"] == len(finals) and abs(closed["audio_s"] - row["duration_s"]) < 0.01
    for p in (e for e in events if e["type"] == "partial"):
        assert 0 <= p["stable"] <= len(p["text"])


async def test_concurrent_clients_get_their_own_text(standin_server: Any) -> None:
    rows = espeak_rows()[4:7]
    results = await asyncio.gather(*(transcribe(standin_server.ws_url, pcm16(r["wav"])) for r in rows))
    texts = [" ".join(e["text"] for e in ev if e["type"] == "final" and e["text"]) for ev, _ in results]
    for i, row in enumerate(rows):
        own = cer(row["reference"], texts[i])
        others = [cer(row["reference"], texts[j]) for j in range(len(rows)) if j != i]
        assert own < min(others), (row["reference"], texts)


async def test_stereo_float_44k_is_downmixed_and_resampled(standin_server: Any) -> None:
    from streaming_asr.audio import resample

    row = espeak_rows()[3]
    mono, _ = read_audio(row["wav"], 16000)
    x = resample(mono, 16000, 44100)
    stereo = np.stack([x, x], axis=1).astype("<f4").tobytes()
    events, _ = await transcribe(standin_server.ws_url, stereo, sample_rate=44100, encoding="pcm_f32le", channels=2)
    text = " ".join(e["text"] for e in events if e["type"] == "final" and e["text"])
    model = standin_model()
    assert cer(transcribe_offline(model, model.info, mono).text, text) < 0.25


async def test_finalize_keeps_the_session(standin_server: Any) -> None:
    data = pcm16(espeak_rows()[0]["wav"])
    half = (len(data) // 2) & ~1
    async with websockets.connect(standin_server.ws_url) as ws:
        await start(ws, interim_results=False)
        await send_audio(ws, data[:half])
        await ws.send(json.dumps({"type": "finalize"}))
        first = await recv_json(ws)
        while first["type"] != "final":
            first = await recv_json(ws)
        assert first["reason"] == "finalize" and first["segment"] == 0 and first["text"]
        await send_audio(ws, data[half:])
        await ws.send(json.dumps({"type": "stop"}))
        events = await drain(ws)
    finals = [e for e in events if e["type"] == "final"]
    assert finals[-1]["reason"] == "stop" and finals[0]["segment"] == 1
    assert all(e["type"] != "partial" for e in events)  # interim_results false


async def test_ping_pong(standin_server: Any) -> None:
    async with websockets.connect(standin_server.ws_url) as ws:
        await ws.send(json.dumps({"type": "ping", "id": 7}))
        assert await recv_json(ws) == {"type": "pong", "id": 7}


BAD_INPUTS = [
    (["{not json"], "bad_json"),
    (["[1, 2]"], "bad_json"),
    ([json.dumps({"type": "hello"})], "unknown_type"),
    ([json.dumps({"nothing": 1})], "unknown_type"),
    ([b"\x00\x00"], "not_started"),
    ([json.dumps({"type": "finalize"})], "not_started"),
    ([json.dumps({"type": "stop"})], "not_started"),
    ([json.dumps({"type": "start"})], "invalid_start"),
    ([json.dumps({"type": "start", "sample_rate": "16k"})], "invalid_start"),
    ([json.dumps({"type": "start", "sample_rate": 96000})], "unsupported_sample_rate"),
    ([json.dumps({"type": "start", "sample_rate": 4000})], "unsupported_sample_rate"),
    ([json.dumps({"type": "start", "sample_rate": 16000, "encoding": "mp3"})], "unsupported_encoding"),
    ([json.dumps({"type": "start", "sample_rate": 16000, "channels": 0})], "unsupported_channels"),
    ([json.dumps({"type": "start", "sample_rate": 16000, "chunk_s": 99})], "invalid_option"),
    ([json.dumps({"type": "start", "sample_rate": 16000, "lookahead_s": "x"})], "invalid_option"),
    ([json.dumps({"type": "start", "sample_rate": 16000, "phrases": "lights"})], "invalid_option"),
    ([json.dumps({"type": "start", "sample_rate": 16000, "phrases": ["a"], "phrase_boost": 99})], "invalid_option"),
]


@pytest.mark.parametrize("messages,code", BAD_INPUTS, ids=[c for _, c in BAD_INPUTS])
async def test_bad_input_gets_a_coded_error_and_the_session_stays_usable(
    standin_server: Any, messages: list[Any], code: str
) -> None:
    async with websockets.connect(standin_server.ws_url) as ws:
        for m in messages:
            await ws.send(m)
        err = await recv_json(ws)
        assert err["type"] == "error" and err["code"] == code and err["fatal"] is False and err["message"]
        await start(ws)  # still usable
        await ws.send(json.dumps({"type": "stop"}))
        events = await drain(ws)
        assert [e["type"] for e in events][-2:] == ["final", "closed"]


async def test_errors_after_start(standin_server: Any) -> None:
    async with websockets.connect(standin_server.ws_url) as ws:
        await start(ws, encoding="pcm_f32le", channels=2)
        await ws.send(b"\x00" * 12)  # 1.5 stereo float frames
        err = await recv_json(ws)
        assert err["code"] == "unaligned_audio"
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert (await recv_json(ws))["code"] == "already_started"
        await ws.send(b"\x00" * 16000)
        await ws.send(json.dumps({"type": "stop"}))
        events = await drain(ws)
    assert events[-1] == {"type": "closed", "reason": "stop", "audio_s": 0.125, "segments": 1}


async def test_message_too_large_is_rejected_and_flood_of_errors_closes(server_factory: Any) -> None:
    server = server_factory("tiny", max_message_bytes=4096)
    async with websockets.connect(server.ws_url) as ws:
        await start(ws)
        await ws.send(b"\x00" * 8192)
        err = await recv_json(ws)
        assert err["code"] == "message_too_large" and not err["fatal"]
        for _ in range(60):
            await ws.send("nope")
        events = await drain(ws)
        assert events[-1]["code"] == "too_many_errors" and events[-1]["fatal"]
        assert ws.close_code == 1008


async def test_disconnect_mid_utterance_still_recognises_the_audio(
    standin_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streaming_asr.server")
    data = pcm16(espeak_rows()[1]["wav"])
    async with websockets.connect(standin_server.ws_url) as ws:
        ready = await start(ws)
        await send_audio(ws, data[: len(data) // 2 & ~1])
    for _ in range(600):
        if any(ready["session_id"] in r.getMessage() and "event=close" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if ready["session_id"] in r.getMessage()]
    final = [line for line in lines if "event=final" in line]
    assert final and 'reason="disconnect"' in final[-1] and 'text=""' not in final[-1]
    assert any('reason="disconnect"' in line and "event=close" in line for line in lines)


async def test_token_is_checked_on_the_handshake(server_factory: Any) -> None:
    server = server_factory("tiny", token="s3cret")
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(server.ws_url):
            pass
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        async with websockets.connect(server.ws_url + "?token=wrong"):
            pass
    async with websockets.connect(server.ws_url + "?token=s3cret") as ws:
        await start(ws)
    async with websockets.connect(server.ws_url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
        await start(ws)
    assert _http_status(server.http_url + "/v1/auth?token=s3cret") == 200
    assert _http_status(server.http_url + "/v1/auth?token=nope") == 401
    assert _http_status(server.http_url + "/health") == 200  # health never needs the token


async def test_session_limit_refuses_cleanly(server_factory: Any) -> None:
    server = server_factory("tiny", max_sessions=1)
    async with websockets.connect(server.ws_url) as first:
        await start(first)
        with pytest.raises(websockets.InvalidStatus) as refused:  # before the upgrade: a balancer can retry
            await websockets.connect(server.ws_url)
        response = refused.value.response
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        assert json.loads(response.body)["error"] == "server_full"
        ready = urllib.request.Request(server.http_url + "/health/ready")
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(ready)
        assert json.loads(not_ready.value.read())["reason"] == "full"
        health = json.loads(urllib.request.urlopen(server.http_url + "/health").read())
        assert health["sessions"] == 1 and health["max_sessions"] == 1


async def test_idle_timeout_sends_a_final_then_closes(server_factory: Any) -> None:
    server = server_factory("tiny", idle_timeout_s=0.5)
    async with websockets.connect(server.ws_url) as ws:
        await start(ws)
        await ws.send(b"\x00\x01" * 8000)
        events = await drain(ws)
    assert [e["type"] for e in events][-2:] == ["final", "error"]
    assert events[-2]["reason"] == "timeout" and events[-1]["code"] == "idle_timeout"
    assert ws.close_code == 4000


async def test_max_session_length(server_factory: Any) -> None:
    server = server_factory("tiny", max_session_s=1.0)
    async with websockets.connect(server.ws_url) as ws:
        await start(ws)
        await send_audio(ws, b"\x00\x01" * 24000)
        events = await drain(ws)
    assert events[-2]["reason"] == "max_session" and events[-1]["code"] == "max_session"
    assert ws.close_code == 4001


async def test_graceful_shutdown_sends_finals(server_factory: Any) -> None:
    server = server_factory("standin")
    data = pcm16(espeak_rows()[2]["wav"])
    async with websockets.connect(server.ws_url) as ws:
        await start(ws)
        await send_audio(ws, data)
        await ws.send(json.dumps({"type": "ping"}))
        while (await recv_json(ws))["type"] != "pong":
            pass
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        events = await drain(ws)
    finals = [e for e in events if e["type"] == "final"]
    assert finals and finals[-1]["reason"] == "shutdown"
    assert " ".join(f["text"] for f in finals).strip()
    assert events[-1]["code"] == "shutting_down" and ws.close_code == 1001


def _http_status(url: str) -> int:
    try:
        return urllib.request.urlopen(url).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_health_and_unknown_paths(standin_server: Any) -> None:
    health = json.loads(urllib.request.urlopen(standin_server.http_url + "/health").read())
    assert health["status"] == "ok" and health["protocol"] == 1 and "queue_depth" in health
    assert _http_status(standin_server.http_url + "/nope.js") == 404
    assert _http_status(standin_server.http_url + "/../pyproject.toml") == 404


def test_page_is_served_with_a_strict_csp(standin_server: Any) -> None:
    resp = urllib.request.urlopen(standin_server.http_url + "/")
    body = resp.read().decode()
    assert resp.status == 200 and "<html" in body.lower()
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Content-Type"].startswith("text/html")


async def test_shutdown_while_the_client_keeps_streaming(server_factory: Any) -> None:
    server = server_factory("tiny")
    async with websockets.connect(server.ws_url) as ws:
        await start(ws)

        sender = asyncio.create_task(keep_sending(ws, 0.01))
        await asyncio.sleep(0.3)
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        events = await drain(ws)
        sender.cancel()
    assert all(e.get("code") != "internal_error" for e in events), events
    assert [e["type"] for e in events if e["type"] != "partial"][-2:] == ["final", "error"]
    assert events[-1]["code"] == "shutting_down" and ws.close_code == 1001


async def test_a_model_failure_is_an_internal_error_not_a_hang(server_factory: Any) -> None:
    """A forward that raises (e.g. out of memory) ends that session with 1011; the server stays up."""
    server = server_factory("tiny")
    real = server.server.batcher.forward

    def broken(windows: Any) -> Any:
        raise RuntimeError("simulated model failure")

    server.server.batcher.forward = broken
    try:
        async with websockets.connect(server.ws_url) as ws:
            await start(ws)
            try:
                await send_audio(ws, b"\x01\x00" * 32000)
            except websockets.ConnectionClosed:
                pass  # the server may close before all audio is out
            events = await drain(ws)
        assert events[-1]["code"] == "internal_error" and events[-1]["fatal"] and ws.close_code == 1011
    finally:
        server.server.batcher.forward = real
    assert _http_status(server.http_url + "/health") == 200
    events, code = await transcribe(server.ws_url, b"\x01\x00" * 16000)
    assert code == 1000 and events[-1]["type"] == "closed"


async def test_state_reuse_server_with_two_model_workers(server_factory: Any) -> None:
    """`serve`'s default path: state reuse, several workers, concurrent sessions batched; ready and /health say so."""
    from streaming_asr.config import StreamConfig

    cfg = StreamConfig(left_context_s=2.56, feature_reuse=True, state_reuse=True)
    server = server_factory("standin", engine=cfg, model_workers=2)
    rows = espeak_rows()[4:7]
    async with websockets.connect(server.ws_url) as ws:
        ready = await start(ws, chunk_s=0.32, left_context_s=0.64)  # per-session geometry rides on the cache too
        assert (ready["precision"], ready["feature_reuse"], ready["state_reuse"]) == ("fp32", True, True)
        assert ready["left_context_s"] == 0.64
        await send_audio(ws, pcm16(rows[0]["wav"]))
        await ws.send(json.dumps({"type": "stop"}))
        short = " ".join(e["text"] for e in await drain(ws) if e["type"] == "final" and e["text"])
    results = await asyncio.gather(*(transcribe(server.ws_url, pcm16(r["wav"])) for r in rows))
    model = standin_model()
    for row, (events, code) in zip(rows, results):
        text = " ".join(e["text"] for e in events if e["type"] == "final" and e["text"])
        offline = transcribe_offline(model, model.info, read_audio(row["wav"], 16000)[0]).text
        assert code == 1000 and cer(offline, text) < 0.2
    assert (
        cer(row_text := transcribe_offline(model, model.info, read_audio(rows[0]["wav"], 16000)[0]).text, short) < 0.3
    ), (row_text, short)
    health = json.loads(urllib.request.urlopen(server.http_url + "/health").read())
    assert health["state_reuse"] is True and health["model_workers"] == 2 and health["precision"] == "fp32"
