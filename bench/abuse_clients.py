"""The client side of bench/abuse.py: hostile and unlucky protocol-v1 clients, and what they observed.

Kept free of torch and of the package (like load_client.py): it sees the server as a client would.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import random
import re
import socket
import string
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from load_client import FRAME_S, FRAME_SAMPLES, RATE
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

START = {"type": "start", "sample_rate": RATE, "encoding": "pcm_s16le", "channels": 1, "interim_results": True}
START_JSON = json.dumps(START)
FINAL_RE = re.compile(r'session=(\w+) event=final .*?reason="(\w+)"')


def ws_connect(url: str, **kw: Any) -> Any:
    opts: dict[str, Any] = dict(
        max_size=None, open_timeout=60, ping_interval=None, proxy=None, compression=None, close_timeout=5
    )
    opts.update(kw)
    return connect(url, **opts)


def frames_of(audio: np.ndarray) -> list[bytes]:
    return [audio[i : i + FRAME_SAMPLES].tobytes() for i in range(0, audio.size, FRAME_SAMPLES)]


def log_findings(path: Path) -> dict[str, Any]:
    """What the server log says: internal errors, tracebacks, slow consumers, finals by session."""
    text = path.read_text(errors="replace")
    finals: dict[str, list[str]] = {}
    for sid, reason in FINAL_RE.findall(text):
        finals.setdefault(sid, []).append(reason)
    bad = [ln for ln in text.splitlines() if "internal_error" in ln or "Traceback" in ln or " ERROR " in ln]
    return {
        "internal_errors": sum("event=internal_error" in ln for ln in bad),
        "bad_lines": bad[:20],
        "tracebacks": text.count("Traceback"),
        "slow_consumer": text.count("event=slow_consumer"),
        "finals": finals,
    }


# ------------------------------------------------------------------ probes
class HealthProbe(threading.Thread):
    """GET /health every `period` s on one keep-alive connection, in its own thread (the bench's loop cannot
    delay it)."""

    def __init__(self, port: int, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.port, self.period = port, period
        self.answers: list[float] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        due = time.monotonic()
        while not self.halt.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/health")
                conn.getresponse().read()
                self.answers.append(time.monotonic())
            except (OSError, http.client.HTTPException):
                self.failures += 1
                if conn is not None:
                    conn.close()
                conn = None
            due += self.period
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                due = time.monotonic()
        if conn is not None:
            conn.close()

    def max_gap(self, t0: float, t1: float) -> float | None:
        """Longest time between consecutive answers over [t0, t1]."""
        xs = self.answers
        return max((b - a for a, b in zip(xs, xs[1:]) if b >= t0 and a <= t1), default=None)


def server_ports(ps: psutil.Process) -> set[int]:
    """Client-side ports of the TCP connections the server process still holds."""
    try:
        return {c.raddr.port for c in ps.net_connections("tcp") if c.raddr}
    except psutil.Error:
        return set()


# --------------------------------------------------------------- messages
async def collect(
    ws: ClientConnection,
    until: tuple[str, ...] = ("error", "closed"),
    timeout: float = 30.0,
    into: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Messages until one of `until` arrives, the socket closes or `timeout`; records types, error codes, close."""
    out = into if into is not None else {"types": [], "codes": [], "messages": [], "events": [], "close": None}
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            raw = await asyncio.wait_for(ws.recv(), left)
            try:
                ev = json.loads(raw)
            except ValueError:
                ev = {"type": "unparsable"}
            out["types"].append(ev.get("type"))
            out["events"].append(ev)
            if ev.get("type") == "error":
                out["codes"].append(ev.get("code"))
                out["messages"].append(str(ev.get("message"))[:160])
            if ev.get("type") in until:
                break
        else:
            out["timeout"] = True
    except TimeoutError:
        out["timeout"] = True
    except ConnectionClosed:
        pass
    out["close"], out["close_reason"] = ws.close_code, ws.close_reason
    return out


def outcome(got: dict[str, Any]) -> str:
    """The first error code, else `ready`, else how it closed."""
    if got["codes"]:
        return got["codes"][0]
    if "ready" in got["types"]:
        return "ready"
    if got.get("close_reason") in ("server_full", "shutting_down", "start timeout", "idle timeout"):
        return got["close_reason"].replace(" ", "_")  # closed before its error message was read
    if got.get("close") is not None:
        return f"close {got['close']}"
    return "timeout" if got.get("timeout") else "nothing"


def phrase_list(rng: random.Random, n: int, chars: int) -> list[str]:
    """n distinct letter-and-space phrases of exactly `chars` characters."""
    out = []
    for _ in range(n):
        s = ""
        while len(s) < chars:
            s += "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) + " "
        s = s[:chars]
        out.append(s[:-1] + "a" if s.endswith(" ") else s)
    return out


def stall_cases(rng: random.Random) -> list[tuple[str, str, list[Any], Any, tuple[str, ...]]]:
    """(key, label, messages before, the message, acceptable outcomes) for scenario 1."""
    limit = dict(START, phrases=phrase_list(rng, 1000, 20))
    bomb = dict(START, phrases=phrase_list(rng, 1000, 1024))
    n = (2**20 - 2) // 2  # "[0,0,...,0] " is exactly 1 MiB
    mib = "[" + "0," * (n - 1) + "0] "
    return [
        ("1a", "start with phrases at the limits (1000 x 20 chars)", [], json.dumps(limit), ("ready",)),
        ("1b", "phrase bomb (1000 x 1 KB phrases)", [], json.dumps(bomb), ("invalid_option",)),
        ("1c", "1 MiB text message (JSON array of 524,287 numbers)", [], mib, ("bad_json",)),
        ("1d", "JSON nested 100,000 deep", [], "[" * 100_000 + "]" * 100_000, ("bad_json",)),
        ("1e", "4 MiB binary frame after start", [START_JSON], bytes(4 * 2**20), ("message_too_large", "close 1009")),
    ]


async def one_message(url: str, pre: list[Any], msg: Any, timeout: float) -> dict[str, Any]:
    """Open, send `pre` (a start: wait for ready), then `msg`; the answer, and how long it took."""
    async with ws_connect(url) as ws:
        for m in pre:
            await ws.send(m)
            await collect(ws, ("ready", "error"), 30)
        t = time.monotonic()
        try:
            await ws.send(msg)
        except ConnectionClosed:  # closed while we sent (1009): what arrived before still counts
            timeout = 2.0
        got = await collect(ws, ("error", "ready", "closed"), timeout)
        got["answer_s"] = round(time.monotonic() - t, 3)
        if pre or "ready" in got["types"]:
            try:
                await ws.send(json.dumps({"type": "stop"}))
                await collect(ws, ("closed",), 30, into={"types": [], "codes": [], "messages": [], "events": []})
            except ConnectionClosed:
                pass
    return got


# ------------------------------------------------------------------- fuzz
WEIRD: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**63,
    -(2**63),
    10**30,
    1e308,
    "16000",
    "",
    "x" * 300,
    [],
    [1, 2],
    {},
    {"a": {"b": [None]}},
    [None],
    ["\u0000"],
    "\ud800",
    "\u202e",
    "__NAN__",
    "__INF__",
    "__NINF__",
    "__HUGE__",
]
SPECIAL = {'"__NAN__"': "NaN", '"__INF__"': "Infinity", '"__NINF__"': "-Infinity", '"__HUGE__"': "1e999"}
RANGES: dict[str, list[Any]] = {
    "sample_rate": [0, 7999, 48001, -16000, 2**31, 2**64, 8000, 48000],
    "channels": [0, 9, -1, 2**40, 8],
    "encoding": ["pcm_s8", "PCM_S16LE", "", "pcm_f32le", "opus"],
    "chunk_s": [0, -1, 1e-9, 1e9, 0.01, 0.02],
    "left_context_s": [-1, 1e6, 10.01, 0],
    "lookahead_s": [-5, 100, 0],
    "endpoint_silence_s": [-1, 1e9, 0],
    "max_segment_s": [0, -1, 1e12, 0.02],
    "phrase_boost": [-1, 1e308, 11, 0],
    "phrases": [[""], ["   "], ["123"], ["\u202e evil"], ["a" * 101], ["a"] * 1001, ["ß ǅ ﬁ ＡＢＣ"], [" - _ / '"]],
    "interim_results": [0, 1, "true"],
}
START_FIELDS = tuple(RANGES)
RAW = [
    '{"type":"start","sample_rate":NaN}',
    '{"type":"start","sample_rate":1e999}',
    '{"type":"start","sample_rate":16000,"chunk_s":Infinity}',
    '{"type":"ping","id":NaN}',
    '{"type":"ping","id":-Infinity}',
    '{"type":"start","sample_rate":16000,"phrases":["\\ud800\\udfff\\ud800"]}',
    '{"type":"start","sample_rate":16000,"phrase_boost":NaN}',
    '{"type":"start","sample_rate":1' + "0" * 5000 + "}",
    '{"type":"start","type":"stop"}',
    '{"__proto__":{"type":"stop"},"type":"ping"}',
    '{"type":"ping","id":' + "9" * 400 + "}",
    '"just a string"',
    "null",
    "[]",
    "{}",
    "",
    " ",
    "\u0000",
    '{"type":"finalize","x":[[[[[]]]]]}',
]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice(WEIRD[:22])
    if r < 0.6:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["type", "sample_rate", "id", "phrases", rng.choice(string.ascii_letters) * rng.randint(1, 5)]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def render(obj: Any) -> str:
    text = json.dumps(obj)
    for k, v in SPECIAL.items():
        text = text.replace(k, v)
    return text


def fuzz_message(rng: random.Random) -> tuple[str | bytes, bool | None]:
    """One hostile message and whether to send it as text (True), binary (False) or as str (None)."""
    kind = rng.choices(
        ["json", "field", "range", "type", "ping", "raw", "bytes_text", "garbage", "binary", "control"],
        [10, 14, 12, 6, 6, 8, 8, 6, 24, 6],
    )[0]
    if kind == "json":
        return render(random_json(rng)), None
    if kind in ("field", "range"):
        msg = dict(START)
        key = rng.choice(START_FIELDS)
        msg[key] = rng.choice(WEIRD if kind == "field" else RANGES[key])
        if rng.random() < 0.2:
            del msg["sample_rate"]
        return render(msg), None
    if kind == "type":
        return render({"type": rng.choice(WEIRD + ["START", "Stop", "start ", "x" * 5000, "ready", "partial"])}), None
    if kind == "ping":
        return render({"type": "ping", "id": rng.choice(WEIRD + [2**53, -(2**53), "x" * 256, "x" * 257])}), None
    if kind == "raw":
        return rng.choice(RAW), None
    if kind == "bytes_text":  # invalid UTF-8 in a text frame
        return os.urandom(rng.randint(1, 300)), True
    if kind == "garbage":
        return "".join(
            chr(rng.choice([rng.randint(1, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
            for _ in range(rng.randint(1, 200))
        ), None
    if kind == "binary":
        n = rng.choice([0, 1, 2, 3, 4, 5, 7, 8, 6400, 6401, rng.randint(0, 20000)])
        if rng.random() < 0.3:  # f32le specials: NaN, inf, denormals, huge
            vals = np.array([np.nan, np.inf, -np.inf, 1e38, -1e38, 1e-45, 0.0], np.float32)
            return np.resize(vals, max(1, n // 4)).tobytes(), False
        return os.urandom(n), False
    return rng.choice(['{"type":"finalize"}', '{"type":"ping"}', '{"type":"ping","id":7}', '{"type":"STOP"}']), None


async def fuzz_connection(url: str, rng: random.Random, n: int, start_first: bool) -> dict[str, Any]:
    """`n` hostile messages on one connection (after a valid, randomly formatted start when `start_first`)."""
    got: dict[str, Any] = {"types": [], "codes": [], "messages": [], "events": [], "close": None, "sent": 0}
    try:
        async with ws_connect(url) as ws:
            receiver = asyncio.create_task(collect(ws, ("closed",), 600, into=got))
            if start_first:
                await ws.send(
                    json.dumps(
                        dict(
                            START,
                            encoding=rng.choice(["pcm_s16le", "pcm_f32le"]),
                            channels=rng.choice([1, 2]),
                            sample_rate=rng.choice([8000, 16000, 44100]),
                        )
                    )
                )
            for _ in range(n):
                msg, text = fuzz_message(rng)
                await ws.send(msg, text=text) if text is not None else await ws.send(msg)
                got["sent"] += 1
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(asyncio.shield(receiver), 30)
    except (TimeoutError, ConnectionClosed, OSError, WebSocketException) as exc:
        got["client_error"] = type(exc).__name__
    return got


# ------------------------------------------------------------------ flood
async def flood_socket(url: str, kind: str, delay: float, timeout: float) -> dict[str, Any]:
    """One of the flood's sockets: `start` (asks for a session), `never` (idles) or `ping` (pings, never starts)."""
    await asyncio.sleep(delay)
    res: dict[str, Any] = {"kind": kind}
    try:
        async with ws_connect(url, open_timeout=30) as ws:
            if kind == "start":
                try:
                    await ws.send(START_JSON)
                except ConnectionClosed:  # refused at the handshake while we sent
                    pass
            pinger = asyncio.create_task(_ping_loop(ws)) if kind == "ping" else None
            got = await collect(ws, ("error", "ready", "closed"), timeout)
            if pinger:
                pinger.cancel()
            res.update(outcome=outcome(got), message=(got["messages"] or [""])[0], close=got["close"])
            if "ready" in got["types"]:
                await ws.send(json.dumps({"type": "stop"}))
                res["closed"] = "closed" in (await collect(ws, ("closed",), 30))["types"]
    except (TimeoutError, OSError, WebSocketException) as exc:
        res.update(outcome=f"connect failed: {type(exc).__name__}", message=str(exc)[:120])
    return res


async def _ping_loop(ws: ClientConnection) -> None:
    i = 0
    while True:
        await ws.send(json.dumps({"type": "ping", "id": i}))
        i += 1
        await asyncio.sleep(0.5)


# ----------------------------------------------------------------- stuck
@dataclass
class Stuck:
    kind: str
    port: int  # our local port: the server's peer port
    stuck_at: float
    task: asyncio.Task[Any] | None = None
    closer: Any = None
    gone_at: float | None = None
    client_saw: str | None = None


async def never_reader(url: str, port: int, frames: list[bytes], ping_flood: bool) -> Stuck:
    """Starts, sends audio at real time (and, with `ping_flood`, 256-char-id pings as fast as it can, so the
    server has ~30 MB/s of pongs for it), never reads: max_queue=1 and a 4 KB SO_RCVBUF."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    ws = await ws_connect(url, sock=sock, max_queue=1)
    await ws.send(START_JSON)
    st = Stuck("a2" if ping_flood else "a", sock.getsockname()[1], time.monotonic())

    async def pump() -> None:
        ping = json.dumps({"type": "ping", "id": "x" * 256})
        t0, i = time.monotonic(), 0
        try:
            while True:
                if ping_flood:
                    for _ in range(100):
                        await ws.send(ping)
                    await asyncio.sleep(0.001)
                if time.monotonic() >= t0 + i * FRAME_S:
                    await ws.send(frames[i % len(frames)])
                    i += 1
                elif not ping_flood:
                    await asyncio.sleep(t0 + i * FRAME_S - time.monotonic())
        except (ConnectionClosed, OSError) as exc:
            st.client_saw = f"{type(exc).__name__} after {time.monotonic() - st.stuck_at:.1f} s"

    st.task = asyncio.create_task(pump())
    st.closer = ws.transport.abort
    return st


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (small payloads)."""
    mask, n = os.urandom(4), len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else struct.pack("!BH", 0x80 | 126, n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def half_open(port: int, path: str = "/v1/stream") -> Stuck:
    """Raw TCP: WebSocket handshake, `start`, then silence: never reads, never writes (no asyncio transport)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 30)  # byte by byte: nothing past the headers
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head[:80]!r}")
    await loop.sock_sendall(sock, ws_frame(START_JSON.encode()))
    return Stuck("b", sock.getsockname()[1], time.monotonic(), closer=sock.close)


async def ws_pinger(url: str, start: bool) -> Stuck:
    """Sends only WebSocket pings (every 1 s; the library answers the server's); `start` first when asked."""
    ws = await ws_connect(url, ping_interval=1.0, ping_timeout=30)
    if start:
        await ws.send(START_JSON)
    sock = ws.transport.get_extra_info("socket")
    st = Stuck("c" if start else "cu", sock.getsockname()[1], time.monotonic(), closer=ws.transport.abort)

    async def hold() -> None:
        await ws.wait_closed()
        st.client_saw = f"closed {ws.close_code} after {time.monotonic() - st.stuck_at:.1f} s"

    st.task = asyncio.create_task(hold())
    return st


# ------------------------------------------------------------- talkers
@dataclass
class Talker:
    """A well-behaved client of scenario 5: start, real-time audio, then whatever the order says."""

    ws: ClientConnection
    session_id: str
    got: dict[str, Any] = field(
        default_factory=lambda: {"types": [], "codes": [], "messages": [], "events": [], "close": None}
    )
    receiver: asyncio.Task[Any] | None = None

    def final_reasons(self) -> list[str]:
        return [e.get("reason") for e in self.got["events"] if e.get("type") == "final"]


async def talker(url: str, tries: int = 10) -> Talker:
    """Connected and started (a `server_full` refusal is retried: this client is meant to be admitted)."""
    for attempt in range(tries):
        ws = await ws_connect(url)
        await ws.send(START_JSON)
        ready = await collect(ws, ("ready", "error"), 60)
        if "ready" in ready["types"] or attempt == tries - 1:
            break
        ws.transport.abort()
        await asyncio.sleep(0.5)
    t = Talker(ws, (ready["events"] or [{}])[-1].get("session_id", "?"))
    t.receiver = asyncio.create_task(collect(ws, ("closed",), 600, into=t.got))
    return t


async def stream_real_time(ws: ClientConnection, audio: np.ndarray) -> None:
    t0 = time.monotonic()
    for i, frame in enumerate(frames_of(audio)):
        await asyncio.sleep(max(0.0, t0 + i * FRAME_S - time.monotonic()))
        await ws.send(frame)


async def short_session(url: str, audio: np.ndarray) -> bool:
    """start, the audio at once, stop, read to `closed`: True when it closed cleanly."""
    try:
        async with ws_connect(url) as ws:
            await ws.send(START_JSON)
            for frame in frames_of(audio):
                await ws.send(frame)
            await ws.send(json.dumps({"type": "stop"}))
            got = await collect(ws, ("closed",), 120)
            return "closed" in got["types"] and not got["codes"]
    except (TimeoutError, OSError, WebSocketException):
        return False


def error_histogram(results: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(c for r in results for c in r.get("codes", [])).most_common())
