"""Reports of bench/load.py: summary per variant, every run, the plot; kept apart from the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, markdown_table

MAX_DELAY_S = 1.0  # real time: p95 partial delay at most this


def largest_real_time(rows: list[dict[str, Any]]) -> int:
    return max((r["clients"] for r in rows if r["real_time"]), default=0)


def rss_per_stream(rows: list[dict[str, Any]]) -> float | None:
    """Slope of peak RSS over N (MB per added stream), over the real-time runs."""
    pts = [(r["clients"], r["server_rss_peak_mb"]) for r in rows if r["real_time"]]
    if len(pts) < 2:
        return None
    xs, ys = zip(*pts)
    return round(float(np.polyfit(xs, ys, 1)[0]), 1)


def summarise(rows: dict[str, list[dict[str, Any]]], limits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for label, rs in rows.items():
        n = largest_real_time(rs)
        at = next((r for r in rs if r["clients"] == n), None) or {}
        out.append(
            {
                "variant": label,
                "largest_real_time": n,
                "p95_at_largest_s": at.get("partial_p95_s"),
                "growth_at_largest_s": at.get("lag_growth_s"),
                "busy_at_largest_pct": at.get("model_busy_pct"),
                "mean_batch_at_largest": at.get("mean_batch"),
                "rss_at_largest_mb": at.get("server_rss_peak_mb"),
                "rss_per_stream_mb": rss_per_stream(rs),
                "workers": at.get("model_workers"),
                "precision": at.get("precision"),
            }
        )
    for lim in limits:
        out.append(
            {
                "variant": f"limit: one offline pass, {lim['precision']} (RTF {lim['rtf']})",
                "largest_real_time": f"{lim['streams_at_100pct']} at 100 % busy",
            }
        )
    return out


SUMMARY_COLUMNS = {
    "variant": "variant",
    "largest_real_time": "real-time streams",
    "p95_at_largest_s": "p95 delay s",
    "growth_at_largest_s": "lag growth s",
    "busy_at_largest_pct": "model busy %",
    "mean_batch_at_largest": "mean batch",
    "rss_at_largest_mb": "peak RSS MB",
    "rss_per_stream_mb": "RSS per added stream MB",
    "workers": "workers",
}
DETAIL_COLUMNS = {
    "variant": "variant",
    "clients": "N",
    "partial_p50_s": "delay p50 s",
    "partial_p95_s": "p95 s",
    "lag_growth_s": "growth s",
    "send_slip_p95_s": "slip p95 s",
    "final_p50_s": "final s",
    "mean_batch": "batch",
    "model_busy_pct": "busy %",
    "server_cpu_pct": "server CPU %",
    "server_rss_peak_mb": "RSS MB",
    "background_cpu_pct": "bg CPU %",
    "real_time": "real time",
}


def plot(rows: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5), dpi=110)
    for label, rs in rows.items():
        pts = [(r["clients"], r["partial_p95_s"]) for r in rs if r["partial_p95_s"] is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"{label} (real time up to {largest_real_time(rs)})")
    ax.axhline(MAX_DELAY_S, color="red", lw=1, ls="-.", label=f"real-time limit: p95 = {MAX_DELAY_S:g} s")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent real-time clients (N)")
    ax.set_ylabel("p95 partial delay (s, log)")
    ax.set_title("Partial delay vs load: wav2vec2-base (random weights), CPU", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(data: dict[str, Any], name: str) -> str:
    """Write <name>.md (tables + what they mean, for the README) and <name>.png from a results dict."""
    st, info = data["settings"], data["machine"]
    skipped = "".join(f" Not run: {s}." for s in data.get("skipped", []))
    soak_line = ""
    if data.get("soak"):
        s = data["soak"]
        soak_line = (
            f"\n\nSoak: {s['clients']} looping clients on '{s['variant']}' for {s['seconds']:.0f} s "
            f"({s['sessions']} sessions): RSS {s['rss_start_mb']} → {s['rss_end_mb']} MB after warm-up, "
            f"slope {s['rss_slope_mb_per_h']} MB/h."
        )
    md = (
        f"{markdown_table(data['summary'], SUMMARY_COLUMNS)}\n\n"
        f"{info['cpu_count']} CPU cores ({info.get('cpu_model') or 'unknown CPU'}), torch {info['torch']}; "
        "native BF16: "
        f"{'yes' if st['native_bf16'] else 'no'}. {st['audio_s_per_client']:g} s of speech per client in 100 ms "
        f"frames; the default's geometry: chunk {st['engine']['chunk_s']:g} s, "
        "left context "
        f"{st['engine']['left_context_s']:g} s, look-ahead {st['engine']['lookahead_s']:g} s "
        "(the previous-default rows: "
        f"1.28 / 0.64 / 0.24). {data['definitions']}{skipped}{soak_line}\n\n"
        f"<details><summary>Every run</summary>\n\n"
        f"{markdown_table([r for rs in data['rows'].values() for r in rs], DETAIL_COLUMNS)}\n\n</details>\n\n"
        f"![partial delay vs load](bench/results/{name}.png)\n"
    )
    (RESULTS / f"{name}.md").write_text(md, encoding="utf-8")
    plot(data["rows"], RESULTS / f"{name}.png")
    return md


DEFINITION = (
    "Partial delay: a partial's arrival minus the moment the client had sent the audio up to its `end` "
    "(server + transport only). Real time: p95 partial delay <= 1 s, lag growth (last third minus first third "
    "of each stream) <= 0.5 x chunk, p95 send slip <= 0.1 s, every session closed cleanly. Model busy: compute "
    "time / (wall time x workers). RSS per added stream: slope of peak RSS over N across real-time runs."
)
