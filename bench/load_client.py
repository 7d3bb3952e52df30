"""The client side of bench/load.py: real-time protocol-v1 streams and the delays they see.

Kept free of torch and of the package: it measures the server as an independent client would.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from common import tts_dev_rows
from websockets.asyncio.client import connect

RATE = 16000
FRAME_S = 0.1
FRAME_SAMPLES = int(RATE * FRAME_S)


def client_streams(n: int, seconds: float, seed: int, gap_s: float = 0.25) -> list[np.ndarray]:
    """n int16 streams of exactly `seconds`, each tts-dev files (different ones per client) with short gaps."""
    rows = tts_dev_rows()
    random.Random(seed).shuffle(rows)
    cache: dict[Path, np.ndarray] = {}
    gap = np.zeros(int(gap_s * RATE), dtype=np.int16)
    streams = []
    for c in range(n):
        parts, total, i = [], 0, (c * 11) % len(rows)
        while total < seconds * RATE:
            wav = rows[i % len(rows)]["wav"]
            if wav not in cache:
                audio, rate = sf.read(wav, dtype="int16")
                if rate != RATE or audio.ndim != 1:
                    raise ValueError(f"{wav}: expected 16 kHz mono, got {rate} Hz shape {audio.shape}")
                cache[wav] = audio
            parts += [cache[wav], gap]
            total += cache[wav].size + gap.size
            i += 1
        streams.append(np.concatenate(parts)[: int(seconds * RATE)])
    return streams


@dataclass
class ClientResult:
    frames: int
    send_times: list[float]  # when each frame's send() returned
    slips: list[float]  # send_times[i] - scheduled time of frame i
    partials: list[tuple[float, float]]  # (arrival time, the partial's `end` in stream seconds)
    stop_sent: float = 0.0
    final_at: float | None = None  # the reason-stop final
    closed: bool = False
    finals: int = 0
    errors: list[str] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)

    def partial_delays(self) -> list[float]:
        """Per partial: arrival minus the moment the client had sent the audio up to its `end`."""
        out = []
        for arrived, end in self.partials:
            frame = int(np.ceil(end * RATE / FRAME_SAMPLES)) - 1
            if frame >= len(self.send_times):
                break  # a partial of the flush after stop: not a real-time window
            out.append(arrived - self.send_times[max(0, frame)])
        return out


async def run_client(url: str, audio: np.ndarray, delay: float, timeout_s: float) -> ClientResult:
    """One real-time client: start, frames on a wall-clock schedule, stop; records every arrival."""
    await asyncio.sleep(delay)
    frames = [audio[i : i + FRAME_SAMPLES].tobytes() for i in range(0, audio.size, FRAME_SAMPLES)]
    res = ClientResult(frames=len(frames), send_times=[], slips=[], partials=[])
    async with connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
        await ws.send(
            json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm_s16le", "interim_results": True})
        )
        res.ready = json.loads(await ws.recv())
        if res.ready.get("type") != "ready":
            res.errors.append(f"no ready: {res.ready}")
            return res

        async def receive() -> None:
            async for message in ws:
                now = time.monotonic()
                ev = json.loads(message)
                kind = ev.get("type")
                if kind == "partial":
                    res.partials.append((now, float(ev["end"])))
                elif kind == "final":
                    res.finals += 1
                    if ev.get("reason") == "stop":
                        res.final_at = now
                elif kind == "closed":
                    res.closed = True
                elif kind == "error":
                    res.errors.append(f"{ev.get('code')}: {ev.get('message')}")

        receiver = asyncio.create_task(receive())
        t0 = time.monotonic()
        for i, frame in enumerate(frames):
            due = t0 + i * FRAME_S
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await ws.send(frame)
            sent = time.monotonic()
            res.send_times.append(sent)
            res.slips.append(max(0.0, sent - due))
        res.stop_sent = time.monotonic()
        await ws.send(json.dumps({"type": "stop"}))
        try:
            await asyncio.wait_for(receiver, timeout_s)
        except TimeoutError:
            res.errors.append(f"no close within {timeout_s:.0f} s of stop")
    return res


async def warm_up(url: str, stream: np.ndarray) -> None:
    """One short session sent as fast as allowed: first forwards allocate; not measured."""
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm_s16le"}))
        await ws.recv()
        for i in range(0, min(stream.size, 8 * RATE), FRAME_SAMPLES):
            await ws.send(stream[i : i + FRAME_SAMPLES].tobytes())
        await ws.send(json.dumps({"type": "stop"}))
        async for message in ws:
            if json.loads(message).get("type") == "closed":
                break
