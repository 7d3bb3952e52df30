"""Per-session memory: after hundreds of short sessions the live Python objects are back at baseline.

bench/abuse.py measures RSS per 1,000 sessions; this catches the Python-side leaks (sessions,
drivers, connections, tasks or log records kept alive by something that outlives them).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from typing import Any

import websockets
from test_server import drain, start


async def _short_sessions(url: str, count: int, concurrency: int = 4) -> None:
    audio = b"\x10\x00\xf0\xff" * 4000  # 0.5 s

    async def one(i: int) -> None:
        async with websockets.connect(url) as ws:
            await start(ws, **({"phrases": ["turn on the lights"]} if i % 3 == 0 else {}))
            await ws.send(audio)
            await ws.send(json.dumps({"type": "finalize"} if i % 2 else {"type": "ping"}))
            if i % 5 == 4:
                return  # disconnect without stop
            await ws.send(json.dumps({"type": "stop"}))
            await drain(ws)

    for base in range(0, count, concurrency):
        await asyncio.gather(*(one(base + k) for k in range(concurrency)))


def _live() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects())


async def test_live_objects_return_to_baseline_after_many_sessions(server_factory: Any) -> None:
    server = server_factory("tiny")
    await _short_sessions(server.ws_url, 120)  # warm-up: caches, lazily built tables, pools
    for _ in range(50):
        if server.server.connections == set():
            break
        await asyncio.sleep(0.1)
    before = _live()
    await _short_sessions(server.ws_url, 300)
    for _ in range(100):
        if not server.server.connections:
            break
        await asyncio.sleep(0.1)
    after = _live()
    grown = {k: after[k] - before[k] for k in after if after[k] - before[k] > 20}
    assert sum(after.values()) - sum(before.values()) < 1000, grown
    for name in ("SessionDriver", "WsConnection", "StreamingSession", "AudioInput", "PhraseRescorer"):
        assert after[name] <= before[name], (name, before[name], after[name], grown)
    for name in ("Task", "Future"):  # the client side's closing handshakes may still be finishing
        assert after[name] <= before[name] + 8, (name, before[name], after[name], grown)
