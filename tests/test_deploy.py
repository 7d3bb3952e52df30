"""deploy/nginx.conf in front of two real replicas, with Debian's nginx started by the test:
sessions spread over both (least_conn), and a draining replica's 503 makes nginx retry the other,
so new clients never see the drain."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from helpers import REPO, start_server_thread
from test_server import drain, start

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed (.ci/run installs it)",
)
TONE = (np.sin(np.arange(16000) / 5) * 8000).astype("<i2").tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sessions_total(http_url: str) -> float:
    text = urllib.request.urlopen(http_url + "/metrics").read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("streaming_asr_sessions_total{")
    )


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[int, Any, Any]]:
    a, b = start_server_thread("tiny"), start_server_thread("tiny")
    listen = free_port()
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    for word, value in (
        ("@PREFIX@", str(tmp_path)),
        ("@PORT_A@", str(a.port)),
        ("@PORT_B@", str(b.port)),
        ("@LISTEN@", str(listen)),
    ):
        conf = conf.replace(word, value)
    (tmp_path / "nginx.conf").write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):  # until it listens
            try:
                socket.create_connection(("127.0.0.1", listen), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
                time.sleep(0.05)
        yield listen, a, b
    finally:
        proc.terminate()
        proc.wait(10)
        a.stop()
        b.stop()


async def session(port: int, hold: asyncio.Event | None = None) -> list[dict[str, Any]]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
        await start(ws)
        await ws.send(TONE)
        if hold is not None:
            await hold.wait()
        await ws.send(json.dumps({"type": "stop"}))
        return await drain(ws)


def test_nginx_spreads_sessions_and_routes_around_a_draining_replica(balanced: tuple[int, Any, Any]) -> None:
    listen, a, b = balanced

    async def run() -> None:
        hold = asyncio.Event()
        clients = [asyncio.ensure_future(session(listen, hold)) for _ in range(8)]
        while sum(len(s.server.connections) for s in (a, b)) < 8:  # all 8 open at once
            await asyncio.sleep(0.05)
        assert len(a.server.connections) and len(b.server.connections)  # least_conn used both
        hold.set()
        for events in await asyncio.gather(*clients):
            assert events[-1]["type"] == "closed" and any(e["type"] == "final" for e in events)

    asyncio.run(run())
    assert sessions_total(a.http_url) + sessions_total(b.http_url) == 8
    assert sessions_total(a.http_url) > 0 and sessions_total(b.http_url) > 0

    async def drain_phase() -> None:
        """A drains with a session still open (so it answers 503, not connection refused); nginx still
        offers it new clients (its connection counts only see its own), gets 503 and retries B."""
        hold = asyncio.Event()
        held = [asyncio.ensure_future(session(s.port, hold)) for s in (a, b)]  # straight to the replicas
        while len(a.server.connections) < 1 or len(b.server.connections) < 1:
            await asyncio.sleep(0.05)
        drained = asyncio.run_coroutine_threadsafe(a.server.drain(60), a.loop)
        while not a.server.draining:
            await asyncio.sleep(0.01)
        before_b = sessions_total(b.http_url)
        for _ in range(8):  # one at a time: nginx alternates, so A is offered some of them
            events = await session(listen)
            assert events[-1]["type"] == "closed"  # no client saw the drain
        assert sessions_total(b.http_url) == before_b + 8
        text = urllib.request.urlopen(a.http_url + "/metrics").read().decode()
        refused = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('streaming_asr_refused_total{reason="draining"}')
        ]
        assert refused and refused[0] >= 1  # A was tried, answered 503, and nginx went on to B
        hold.set()
        for events in await asyncio.gather(*held):  # the draining replica's own session still ends well
            assert events[-1]["type"] == "closed"
        await asyncio.wrap_future(drained)

    asyncio.run(drain_phase())


def test_a_replica_stopping_mid_stream_costs_a_session_boundary_not_audio(balanced: tuple[int, Any, Any]) -> None:
    """8 s of audio through nginx with the client library's opt-in reconnect; the replica serving it
    stops (SIGTERM with no drain left) part-way: its final says how much it accepted, the client
    reconnects through nginx to the other replica and sends the rest."""
    from clients.asr_client import AsrClient
    from clients.reconnect import ReconnectingStream

    listen, a, b = balanced
    audio = (np.sin(np.arange(8 * 16000) / 5) * 8000).astype("<i2").tobytes()
    stopped: list[Any] = []

    async def chunks() -> Any:
        for i in range(0, len(audio), 3200):  # 0.1 s chunks at 4x real time
            if i == 3200 * 30 and not stopped:  # 3 s in: the serving replica goes away
                serving = next(s for s in (a, b) if s.server.connections)
                stopped.append(serving)
                await asyncio.get_running_loop().run_in_executor(None, serving.stop)
            yield audio[i : i + 3200]
            await asyncio.sleep(0.025)

    stream = ReconnectingStream(lambda: AsrClient(f"ws://127.0.0.1:{listen}/v1/stream"), backoff_s=0.1)
    finals = asyncio.run(stream.run(chunks()))
    assert stopped and len(stream.sessions) == 2  # one boundary
    first, second = stream.sessions
    assert first > 0 and abs(first + second - 8.0) < 0.05  # every second accepted exactly once
    assert [f.start for f in finals] == sorted(f.start for f in finals)  # one clock across sessions
    assert any(f.reason == "shutdown" for f in finals) and finals[-1].reason == "stop"
