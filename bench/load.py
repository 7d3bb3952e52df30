"""Load bench: how many real-time streams one `serve` process keeps up with, per model variant, in one run.

N real-time clients (N = 1, 2, 4, 6, 8, ... until a variant clearly breaks) stream tts-dev speech
over loopback, each at wall-clock pace in 100 ms frames (clients start at random offsets within
one chunk), to servers in their own processes, one per variant, all started up front; each N is
run on every variant in turn, so background load on the machine hits all alike. The model is the
base-size wav2vec2 architecture (`Wav2Vec2ForCTC(Wav2Vec2Config())`, ~95M parameters) with random
weights: speed, not accuracy, is measured (bench/accuracy.py measures what the variants cost in
accuracy on the stand-in).

Variants: the previous default (fp32, every window recomputed, one model worker), feature reuse,
the `serve` default (no flags: precision auto, state reuse, auto workers), bf16 (only where the
CPU runs it natively), int8 recompute (the previous `--quantize int8`) and int8 with state reuse.

Measured per N and variant, as an independent client sees it:

* partial delay: a partial's arrival minus the moment the client had sent the audio up to the
  partial's `end`: pure server + transport delay (the chunk and look-ahead waits are outside it;
  bench/accuracy.py's word latency includes them);
* lag growth: median partial delay of the last third of each stream minus the first third;
* send slip: how late the client got its frames out (a backpressured client falls behind);
* final after stop; server CPU; peak RSS (and per added stream: slope over N); mean batch and how
  busy the model workers were (from /health); the CPU of other processes ("bg": a shared machine's
  noise; a run with more than `--max-background` % is run again once and the quieter run kept).

A run is "real time" when p95 partial delay <= 1 s, lag growth <= 0.5 x chunk, p95 send slip <= one
frame and every session closed cleanly. The limit row is one offline pass over 20 s of audio (no
recompute at all): the streams this CPU could hold at 100 % busy. The previous-default rows run
the previous default geometry (1.28 s left, 0.64 s chunk); the others the new one.

    python bench/load.py                 # full run (~20 min on 2 cores)
    python bench/load.py --quick         # smoke run: N in {1, 2}, 8 s per client, two variants
    python bench/load.py --soak 600      # + RSS over a 10-minute run at the largest real-time N

Writes bench/results/load.json, load.md (README section) and load.png; prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import REPO, RESULTS, STANDIN_MODEL, machine_info, percentile, update_readme, write_results  # noqa: E402
from load_client import FRAME_S, RATE, client_streams, run_client, warm_up  # noqa: E402
from load_report import DEFINITION, MAX_DELAY_S, largest_real_time, report, summarise  # noqa: E402

from streaming_asr.model.precision import cpu_has_native_bf16  # noqa: E402  (reads CPU flags; no torch)

PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "vocab.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
FULL_CLIENTS = (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32)
LISTEN_RE = re.compile(r"listening on ws://([\d.]+):(\d+)(/\S*)")
# the previous default: every window recomputed, one worker, its geometry (1.28 s left, 0.64 s chunk)
RECOMPUTE = "--feature-reuse off --state-reuse off --model-workers 1 --threads 2 --chunk 0.64 --left-context 1.28"
VARIANTS = [  # (label, extra `serve` args); "default" has none
    ("fp32 recompute (previous default)", f"--precision fp32 {RECOMPUTE}"),
    ("fp32 + feature reuse", "--precision fp32 --state-reuse off"),
    ("default (no flags)", ""),
    ("bf16 + state reuse", "--precision bf16"),
    ("int8 recompute (previous --quantize int8)", f"--precision int8 {RECOMPUTE}"),
    ("int8 + state reuse", "--precision int8"),
]


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


def offline_limit(model_dir: Path, precision: str, threads: int, seconds: float = 8.0) -> dict[str, Any]:
    """RTF of one offline forward over `seconds` of audio (best of 3), in a subprocess: 1 / RTF streams fill the CPU.

    8 s pieces: long enough that nothing is recomputed to speak of, short enough that attention's
    quadratic cost (which a 20 s pass pays here: RTF 0.30 vs 0.16) does not understate the limit."""
    code = (
        "import sys, time, numpy as np, torch\n"
        "from streaming_asr.model import CtcModel\n"
        f"torch.set_num_threads({threads})\n"
        f"m = CtcModel.load(sys.argv[1], device='cpu', precision='{precision}')\n"
        f"x = np.random.default_rng(0).normal(0, 1, int({seconds} * 16000)).astype(np.float32)\n"
        "m([x]); runs = []\n"
        "for _ in range(3):\n"
        "    t = time.perf_counter(); m([x]); runs.append(time.perf_counter() - t)\n"
        f"print(min(runs) / {seconds})\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)], check=True, capture_output=True, text=True, cwd=REPO
    )
    rtf = float(out.stdout.strip().splitlines()[-1])
    return {"precision": precision, "rtf": round(rtf, 4), "streams_at_100pct": round(1 / rtf, 1)}


# ----------------------------------------------------------------- server
@dataclass
class ServerProc:
    """`python -m streaming_asr serve` in its own process, on a free loopback port."""

    name: str
    args: str
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


def start_server(name: str, model_dir: Path, extra_args: str, max_sessions: int, log_dir: Path) -> ServerProc:
    log_path = log_dir / f"server-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"
    words = shlex.split(extra_args)
    env = dict(os.environ)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # leading NAME=VALUE: the server's environment
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    cmd = [
        sys.executable,
        "-m",
        "streaming_asr",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--max-sessions",
        str(max_sessions),
        "--idle-timeout",
        "300",
        *words,
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    for line in proc.stdout:  # the CLI prints one line when it listens; nothing else on stdout
        if m := LISTEN_RE.search(line):
            return ServerProc(name, extra_args, proc, int(m.group(2)), log_path)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"server {name} did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")


# ------------------------------------------------------------------- runs
async def sample_rss(ps: psutil.Process, stop: asyncio.Event, trace: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        try:
            trace.append((time.monotonic(), ps.memory_info().rss))
        except psutil.Error:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass


def _busy(t: Any) -> float:
    """System-wide CPU seconds not idle (all cores)."""
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _proc_cpu(ps: psutil.Process) -> float:
    t = ps.cpu_times()
    return t.user + t.system


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


async def run_load(server: ServerProc, streams: list[np.ndarray], chunk_s: float, seed: int) -> dict[str, Any]:
    """N = len(streams) concurrent real-time clients against `server`; returns one result row."""
    n = len(streams)
    rng = random.Random(seed * 1000 + n)
    health0 = server.health()
    server.ps.cpu_percent(None)
    me = psutil.Process()
    cpu0 = (_busy(psutil.cpu_times()), _proc_cpu(server.ps), _proc_cpu(me))
    trace: list[tuple[float, int]] = [(time.monotonic(), server.ps.memory_info().rss)]
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server.ps, done, trace))
    audio_s = streams[0].size / RATE
    timeout_s = min(600.0, max(60.0, 2 * audio_s * n))
    t_start = time.monotonic()
    results = await asyncio.gather(
        *(run_client(server.ws_url, s, rng.uniform(0, chunk_s), timeout_s) for s in streams), return_exceptions=True
    )
    wall = time.monotonic() - t_start
    cpu = server.ps.cpu_percent(None)
    cpu1 = (_busy(psutil.cpu_times()), _proc_cpu(server.ps), _proc_cpu(me))
    background = 100 * ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2])) / wall
    done.set()
    await sampler
    health1 = await settle(server)

    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)] + [e for r in ok for e in r.errors]
    delays, first, last, slips, finals = [], [], [], [], []
    for r in ok:
        d = r.partial_delays()
        delays += d
        third = max(1, len(d) // 3)
        if len(d) >= 3:
            first.append(statistics.median(d[:third]))
            last.append(statistics.median(d[-third:]))
        slips += r.slips
        if r.final_at is not None:
            finals.append(r.final_at - r.stop_sent)
    b0, b1 = health0.get("batching", {}), health1.get("batching", {})
    batches = b1.get("batches", 0) - b0.get("batches", 0)
    workers = health1.get("model_workers", 1)
    row: dict[str, Any] = {
        "variant": server.name,
        "clients": n,
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "partial_p50_s": _r(percentile(delays, 50)),
        "partial_p95_s": _r(percentile(delays, 95)),
        "partial_max_s": _r(max(delays) if delays else None),
        "lag_growth_s": _r(statistics.median(last) - statistics.median(first)) if first else None,
        "final_p50_s": _r(percentile(finals, 50)),
        "send_slip_p95_s": _r(percentile(slips, 95)),
        "partials": len(delays),
        "server_cpu_pct": round(cpu, 1),
        "background_cpu_pct": round(max(0.0, background), 1),
        "server_rss_peak_mb": round(max(r for _, r in trace) / 2**20, 1),
        "mean_batch": _r((b1.get("windows", 0) - b0.get("windows", 0)) / batches if batches else None),
        "model_busy_pct": round(100 * (b1.get("compute_s", 0.0) - b0.get("compute_s", 0.0)) / (wall * workers), 1),
        "model_workers": workers,
        "precision": health1.get("precision"),
        "state_reuse": health1.get("state_reuse"),
        "feature_reuse": health1.get("feature_reuse"),
        "sessions_closed": sum(r.closed for r in ok),
        "errors": errors[:10],
    }
    row["real_time"] = is_real_time(row, chunk_s, n)
    return row


def is_real_time(row: dict[str, Any], chunk_s: float, n: int) -> bool:
    return (
        row["partial_p95_s"] is not None
        and row["partial_p95_s"] <= MAX_DELAY_S
        and row["lag_growth_s"] is not None
        and row["lag_growth_s"] <= 0.5 * chunk_s
        and (row["send_slip_p95_s"] or 0.0) <= FRAME_S
        and row["sessions_closed"] == n
        and not row["errors"]
    )


def clearly_broken(rows: list[dict[str, Any]]) -> bool:
    """Two failures in a row, or one far past the limit: larger N would only take longer to say no."""
    if not rows or rows[-1]["real_time"]:
        return False
    p95 = rows[-1]["partial_p95_s"]
    return (p95 is None or p95 > 5 * MAX_DELAY_S) or (len(rows) >= 2 and not rows[-2]["real_time"])


async def wait_for_quiet(max_pct: float, limit_s: float) -> float:
    """Wait (at most limit_s) until the whole machine is below max_pct CPU (our servers idle between runs)."""
    deadline = time.monotonic() + limit_s
    while True:
        b0 = _busy(psutil.cpu_times())
        await asyncio.sleep(2.0)
        pct = 100 * (_busy(psutil.cpu_times()) - b0) / 2.0
        if pct <= max_pct or time.monotonic() > deadline:
            return pct


async def settle(server: ServerProc, limit_s: float = 300.0) -> dict[str, Any]:
    """Wait until the server has no sessions and no queued windows (a timed-out run may still compute)."""
    deadline = time.monotonic() + limit_s
    while True:
        health = server.health()
        if (health.get("sessions") == 0 and health.get("queue_depth") == 0) or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.5)


async def soak(server: ServerProc, streams: list[np.ndarray], chunk_s: float, seconds: float) -> dict[str, Any]:
    """Clients loop sessions for `seconds`; RSS sampled throughout; slope after the first fifth."""
    done = asyncio.Event()
    trace: list[tuple[float, int]] = []
    sampler = asyncio.create_task(sample_rss(server.ps, done, trace))
    t_end = time.monotonic() + seconds
    sessions = [0]

    async def loop(s: np.ndarray, i: int) -> None:
        await asyncio.sleep(i * chunk_s / max(1, len(streams)))
        while time.monotonic() < t_end:
            await run_client(server.ws_url, s, 0.0, 120)
            sessions[0] += 1

    await asyncio.gather(*(loop(s, i) for i, s in enumerate(streams)))
    done.set()
    await sampler
    t0 = trace[0][0]
    xs = np.array([t - t0 for t, _ in trace])
    ys = np.array([r / 2**20 for _, r in trace])
    warm = xs >= xs[-1] / 5
    slope = float(np.polyfit(xs[warm], ys[warm], 1)[0]) * 3600 if warm.sum() > 2 else None
    return {
        "variant": server.name,
        "clients": len(streams),
        "seconds": round(xs[-1], 1),
        "sessions": sessions[0],
        "rss_start_mb": round(float(ys[warm][0]), 1),
        "rss_end_mb": round(float(ys[-1]), 1),
        "rss_max_mb": round(float(ys.max()), 1),
        "rss_slope_mb_per_h": _r(slope, 1),
    }


async def bench(args: argparse.Namespace, model_dir: Path, log_dir: Path) -> dict[str, Any]:
    counts = [n for n in args.clients if n <= args.max_clients]
    streams = client_streams(max(counts), args.audio_s, args.seed)
    # the built-in variants run without admission (this bench finds the limit itself); --variant args say all
    common = "" if args.variant else " --max-load 0"
    servers = [
        start_server(label, model_dir, extra + common, max(counts) + 4, log_dir) for label, extra in args.variants
    ]
    try:
        for s in servers:
            await warm_up(s.ws_url, streams[0])
        engines: dict[str, dict[str, Any]] = {}
        for s in servers:  # each variant's own geometry: its chunk sets its lag-growth limit
            probe = await run_client(s.ws_url, streams[0][: 2 * RATE], 0.0, 60)
            engines[s.name] = {
                k: probe.ready[k]
                for k in ("chunk_s", "left_context_s", "lookahead_s", "frame_s", "endpoint_silence_s", "max_segment_s")
            }
        default = next((s for s in servers if s.args == ""), servers[0])
        engine = engines[default.name]
        rows: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for n in counts:
            for server in servers:
                done = rows[server.name]
                if clearly_broken(done):
                    continue
                await wait_for_quiet(args.max_background, args.quiet_wait)
                chunk_s = float(engines[server.name]["chunk_s"])
                row = await run_load(server, streams[:n], chunk_s, args.seed)
                if row["background_cpu_pct"] > args.max_background and args.retries:
                    await wait_for_quiet(args.max_background, args.quiet_wait)
                    again = await run_load(server, streams[:n], chunk_s, args.seed)
                    again["retried"] = True
                    row = again if again["background_cpu_pct"] < row["background_cpu_pct"] else row
                done.append(row)
                print(
                    f"  {server.name:42s} N={n:3d}  delay p50 {row['partial_p50_s']} p95 {row['partial_p95_s']} s"
                    f"  growth {row['lag_growth_s']}  slip {row['send_slip_p95_s']}  batch {row['mean_batch']}"
                    f"  busy {row['model_busy_pct']}%  rss {row['server_rss_peak_mb']} MB"
                    f"  bg {row['background_cpu_pct']}%"
                    f"  {'REAL TIME' if row['real_time'] else 'not real time'}"
                    + (f"  errors {row['errors'][:2]}" if row["errors"] else ""),
                    flush=True,
                )
                await asyncio.sleep(1.0)
            if all(clearly_broken(r) for r in rows.values()):
                break
        soak_result = None
        if args.soak:
            n = largest_real_time(rows[default.name]) or 1
            print(f"  soak: {n} looping clients on '{default.name}' for {args.soak:.0f} s ...", flush=True)
            soak_result = await soak(default, streams[:n], float(engine["chunk_s"]), args.soak)
            print(f"  soak: {soak_result}", flush=True)
    finally:
        for s in servers:
            s.stop()
    return {
        "engine": engine,
        "engines": engines,
        "rows": rows,
        "chunk_s": float(engine["chunk_s"]),
        "soak": soak_result,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: N in {1, 2}, 8 s per client, two variants")
    p.add_argument(
        "--clients",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(FULL_CLIENTS),
        help="client counts to try, comma-separated (default: %(default)s)",
    )
    p.add_argument("--max-clients", type=int, default=32, help="largest N to try (%(default)s)")
    p.add_argument("--audio-s", type=float, default=24.0, help="seconds of audio per client (%(default)s)")
    p.add_argument("--only", default=None, help="comma-separated substrings: run only the variants that match")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL::ARGS",
        help="run this variant (label and `serve` args) instead of the built-in list; repeatable",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads for the limit row (%(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retries", type=int, default=1, help="rerun an N once when other processes were busy")
    p.add_argument("--quiet-wait", type=float, default=60.0, help="wait up to this long for a quiet machine (s)")
    p.add_argument("--max-background", type=float, default=10.0, help="other processes' CPU %% that forces a rerun")
    p.add_argument("--soak", type=float, default=0.0, help="after the runs: soak the default for this many seconds")
    p.add_argument("--name", default=None, help="results file stem (default: load, or load-quick with --quick)")
    p.add_argument("--report-only", action="store_true", help="rebuild load.md/load.png from load.json")
    args = p.parse_args(argv)
    name = args.name or ("load-quick" if args.quick else "load")
    if args.report_only:
        print(report(json.loads((RESULTS / f"{name}.json").read_text()), name))
        return 0
    native = cpu_has_native_bf16()
    variants = [(label, extra) for label, extra in VARIANTS if native or "bf16" not in label]
    skipped = [] if native else ["bf16 (this CPU has no native BF16: oneDNN emulates it, ~30x slower than fp32)"]
    if args.quick:
        args.clients, args.audio_s = [1, 2], 8.0
        variants = [VARIANTS[0], VARIANTS[2]]
    if args.variant:
        variants = [tuple(v.split("::", 1)) for v in args.variant]  # type: ignore[misc]
    if args.only:
        keys = args.only.split(",")
        variants = [v for v in variants if any(k in v[0] for k in keys)]
    args.variants = variants

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="asr-load-") as tmp:
        model_dir = Path(tmp) / "wav2vec2-base-random"
        print(f"saving a random-weight wav2vec2-base to {model_dir} ...", flush=True)
        save_random_base_model(model_dir, args.seed)
        limits = [offline_limit(model_dir, p, args.threads) for p in ("fp32", "int8") + (("bf16",) if native else ())]
        print(f"  limits: {limits}", flush=True)
        out = asyncio.run(bench(args, model_dir, Path(tmp)))
    data = {
        "bench": "load",
        "command": " ".join([Path(sys.executable).name, "bench/load.py", *(argv or sys.argv[1:])]),
        "settings": {
            "clients_tried": args.clients,
            "audio_s_per_client": args.audio_s,
            "frame_s": FRAME_S,
            "sample_rate": RATE,
            "encoding": "pcm_s16le",
            "variants": dict(variants),
            "native_bf16": native,
            "model": "Wav2Vec2ForCTC(Wav2Vec2Config()) random weights (base-size)",
            "engine": out["engine"],
            "engines": out["engines"],
            "seed": args.seed,
            "quick": args.quick,
            "real_time_criteria": {
                "partial_p95_max_s": MAX_DELAY_S,
                "lag_growth_max_s": "0.5 x each variant's chunk",
                "send_slip_p95_max_s": FRAME_S,
            },
        },
        "definitions": DEFINITION,
        "machine": machine_info(),
        "limits": limits,
        "skipped": skipped,
        "summary": summarise(out["rows"], limits),
        "rows": out["rows"],
        "soak": out["soak"],
        "bench_wall_s": round(time.monotonic() - started, 1),
    }
    path = write_results(name, data)
    md = report(data, name)
    if not args.quick and not args.only and not args.variant:
        update_readme(name, md)
    print()
    print(md)
    print(f"wrote {path}, {RESULTS / f'{name}.md'}, {RESULTS / f'{name}.png'} in {data['bench_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
