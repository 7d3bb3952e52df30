"""Per-frame cost of the server shell: the same audio through two `serve` builds, server CPU per frame.

Each build serves the stand-in model in its own process; 4 clients send 20 s of audio each in
20 ms frames (640 bytes: the most frames per second a client sends), at 4x real time, and stop.
Measured per build: server CPU seconds (user + system, psutil) per 1,000 frames, wall time. The
model's compute is the same for both builds, so the difference is the shell's per-frame cost.

    python bench/server_overhead.py --build "websockets (1cba0b8)=PYTHONSAFEPATH=1 PYTHONPATH=/tmp/old-ws" \
        --build "aiohttp (this tree)="

Writes bench/results/server-overhead.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, STANDIN_MODEL, machine_info, markdown_table, write_results  # noqa: E402

FRAME_BYTES, CLIENTS, SECONDS, SPEED = 640, 4, 20.0, 4.0


def start(env_words: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    for word in env_words.split():
        key, _, value = word.partition("=")
        env[key] = value
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
            "--device",
            "cpu",
            "--idle-timeout",
            "300",
        ]
        + (["--max-load", "0"] if "PYTHONPATH" not in env_words else []),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    return proc, line.split()[3]


async def client(url: str, audio: bytes) -> int:
    frames = 0
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await ws.recv()

        async def read() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(read())
        step = FRAME_BYTES / 32000 / SPEED
        t0 = time.monotonic()
        for i in range(0, len(audio), FRAME_BYTES):
            await ws.send(audio[i : i + FRAME_BYTES])
            frames += 1
            delay = t0 + frames * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await ws.send(json.dumps({"type": "stop"}))
        await reader
    return frames


async def measure(url: str, pid: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    audio = np.sin(np.arange(int(SECONDS * 16000)) / 9) * 6000 + rng.normal(0, 300, int(SECONDS * 16000))
    data = audio.astype("<i2").tobytes()
    await client(url, data[:32000])  # warm-up
    ps = psutil.Process(pid)
    c0, t0 = ps.cpu_times(), time.monotonic()
    frames = sum(await asyncio.gather(*(client(url, data) for _ in range(CLIENTS))))
    c1, wall = ps.cpu_times(), time.monotonic() - t0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {
        "frames": frames,
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_1000_frames": round(1000 * cpu / frames * 1000, 1),
        "wall_s": round(wall, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", action="append", required=True, metavar="LABEL=ENV", help="label=NAME=V ... (repeatable)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per build (%(default)s)")
    p.add_argument("--name", default="server-overhead", help="results file name in bench/results (%(default)s)")
    args = p.parse_args()
    builds = [b.split("=", 1) for b in args.build]
    rows: dict[str, list[dict[str, float]]] = {label: [] for label, _ in builds}
    for _ in range(args.rounds):
        for label, env in builds:
            proc, url = start(env)
            try:
                rows[label].append(asyncio.run(measure(url, proc.pid)))
            finally:
                proc.terminate()
                proc.wait(30)
    table = []
    base = None
    for label, runs in rows.items():
        best = min(r["cpu_ms_per_1000_frames"] for r in runs)
        base = base or best
        table.append(
            {
                "build": label,
                "CPU ms per 1,000 frames (best of rounds)": best,
                "all rounds": ", ".join(str(r["cpu_ms_per_1000_frames"]) for r in runs),
                "ratio to first": round(best / base, 3),
                "frames": runs[0]["frames"],
            }
        )
    md = (
        markdown_table(table, list(table[0])) + f"\n\n{CLIENTS} clients x {SECONDS:g} s of audio in "
        f"{FRAME_BYTES}-byte (20 ms) frames at {SPEED:g}x real time, stand-in model; server process CPU "
        "(model compute included, the same for both builds).\n"
    )
    write_results(args.name, {"bench": "server-overhead", "machine": machine_info(), "rows": rows, "table": table})
    (REPO / "bench" / "results" / f"{args.name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
