"""Window cost on this CPU: window path x precision x batch size x (model workers x torch threads), one run.

    python bench/kernels.py            # base-size model (random weights), default geometry (~4 min)
    python bench/kernels.py --quick    # fewer cells

Each cell runs real steady-state windows of the default geometry (taken from a session that has
been fed 8 s of audio, so reuse windows carry a full cache) through `CtcModel`, the same call the
server's batcher makes: `workers` Python threads, each with `threads` torch threads, each running
batches of `batch` windows back to back. Reported: ms of wall time per window (all workers
together), and the streams that rate would hold at 100 % busy (chunk seconds / window cost). The
server's `--model-workers` / `--threads` defaults come from this table.

Writes bench/results/kernels.json and kernels.md (README section); prints the table.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import RESULTS, machine_info, markdown_table, update_readme, write_results  # noqa: E402

from streaming_asr.config import SERVE_DEFAULT, StreamConfig  # noqa: E402
from streaming_asr.model import CtcModel, ModelInput, cpu_has_native_bf16  # noqa: E402
from streaming_asr.session import StreamingSession  # noqa: E402

PATHS = {
    "recompute": StreamConfig(feature_reuse=False, state_reuse=False),
    "features": StreamConfig(feature_reuse=True, state_reuse=False),
    "state": SERVE_DEFAULT,
}
SPLITS = [(1, 2), (2, 1)]  # (workers, torch threads each) on 2 cores


def steady_window(model: CtcModel, cfg: StreamConfig) -> ModelInput:
    """A steady-state window input of `cfg` (full left context and cache)."""
    session = StreamingSession(model.info, cfg)
    session.push(np.random.default_rng(0).normal(0, 0.1, 16000 * 8).astype(np.float32))
    for _ in range(int(cfg.left_context_s / cfg.chunk_s) + 2):
        win = session.next_window()
        session.accept(win, model([win.model_input])[0])
    return session.next_window().model_input


def time_cell(model: CtcModel, item: ModelInput, batch: int, workers: int, threads: int, seconds: float) -> float:
    """ms of wall time per window with `workers` threads running `batch`-window forwards back to back.

    Each worker warms up (allocations, oneDNN primitives) before the clock starts, and runs at
    least two timed forwards."""
    import torch

    items = [item] * batch
    counts = [0] * workers
    ready = threading.Barrier(workers + 1)
    stop = [0.0]

    def run(i: int) -> None:
        torch.set_num_threads(threads)
        model(items)
        ready.wait()
        while counts[i] < 2 * batch or time.perf_counter() < stop[0]:
            model(items)
            counts[i] += batch

    pool = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in pool:
        t.start()
    stop[0] = time.perf_counter() + seconds
    ready.wait()
    t0 = time.perf_counter()
    stop[0] = t0 + seconds
    for t in pool:
        t.join()
    return 1000 * (time.perf_counter() - t0) / max(1, sum(counts))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="state and recompute paths, batch 1 and 4 only")
    ap.add_argument("--seconds", type=float, default=4.0, help="wall time per cell (%(default)s)")
    args = ap.parse_args()
    from transformers import Wav2Vec2Config

    precisions = ["fp32", "int8"] + (["bf16"] if cpu_has_native_bf16() else [])
    batches = [1, 4] if args.quick else [1, 2, 4, 8]
    paths = ["recompute", "state"] if args.quick else list(PATHS)
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        model = CtcModel.from_config(Wav2Vec2Config(), name="base-random", precision=precision)
        for path in paths:
            cfg = PATHS[path]
            item = steady_window(model, cfg)
            for workers, threads in SPLITS:
                for batch in batches:
                    ms = time_cell(model, item, batch, workers, threads, args.seconds)
                    row = {
                        "precision": precision,
                        "path": path,
                        "workers": workers,
                        "threads": threads,
                        "batch": batch,
                        "ms_per_window": round(ms, 1),
                        "streams_at_100pct": round(1000 * cfg.chunk_s / ms, 1),
                    }
                    rows.append(row)
                    print(
                        f"  {precision} {path:9s} {workers}x{threads} batch {batch}: {ms:6.1f} ms/window "
                        f"-> {row['streams_at_100pct']} streams",
                        flush=True,
                    )
    base = {(r["precision"], r["path"]): r["ms_per_window"] for r in rows if (r["workers"], r["batch"]) == (1, 1)}
    for r in rows:
        r["speed_vs_1x2_batch1"] = round(base[(r["precision"], r["path"])] / r["ms_per_window"], 2)
    data = {
        "machine": machine_info(),
        "geometry": {k: getattr(SERVE_DEFAULT, k) for k in ("chunk_s", "left_context_s", "lookahead_s")},
        "seconds_per_cell": args.seconds,
        "rows": rows,
    }
    write_results("kernels", data)
    md = report(data)
    print(md)
    if not args.quick:
        update_readme("kernels", md)
    return 0


def report(data: dict[str, Any]) -> str:
    cols = {
        "precision": "precision",
        "path": "window path",
        "workers": "workers",
        "threads": "threads each",
        "batch": "batch",
        "ms_per_window": "ms per window",
        "speed_vs_1x2_batch1": "speed vs 1x2, batch 1",
        "streams_at_100pct": "streams at 100 % busy",
    }
    g = data["geometry"]
    md = (
        markdown_table(data["rows"], cols) + "\n\n"
        f"Base-size model (random weights), {data['machine']['cpu_count']} cores, geometry "
        f"{g['left_context_s']:g} / {g['chunk_s']:g} / {g['lookahead_s']:g} s (left / chunk / look-ahead); "
        "recompute: the whole window each time; features: exact feature reuse; state: transformer state reuse "
        "(the `serve` default). Streams at 100 % busy = chunk / window cost: the ceiling before queueing.\n"
    )
    (RESULTS / "kernels.md").write_text(md)
    return md


if __name__ == "__main__":
    raise SystemExit(main())
