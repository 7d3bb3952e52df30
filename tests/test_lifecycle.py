"""A session's life against unlucky timing: stuck peers are reaped, shutdown keeps every final.

Driver-level property test (any order of audio, finalize, stop, disconnect, shutdown, timeout),
real servers for stuck clients and admission, and a real `serve` process stopped by SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
import websockets
from helpers import STANDIN_MODEL, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import drain, keep_sending, recv_json, start

ENDINGS = ("stop", "disconnect", "shutdown", "timeout")


# ------------------------------------------------------------ driver: any order
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(("audio", "audio", "finalize", "yield", *ENDINGS)), min_size=1, max_size=14),
    st.integers(1, 40),
)
def test_every_accepted_sample_ends_in_a_final_whatever_the_order(ops: list[str], frames: int) -> None:
    asyncio.run(_drive(ops, frames))


async def _drive(ops: list[str], frames: int) -> None:
    from streaming_asr.audio import PcmFormat
    from streaming_asr.events import Final
    from streaming_asr.server import ServerContext, ServerSettings
    from streaming_asr.server.driver import SessionDriver
    from streaming_asr.server.wire import Start

    model = tiny_model()
    ctx = ServerContext(model, model.info, ServerSettings(max_load=0, max_queue_delay_s=0))
    ctx.batcher.start()
    sent: list[Any] = []

    async def send(event: Any) -> None:
        sent.append(event)
        await asyncio.sleep(0)

    driver = SessionDriver(ctx, send)
    await driver.start(Start(PcmFormat(16000)))
    rng = np.random.default_rng(frames)
    pushed, first_end = 0, None
    for op in ops:
        if op == "audio":
            n = int(rng.integers(1, frames + 1)) * 320 + int(rng.integers(0, 320))
            driver.push((rng.standard_normal(n) * 3000).astype("<i2").tobytes())
            pushed += n if first_end is None else 0
        elif op == "finalize":
            driver.finalize()
        elif op == "yield":
            await asyncio.sleep(0.005)
        else:
            first_end = first_end or op
            driver.finish(op)
    driver.finish("disconnect")
    await asyncio.wait_for(driver.wait_done(), 60)
    await ctx.batcher.close()
    session = driver.session
    assert session is not None and session.total_samples == pushed
    assert session.next_frame == model.info.frames_for(pushed)  # every accepted sample committed
    finals = [e for e in sent if isinstance(e, Final)]
    assert finals and finals[-1].reason == (first_end or "disconnect") and sent[-1] is finals[-1]
    assert [f.segment for f in finals] == list(range(len(finals)))


# ----------------------------------------------------------- stuck peers, real server
def _health(server: Any) -> dict[str, Any]:
    return json.loads(urllib.request.urlopen(server.http_url + "/health", timeout=10).read())


async def _connections_drop_to(server: Any, count: int, limit_s: float) -> bool:
    for _ in range(int(limit_s * 10)):
        if _health(server)["connections"] <= count:
            return True
        await asyncio.sleep(0.1)
    return False


def _small_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_non_reading_and_half_open_clients_are_reaped(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="streaming_asr.server")
    server = server_factory("tiny", idle_timeout_s=1.5, send_timeout_s=1.0)
    # a client that sends audio and never reads (its library stops reading once one message is queued)
    deaf = await websockets.connect(server.ws_url, sock=_small_socket(server.port), max_queue=1, ping_interval=None)
    await deaf.send(json.dumps({"type": "start", "sample_rate": 16000}))

    sender = asyncio.create_task(keep_sending(deaf, 0.05))
    # half-open: started, then neither reads nor writes
    silent = await websockets.connect(server.ws_url, ping_interval=None)
    await start(silent)
    silent.transport.pause_reading()
    # only keepalive pings, no messages
    pinger = await websockets.connect(server.ws_url, ping_interval=0.2)
    await start(pinger)
    assert _health(server)["connections"] == 3
    assert await _connections_drop_to(server, 0, limit_s=30)
    sender.cancel()
    for ws in (deaf, silent, pinger):
        ws.transport.abort()
    closes = [r.getMessage() for r in caplog.records if "event=close" in r.getMessage()]
    assert sum('reason="timeout"' in c for c in closes) >= 2, closes


async def test_a_slow_consumer_is_closed_after_the_send_timeout(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="streaming_asr.server")
    server = server_factory("tiny", idle_timeout_s=60, send_timeout_s=0.5)
    ws = await websockets.connect(server.ws_url, sock=_small_socket(server.port), max_queue=1, ping_interval=None)
    await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "phrases": ["x" * 100] * 150}))
    try:
        for i in range(20000):  # every ping queues a pong the client never reads
            await ws.send(json.dumps({"type": "ping", "id": f"{i:06d}" + "x" * 240}))
    except websockets.ConnectionClosed:
        pass
    assert await _connections_drop_to(server, 0, limit_s=30)
    ws.transport.abort()
    assert any("event=slow_consumer" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------- admission
class SlowForward:
    """The tiny model with a known extra cost per forward call."""

    def __init__(self, delay_s: float) -> None:
        self.model, self.delay_s = tiny_model(), delay_s
        self.info = self.model.info

    def __call__(self, items: Any) -> Any:
        time.sleep(self.delay_s)
        return self.model(items)


async def test_admission_holds_what_the_model_can_compute(server_factory: Any) -> None:
    delay = 0.1
    server = server_factory("tiny", forward=SlowForward(delay), max_load=0.5, model_workers=1, max_queue_delay_s=0)
    cap = _health(server)["capacity"]
    assert delay <= cap["window_cost_s"] <= delay + 0.15  # the calibration saw the slow forward
    per_session = cap["window_cost_s"] / 0.48
    assert cap["default_session_cost"] == pytest.approx(per_session, rel=0.01, abs=1e-3)
    n = cap["default_sessions"]
    assert cap["capacity"] == 0.5 and n == int(0.5 // per_session) and n >= 1
    clients = [await websockets.connect(server.ws_url) for _ in range(n + 1)]
    try:
        for ws in clients[:n]:
            await start(ws)
        await clients[n].send(json.dumps({"type": "start", "sample_rate": 16000}))
        err = await recv_json(clients[n])
        assert err["code"] == "server_full" and err["fatal"] and "capacity" in err["message"]
        await drain(clients[n])
        assert clients[n].close_code == 1013
        assert _health(server)["capacity"]["sessions"] == n
    finally:
        for ws in clients:
            await ws.close()
    assert await _connections_drop_to(server, 0, limit_s=30)
    assert _health(server)["capacity"]["used"] == 0


# ------------------------------------------------------------- SIGTERM, real process
@pytest.mark.standin
async def test_sigterm_keeps_every_final_and_exits_with_stuck_clients(tmp_path: Any) -> None:
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streaming_asr",
                "serve",
                "--model",
                str(STANDIN_MODEL),
                "--port",
                "0",
                "--max-load",
                "0",
                "--close-timeout",
                "2",
                "--idle-timeout",
                "60",
                "--drain-timeout",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = line.split()[3]
        port = int(url.split(":")[2].split("/")[0])
        stuck = await websockets.connect(url, sock=_small_socket(port), max_queue=1, ping_interval=None)
        await stuck.send(json.dumps({"type": "start", "sample_rate": 16000}))
        silent = await websockets.connect(url, ping_interval=None)
        await start(silent)
        silent.transport.pause_reading()
        kinds = ["stop"] * 4 + ["finalize"] * 2 + ["late_stop"] * 2 + ["disconnect"] * 2
        clients = [await websockets.connect(url) for _ in kinds]
        ids = [(await start(ws))["session_id"] for ws in clients]
        audio = (np.sin(np.arange(16000) / 8) * 8000).astype("<i2").tobytes()
        for ws in clients:
            await ws.send(audio)
        for kind, ws in zip(kinds, clients):
            if kind in ("stop", "finalize"):
                await ws.send(json.dumps({"type": kind}))
            elif kind == "disconnect":
                await ws.close()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for kind, ws in zip(kinds, clients):
            if kind == "late_stop":
                try:
                    await ws.send(json.dumps({"type": "stop"}))
                except websockets.ConnectionClosed:
                    pass
        received = [await drain(ws) if kind != "disconnect" else [] for kind, ws in zip(kinds, clients)]
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
        elapsed = time.monotonic() - t0
        for ws in (stuck, silent):
            ws.transport.abort()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and elapsed < 2 + 10, elapsed  # close timeout + margin; bench/abuse.py measures it
    for kind, events in zip(kinds, received):
        if kind == "disconnect":
            continue
        finals = [e for e in events if e["type"] == "final"]
        assert finals and finals[-1]["reason"] in ("stop", "shutdown", "finalize"), (kind, events)
        if kind == "stop":
            assert finals[-1]["reason"] in ("stop", "shutdown")
    logged = log_path.read_text()
    for kind, sid in zip(kinds, ids):
        assert f"session={sid} event=final" in logged, (kind, sid)
    assert "Traceback" not in logged
