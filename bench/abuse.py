"""Abuse bench: hostile and unlucky clients against real `streaming-asr serve` processes, in one run.

Every scenario gets its own server process (bench/load.py's `start_server`) on the base-size
architecture with random weights (`Wav2Vec2ForCTC(Wav2Vec2Config())`, like bench/load.py), or the
model given with `--model DIR`. Scenarios that are not about admission run with `--max-load 0`.
Each check is a row: measured value, target, pass/fail.

1. stall: one message must not stall the event loop. A thread GETs /health every 20 ms on a
   keep-alive connection; per message (a) a `start` with phrases at the limits (1000 x 20 chars),
   (b) a phrase bomb over them (1000 x 1 KB, expect `invalid_option`), (c) a 1 MiB text message,
   (d) JSON nested 100,000 deep, (e) a 4 MiB binary frame: the longest gap between /health answers
   minus the 20 ms period (target <= 100 ms) and the answer (error code) each got.
2. fuzz: ~500 random hostile messages (random JSON, wrong types and extreme values for every
   `start` field, NaN/Infinity, invalid UTF-8 in text frames, random binary incl. f32 NaN/inf) on
   12 connections, half of them started: `internal_error`s seen by clients or logged (target 0),
   and the server must still answer /health and run a valid session afterwards.
3. flood: K real-time sessions (K = /health capacity.default_sessions, 3 when None; at most 16),
   tts-dev speech in 100 ms frames for 20 s, while 200 more sockets connect within 5 s: a third
   send `start` (over capacity: must get `server_full`), a third never start, a third only send
   `ping` (both: `start_timeout`, or `server_full` from --max-unstarted / --max-sessions). Rows:
   p95 partial delay of the K sessions (arrival minus the moment the audio up to the partial's
   `end` had been sent, as in load_client; target <= 1 s, all K complete), over-capacity starts
   admitted and unexpected answers (target 0), internal errors (0), sessions left in /health (0).
4. stuck: server with --idle-timeout 5 --send-timeout 5 --start-timeout 5. Stuck clients:
   (a) start, audio at real time, never read (max_queue=1, 4 KB SO_RCVBUF); (a2) the same plus
   256-char-id pings as fast as it can, so the server's sends back up (send timeout); (b) half-open:
   raw TCP, handshake + `start`, then silent; (c) `start`, then only WebSocket pings (every 1 s);
   (cu) only WebSocket pings, never `start`. Time until /health `connections` is back to 0
   (target <= idle timeout + 5 s) and how many the server reaped (it no longer holds their TCP
   connection; per kind, the time from going stuck to being dropped).
5. shutdown: 10 clients start, then 3 clients of kind (a2) and 2 of kind (b) connect (2 s to back
   up), then the 10 stream real-time audio (2 s) and, per order, send `stop` / `finalize` / disconnect just
   before SIGTERM, or `stop` just after it; a fresh server per order. Time from SIGTERM to process exit (target
   <= close timeout (5 s) + 5 s) and finals lost (target 0): each talker must receive its final
   (reason stop or shutdown; the `finalize` order also its reason-finalize final); after a
   disconnect, the server log must show the session's `event=final` line.
6. rss: N short sessions (start, 1 s of audio, stop; 4 concurrent clients): server RSS after the
   first 20 % and at the end, MB per 1,000 sessions after warm-up (target < 5), peak RSS.
   `--soak S`: 4 clients loop short sessions for S seconds, RSS every 10 s, least-squares slope
   over the second half (target < 5 MB/h).

    python bench/abuse.py                         # full run (about 15 min on 2 cores)
    python bench/abuse.py --quick                 # smoke run (~5 min): 200 fuzz messages, 60 flood
                                                  # sockets x 8 s, 8 stuck, 1 s talkers, 200 sessions
                                                  # (writes abuse-quick.*)
    python bench/abuse.py --only stall,fuzz       # chosen scenarios (writes abuse-partial.*)
    python bench/abuse.py --quick --model ../shared/models/tts-ctc-small
    python bench/abuse.py --only rss --soak 3600  # + a one-hour RSS soak
    --serve-args 'STREAMING_ASR_TUNE_MALLOC=1 ...' adds to every server; --log-dir DIR keeps their logs.

Writes bench/results/abuse.json and abuse.md (README's `bench:abuse` section too, on a full run,
when README has that marker); prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from abuse_clients import (
    HealthProbe,
    Stuck,
    error_histogram,
    flood_socket,
    frames_of,
    fuzz_connection,  # noqa: E402
    half_open,
    log_findings,
    never_reader,
    one_message,
    outcome,
    server_ports,
    short_session,
    stall_cases,
    stream_real_time,
    talker,
    ws_pinger,
)
from common import RESULTS, fmt, machine_info, markdown_table, percentile, update_readme, write_results  # noqa: E402
from load import ServerProc, sample_rss, save_random_base_model, start_server  # noqa: E402
from load_client import client_streams, run_client  # noqa: E402
from websockets.exceptions import WebSocketException  # noqa: E402

SCENARIOS = ("stall", "fuzz", "flood", "stuck", "shutdown", "rss")
PROBE_S = 0.02
IDLE_S = CLOSE_S = 5.0
ORDERS = ("stop→SIGTERM", "finalize→SIGTERM", "SIGTERM→stop", "disconnect→SIGTERM")
COLUMNS = {
    "id": "#",
    "scenario": "scenario",
    "measured": "measured",
    "target": "target",
    "pass": "pass",
    "detail": "detail",
}


def row(key: str, scenario: str, value: Any, unit: str, target: str, ok: bool | None, detail: str = "") -> dict:
    shown = "—" if value is None else f"{fmt(value)} {unit}".strip()
    return {
        "id": key,
        "scenario": scenario,
        "value": value,
        "unit": unit,
        "measured": shown,
        "target": target,
        "pass": ok,
        "detail": detail,
    }


class Bench:
    """Shared state of one run: model, logs, seed, sizes; starts servers and reads their logs."""

    def __init__(self, args: argparse.Namespace, model_dir: Path, log_dir: Path) -> None:
        self.args, self.model_dir, self.log_dir = args, model_dir, log_dir
        self.quick, self.seed = args.quick, args.seed
        self.logs: dict[str, Any] = {}
        self.details: dict[str, Any] = {}

    def server(self, name: str, extra: str, max_sessions: int = 32) -> ServerProc:
        t = time.monotonic()
        # leading NAME=VALUE words: the server's environment; no drain: SIGTERM rows measure the cut to finals
        extra = f"{self.args.serve_args} {extra} --drain-timeout 0".strip()
        server = start_server(name, self.model_dir, extra, max_sessions, self.log_dir)
        print(f"  [{name}] server up in {time.monotonic() - t:.1f} s ({extra})", flush=True)
        return server

    def log(self, server: ServerProc) -> dict[str, Any]:
        found = log_findings(server.log_path)
        self.logs[server.name] = {"log": str(server.log_path), **{k: v for k, v in found.items() if k != "finals"}}
        return found


async def health(server: ServerProc) -> dict[str, Any]:
    return await asyncio.to_thread(server.health)


async def wait_health(server: ServerProc, cond: Callable[[dict], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not cond(h := await health(server)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return h


# ------------------------------------------------------------- scenarios
async def s_stall(b: Bench) -> list[dict]:
    server = b.server("stall", "--max-load 0 --start-timeout 5")
    probe = HealthProbe(server.port, PROBE_S)
    probe.start()
    await asyncio.sleep(1.0)
    rows = []
    try:
        for key, label, pre, msg, expect in stall_cases(random.Random(b.seed)):
            t0 = time.monotonic()
            try:
                got = await one_message(server.ws_url, pre, msg, 120)
                out = outcome(got)
            except (TimeoutError, OSError, WebSocketException) as exc:
                got, out = {"codes": [], "answer_s": None}, f"client error {type(exc).__name__}"
            await asyncio.sleep(0.3)
            gap = probe.max_gap(t0, time.monotonic())
            stall = None if gap is None else round(max(0.0, gap - PROBE_S) * 1000)
            rows.append(
                row(
                    key,
                    f"stall: {label}",
                    stall,
                    "ms",
                    f"≤ 100 ms; {' or '.join(expect)}",
                    stall is not None and stall <= 100 and out in expect,
                    f"got {out} after {got['answer_s']} s; codes {got['codes']}",
                )
            )
    finally:
        probe.halt.set()
        probe.join(5)
        server.stop()
    if probe.failures:
        rows[-1]["detail"] += f"; /health failed {probe.failures}x"
    b.log(server)
    return rows


async def s_fuzz(b: Bench) -> list[dict]:
    total, conns = (200, 6) if b.quick else (500, 12)
    server = b.server("fuzz", "--max-load 0 --start-timeout 5")
    try:
        rng = random.Random(b.seed + 2)
        per = -(-total // conns)  # < 50 per connection: too_many_errors would cut it short
        results = await asyncio.gather(
            *(fuzz_connection(server.ws_url, random.Random(rng.random()), per, i % 2 == 0) for i in range(conns))
        )
        h = await health(server)
        valid = await short_session(server.ws_url, client_streams(1, 1.0, b.seed)[0])
    finally:
        server.stop()
    log = b.log(server)
    seen = sum(c == "internal_error" for r in results for c in r["codes"]) + sum(r["close"] == 1011 for r in results)
    internal = seen + log["internal_errors"] + log["tracebacks"]
    alive = h.get("status") == "ok" and valid
    codes = error_histogram(results)
    b.details["fuzz"] = {
        "sent": sum(r["sent"] for r in results),
        "codes": codes,
        "closes": dict(Counter(r["close"] for r in results)),
        "client_errors": [r.get("client_error") for r in results],
    }
    top = ", ".join(f"{k} {v}" for k, v in list(codes.items())[:8])
    return [
        row(
            "2",
            "fuzz: internal errors from random hostile messages",
            internal,
            "",
            "0; still answering",
            internal == 0 and alive,
            f"{b.details['fuzz']['sent']} msgs on {conns} connections; replies: {top}; "
            f"closes {b.details['fuzz']['closes']}; afterwards /health ok and a valid session: {fmt(alive)}",
        )
    ]


async def s_flood(b: Bench) -> list[dict]:
    n_flood, audio_s = (60, 8.0) if b.quick else (200, 20.0)
    server = b.server("flood", "--start-timeout 5", 32)
    try:
        cap = (await health(server))["capacity"]
        k_cap = cap.get("default_sessions")
        k = max(1, min(k_cap or 3, 16))
        url = server.ws_url
        rt = [
            asyncio.create_task(run_client(url, s, i * 0.05, 120))
            for i, s in enumerate(client_streams(k, audio_s, b.seed))
        ]
        await wait_health(server, lambda h: h["sessions"] >= k or all(t.done() for t in rt), 60)
        rng = random.Random(b.seed + 3)
        kinds = [("start", "never", "ping")[i % 3] for i in range(n_flood)]
        flood = await asyncio.gather(
            *(flood_socket(url, kd, rng.uniform(0, min(5.0, audio_s / 3)), 30) for kd in kinds)
        )
        results = await asyncio.gather(*rt, return_exceptions=True)
        left = await wait_health(server, lambda h: h["sessions"] == 0 and h["connections"] == 0, 20)
    finally:
        server.stop()
    log = b.log(server)
    ok_rt = [r for r in results if not isinstance(r, BaseException)]
    delays = [d for r in ok_rt for d in r.partial_delays()]
    slips = [s for r in ok_rt for s in r.slips]
    completed = sum(r.closed and r.final_at is not None and not r.errors for r in ok_rt)
    p95 = percentile(delays, 95)
    outcomes = Counter(f"{f['kind']}:{f['outcome']}" for f in flood)
    expected = {
        "start": ("server_full",),
        "never": ("server_full", "start_timeout"),
        "ping": ("server_full", "start_timeout"),
    }
    over = sum(f["kind"] == "start" and f["outcome"] == "ready" for f in flood)
    spare = max(0, k_cap - k) if k_cap else 0
    odd = [f for f in flood if f["outcome"] not in expected[f["kind"]] and f["outcome"] != "ready"]
    refused = sum(f["outcome"] == "server_full" for f in flood)
    at_handshake = sum(
        f["outcome"] == "server_full" and not any(w in f.get("message", "") for w in ("capacity", "behind"))
        for f in flood
    )  # the admission's refusals name the capacity or the model's delay
    internal = (
        sum(f["outcome"] == "internal_error" for f in flood)
        + log["internal_errors"]
        + log["tracebacks"]
        + sum("internal_error" in e for r in ok_rt for e in r.errors)
        + sum(isinstance(r, BaseException) for r in results)
    )
    b.details["flood"] = {
        "capacity": cap,
        "k": k,
        "outcomes": dict(outcomes),
        "odd": odd[:10],
        "rt_errors": [e for r in ok_rt for e in r.errors][:10]
        + [repr(r) for r in results if isinstance(r, BaseException)][:5],
    }
    rt_detail = (
        f"K={k} (default_sessions {k_cap}), {audio_s:g} s each; completed {completed}/{k}; p50 "
        f"{fmt(percentile(delays, 50))} s; send slip p95 {fmt(percentile(slips, 95))} s"
    )
    return [
        row(
            "3a",
            f"flood ({n_flood} sockets): p95 partial delay, admitted real-time sessions",
            p95,
            "s",
            "≤ 1 s; all complete",
            p95 is not None and p95 <= 1.0 and completed == k,
            rt_detail,
        ),
        row(
            "3b",
            "flood: over-capacity starts admitted / unexpected answers",
            over + len(odd),
            "",
            f"≤ {spare} (spare capacity)" if spare else "0",
            over <= spare and not odd,
            f"accepted {k + over} (K + {over}), refused {refused} server_full "
            f"({at_handshake} at the handshake), {sum(f['outcome'] == 'start_timeout' for f in flood)} start_timeout; "
            f"unexpected: {dict(Counter(f['kind'] + ':' + f['outcome'] for f in odd)) or 'none'}",
        ),
        row("3c", "flood: internal errors", internal, "", "0", internal == 0),
        row(
            "3d",
            "flood: sessions / connections left after all closed",
            left["sessions"],
            "",
            "0",
            left["sessions"] == 0 and left["connections"] == 0,
            f"connections {left['connections']}, "
            f"unstarted {left.get('unstarted')}, capacity used {left['capacity'].get('used')}",
        ),
    ]


async def open_stuck(kind: str, server: ServerProc, frames: list[bytes]) -> Stuck:
    if kind in ("a", "a2"):
        return await never_reader(server.ws_url, server.port, frames, kind == "a2")
    if kind == "b":
        return await half_open(server.port)
    return await ws_pinger(server.ws_url, kind == "c")


def drop(stuck: list[Stuck]) -> None:
    for s in stuck:
        if s.task is not None:
            s.task.cancel()
        try:
            s.closer()
        except Exception:  # noqa: BLE001 - already gone
            pass


async def s_stuck(b: Bench) -> list[dict]:
    counts = {"a": 2, "a2": 1, "b": 2, "c": 2, "cu": 1} if b.quick else {"a": 3, "a2": 2, "b": 3, "c": 3, "cu": 2}
    server = b.server("stuck", f"--max-load 0 --idle-timeout {IDLE_S:g} --send-timeout 5 --start-timeout 5")
    frames = frames_of(client_streams(1, 10.0, b.seed)[0])
    stuck: list[Stuck] = []
    t_back = None
    try:
        for kind, n in counts.items():
            stuck += [await open_stuck(kind, server, frames) for _ in range(n)]
        t_all = time.monotonic()
        deadline = t_all + IDLE_S + 30
        while time.monotonic() < deadline:
            ports, h = server_ports(server.ps), await health(server)
            now = time.monotonic()
            for s in stuck:
                if s.gone_at is None and s.port not in ports:
                    s.gone_at = now
            if t_back is None and h["connections"] == 0:
                t_back = round(now - t_all, 2)
            if t_back is not None and all(s.gone_at for s in stuck):
                break
            await asyncio.sleep(0.2)
    finally:
        drop(stuck)
        server.stop()
    log = b.log(server)
    per_kind = []
    for kind in counts:
        ks = [s for s in stuck if s.kind == kind]
        times = [s.gone_at - s.stuck_at for s in ks if s.gone_at]
        per_kind.append(f"{kind} {len(times)}/{len(ks)}" + (f" (max {max(times):.1f} s)" if times else ""))
    b.details["stuck"] = {
        "per_kind": per_kind,
        "client_saw": {s.kind + str(i): s.client_saw for i, s in enumerate(stuck)},
        "slow_consumer_logged": log["slow_consumer"],
    }
    reaped = sum(s.gone_at is not None for s in stuck)
    return [
        row(
            "4",
            f"stuck clients reaped ({len(stuck)}): until /health connections back",
            t_back,
            "s",
            f"≤ {IDLE_S + 5:g} s; all reaped",
            t_back is not None and t_back <= IDLE_S + 5 and reaped == len(stuck),
            f"reaped {reaped}/{len(stuck)}, per kind (time from stuck to dropped): "
            + ", ".join(per_kind)
            + f"; slow_consumer logged {log['slow_consumer']}",
        )
    ]


async def s_shutdown(b: Bench) -> list[dict]:
    audio_s = 1.0 if b.quick else 2.0
    streams = client_streams(10, audio_s, b.seed)
    rows = []
    for i, order in enumerate(ORDERS):
        server = b.server(f"shutdown {order}", "--max-load 0", 32)
        stuck: list[Stuck] = []
        talkers: list[Any] = []
        try:
            talkers = await asyncio.gather(*(talker(server.ws_url) for _ in range(10)))  # admitted before the floods
            stuck = [await open_stuck("a2", server, frames_of(streams[0])) for _ in range(3)]
            stuck += [await open_stuck("b", server, []) for _ in range(2)]
            await asyncio.sleep(2.0)  # the (a2) clients' buffers fill up
            await asyncio.gather(*(stream_real_time(t.ws, s) for t, s in zip(talkers, streams)), return_exceptions=True)
            verb = order.replace("SIGTERM", "").strip("→")

            async def act(t: Any, verb: str = verb) -> None:
                if verb == "disconnect":
                    t.ws.transport.abort()
                else:
                    await t.ws.send(json.dumps({"type": verb}))

            if order.startswith("SIGTERM"):
                t_sig = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                await asyncio.gather(*(act(t) for t in talkers), return_exceptions=True)
            else:
                await asyncio.gather(*(act(t) for t in talkers), return_exceptions=True)
                t_sig = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(server.proc.wait, 60)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                code = None
            exit_s = round(time.monotonic() - t_sig, 2) if code is not None else None
            await asyncio.wait([t.receiver for t in talkers], timeout=10)
        finally:
            drop(stuck)
            for t in talkers:
                t.receiver.cancel()
                t.ws.transport.abort()
            server.stop()
        log = b.log(server)
        if verb == "disconnect":
            lost = [
                t.session_id
                for t in talkers
                if not set(log["finals"].get(t.session_id, ())) & {"disconnect", "shutdown"}
            ]
        else:
            need = [{"finalize"}] if verb == "finalize" else []
            lost = [
                t.session_id
                for t in talkers
                if not all(n & set(t.final_reasons()) for n in need + [{"stop", "shutdown"}])
            ]
        reasons = (
            Counter(r for t in talkers for r in t.final_reasons())
            if verb != "disconnect"
            else Counter(r for t in talkers for r in log["finals"].get(t.session_id, ()))
        )
        b.details[f"shutdown {order}"] = {
            "exit_code": code,
            "exit_s": exit_s,
            "lost": lost,
            "final_reasons": dict(reasons),
            "talker_closes": dict(Counter(t.got["close"] for t in talkers)),
        }
        rows.append(
            row(
                f"5{'abcd'[i]}",
                f"shutdown, 5 stuck + 10 talkers, {order}: SIGTERM to exit / finals lost",
                exit_s,
                f"s / {len(lost)} lost",
                f"≤ {CLOSE_S + 5:g} s / 0",
                exit_s is not None and exit_s <= CLOSE_S + 5 and not lost and code == 0,
                f"exit code {code}; finals {dict(reasons)}"
                + (
                    "  (from the server log)"
                    if verb == "disconnect"
                    else f"; closes {dict(Counter(t.got['close'] for t in talkers))}"
                ),
            )
        )
    return rows


async def loop_sessions(
    url: str, streams: list[np.ndarray], more: Callable[[], bool], done: Callable[[bool], None]
) -> None:
    async def worker(audio: np.ndarray) -> None:
        while more():
            done(await short_session(url, audio))

    await asyncio.gather(*(worker(s) for s in streams))


async def s_rss(b: Bench) -> list[dict]:
    n = 200 if b.quick else b.args.sessions
    warm_n = n // 5
    server = b.server("rss", "--max-load 0", 32)
    streams = client_streams(4, 1.0, b.seed)
    state = {"started": 0, "done": 0, "failed": 0}
    points: list[tuple[int, int]] = []

    def more() -> bool:
        state["started"] += 1
        return state["started"] <= n

    def done(ok: bool) -> None:
        state["done"] += 1
        state["failed"] += not ok
        points.append((state["done"], server.ps.memory_info().rss))

    trace: list[tuple[float, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server.ps, stop, trace))
    t0 = time.monotonic()
    try:
        await loop_sessions(server.ws_url, streams, more, done)
        soak = await s_soak(b, server, streams) if b.args.soak else None
    finally:
        stop.set()
        await sampler
        server.stop()
    b.log(server)
    warm = next(r for d, r in points if d >= warm_n)
    end = points[-1][1]
    per_k = (end - warm) / 2**20 / max(1, n - warm_n) * 1000
    xs, ys = np.array([d for d, _ in points if d >= warm_n]), np.array([r / 2**20 for d, r in points if d >= warm_n])
    fit = float(np.polyfit(xs, ys, 1)[0]) * 1000 if xs.size > 2 else None
    peak = max(r for _, r in trace) / 2**20
    b.details["rss"] = {
        "sessions": n,
        "failed": state["failed"],
        "wall_s": round(time.monotonic() - t0, 1),
        "rss_warm_mb": round(warm / 2**20, 1),
        "rss_end_mb": round(end / 2**20, 1),
        "fit_mb_per_1000": None if fit is None else round(fit, 2),
        "peak_mb": round(peak, 1),
    }
    rows = [
        row(
            "6",
            f"RSS growth per 1,000 short sessions ({n} run, 4 clients)",
            round(per_k, 2),
            "MB",
            "< 5 MB",
            per_k < 5 and state["failed"] == 0,
            f"RSS {warm / 2**20:.0f} MB after {warm_n} → {end / 2**20:.0f} MB after {n}; least-squares "
            f"{fmt(fit)} MB/1000; peak {peak:.0f} MB; failed sessions {state['failed']}",
        )
    ]
    if soak is not None:
        rows.append(soak)
    return rows


async def s_soak(b: Bench, server: ServerProc, streams: list[np.ndarray]) -> dict:
    """--soak: 4 looping clients, RSS every 10 s, slope over the second half."""
    t_end = time.monotonic() + b.args.soak
    trace: list[tuple[float, float]] = []
    count = [0, 0]

    async def sample() -> None:
        while time.monotonic() < t_end:
            trace.append((time.monotonic(), server.ps.memory_info().rss / 2**20))
            await asyncio.sleep(10.0)

    def done(ok: bool) -> None:
        count[0] += 1
        count[1] += not ok

    await asyncio.gather(sample(), loop_sessions(server.ws_url, streams, lambda: time.monotonic() < t_end, done))
    trace.append((time.monotonic(), server.ps.memory_info().rss / 2**20))
    xs, ys = np.array([t - trace[0][0] for t, _ in trace]), np.array([r for _, r in trace])
    half = xs >= xs[-1] / 2
    slope = float(np.polyfit(xs[half], ys[half], 1)[0]) * 3600 if half.sum() > 2 else None
    b.details["soak"] = {
        "seconds": b.args.soak,
        "sessions": count[0],
        "failed": count[1],
        "trace_mb": [(round(x, 1), round(y, 1)) for x, y in zip(xs, ys)],
    }
    return row(
        "6s",
        f"soak {b.args.soak:g} s, 4 looping clients: RSS slope (second half)",
        None if slope is None else round(slope, 2),
        "MB/h",
        "< 5 MB/h",
        slope is not None and slope < 5 and not count[1],
        f"{count[0]} sessions, {count[1]} failed; RSS {ys[0]:.0f} → {ys[-1]:.0f} MB",
    )


# ----------------------------------------------------------------- report
def report(data: dict[str, Any]) -> str:
    rows = data["rows"]
    passed = sum(r["pass"] is True for r in rows)
    judged = sum(r["pass"] is not None for r in rows)
    m = data["machine"]
    lines = [
        f"Hostile and unlucky clients against `streaming-asr serve` ({data['settings']['model']}; "
        f"{m['cpu_count']} x {m['cpu_model']}; `{data['command']}`): {passed} of {judged} checks pass.",
        "",
        markdown_table(rows, COLUMNS),
    ]
    bad = {k: v["bad_lines"] for k, v in data["logs"].items() if v["bad_lines"]}
    if bad:
        lines += ["", "Server log lines with errors:", ""]
        lines += [f"- {k}: `{ln[:300]}`" for k, v in bad.items() for ln in v[:5]]
    return "\n".join(lines) + "\n"


async def bench(b: Bench, chosen: list[str]) -> list[dict]:
    rows: list[dict] = []
    for name in chosen:
        print(f"scenario {name} ...", flush=True)
        try:
            new = await globals()[f"s_{name}"](b)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not cost the others
            new = [row(name, f"{name}: the scenario itself failed", None, "", "—", False, repr(exc)[:300])]
        for r in new:
            print(
                f"  {r['id']:3s} {r['scenario'][:70]:70s} {r['measured']:>14s}  target {r['target']:24s} "
                f"{ {True: 'PASS', False: 'FAIL', None: 'info'}[r['pass']] }  {r['detail'][:160]}",
                flush=True,
            )
        rows += new
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small counts")
    p.add_argument("--only", default=None, help=f"comma-separated scenarios to run, of: {', '.join(SCENARIOS)}")
    p.add_argument("--model", type=Path, default=None, help="model dir (default: a random-weight wav2vec2-base)")
    p.add_argument("--sessions", type=int, default=1000, help="short sessions for the RSS scenario (%(default)s)")
    p.add_argument("--soak", type=float, default=0.0, help="after the RSS scenario: soak this many seconds (off)")
    p.add_argument(
        "--serve-args",
        default="",
        help="extra `serve` args for every server, e.g. 'STREAMING_ASR_TUNE_MALLOC=1 --precision int8'",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", type=Path, default=None, help="keep the server logs here (default: a temp dir)")
    p.add_argument("--name", default=None, help="results file stem (default: abuse, abuse-quick or abuse-partial)")
    args = p.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    if args.soak and "rss" not in chosen:
        chosen.append("rss")
    unknown = set((args.only or "").split(",")) - set(SCENARIOS) - {""}
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    full = not args.quick and chosen == list(SCENARIOS)
    name = args.name or ("abuse-quick" if args.quick else "abuse" if full else "abuse-partial")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="asr-abuse-") as tmp:
        log_dir = args.log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        if args.model is not None:
            model_dir, model = args.model.resolve(), str(args.model)
        else:
            model_dir, model = Path(tmp) / "wav2vec2-base-random", "Wav2Vec2ForCTC(Wav2Vec2Config()) random weights"
            print(f"saving a random-weight wav2vec2-base to {model_dir} ...", flush=True)
            save_random_base_model(model_dir, args.seed)
        b = Bench(args, model_dir, log_dir)
        rows = asyncio.run(bench(b, chosen))
    data = {
        "bench": "abuse",
        "command": " ".join(["python", "bench/abuse.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {
            "model": model,
            "serve_args": args.serve_args,
            "quick": args.quick,
            "scenarios": chosen,
            "seed": args.seed,
            "probe_period_s": PROBE_S,
            "idle_timeout_s": IDLE_S,
            "close_timeout_s": CLOSE_S,
        },
        "machine": machine_info(),
        "rows": rows,
        "details": b.details,
        "logs": b.logs,
        "bench_wall_s": round(time.monotonic() - started, 1),
    }
    path = write_results(name, data)
    md = report(data)
    (RESULTS / f"{name}.md").write_text(md, encoding="utf-8")
    in_readme = full and update_readme("abuse", md)
    print()
    print(md)
    print(f"wrote {path}, {RESULTS / f'{name}.md'}{' and README' if in_readme else ''} in {data['bench_wall_s']:.0f} s")
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
