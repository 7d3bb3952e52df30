"""Operations: Prometheus /metrics, liveness and readiness, draining, TLS, on real servers."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from helpers import start_server_thread
from prometheus_client.parser import text_string_to_metric_families
from test_server import drain, start

TONE = (np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tobytes()


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes, Any]:
    try:
        with urllib.request.urlopen(url, context=context) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed with prometheus_client's own parser: {(sample name, labels): value}."""
    status, body, headers = get(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def v1_session(url: str) -> None:
    async with websockets.connect(url) as ws:
        await start(ws, interim_results=True)
        for i in range(0, len(TONE), 3200):
            await ws.send(TONE[i : i + 3200])
        await ws.send(b"\x00")  # unaligned: one error
        await ws.send(json.dumps({"type": "stop"}))
        await drain(ws)


async def deepgram_session(port: int, key: str) -> None:
    url = f"ws://127.0.0.1:{port}/v1/listen?encoding=linear16&sample_rate=16000"
    async with websockets.connect(url, additional_headers={"Authorization": f"Token {key}"}) as ws:
        await ws.send(TONE)
        await ws.send(json.dumps({"type": "CloseStream"}))
        await drain(ws)


def test_metrics_move_as_sessions_run(server_factory: Any) -> None:
    server = server_factory("tiny", token="t0k")
    before = samples(server.http_url)
    assert value(before, "streaming_asr_model_info", model="tiny-random", precision="fp32", device="cpu") == 1
    assert value(before, "streaming_asr_sessions_active") == 0
    asyncio.run(v1_session(server.ws_url + "?token=t0k"))
    asyncio.run(deepgram_session(server.port, "t0k"))
    assert get(server.ws_url.replace("ws://", "http://"))[0] == 401  # no token: refused
    m = samples(server.http_url)
    assert value(m, "streaming_asr_sessions_total", outcome="stop", protocol="v1") == 1
    assert value(m, "streaming_asr_sessions_total", outcome="stop", protocol="deepgram") == 1
    assert value(m, "streaming_asr_errors_total", code="unaligned_audio") == 1
    assert value(m, "streaming_asr_refused_total", reason="unauthorized") == 1
    assert abs(value(m, "streaming_asr_audio_seconds_total") - 2.0) < 0.01
    assert value(m, "streaming_asr_model_compute_seconds_total") > 0
    assert value(m, "streaming_asr_batch_size_count") > 0 and value(m, "streaming_asr_queue_wait_seconds_count") > 0
    assert value(m, "streaming_asr_final_delay_seconds_count") >= 2
    assert value(m, "streaming_asr_sessions_active") == 0


def test_metrics_token(server_factory: Any) -> None:
    server = server_factory("tiny", metrics_token="m3t")
    assert get(server.http_url + "/metrics")[0] == 401
    req = urllib.request.Request(server.http_url + "/metrics", headers={"Authorization": "Bearer m3t"})
    assert urllib.request.urlopen(req).status == 200


def test_live_ready_full_and_draining() -> None:
    server = start_server_thread("tiny", max_sessions=1)
    try:
        assert get(server.http_url + "/health/live")[0] == 200
        assert get(server.http_url + "/health/ready")[:2] == (200, b'{"ready": true}')

        async def run() -> tuple[list[dict[str, Any]], Any]:
            async with websockets.connect(server.ws_url) as ws:
                await start(ws)
                await ws.send(TONE)
                status, body, _ = await asyncio.to_thread(get, server.http_url + "/health/ready")
                assert status == 503 and json.loads(body)["reason"] == "full"
                drained = asyncio.run_coroutine_threadsafe(server.server.drain(60), server.loop)
                await asyncio.sleep(0.2)
                status, body, headers = await asyncio.to_thread(get, server.http_url + "/health/ready")
                assert status == 503 and json.loads(body)["reason"] == "draining" and headers["Retry-After"]
                with pytest.raises(websockets.exceptions.InvalidStatus) as refused:  # before the upgrade
                    await websockets.connect(server.ws_url)
                assert refused.value.response.status_code == 503 and refused.value.response.headers["Retry-After"]
                await ws.send(TONE)  # the open session goes on while draining
                await ws.send(json.dumps({"type": "finalize"}))
                got = json.loads(await asyncio.wait_for(ws.recv(), 30))
                while got["type"] != "final":
                    got = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert got["reason"] == "finalize"
                server.loop.call_soon_threadsafe(server.server.cut_drain)  # a second SIGINT
                rest = await drain(ws)
                await asyncio.wrap_future(drained)
                return rest, ws.close_code

        rest, code = asyncio.run(run())
        assert code == 1001 and any(e["type"] == "final" and e["reason"] == "shutdown" for e in rest)
    finally:
        server.stop()


def test_tls_serves_https_and_wss(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = start_server_thread("tiny", tls_cert=str(cert), tls_key=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    try:
        assert get(f"https://127.0.0.1:{server.port}/health/live", context)[0] == 200
        status, body, _ = get(f"https://127.0.0.1:{server.port}/", context)
        assert status == 200 and b"<html" in body.lower()

        async def run() -> list[dict[str, Any]]:
            async with websockets.connect(f"wss://127.0.0.1:{server.port}/v1/stream", ssl=context) as ws:
                await start(ws)
                await ws.send(TONE)
                await ws.send(json.dumps({"type": "stop"}))
                return await drain(ws)

        events = asyncio.run(run())
        assert events[-1]["type"] == "closed" and any(e["type"] == "final" for e in events)
        with pytest.raises((OSError, websockets.InvalidHandshake, asyncio.TimeoutError)):  # plain ws:// to a TLS port
            asyncio.run(asyncio.wait_for(websockets.connect(f"ws://127.0.0.1:{server.port}/v1/stream"), 10))
    finally:
        server.stop()
