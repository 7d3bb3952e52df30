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
WAIT_S = 60  # a ceiling for slow machines, not a timing assertion


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


def metric(http_url: str, name: str) -> float:
    """One unlabelled sample from a replica's /metrics."""
    text = urllib.request.urlopen(http_url + "/metrics").read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_a_replica_stopping_mid_stream_costs_a_session_boundary_not_audio(balanced: tuple[int, Any, Any]) -> None:
    """8 clients stream 8 s each through nginx with the client library's opt-in reconnect, spread over
    both replicas; one replica gets SIGTERM with no drain time left (`drain(0)`) while they stream:
    its sessions get their last finals (reason shutdown, with the audio each accepted) and close 1001,
    their clients reconnect through nginx to the other replica and send the rest. No audio is lost
    or sent twice, and every client's finals are on one clock."""
    from clients.asr_client import AsrClient
    from clients.reconnect import ReconnectingStream

    listen, a, b = balanced
    clients_n, seconds, chunk = 8, 8.0, 3200  # 0.1 s chunks of 16 kHz s16le
    audio = (np.sin(np.arange(int(seconds * 16000)) / 5) * 8000).astype("<i2").tobytes()

    async def run() -> tuple[Any, set[str], list[tuple[ReconnectingStream, list[AsrClient], list[Any]]]]:
        at_gate = 0
        all_at_gate, go, stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def chunks() -> Any:
            nonlocal at_gate
            for n, i in enumerate(range(0, len(audio), chunk)):
                if n == 30:  # 3 s in: wait until every client is this far, then go on while a replica stops
                    at_gate += 1
                    if at_gate == clients_n:
                        all_at_gate.set()
                    await go.wait()
                if n == 60:  # a stop that takes long cannot find a client already done: no timing assumption
                    await stopped.wait()
                yield audio[i : i + chunk]
                await asyncio.sleep(0.025)  # 4x real time

        def streams() -> tuple[ReconnectingStream, list[AsrClient]]:
            made: list[AsrClient] = []

            def make() -> AsrClient:
                made.append(AsrClient(f"ws://127.0.0.1:{listen}/v1/stream"))
                return made[-1]

            return ReconnectingStream(make, backoff_s=0.1), made

        clients = [streams() for _ in range(clients_n)]
        tasks = [asyncio.ensure_future(stream.run(chunks())) for stream, _ in clients]
        gate = asyncio.ensure_future(all_at_gate.wait())
        done, _ = await asyncio.wait([gate, *tasks], timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        assert gate in done, [t.result() for t in done]  # a client that ended early shows its error here
        async with asyncio.timeout(WAIT_S):  # every client's session has started ('ready')
            while True:
                active = await asyncio.gather(
                    *(asyncio.to_thread(metric, s.http_url, "streaming_asr_sessions_active") for s in (a, b))
                )
                if sum(active) == clients_n:
                    break
                await asyncio.sleep(0.05)
        assert all(active), active  # least_conn used both replicas
        assert len(a.server.connections) + len(b.server.connections) == clients_n
        victim = a if len(a.server.connections) >= len(b.server.connections) else b
        on_victim = {c.driver.id for c in list(victim.server.connections)}
        go.set()
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(victim.server.drain(0), victim.loop))
        stopped.set()
        results = await asyncio.gather(*tasks)
        return victim, on_victim, [(stream, made, finals) for (stream, made), finals in zip(clients, results)]

    victim, on_victim, results = asyncio.run(run())
    survivor = b if victim is a else a
    assert 0 < len(on_victim) < clients_n
    moved = 0
    for stream, made, finals in results:
        first_session = made[0].ready.session_id if made[0].ready else None
        was_on_victim = first_session in on_victim
        moved += was_on_victim
        assert abs(sum(stream.sessions) - seconds) < 0.05, stream.sessions  # every second accepted exactly once
        assert all(s > 0 for s in stream.sessions), stream.sessions
        assert [f.start for f in finals] == sorted(f.start for f in finals)  # one clock across sessions
        assert all(0 <= f.start <= f.end <= seconds + 0.05 for f in finals), finals  # the stream's clock
        assert finals and finals[-1].reason == "stop", finals
        if was_on_victim:
            assert len(stream.sessions) == 2, stream.sessions  # one boundary
            assert any(f.reason == "shutdown" for f in finals), finals
            error = made[0].fatal_error
            assert made[0].close_code == 1001 and error is not None and error.code == "shutting_down", error
        else:
            assert len(stream.sessions) == 1, stream.sessions
            assert not any(f.reason == "shutdown" for f in finals), finals
            assert len(made) == 1 and made[0].closed is not None  # ended by its own stop
    assert moved == len(on_victim)
    assert metric(survivor.http_url, "streaming_asr_sessions_active") == 0
    assert sessions_total(survivor.http_url) == clients_n  # its own sessions plus every moved one
