"""Load bench: how many real-time streams one server keeps up with, batching on vs off.

N simulated real-time clients (N = 1, 2, 3, 4, 6, 8, ... until a variant clearly breaks) stream
tts-dev speech over loopback to a server in its own process, each at wall-clock pace in 100 ms
frames (frame i is sent at t0 + i*0.1 s; clients start at random offsets within one chunk). The
model is the base-size wav2vec2 architecture (`Wav2Vec2ForCTC(Wav2Vec2Config())`, ~95M
parameters) with random weights: speed, not accuracy, is measured. Two servers run side by side,
`--max-batch 8` (batching on) and `--max-batch 1` (off), and each N is run on one then the other,
so background load on the machine hits both alike.

Measured per N and variant:

* partial latency: for the j-th partial of a stream, the arrival time minus the time the client
  finished sending the audio frame that holds the last sample window j needs. Window j of the
  engine owns chunk j and sees `lookahead_s` beyond it, so it needs the first
  `samples_for(j*chunk + lookahead)` samples (model frame grid; 1.285 s for j = 1 with the
  defaults). The random-weight model emits letters on every frame, so every window yields a
  partial and partial j *is* window j (`partials_per_window` checks it: 1.00 = exact). When a
  server falls more than 3 chunks behind it runs catch-up windows of several chunks, one partial
  each; then the j-th partial covers more audio than window j and the number is an upper bound.
  The lookahead and the 100 ms framing are outside this number: it is pure server + transport delay.
* final latency: `stop` sent -> `final` (reason stop) received.
* lag growth: median partial latency of the last third of each stream minus the first third.
* send slip: how late the client got its frames out versus the wall-clock schedule (a starved
  or backpressured client falls behind; itself a sign of overload).
* server CPU (psutil, whole process, 100 % = one core) and peak RSS; mean batch size and how busy
  the model thread was (from /health); the client process's CPU and that of every other process
  on the machine during the run ("other procs": a shared machine's noise; a run with more than
  `--max-background` % is run again once and the quieter run kept).

A run is "real time" when p95 partial latency <= 2 x chunk_s, lag growth <= 0.5 x chunk_s and
p95 send slip <= one frame (0.1 s).

    python bench/load.py                # full run (~10-15 min on 2 cores)
    python bench/load.py --quick        # smoke run (~1.5 min): N in {1, 2}, 8 s of audio per client

Writes bench/results/load.json, load.md (table for the README) and load.png (--quick: load-quick.*);
prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import statistics
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import psutil
import soundfile as sf
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (REPO, RESULTS, STANDIN_MODEL, machine_info, markdown_table, percentile,  # noqa: E402
                    tts_dev_rows, update_readme, write_results)

RATE = 16000
FRAME_S = 0.1
FRAME_SAMPLES = int(RATE * FRAME_S)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json", "vocab.json",
                   "special_tokens_map.json", "added_tokens.json")
FULL_CLIENTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
LISTEN_RE = re.compile(r"listening on ws://([\d.]+):(\d+)(/\S*)")


# ------------------------------------------------------------------ model
def save_random_base_model(target: Path, seed: int = 0) -> None:
    """The base architecture with random weights plus the stand-in's processor files (in a subprocess:
    torch stays out of the client process)."""
    code = (
        "import sys, torch\n"
        "from transformers import Wav2Vec2Config, Wav2Vec2ForCTC\n"
        f"torch.manual_seed({seed})\n"
        "Wav2Vec2ForCTC(Wav2Vec2Config()).save_pretrained(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(target)], check=True)
    for name in PROCESSOR_FILES:
        if (STANDIN_MODEL / name).is_file():
            shutil.copy(STANDIN_MODEL / name, target / name)


def model_geometry(model_dir: Path) -> tuple[int, int]:
    """(frame stride, receptive field) in samples, from the saved config's feature encoder."""
    cfg = json.loads((model_dir / "config.json").read_text())
    stride, field_, jump = 1, 1, 1
    for k, s in zip(cfg["conv_kernel"], cfg["conv_stride"]):
        field_ += (k - 1) * jump
        jump *= s
        stride *= s
    return stride, field_


# ----------------------------------------------------------------- server
@dataclass
class ServerProc:
    """`python -m streaming_asr serve` in its own process, on a free loopback port."""

    name: str
    max_batch: int
    proc: subprocess.Popen[str]
    port: int
    log_path: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(name: str, model_dir: Path, max_batch: int, threads: int, max_sessions: int,
                 log_dir: Path, extra_args: Sequence[str] = ()) -> ServerProc:
    log_path = log_dir / f"server-{name}.log"
    cmd = [sys.executable, "-m", "streaming_asr", "serve", "--host", "127.0.0.1", "--port", "0",
           "--model", str(model_dir), "--device", "cpu", "--threads", str(threads),
           "--max-batch", str(max_batch), "--max-sessions", str(max_sessions), "--idle-timeout", "300",
           *extra_args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    for line in proc.stdout:  # the CLI prints one line when it listens; nothing else on stdout
        if m := LISTEN_RE.search(line):
            return ServerProc(name, max_batch, proc, int(m.group(2)), log_path)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"server {name} did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")


# ----------------------------------------------------------------- audio
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


# ----------------------------------------------------------------- client
@dataclass
class ClientResult:
    frames: int
    send_times: list[float]  # when each frame's send() returned
    slips: list[float]  # send_times[i] - scheduled time of frame i
    partials: list[float]  # arrival times
    stop_sent: float = 0.0
    final_at: float | None = None  # the reason-stop final
    closed: bool = False
    finals: int = 0
    errors: list[str] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)


async def run_client(url: str, audio: np.ndarray, delay: float, timeout_s: float) -> ClientResult:
    """One real-time client: start, frames on a wall-clock schedule, stop; records every arrival."""
    await asyncio.sleep(delay)
    frames = [audio[i:i + FRAME_SAMPLES].tobytes() for i in range(0, audio.size, FRAME_SAMPLES)]
    res = ClientResult(frames=len(frames), send_times=[], slips=[], partials=[])
    async with connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm_s16le",
                                  "interim_results": True}))
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
                    res.partials.append(now)
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
        except asyncio.TimeoutError:
            res.errors.append(f"no close within {timeout_s:.0f} s of stop")
    return res


def window_samples(ready: dict[str, Any], j: int, stride: int, field_: int) -> int:
    """Samples the engine's j-th window (1-based) needs: chunk j plus the look-ahead, on the model's frame grid."""
    chunk = round(ready["chunk_s"] / ready["frame_s"])
    look = round(ready["lookahead_s"] / ready["frame_s"])
    return (j * chunk + look - 1) * stride + field_


def partial_latencies(res: ClientResult, stride: int, field_: int) -> list[float]:
    """Latency of each partial j = arrival - send time of the frame holding window j's last needed sample."""
    out = []
    for j, arrived in enumerate(res.partials, start=1):
        frame = (window_samples(res.ready, j, stride, field_) - 1) // FRAME_SAMPLES
        if frame >= len(res.send_times):
            break  # a partial of the flush after stop: not a real-time window
        out.append(arrived - res.send_times[frame])
    return out


def expected_windows(res: ClientResult, stride: int, field_: int) -> int:
    """Full windows the stream holds: the number of partials a server that keeps up sends before `stop`."""
    j = 0
    while window_samples(res.ready, j + 1, stride, field_) <= res.frames * FRAME_SAMPLES:
        j += 1
    return j


# ------------------------------------------------------------------- runs
async def sample_rss(ps: psutil.Process, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], ps.memory_info().rss)
        except psutil.Error:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass


async def run_load(server: ServerProc, streams: list[np.ndarray], chunk_s: float, stride: int, field_: int,
                   seed: int) -> dict[str, Any]:
    """N = len(streams) concurrent real-time clients against `server`; returns one result row."""
    n = len(streams)
    rng = random.Random(seed * 1000 + n)
    health0 = server.health()
    server.ps.cpu_percent(None)
    me = psutil.Process()
    cpu0 = (_busy(psutil.cpu_times()), _proc_cpu(server.ps), _proc_cpu(me))
    peak = [server.ps.memory_info().rss]
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server.ps, done, peak))
    audio_s = streams[0].size / RATE
    timeout_s = min(600.0, max(60.0, 2 * audio_s * n))
    t_start = time.monotonic()
    results = await asyncio.gather(*(run_client(server.ws_url, s, rng.uniform(0, chunk_s), timeout_s)
                                     for s in streams), return_exceptions=True)
    wall = time.monotonic() - t_start
    cpu = server.ps.cpu_percent(None)
    cpu1 = (_busy(psutil.cpu_times()), _proc_cpu(server.ps), _proc_cpu(me))
    client_cpu = 100 * (cpu1[2] - cpu0[2]) / wall
    background = 100 * ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2])) / wall
    done.set()
    await sampler
    health1 = await settle(server)

    ok = [r for r in results if isinstance(r, ClientResult)]
    errors = [repr(r) for r in results if not isinstance(r, ClientResult)]
    errors += [e for r in ok for e in r.errors]
    lats, first, last, slips, finals = [], [], [], [], []
    partials = windows = 0
    for r in ok:
        lat = partial_latencies(r, stride, field_)
        lats += lat
        third = max(1, len(lat) // 3)
        if len(lat) >= 3:
            first.append(statistics.median(lat[:third]))
            last.append(statistics.median(lat[-third:]))
        slips += r.slips
        if r.final_at is not None:
            finals.append(r.final_at - r.stop_sent)
        partials += len(lat)
        windows += expected_windows(r, stride, field_)
    b0, b1 = health0.get("batching", {}), health1.get("batching", {})
    batches = b1.get("batches", 0) - b0.get("batches", 0)
    computed = b1.get("windows", 0) - b0.get("windows", 0)
    compute_s = b1.get("compute_s", 0.0) - b0.get("compute_s", 0.0)
    row: dict[str, Any] = {
        "variant": server.name, "max_batch": server.max_batch, "clients": n, "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "partial_p50_s": _r(percentile(lats, 50)), "partial_p95_s": _r(percentile(lats, 95)),
        "partial_max_s": _r(max(lats) if lats else None),
        "lag_first_third_s": _r(statistics.median(first) if first else None),
        "lag_last_third_s": _r(statistics.median(last) if last else None),
        "final_p50_s": _r(percentile(finals, 50)), "final_max_s": _r(max(finals) if finals else None),
        "send_slip_p95_s": _r(percentile(slips, 95)), "send_slip_max_s": _r(max(slips) if slips else None),
        "partials": partials, "windows": windows,
        "partials_per_window": _r(partials / windows if windows else None),
        "server_cpu_pct": round(cpu, 1), "client_cpu_pct": round(client_cpu, 1),
        "background_cpu_pct": round(max(0.0, background), 1), "server_rss_peak_mb": round(peak[0] / 2**20, 1),
        "mean_batch": _r(computed / batches if batches else None),
        "model_busy_pct": round(100 * compute_s / wall, 1) if wall else None,
        "sessions_closed": sum(r.closed for r in ok), "errors": errors[:10],
    }
    row["lag_growth_s"] = _r(row["lag_last_third_s"] - row["lag_first_third_s"]) if first else None
    row["real_time"] = is_real_time(row, chunk_s, n)
    return row


def _busy(t: Any) -> float:
    """System-wide CPU seconds not idle (all cores)."""
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _proc_cpu(ps: psutil.Process) -> float:
    t = ps.cpu_times()
    return t.user + t.system


def is_real_time(row: dict[str, Any], chunk_s: float, n: int) -> bool:
    return (row["partial_p95_s"] is not None and row["partial_p95_s"] <= 2 * chunk_s
            and row["lag_growth_s"] is not None and row["lag_growth_s"] <= 0.5 * chunk_s
            and (row["send_slip_p95_s"] or 0.0) <= FRAME_S
            and row["sessions_closed"] == n and not row["errors"])


def clearly_broken(rows: list[dict[str, Any]], chunk_s: float) -> bool:
    """Two failures in a row, or one far past the limit: larger N would only take longer to say no."""
    if not rows or rows[-1]["real_time"]:
        return False
    p95 = rows[-1]["partial_p95_s"]
    return (p95 is None or p95 > 5 * chunk_s) or (len(rows) >= 2 and not rows[-2]["real_time"])


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


async def wait_for_quiet(max_pct: float, limit_s: float) -> float:
    """Wait (at most limit_s) until the whole machine is below max_pct CPU (our servers idle between runs)."""
    deadline = time.monotonic() + limit_s
    announced = False
    while True:
        b0 = _busy(psutil.cpu_times())
        await asyncio.sleep(2.0)
        pct = 100 * (_busy(psutil.cpu_times()) - b0) / 2.0
        if pct <= max_pct or time.monotonic() > deadline:
            return pct
        if not announced:
            print(f"  waiting for the machine to quieten down (other processes at {pct:.0f}% CPU) ...", flush=True)
            announced = True


async def settle(server: ServerProc, limit_s: float = 300.0) -> dict[str, Any]:
    """Wait until the server has no sessions and no queued windows (a timed-out run may still compute)."""
    deadline = time.monotonic() + limit_s
    while True:
        health = server.health()
        if (health.get("sessions") == 0 and health.get("queue_depth") == 0) or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.5)


async def warm_up(server: ServerProc, stream: np.ndarray) -> None:
    """One short session sent as fast as allowed: first forwards allocate; not measured."""
    async with connect(server.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm_s16le"}))
        await ws.recv()
        for i in range(0, min(stream.size, 8 * RATE), FRAME_SAMPLES):
            await ws.send(stream[i:i + FRAME_SAMPLES].tobytes())
        await ws.send(json.dumps({"type": "stop"}))
        async for message in ws:
            if json.loads(message).get("type") == "closed":
                break


async def bench(args: argparse.Namespace, model_dir: Path, log_dir: Path) -> dict[str, Any]:
    stride, field_ = model_geometry(model_dir)
    counts = [n for n in args.clients if n <= args.max_clients]
    streams = client_streams(max(counts), args.audio_s, args.seed)
    variants = [("batching on", args.batch), ("batching off", 1)]
    servers = [start_server(f"batch{b}", model_dir, b, args.threads, max(counts) + 4, log_dir,
                            shlex.split(args.server_args)) for _, b in variants]
    try:
        for s in servers:
            await warm_up(s, streams[0])
        probe = await run_client(servers[0].ws_url, streams[0][: 2 * RATE], 0.0, 60)
        chunk_s = float(probe.ready["chunk_s"])
        engine = {k: probe.ready[k] for k in ("chunk_s", "left_context_s", "lookahead_s", "frame_s",
                                              "endpoint_silence_s", "max_segment_s")}
        rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in variants}
        for n in counts:
            for (label, _), server in zip(variants, servers):
                done = rows[label]
                if clearly_broken(done, chunk_s):
                    continue
                await wait_for_quiet(args.max_background, args.quiet_wait)
                row = await run_load(server, streams[:n], chunk_s, stride, field_, args.seed)
                for _ in range(args.retries):
                    if row["background_cpu_pct"] <= args.max_background:
                        break
                    print(f"  {label:13s} N={n:3d}  other processes used {row['background_cpu_pct']}% CPU "
                          "during the run: running it again", flush=True)
                    await wait_for_quiet(args.max_background, args.quiet_wait)
                    again = await run_load(server, streams[:n], chunk_s, stride, field_, args.seed)
                    again["retried"] = True
                    if again["background_cpu_pct"] < row["background_cpu_pct"]:
                        row = again
                row["variant"] = label
                done.append(row)
                print(f"  {label:13s} N={n:3d}  partial p50 {row['partial_p50_s']} p95 {row['partial_p95_s']} s  "
                      f"final {row['final_p50_s']} s  cpu {row['server_cpu_pct']}%  batch {row['mean_batch']}  "
                      f"slip p95 {row['send_slip_p95_s']}  growth {row['lag_growth_s']}  "
                      f"bg {row['background_cpu_pct']}%  "
                      f"{'REAL TIME' if row['real_time'] else 'not real time'}"
                      + (f"  errors {row['errors'][:2]}" if row["errors"] else ""), flush=True)
                await asyncio.sleep(1.0)
            if all(clearly_broken(r, chunk_s) for r in rows.values()):
                break
        for s in servers:
            print(f"  {s.name}: health {json.dumps(s.health().get('batching'))}", flush=True)
    finally:
        for s in servers:
            s.stop()
    return {"engine": engine, "rows": rows, "chunk_s": chunk_s}


# ---------------------------------------------------------------- reports
def summarise(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    on, off = rows["batching on"], rows["batching off"]

    def largest(rs: list[dict[str, Any]]) -> int:
        return max((r["clients"] for r in rs if r["real_time"]), default=0)

    common = sorted({r["clients"] for r in on} & {r["clients"] for r in off})
    # compare p95 at the largest N both variants ran where at least one stayed real time
    fixed = max((n for n in common if any(r["clients"] == n and r["real_time"] for r in on + off)), default=None)
    p95 = {label: next((r["partial_p95_s"] for r in rs if r["clients"] == fixed), None)
           for label, rs in rows.items()}
    lon, loff = largest(on), largest(off)
    return {
        "largest_real_time_clients": {"batching on": lon, "batching off": loff},
        "largest_real_time_ratio_on_over_off": round(lon / loff, 2) if loff else None,
        "fixed_clients_for_p95": fixed,
        "p95_at_fixed_clients_s": p95,
        "mean_batch_at_fixed_clients": next((r["mean_batch"] for r in on if r["clients"] == fixed), None),
        "p95_ratio_off_over_on": (round(p95["batching off"] / p95["batching on"], 2)
                                  if fixed and p95["batching on"] and p95["batching off"] else None),
    }


def table_rows(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per N: both variants side by side and the off/on ratio of p95 partial latency."""
    by_n: dict[int, dict[str, dict[str, Any]]] = {}
    for label, rs in rows.items():
        for r in rs:
            by_n.setdefault(r["clients"], {})[label] = r
    out = []

    def pair(d: dict[str, dict[str, Any]], key: str, digits: int = 2) -> str:
        vals = [d.get(v, {}).get(key) for v in ("batching on", "batching off")]
        return " / ".join("—" if x is None else (("yes" if x else "no") if isinstance(x, bool)
                                                 else f"{x:.{digits}f}" if isinstance(x, float) else str(x))
                          for x in vals)

    for n in sorted(by_n):
        d = by_n[n]
        on, off = d.get("batching on", {}), d.get("batching off", {})
        ratio = (off["partial_p95_s"] / on["partial_p95_s"]
                 if on.get("partial_p95_s") and off.get("partial_p95_s") else None)
        out.append({
            "N": n, "p50": pair(d, "partial_p50_s"), "p95": pair(d, "partial_p95_s"),
            "ratio": None if ratio is None else round(ratio, 2),
            "final": pair(d, "final_p50_s"), "growth": pair(d, "lag_growth_s"),
            "slip": pair(d, "send_slip_p95_s"), "cpu": pair(d, "server_cpu_pct", 0),
            "busy": pair(d, "model_busy_pct", 0), "rss": pair(d, "server_rss_peak_mb", 0), "bg": pair(d, "background_cpu_pct", 0),
            "batch": on.get("mean_batch"),
            "rt": pair(d, "real_time"),
        })
    return out


TABLE_COLUMNS = {
    "N": "clients", "p50": "partial p50 s (on / off)", "p95": "partial p95 s (on / off)",
    "ratio": "p95 off/on", "final": "final after stop s", "growth": "lag growth s", "slip": "send slip p95 s",
    "cpu": "server CPU %", "busy": "model busy %", "rss": "peak RSS MB", "bg": "other procs CPU %", "batch": "mean batch (on)", "rt": "real time",
}


def plot(rows: dict[str, list[dict[str, Any]]], chunk_s: float, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = {"batching on": "tab:blue", "batching off": "tab:orange"}
    for label, rs in rows.items():
        ns = [r["clients"] for r in rs if r["partial_p95_s"] is not None]
        p50 = [r["partial_p50_s"] for r in rs if r["partial_p95_s"] is not None]
        p95 = [r["partial_p95_s"] for r in rs if r["partial_p95_s"] is not None]
        ax.plot(ns, p95, "o-", color=colours[label], label=f"{label}: p95")
        ax.plot(ns, p50, "s--", color=colours[label], alpha=0.7, label=f"{label}: p50")
        best = summary["largest_real_time_clients"][label]
        if best:
            dash = (0, (3, 3)) if label == "batching on" else (3, (3, 3))  # interleaved: both show when equal
            ax.axvline(best, color=colours[label], ls=dash, lw=2, label=f"largest real-time N, {label}: {best}")
    ax.axhline(2 * chunk_s, color="red", lw=1, ls="-.", label=f"real-time limit: p95 = 2 x chunk ({2 * chunk_s:.2f} s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}" if f"{y:.0e}"[0] in "235" else ""))
    all_n = sorted({r["clients"] for rs in rows.values() for r in rs})
    ax.set_xticks(all_n, [str(n) for n in all_n])
    ax.set_xlim(min(all_n) / 1.25, max(all_n) * 1.25)
    ax.set_xlabel("concurrent real-time clients (N)")
    ax.set_ylabel("partial latency (s, log)")
    ax.set_title("Partial latency vs load: wav2vec2-base (random weights), CPU", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


DEFINITION = (
    "Partial latency: arrival of the j-th partial minus the moment the client had sent all the audio window j "
    "needs (chunk j plus the look-ahead); excludes the look-ahead and the 100 ms framing, i.e. pure server + "
    "transport delay. Real time: p95 partial latency <= 2 x chunk, lag growth (last third minus first third "
    "of each stream) <= 0.5 x chunk, p95 send slip <= 0.1 s."
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: N in {1, 2}, 8 s of audio per client")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=list(FULL_CLIENTS),
                   help="client counts to try, comma-separated (default: %(default)s)")
    p.add_argument("--max-clients", type=int, default=64, help="largest N to try (%(default)s)")
    p.add_argument("--audio-s", type=float, default=25.0, help="seconds of audio per client (%(default)s)")
    p.add_argument("--batch", type=int, default=8, help="--max-batch of the batching-on server (%(default)s)")
    p.add_argument("--threads", type=int, default=2, help="server torch threads (%(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retries", type=int, default=1,
                   help="run an N again (keeping the quieter run) when other processes were busy (%(default)s)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each run, wait up to this many seconds for other processes to go quiet (%(default)s)")
    p.add_argument("--max-background", type=float, default=10.0,
                   help="CPU %% of other processes during a run above which it is retried (%(default)s)")
    p.add_argument("--server-args", default="",
                   help="extra `serve` options for both servers, e.g. '--quantize int8 --feature-cache'")
    p.add_argument("--name", default=None, help="results file stem (default: load, or load-quick with --quick)")
    p.add_argument("--keep-logs", type=Path, default=None, help="copy the server logs into this folder")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild load.md and load.png from bench/results/load.json without running anything")
    args = p.parse_args(argv)
    if args.report_only:
        name = "load-quick" if args.quick else "load"
        print(report(json.loads((RESULTS / f"{name}.json").read_text()), name))
        return 0
    if args.quick:
        args.clients, args.audio_s = [1, 2], 8.0

    started = time.monotonic()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="asr-load-") as tmp:
        model_dir = Path(tmp) / "wav2vec2-base-random"
        print(f"saving a random-weight wav2vec2-base to {model_dir} ...", flush=True)
        save_random_base_model(model_dir, args.seed)
        out = asyncio.run(bench(args, model_dir, Path(tmp)))
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for f in Path(tmp).glob("server-*.log"):
                shutil.copy(f, args.keep_logs / f.name)
    rows, chunk_s = out["rows"], out["chunk_s"]
    data = {
        "bench": "load", "command": " ".join([Path(sys.executable).name, "bench/load.py", *(argv or sys.argv[1:])]),
        "settings": {"clients_tried": args.clients, "max_clients": args.max_clients, "audio_s_per_client": args.audio_s,
                     "frame_s": FRAME_S, "sample_rate": RATE, "encoding": "pcm_s16le", "server_threads": args.threads,
                     "server_args": args.server_args,
                     "variants": {"batching on": {"max_batch": args.batch}, "batching off": {"max_batch": 1}},
                     "model": "Wav2Vec2ForCTC(Wav2Vec2Config()) random weights (base-size)",
                     "engine": out["engine"], "seed": args.seed, "quick": args.quick,
                     "real_time_criteria": {"partial_p95_max_s": 2 * chunk_s, "lag_growth_max_s": 0.5 * chunk_s,
                                            "send_slip_p95_max_s": FRAME_S}},
        "definitions": DEFINITION,
        "machine": info,
        "summary": summarise(rows),
        "rows": rows,
        "bench_wall_s": round(time.monotonic() - started, 1),
    }
    name = args.name or ("load-quick" if args.quick else "load")  # a smoke run never overwrites the full results
    path = write_results(name, data)
    md = report(data, name)
    if not args.quick:
        update_readme(name, md)  # README sections bench:load, bench:load-int8, ... when present
    print()
    print(md)
    print(f"wrote {path}, {RESULTS / f'{name}.md'}, {RESULTS / f'{name}.png'} in {data['bench_wall_s']:.0f} s")
    return 0


def report(data: dict[str, Any], name: str) -> str:
    """Write <name>.md (table + what it means, for the README) and <name>.png from a results dict."""
    rows, st, s, info = data["rows"], data["settings"], data["summary"], data["machine"]
    chunk_s = st["engine"]["chunk_s"]
    lon, loff = s["largest_real_time_clients"]["batching on"], s["largest_real_time_clients"]["batching off"]
    single = next((r for r in rows["batching off"] if r["clients"] == 1), None)
    meaning = (
        f"On this machine ({info['cpu_count']} CPU cores, torch {info['torch']}, {st['server_threads']} torch threads) "
        f"one server keeps **{lon}** concurrent real-time streams of the base-size model with batching "
        f"(`--max-batch {st['variants']['batching on']['max_batch']}`) and **{loff}** without (`--max-batch 1`)"
        + (f"; at N = {s['fixed_clients_for_p95']} batching-off p95 partial latency is "
           f"{s['p95_ratio_off_over_on']}x batching-on's (mean batch there: {s['mean_batch_at_fixed_clients']})"
           if s["p95_ratio_off_over_on"] else "")
        + (f". Each stream keeps the model thread about {single['model_busy_pct']:.0f} % busy, so about "
           f"{100 / single['model_busy_pct']:.1f} streams fill it whatever the batching: on CPU a batch costs about as much as its windows one by one, and batches "
           "only form once windows queue." if single and single["model_busy_pct"] else ".")
    )
    md = (f"{markdown_table(table_rows(rows), TABLE_COLUMNS)}\n\nCells are `batching on / batching off`; "
          f"{st['audio_s_per_client']:g} s of speech per client in 100 ms frames, chunk {chunk_s:g} s. "
          f"{data['definitions']}\n\n{meaning}\n")
    (RESULTS / f"{name}.md").write_text(md, encoding="utf-8")
    plot(rows, chunk_s, s, RESULTS / f"{name}.png")
    return md


if __name__ == "__main__":
    raise SystemExit(main())
