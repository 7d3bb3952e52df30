"""Deepgram-compatible `/v1/listen`, driven by the official `deepgram-sdk` and LiveKit's Deepgram plugin.

The text must match protocol v1's for the same audio (same driver, same windows: catch-up windows
are turned off so a fast sender cannot change the geometry), and Deepgram's own client semantics
(Results / SpeechStarted / UtteranceEnd / Metadata, Finalize, CloseStream, 401 on a wrong key)
must hold as its SDK reads them.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import websockets
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from helpers import espeak_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import messages as v1_messages
from test_server import pcm16, transcribe

from streaming_asr.config import SERVE_DEFAULT

KEY = "dg-test-key"
NO_CATCHUP = replace(SERVE_DEFAULT, max_catchup_chunks=1)


@pytest.fixture(scope="module")
def dg_server(server_factory: Any) -> Any:
    return server_factory("standin", token=KEY, engine=NO_CATCHUP)


@pytest.fixture(scope="module")
def tiny_dg(server_factory: Any) -> Any:
    return server_factory("tiny", token=KEY, idle_timeout_s=1.5, max_sessions=2)


def client(port: int, key: str = KEY) -> DeepgramClient:
    base, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    return DeepgramClient(
        api_key=key, environment=DeepgramClientEnvironment(base=base, production=ws, agent=ws, agent_rest=base)
    )


LIVE = dict(
    model="nova-3",
    encoding="linear16",
    sample_rate=16000,
    channels=1,
    interim_results=True,
    utterance_end_ms=1000,
    vad_events=True,
    punctuate=True,
    smart_format=True,
    language="en-US",
)


def stream_sdk(port: int, data: bytes, finalize_at: int | None = None, **query: Any) -> list[Any]:
    """Stream `data` with the SDK's sync socket; every message until the server closes."""
    msgs: list[Any] = []
    with client(port).listen.v1.connect(**{**LIVE, **query}) as sock:
        for i in range(0, len(data), 3200):
            if finalize_at is not None and i == finalize_at:
                sock.send_finalize()
            sock.send_media(data[i : i + 3200])
        sock.send_keep_alive()
        sock.send_close_stream()
        msgs.extend(sock)
    return msgs


async def read_all(ws: Any) -> list[dict[str, Any]]:
    """Every message until the server closes, whatever the close code."""
    out = []
    try:
        while True:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    except websockets.ConnectionClosed:
        return out


def finals_text(msgs: list[Any]) -> str:
    texts = [m.channel.alternatives[0].transcript for m in msgs if getattr(m, "type", "") == "Results" and m.is_final]
    return " ".join(t for t in texts if t)


def test_sdk_stream_matches_protocol_v1(dg_server: Any) -> None:
    row = espeak_rows()[1]
    data = pcm16(row["wav"])
    msgs = stream_sdk(dg_server.port, data)
    kinds = [m.type for m in msgs]
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "Metadata", kinds
    results = [m for m in msgs if m.type == "Results"]
    assert any(not r.is_final for r in results) and any(r.is_final for r in results)
    for r in results:  # every field the SDK's types (and LiveKit) require is there
        assert r.metadata.request_id == msgs[-1].request_id and r.metadata.model_info.name
        assert r.metadata.model_uuid and r.channel_index == [0, 1] and r.duration >= 0
        for w in r.channel.alternatives[0].words:
            assert w.start <= w.end and w.punctuated_word == w.word == w.word.lower()
    starts = [r.start for r in results if r.is_final]
    assert starts == sorted(starts)  # finals tile the stream
    assert abs(msgs[-1].duration - len(data) / 32000) < 0.01 and msgs[-1].channels == 1
    events, _ = asyncio.run(transcribe(dg_server.ws_url + f"?token={KEY}", data))
    v1 = " ".join(e["text"] for e in events if e["type"] == "final" and e["text"])
    assert finals_text(msgs) == v1.lower()


def test_finalize_keeps_the_stream_and_close_stream_ends_it(dg_server: Any) -> None:
    data = pcm16(espeak_rows()[0]["wav"])
    msgs = stream_sdk(dg_server.port, data, finalize_at=3200 * 20, endpointing="false")
    finals = [m for m in msgs if m.type == "Results" and m.is_final]
    assert finals[0].from_finalize and not finals[0].speech_final  # cut by Finalize at 2 s
    assert any(not f.from_finalize for f in finals[1:])  # the stream went on after it
    assert finals[-1].speech_final and msgs[-1].type == "Metadata"
    assert not any(m.type == "UtteranceEnd" for m in msgs)  # endpointing=false: no silence endpoints


def test_wrong_key_is_refused_at_the_handshake(dg_server: Any) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        with client(dg_server.port, "wrong").listen.v1.connect(model="nova-3"):
            pass
    assert info.value.response.status_code == 401
    assert info.value.response.headers.get("dg-request-id")
    assert json.loads(info.value.response.body)["err_code"] == "INVALID_AUTH"


async def test_async_sdk_wrong_key_is_an_api_error_401(dg_server: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's async path imports websockets.legacy
        from deepgram import AsyncDeepgramClient
        from deepgram.core.api_error import ApiError

        base, ws = f"http://127.0.0.1:{dg_server.port}", f"ws://127.0.0.1:{dg_server.port}"
        bad = AsyncDeepgramClient(
            api_key="wrong", environment=DeepgramClientEnvironment(base=base, production=ws, agent=ws, agent_rest=base)
        )
        with pytest.raises(ApiError) as info:
            async with bad.listen.v1.connect(model="nova-3"):
                pass
    assert info.value.status_code == 401


@pytest.mark.parametrize(
    "headers,subprotocols",
    [({"Authorization": f"Bearer {KEY}"}, None), ({"Authorization": f"token {KEY}"}, None), ({}, ["token", KEY])],
)
async def test_key_forms(tiny_dg: Any, headers: dict[str, str], subprotocols: Any) -> None:
    url = f"ws://127.0.0.1:{tiny_dg.port}/v1/listen?encoding=linear16&sample_rate=16000"
    async with websockets.connect(url, additional_headers=headers, subprotocols=subprotocols) as ws:
        assert ws.subprotocol == ("token" if subprotocols else None)
        await ws.send(b"\x00\x00" * 1600)
        await ws.send(json.dumps({"type": "CloseStream"}))
        msgs = [json.loads(m) async for m in ws]
    assert msgs[-1]["type"] == "Metadata" and ws.close_code == 1000


@pytest.mark.parametrize(
    "query,word",
    [
        ("encoding=opus&sample_rate=16000", "encoding"),
        ("encoding=linear16", "sample_rate"),
        ("language=fr", "language"),
        ("diarize=true", "diarize"),
        ("multichannel=true", "multichannel"),
        ("interim_results=maybe", "interim_results"),
        ("utterance_end_ms=1000", "interim_results"),
        ("encoding=linear16&sample_rate=abc", "sample_rate"),
        ("redact=pci", "redact"),
    ],
)
def test_bad_query_is_a_deepgram_400(tiny_dg: Any, query: str, word: str) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{tiny_dg.port}/v1/listen?{query}",
        headers={
            "Authorization": f"Token {KEY}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req)
    body = json.loads(info.value.read())
    assert info.value.code == 400 and body["err_code"] == "Bad Request" and word in body["err_msg"]


async def test_ignored_options_telephony_and_wav_streams(tiny_dg: Any) -> None:
    import audioop  # noqa: PLC0415 - Python 3.11 still has it: an independent G.711 encoder

    tone = (np.sin(np.arange(8000) / 5) * 8000).astype("<i2").tobytes()
    wav_header = (
        b"RIFF"
        + (36 + len(tone)).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + (8000).to_bytes(4, "little")
        + (16000).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + len(tone).to_bytes(4, "little")
    )
    cases = [
        (
            "encoding=mulaw&sample_rate=8000&model=nova-2&smart_format=true&punctuate=true&numerals=true",
            audioop.lin2ulaw(tone, 2),
        ),
        ("encoding=alaw&sample_rate=8000&filler_words=true&no_delay=true", audioop.lin2alaw(tone, 2)),
        ("model=nova-3", wav_header + tone),
    ]
    for query, audio in cases:
        url = f"ws://127.0.0.1:{tiny_dg.port}/v1/listen?{query}"
        async with websockets.connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
            await ws.send(audio)
            await ws.send(json.dumps({"type": "CloseStream"}))
            msgs = [json.loads(m) async for m in ws]
        assert ws.close_code == 1000 and msgs[-1]["type"] == "Metadata", (query, msgs)
        assert abs(msgs[-1]["duration"] - 1.0) < 0.01, query  # 8000 samples at 8 kHz


async def test_keepalive_holds_the_stream_then_idle_closes_with_net_0001(tiny_dg: Any) -> None:
    url = f"ws://127.0.0.1:{tiny_dg.port}/v1/listen?encoding=linear16&sample_rate=16000"
    async with websockets.connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        await ws.send(b"\x00\x01" * 1600)
        for _ in range(8):  # 3.2 s of KeepAlive only, more than twice the 1.5 s idle timeout
            await ws.send(json.dumps({"type": "KeepAlive"}))
            await asyncio.sleep(0.4)
        msgs = await read_all(ws)  # then silence: the server ends the stream
    assert ws.close_code == 1011 and ws.close_reason.startswith("NET-0001")
    assert any(m["type"] == "Results" and m["is_final"] for m in msgs)  # the audio still got its final


async def test_bad_messages_get_error_messages_and_limits_hold(tiny_dg: Any) -> None:
    url = f"ws://127.0.0.1:{tiny_dg.port}/v1/listen?encoding=linear16&sample_rate=16000"
    hdr = {"Authorization": f"Token {KEY}"}
    async with (
        websockets.connect(url, additional_headers=hdr) as ws,
        websockets.connect(url, additional_headers=hdr) as ws2,
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:  # max_sessions=2: 503 before the upgrade
            await websockets.connect(url, additional_headers=hdr)
        assert refused.value.response.status_code == 503
        for bad in ("not json", json.dumps({"type": "Configure"}), b"\x00"):
            await ws.send(bad)
            err = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert err["type"] == "Error" and err["code"] and err["description"]
        await ws.send(json.dumps({"type": "CloseStream"}))
        assert json.loads(await ws.recv())["type"] == "Results"
        await ws2.send(b"")  # an empty binary frame is Deepgram's old CloseStream
        assert [json.loads(m)["type"] async for m in ws2][-1] == "Metadata"


def test_shutdown_sends_the_last_final_then_1001(server_factory: Any) -> None:
    server = server_factory("tiny")
    data = pcm16(espeak_rows()[0]["wav"])

    async def run() -> tuple[list[dict[str, Any]], Any]:
        url = f"ws://127.0.0.1:{server.port}/v1/listen?encoding=linear16&sample_rate=16000"
        async with websockets.connect(url) as ws:
            await ws.send(data[:32000])
            await asyncio.sleep(0.5)
            await asyncio.get_running_loop().run_in_executor(None, server.stop)
            return await read_all(ws), ws.close_code

    msgs, code = asyncio.run(run())
    results = [m for m in msgs if m["type"] == "Results"]
    assert code == 1001 and results[-1]["is_final"] and results[-1]["speech_final"], msgs
    assert msgs[-1] == {**msgs[-1], "type": "Error", "code": "shutting_down"}


def test_livekit_plugin_streams_against_the_server(dg_server: Any) -> None:
    import aiohttp
    from livekit import rtc
    from livekit.agents import APIConnectOptions
    from livekit.agents import stt as lkstt
    from livekit.plugins import deepgram

    data = np.frombuffer(pcm16(espeak_rows()[1]["wav"]), dtype="<i2")

    async def run() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            dg = deepgram.STT(
                api_key=KEY,
                base_url=f"http://127.0.0.1:{dg_server.port}/v1/listen",
                http_session=session,
                utterance_end_ms=1000,
            )
            stream = dg.stream(conn_options=APIConnectOptions(max_retry=0, timeout=10))
            for i in range(0, len(data), 1600):
                chunk = np.ascontiguousarray(data[i : i + 1600])
                stream.push_frame(
                    rtc.AudioFrame(
                        data=chunk.tobytes(), sample_rate=16000, num_channels=1, samples_per_channel=len(chunk)
                    )
                )
            stream.end_input()
            events = [ev async for ev in stream if ev.type != lkstt.SpeechEventType.RECOGNITION_USAGE]
            await stream.aclose()
            return events

    events = asyncio.run(run())
    kinds = [ev.type for ev in events]
    assert kinds[0] == lkstt.SpeechEventType.START_OF_SPEECH
    assert lkstt.SpeechEventType.INTERIM_TRANSCRIPT in kinds and lkstt.SpeechEventType.END_OF_SPEECH in kinds
    finals = [ev.alternatives[0].text for ev in events if ev.type == lkstt.SpeechEventType.FINAL_TRANSCRIPT]
    assert finals and " ".join(finals).strip()


_fuzz = st.one_of(
    v1_messages,  # the v1 fuzz cases, plus this protocol's own
    st.binary(max_size=100),
    st.text(max_size=100),
    st.fixed_dictionaries({"type": st.sampled_from(["KeepAlive", "Finalize", "CloseStream", "x", 5])}).map(json.dumps),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(_fuzz, min_size=1, max_size=8),
    st.dictionaries(
        st.sampled_from(
            [
                "encoding",
                "sample_rate",
                "channels",
                "endpointing",
                "interim_results",
                "vad_events",
                "utterance_end_ms",
                "language",
                "keyterm",
                "model",
            ]
        ),
        st.text(max_size=12) | st.sampled_from(["linear16", "16000", "true", "false", "0", "1000", "en"]),
        max_size=5,
    ),
)
def test_fuzzed_streams_and_queries_never_break_the_server(
    tiny_dg: Any, batch: list[Any], query: dict[str, str]
) -> None:
    asyncio.run(_fuzz_once(tiny_dg.port, batch, query))


async def _fuzz_once(port: int, batch: list[Any], query: dict[str, str]) -> None:
    from urllib.parse import urlencode

    url = f"ws://127.0.0.1:{port}/v1/listen?{urlencode(query)}"
    try:
        async with websockets.connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
            for m in batch:
                await ws.send(m)
            await ws.send(json.dumps({"type": "CloseStream"}))
            msgs = await read_all(ws)
    except websockets.exceptions.InvalidStatus as exc:
        assert exc.response.status_code == 400, exc
        return
    except websockets.ConnectionClosed:
        return  # closed while we were still sending: the close code is checked below when we can read it
    assert ws.close_code in (1000, 1008), (ws.close_code, ws.close_reason)
    assert not any(m.get("code") == "internal_error" for m in msgs)
