"""vosk-compatible `/vosk` (and `/` with --vosk-root), driven message for message as vosk-server's
reference client does: config (no reply), 0.2 s audio chunks each answered by exactly one message,
`{"eof" : 1}` answered by the last result, then the server's close (1000).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import websockets
from helpers import espeak_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import messages as v1_messages
from test_server import transcribe

from streaming_asr.audio import read_audio
from streaming_asr.config import SERVE_DEFAULT

NO_CATCHUP = replace(SERVE_DEFAULT, max_catchup_chunks=1)


@pytest.fixture(scope="module")
def vosk_server(server_factory: Any) -> Any:
    return server_factory("standin", engine=NO_CATCHUP, vosk_root=True)


@pytest.fixture(scope="module")
def tiny_vosk(server_factory: Any) -> Any:
    return server_factory("tiny", max_sessions=2)


def pcm_at(path: Any, rate: int) -> bytes:
    audio, _ = read_audio(path, rate)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def reference_client(
    url: str, pcm: bytes, rate: int, config: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any], int, Any]:
    """vosk-server's websocket/test.py protocol: replies to each chunk, the eof reply, the close code."""
    replies = []
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": rate, **(config or {})}}))
        with pytest.raises(asyncio.TimeoutError):  # the config is not answered
            await asyncio.wait_for(ws.recv(), 0.3)
        chunk = int(rate * 0.2) * 2
        sent = 0
        for i in range(0, len(pcm), chunk):
            await ws.send(pcm[i : i + chunk])
            sent += 1
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send('{"eof" : 1}')
        last = json.loads(await asyncio.wait_for(ws.recv(), 30))
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 10)
        assert len(replies) == sent
        return replies, last, sent, ws.close_code


def joined_text(replies: list[dict[str, Any]], last: dict[str, Any]) -> str:
    return " ".join(r["text"] for r in [*replies, last] if r.get("text"))


@pytest.mark.standin
@pytest.mark.parametrize("rate,path", [(8000, "/vosk"), (16000, "/")])
def test_reference_client_gets_one_reply_per_message_and_v1_text(vosk_server: Any, rate: int, path: str) -> None:
    row = espeak_rows()[2]
    pcm = pcm_at(row["wav"], rate)
    replies, last, sent, code = asyncio.run(reference_client(f"ws://127.0.0.1:{vosk_server.port}{path}", pcm, rate))
    assert code == 1000 and "text" in last
    for r in replies:
        assert ("partial" in r) != ("text" in r), r
        for w in r.get("result", []):
            assert set(w) == {"conf", "end", "start", "word"} and w["start"] <= w["end"] and w["word"].islower()
    assert any(r.get("partial") for r in replies)  # partials come as audio arrives
    events, _ = asyncio.run(transcribe(vosk_server.ws_url, pcm, sample_rate=rate))
    v1 = " ".join(e["text"] for e in events if e["type"] == "final" and e["text"])
    assert joined_text(replies, last) == v1.lower()


async def test_eof_without_audio_is_an_empty_result(tiny_vosk: Any) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{tiny_vosk.port}/vosk") as ws:
        await ws.send('{"eof" : 1}')
        assert json.loads(await ws.recv()) == {"text": ""}
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()


async def test_no_config_defaults_to_8k_and_words_off_and_reset(tiny_vosk: Any) -> None:
    tone = (np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tobytes()  # 2 s at 8 kHz
    async with websockets.connect(f"ws://127.0.0.1:{tiny_vosk.port}/vosk") as ws:
        for i in range(0, len(tone), 3200):
            await ws.send(tone[i : i + 3200])
            assert set(json.loads(await ws.recv())) <= {"partial", "result", "text"}
        await ws.send('{"reset" : 1}')  # vosk: a final result, and the connection stays open
        assert "text" in json.loads(await ws.recv())
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))  # after audio: ignored, as vosk-server
        await ws.send(tone[:3200])
        assert set(json.loads(await ws.recv())) <= {"partial", "result", "text"}  # still 8 kHz: no error
        await ws.send('{"eof" : 1}')
        assert "text" in json.loads(await ws.recv())


@pytest.mark.parametrize(
    "message,reason",
    [
        (json.dumps({"config": {"sample_rate": 16000, "max_alternatives": 3}}), "max_alternatives"),
        (json.dumps({"config": {"sample_rate": "fast"}}), "sample_rate"),
        (json.dumps({"config": {"sample_rate": 100}}), "sample_rate"),
        (json.dumps({"config": {"phrase_list": "one two"}}), "phrase_list"),
        ("not json", "bad_json"),
        (json.dumps({"hello": 1}), "unknown_type"),
        (b"\x00", "unaligned"),
    ],
)
async def test_bad_input_closes_with_1008_and_a_reason(tiny_vosk: Any, message: Any, reason: str) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{tiny_vosk.port}/vosk") as ws:
        await ws.send(message)
        if isinstance(message, bytes) or "100" in str(message):
            await ws.send(b"\x00\x00" * 800)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1008 and reason in ws.close_reason, (ws.close_code, ws.close_reason)


async def test_phrase_list_is_accepted_and_limits_hold(tiny_vosk: Any) -> None:
    url = f"ws://127.0.0.1:{tiny_vosk.port}/vosk"
    async with websockets.connect(url) as a, websockets.connect(url) as b:
        with pytest.raises(websockets.InvalidStatus) as refused:  # max_sessions=2: 503 before the upgrade
            await websockets.connect(url)
        assert refused.value.response.status_code == 503
        await a.send(json.dumps({"config": {"sample_rate": 16000, "phrase_list": ["turn on the light", "[unk]"]}}))
        await a.send(b"\x00\x01" * 3200)
        assert "partial" in json.loads(await a.recv())
        await a.send('{"eof" : 1}')
        assert "text" in json.loads(await a.recv())
        await b.send('{"eof" : 1}')
        assert json.loads(await b.recv()) == {"text": ""}


def test_shutdown_sends_the_last_result_then_1001(server_factory: Any) -> None:
    server = server_factory("tiny")
    pcm = pcm_at(espeak_rows()[0]["wav"], 8000)

    async def run() -> tuple[list[dict[str, Any]], Any]:
        out = []
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/vosk") as ws:
            for i in range(0, 16000, 3200):
                await ws.send(pcm[i : i + 3200])
                out.append(json.loads(await ws.recv()))
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
            try:
                while True:
                    out.append(json.loads(await ws.recv()))
            except websockets.ConnectionClosed:
                return out, ws.close_code

    replies, code = asyncio.run(run())
    assert code == 1001 and "text" in replies[-1], replies


def test_root_still_serves_the_page_with_vosk_root(vosk_server: Any) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{vosk_server.port}/") as resp:
        assert resp.status == 200 and b"<html" in resp.read().lower()


_fuzz = st.one_of(
    v1_messages,  # the v1 fuzz cases, plus this protocol's own
    st.binary(max_size=64),
    st.text(max_size=64),
    st.sampled_from(['{"eof" : 1}', '{"reset" : 1}']),
    st.fixed_dictionaries(
        {},
        optional={
            "sample_rate": st.integers(-5, 50000) | st.text(max_size=5),
            "words": st.booleans() | st.integers(),
            "phrase_list": st.lists(st.text(max_size=10), max_size=3),
        },
    ).map(lambda c: json.dumps({"config": c})),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_fuzz, min_size=1, max_size=8))
def test_fuzzed_messages_never_break_the_server(tiny_vosk: Any, batch: list[Any]) -> None:
    asyncio.run(_fuzz_once(tiny_vosk.port, batch))


async def _fuzz_once(port: int, batch: list[Any]) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/vosk") as ws:
        try:
            for m in batch:
                await ws.send(m)
            await ws.send('{"eof" : 1}')
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed:
            pass
    assert ws.close_code in (1000, 1008), (ws.close_code, ws.close_reason)
