"""Hostile and confused clients: every wrong message is a coded, non-fatal error; HTTP is strict.

Real server on 127.0.0.1 (tiny random model), raw protocol messages and raw HTTP request lines.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import websockets
from test_server import drain, recv_json, start
from websockets.exceptions import InvalidStatus

NESTED = "[" * 1000 + "]" * 1000
START = {"type": "start", "sample_rate": 16000}

TYPE_CONFUSION = [
    ({**START, "encoding": ["pcm_s16le"]}, "unsupported_encoding"),
    ({**START, "encoding": {"a": 1}}, "unsupported_encoding"),
    ({**START, "channels": "2"}, "unsupported_channels"),
    ({**START, "sample_rate": 16000.5}, "invalid_start"),
    ({**START, "sample_rate": [16000]}, "invalid_start"),
    ({**START, "phrases": {"a": 1}}, "invalid_option"),
    ({**START, "phrases": 0}, "invalid_option"),
    ({**START, "phrases": False}, "invalid_option"),
    ({**START, "phrases": ""}, "invalid_option"),
    ({**START, "phrases": [1, 2]}, "invalid_option"),
    ({**START, "phrase_boost": -1}, "invalid_option"),
    ({**START, "phrase_boost": "x"}, "invalid_option"),
    ({**START, "phrase_boost": []}, "invalid_option"),
    ({**START, "phrase_boost": True}, "invalid_option"),
    ({**START, "chunk_s": {"x": 1}}, "invalid_option"),
    ({**START, "interim_results": "yes"}, "invalid_option"),
    ({"type": ["start"]}, "unknown_type"),
    ({"type": 7}, "unknown_type"),
    ({"type": {"start": 1}}, "unknown_type"),
    ({"type": "ping", "id": {"a": 1}}, "invalid_message"),
    ({"type": "ping", "id": "x" * 1000}, "invalid_message"),
    ({"type": "ping", "id": 10**400}, "invalid_message"),
    ({**START, "chunk_s": 10**400}, "invalid_option"),
    ({**START, "phrase_boost": 10**400}, "invalid_option"),
    ({**START, "sample_rate": 10**400}, "unsupported_sample_rate"),
]


@pytest.mark.parametrize("message,code", TYPE_CONFUSION, ids=[f"{i}-{c}" for i, (_, c) in enumerate(TYPE_CONFUSION)])
async def test_wrong_types_are_coded_non_fatal_errors(server_factory: Any, message: dict[str, Any], code: str) -> None:
    server = _tiny(server_factory)
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps(message))
        err = await recv_json(ws)
        assert err == {"type": "error", "code": code, "message": err["message"], "fatal": False}
        await _still_usable(ws)


@pytest.mark.parametrize(
    "text",
    [
        NESTED,
        '{"type": "ping", "id": ' + NESTED + "}",
        '{"type": "start", "sample_rate": 16000, "phrases": ' + NESTED + "}",
        '{"type": "start", "sample_rate": NaN, "phrase_boost": NaN}',
        "\udcff",
        "{",
        "null",
        "[]",
        '"start"',
    ],
    ids=["deep", "deep-ping-id", "deep-phrases", "nan", "lone-surrogate", "truncated", "null", "list", "string"],
)
async def test_malformed_json_is_bad_json(server_factory: Any, text: str) -> None:
    server = _tiny(server_factory)
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(text.encode("utf-8", "surrogatepass"), text=True)
        err = await recv_json(ws)
        assert err["fatal"] is False and err["code"] in ("bad_json", "invalid_start"), err
        await _still_usable(ws)


async def test_a_text_message_is_measured_in_bytes(server_factory: Any) -> None:
    server = _tiny(server_factory, max_message_bytes=1 << 20)
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await ws.send("é" * (1 << 19) + "ü" * (1 << 19))  # 1 Mi characters, 2 MiB of UTF-8
        err = await recv_json(ws)
        assert err["code"] == "message_too_large" and not err["fatal"]
        await _still_usable(ws)


async def test_phrase_limits_are_refused_with_the_limit_named(server_factory: Any) -> None:
    server = _tiny(server_factory)
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({**START, "phrases": ["turn on the lights " * 50] * 1000}))
        err = await recv_json(ws)
        assert err["code"] == "invalid_option" and "phrase" in err["message"]
        ready = await start(ws, phrases=["turn on the lights"] * 3)
        assert ready["phrases"] == ["turn on the lights"] * 3


async def test_an_expensive_geometry_is_refused(server_factory: Any) -> None:
    server = _tiny(server_factory)
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({**START, "chunk_s": 0.1, "left_context_s": 10, "lookahead_s": 5}))
        err = await recv_json(ws)
        assert err["code"] == "invalid_option" and "costs" in err["message"] and not err["fatal"]
        await _still_usable(ws)


async def test_a_start_must_come_within_the_start_timeout(server_factory: Any) -> None:
    server = _tiny(server_factory, start_timeout_s=0.5)
    async with websockets.connect(server.ws_url) as ws:
        for i in range(3):
            await ws.send(json.dumps({"type": "ping", "id": i}))
        events = await drain(ws)
    assert [e["type"] for e in events] == ["pong"] * 3 + ["error"]
    assert events[-1]["code"] == "start_timeout" and events[-1]["fatal"] and ws.close_code == 4002


async def test_unstarted_connections_have_their_own_cap(server_factory: Any) -> None:
    server = _tiny(server_factory, max_unstarted=2)
    async with websockets.connect(server.ws_url) as a, websockets.connect(server.ws_url) as b:
        await a.send(json.dumps({"type": "ping"}))
        await recv_json(a)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(server.ws_url)
        assert refused.value.response.status_code == 503
        assert b"have not sent 'start'" in refused.value.response.body
        await start(a)  # a started connection no longer counts as unstarted
        async with websockets.connect(server.ws_url) as d:
            await start(d)
        await start(b)


async def test_foreign_browser_origins_are_refused(server_factory: Any) -> None:
    server = _tiny(server_factory)
    port = server.port
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(server.ws_url, origin="http://evil.example"):
            pass
    assert info.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{port}", "http://localhost:5173", "http://[::1]:8080", None):
        async with websockets.connect(server.ws_url, origin=origin) as ws:
            await start(ws)
    listed = _tiny(server_factory, allowed_origins=("https://app.example.com",))
    async with websockets.connect(listed.ws_url, origin="https://app.example.com") as ws:
        await start(ws)
    with pytest.raises(InvalidStatus):
        async with websockets.connect(listed.ws_url, origin="https://app.example.com.evil.example"):
            pass
    guarded = _tiny(server_factory, token="s3cret")
    async with websockets.connect(guarded.ws_url + "?token=s3cret", origin="https://elsewhere.example") as ws:
        await start(ws)  # the token is the credential: any origin may use it
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(guarded.ws_url, origin="https://elsewhere.example"):
            pass
    assert info.value.response.status_code == 401


# ---------------------------------------------------------------------- HTTP
def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                break
        return out


def _complete(resp: bytes) -> bool:
    head, _, body = resp.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def test_http_methods_targets_and_pages(server_factory: Any) -> None:
    port = _tiny(server_factory).port
    get = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    post = raw_http(port, b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert status_of(post) == 405 and b"allow: get" in post.lower() and b"method_not_allowed" in post
    assert status_of(raw_http(port, b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 405
    assert status_of(raw_http(port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200
    assert status_of(raw_http(port, get % (b"/" + b"a" * 10000))) == 414
    long_name = raw_http(port, get % (b"/" + b"a" * 4000 + b".js"))
    assert status_of(long_name) == 404 and b"Traceback" not in long_name
    nested = raw_http(port, get % b"/a/b/c")
    assert status_of(nested) == 404 and b'"not_found"' in nested
    assert status_of(raw_http(port, get % b"/v1/stream")) == 426
    assert status_of(raw_http(port, get % b"/app.js")) == 200
    unknown = raw_http(port, b"FOO / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(unknown) in (400, 405, 501) and b"Traceback" not in unknown


# -------------------------------------------------------------------- helpers
def _tiny(server_factory: Any, **settings: Any) -> Any:
    key = tuple(sorted(settings.items()))
    cache = _tiny.__dict__.setdefault("servers", {})
    if key not in cache or not cache[key].thread.is_alive():
        cache[key] = server_factory("tiny", **settings)
    return cache[key]


async def _still_usable(ws: Any) -> None:
    await ws.send(json.dumps({"type": "ping", "id": "after"}))
    assert await recv_json(ws) == {"type": "pong", "id": "after"}
    await start(ws)
    await ws.send(b"\x00\x01" * 8000)
    await ws.send(json.dumps({"type": "stop"}))
    events = await drain(ws)
    assert [e["type"] for e in events if e["type"] != "partial"][-2:] == ["final", "closed"]
    await asyncio.sleep(0)
