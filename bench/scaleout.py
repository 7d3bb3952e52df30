"""Scale-out bench: one replica vs two behind deploy/nginx.conf on this machine, and the proxy hop's cost.

The same real-time client load (bench/load.py's clients: tts-dev speech in 100 ms frames at wall-clock
pace, N = 1, 2, 3, ... until a target clearly breaks) is run, N by N, against three targets, each in
turn so that background load hits all alike:

* `direct`: one replica, clients connect to it straight;
* `nginx -> 1`: the same replica behind Debian's nginx with deploy/nginx.conf (rendered with this
  run's ports): the proxy hop and nothing else;
* `nginx -> 2`: two replicas behind nginx (least_conn), each given half the machine's threads and one
  model worker, so that the two together use the cores the single replica uses.

Replicas run the base-size architecture with random weights (speed, not accuracy), int8 with state
reuse (bench/load.py's best variant on CPUs without native BF16). Reported per target: the largest N
held in real time (p95 partial delay <= 1 s and bench/load.py's other criteria), and as ratios in one
run: p50/p95 partial delay through nginx over direct at the same N (the proxy hop), and two replicas'
real-time streams over one replica's. On one machine, two replicas share the same cores, so this
measures what a replica split costs or gains here; across machines each replica brings its own.

    python bench/scaleout.py             # ~10 min on 2 cores
    python bench/scaleout.py --quick     # N in {1, 2}, 8 s per client

Writes bench/results/scaleout.json and scaleout.md (README section `scaleout`); prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import REPO, fmt, machine_info, markdown_table, update_readme, write_results  # noqa: E402
from load import (  # noqa: E402
    ServerProc,
    clearly_broken,
    run_load,
    save_random_base_model,
    start_server,
    wait_for_quiet,
)
from load_client import client_streams, warm_up  # noqa: E402
from load_report import MAX_DELAY_S, largest_real_time  # noqa: E402

REPLICA = "--precision int8 --max-load 0"
CHUNK_S = 0.48  # the serve default's chunk (lag-growth criterion); checked against `ready` below


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """deploy/nginx.conf with this run's ports, its upstream block listing `ports`; nginx in the foreground."""

    def __init__(self, ports: list[int], prefix: Path) -> None:
        self.port = free_port()
        conf = (REPO / "deploy" / "nginx.conf").read_text()
        servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in ports)
        conf = re.sub(r"(        server 127\.0\.0\.1:@PORT_[AB]@ max_fails=0;\n)+", servers, conf)
        for word, value in (("@PREFIX@", str(prefix)), ("@LISTEN@", str(self.port))):
            conf = conf.replace(word, value)
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "nginx.conf").write_text(conf)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        cmd = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {self.proc.stderr.read().decode()}") from None  # type: ignore[union-attr]
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class ProcGroup:
    """The psutil.Process calls run_load makes, summed over processes (replicas plus nginx's workers)."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs

    def _all(self) -> list[psutil.Process]:
        out = []
        for p in self.procs:
            out.append(p)
            out += p.children(recursive=True)
        return out

    def cpu_percent(self, interval: None) -> float:
        return sum(p.cpu_percent(interval) for p in self.procs)

    def memory_info(self) -> Any:
        class Rss:
            rss = sum(p.memory_info().rss for p in self.procs)

        return Rss()

    def cpu_times(self) -> Any:
        times = [p.cpu_times() for p in self._all()]

        class Times:
            user = sum(t.user for t in times)
            system = sum(t.system for t in times)

        return Times()


class Target:
    """What run_load needs of a server (name, ws_url, health(), ps), for replicas behind an address."""

    def __init__(self, name: str, port: int, replicas: list[ServerProc], extra: list[psutil.Process]) -> None:
        self.name, self.port, self.replicas = name, port, replicas
        self.ps = ProcGroup([r.ps for r in replicas] + extra)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def health(self) -> dict[str, Any]:
        """The replicas' /health, summed where run_load reads sums."""
        parts = [r.health() for r in self.replicas]
        batching = {k: sum(p.get("batching", {}).get(k, 0) for p in parts) for k in ("batches", "windows", "compute_s")}
        return {
            **parts[0],
            "sessions": sum(p.get("sessions", 0) for p in parts),
            "queue_depth": sum(p.get("queue_depth", 0) for p in parts),
            "model_workers": sum(p.get("model_workers", 1) for p in parts),
            "batching": batching,
        }

    def sessions_served(self) -> list[int]:
        """Sessions each replica has ended so far (its /metrics `streaming_asr_sessions_total`)."""
        out = []
        for r in self.replicas:
            with urllib.request.urlopen(f"http://127.0.0.1:{r.port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            out.append(
                int(
                    sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines()
                        if line.startswith("streaming_asr_sessions_total{")
                    )
                )
            )
        return out


async def bench(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, Any]:
    cores = os.cpu_count() or 2
    half = max(1, cores // 2)
    streams = client_streams(max(args.clients), args.audio_s, args.seed)
    one = start_server("one replica", model_dir, REPLICA, 64, work)
    two = [
        start_server(f"replica {i}", model_dir, f"{REPLICA} --threads {half} --model-workers 1", 64, work)
        for i in (1, 2)
    ]
    proxies = [Nginx([one.port], work / "nginx-1"), Nginx([r.port for r in two], work / "nginx-2")]
    try:
        nginx_ps = [psutil.Process(p.proc.pid) for p in proxies]
        targets = [
            Target("direct (1 replica)", one.port, [one], []),
            Target("nginx -> 1 replica", proxies[0].port, [one], [nginx_ps[0]]),
            Target(f"nginx -> 2 replicas ({half} thread(s), 1 worker each)", proxies[1].port, two, [nginx_ps[1]]),
        ]
        for t in (targets[0], targets[2], targets[2]):  # both replicas behind nginx get a warm-up
            await warm_up(t.ws_url, streams[0])
        rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for n in args.clients:
            for t in targets:
                done = rows[t.name]
                if clearly_broken(done):
                    continue
                await wait_for_quiet(args.max_background, args.quiet_wait)
                row = await run_load(t, streams[:n], CHUNK_S, args.seed)  # type: ignore[arg-type]
                row["replica_sessions_total"] = t.sessions_served()
                done.append(row)
                print(
                    f"  {t.name:48s} N={n:2d}  delay p50 {row['partial_p50_s']} p95 {row['partial_p95_s']} s"
                    f"  growth {row['lag_growth_s']}  busy {row['model_busy_pct']}%  bg {row['background_cpu_pct']}%"
                    f"  {'REAL TIME' if row['real_time'] else 'not real time'}"
                    + (f"  errors {row['errors'][:2]}" if row["errors"] else ""),
                    flush=True,
                )
                await asyncio.sleep(1.0)
            if all(clearly_broken(r) for r in rows.values()):
                break
    finally:
        for p in proxies:
            p.stop()
        for s in [one, *two]:
            s.stop()
    return {"rows": rows, "targets": [t.name for t in targets], "threads_per_split_replica": half}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    direct, hop, split = (data["rows"][name] for name in data["targets"])
    held = {name: largest_real_time(data["rows"][name]) for name in data["targets"]}
    hops = []
    for d in direct:
        h = next((r for r in hop if r["clients"] == d["clients"]), None)
        if h is None or not d["real_time"]:
            continue
        hops.append(
            {
                "clients": d["clients"],
                "direct_p50_s": d["partial_p50_s"],
                "nginx_p50_s": h["partial_p50_s"],
                "p50_ratio": _ratio(h["partial_p50_s"], d["partial_p50_s"]),
                "direct_p95_s": d["partial_p95_s"],
                "nginx_p95_s": h["partial_p95_s"],
                "p95_ratio": _ratio(h["partial_p95_s"], d["partial_p95_s"]),
            }
        )
    spread = [r["replica_sessions_total"] for r in split]
    return {
        "held": held,
        "split_over_one": _ratio(held[data["targets"][2]], held[data["targets"][0]]),
        "hop": hops,
        "split_sessions_per_replica": spread[-1] if spread else None,
    }


def report(data: dict[str, Any]) -> str:
    s = data["summary"]
    names = data["targets"]
    table = markdown_table(
        [{"target": n, "held": s["held"][n]} for n in names],
        {"target": "target", "held": f"largest N in real time (p95 partial delay <= {MAX_DELAY_S:g} s, no lag growth)"},
    )
    hop = markdown_table(
        [{k: fmt(v) for k, v in r.items()} for r in s["hop"]],
        {
            "clients": "N",
            "direct_p50_s": "direct p50 s",
            "nginx_p50_s": "via nginx p50 s",
            "p50_ratio": "p50 ratio",
            "direct_p95_s": "direct p95 s",
            "nginx_p95_s": "via nginx p95 s",
            "p95_ratio": "p95 ratio",
        },
    )
    every = markdown_table(
        [
            {
                "target": name,
                **{k: fmt(r[k]) for k in ("clients", "partial_p50_s", "partial_p95_s", "lag_growth_s")},
                "busy": fmt(r["model_busy_pct"]),
                "per replica": "/".join(map(str, r["replica_sessions_total"])),
                "rt": "yes" if r["real_time"] else "no",
            }
            for name in names
            for r in data["rows"][name]
        ],
        {
            "target": "target",
            "clients": "N",
            "partial_p50_s": "p50 s",
            "partial_p95_s": "p95 s",
            "lag_growth_s": "growth s",
            "busy": "model busy %",
            "per replica": "sessions per replica (cumulative)",
            "rt": "real time",
        },
    )
    info = data["machine"]
    missed = [
        f"{name} at N={r['clients']} (p95 {fmt(r['partial_p95_s'])} s, lag growth {fmt(r['lag_growth_s'])} s)"
        for name in names
        for r in data["rows"][name]
        if not r["real_time"] and r["clients"] < s["held"][name]
    ]
    note = f" Missed below the largest N: {'; '.join(missed)}." if missed else ""
    return (
        f"{table}\n\nTwo replicas over one: **{fmt(s['split_over_one'])}x** the real-time streams on this "
        f"machine ({info['cpu_count']} cores; the two replicas share them, "
        f"{data['threads_per_split_replica']} thread(s) each).{note}\n\n"
        f"The proxy hop (same replica, same N, with and without nginx):\n\n{hop}\n\n"
        f"{data['audio_s']:g} s of speech per client; replicas `serve {REPLICA}` on the base-size architecture "
        f"(random weights). <details><summary>Every run</summary>\n\n{every}\n\n</details>"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N in {1, 2}, 8 s per client")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3, 4, 5, 6, 8])
    p.add_argument("--audio-s", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet-wait", type=float, default=60.0)
    p.add_argument("--max-background", type=float, default=10.0)
    p.add_argument("--report-only", action="store_true", help="rebuild scaleout.md (and README) from the JSON")
    args = p.parse_args(argv)
    if args.report_only:
        data = json.loads((REPO / "bench" / "results" / "scaleout.json").read_text())
        md = report(data)
        (REPO / "bench" / "results" / "scaleout.md").write_text(md + "\n")
        update_readme("scaleout", md)
        print(md)
        return 0
    if args.quick:
        args.clients, args.audio_s = [1, 2], 8.0
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        print("nginx is not installed (apt-get install nginx)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        work = Path(tmp)
        model_dir = work / "base"
        save_random_base_model(model_dir)
        data = asyncio.run(bench(args, model_dir, work))
    data.update(machine=machine_info(), audio_s=args.audio_s, clients=args.clients)
    data["summary"] = summarise(data)
    name = "scaleout-quick" if args.quick else "scaleout"
    write_results(name, data)
    md = report(data)
    (REPO / "bench" / "results" / f"{name}.md").write_text(md + "\n")
    print(md)
    if not args.quick:
        update_readme("scaleout", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
