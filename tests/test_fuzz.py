"""Fuzz a live server (hypothesis): random JSON values, byte strings and request lines.

Whatever arrives, the server never answers `internal_error`, never crashes, and a session stays
usable after non-fatal errors; no HTTP request line gets a 5xx or a traceback.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import recv_json

FIELDS = (
    "type",
    "sample_rate",
    "encoding",
    "channels",
    "interim_results",
    "chunk_s",
    "left_context_s",
    "lookahead_s",
    "endpoint_silence_s",
    "max_segment_s",
    "phrases",
    "phrase_boost",
    "id",
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400), 2**53])
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["start", "stop", "finalize", "ping", "x"])},
        optional={k: json_values for k in FIELDS[1:]},
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=200),
    st.text(max_size=200),
)

_server: dict[str, Any] = {}


@pytest.fixture(scope="module")
def fuzz_server(server_factory: Any) -> Any:
    server = server_factory("tiny", start_timeout_s=30, max_unstarted=64)
    _server["s"] = server
    return server


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(messages, min_size=1, max_size=12), st.booleans())
def test_random_messages_never_break_a_session(fuzz_server: Any, batch: list[Any], started: bool) -> None:
    asyncio.run(_exchange(fuzz_server.ws_url, batch, started))


async def _exchange(url: str, batch: list[Any], started: bool) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        if started:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            assert (await recv_json(ws, 30))["type"] == "ready"
        for m in batch:
            await ws.send(m)
        await ws.send(json.dumps({"type": "ping", "id": "probe"}))
        seen: list[dict[str, Any]] = []
        try:
            while True:
                msg = await recv_json(ws, 30)
                seen.append(msg)
                assert msg.get("code") != "internal_error", msg
                if msg == {"type": "pong", "id": "probe"} or msg["type"] == "closed":
                    break
        except websockets.ConnectionClosed:
            assert ws.close_code in (1000, 4002), (ws.close_code, seen)  # after a fuzzed `stop`
            return
        if seen[-1]["type"] == "closed":
            return
        await ws.send(json.dumps({"type": "stop"}))  # usable: a stop ends in closed (or not_started)
        while True:
            try:
                msg = await recv_json(ws, 30)
            except websockets.ConnectionClosed:
                break
            assert msg.get("code") != "internal_error", msg
            if msg["type"] == "closed" or msg.get("code") == "not_started":
                break


tokens = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
targets = st.one_of(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=300).map(lambda t: "/" + t),
    st.sampled_from(["/", "/health", "/v1/stream", "/v1/auth", "*", "http://x/", "/%00", "/.."]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(tokens, st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "TRACE", "CONNECT", "PATCH"])),
    targets,
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "junk"]),
    st.binary(max_size=40),
)
def test_random_request_lines_never_error(
    fuzz_server: Any, method: str, target: str, version: str, tail: bytes
) -> None:
    line = f"{method} {target} {version}\r\nHost: x\r\nConnection: close\r\n".encode() + tail + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=30) as s:
        s.sendall(line)
        resp = b""
        try:
            while chunk := s.recv(65536):
                resp += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if resp:
        status = int(resp.split(b" ", 2)[1])
        assert status < 500 and b"Traceback" not in resp, resp[:300]
    health = json.loads(urllib.request.urlopen(fuzz_server.http_url + "/health", timeout=10).read())
    assert health["status"] == "ok"
