"""Accuracy vs latency vs compute of the streaming engine, per window geometry, in one run.

    python bench/accuracy.py                # all of ../shared/data/tts-dev, the full grid (~5 min)
    python bench/accuracy.py --quick        # 40 files, 4 settings

Recognition uses the stand-in model (../shared/models/tts-ctc-small). Time is simulated on the
audio clock: audio arrives in 20 ms pushes in real time; each window starts when its audio has
arrived and the (single-stream) model is free, and takes as long as the *base-size* architecture
(`Wav2Vec2ForCTC(Wav2Vec2Config())`, random weights, measured here on this machine's CPU threads)
needs for a window of that length. So latencies and real-time factors are those of base-960h, the
words are those of the stand-in.

Per setting: WER (streaming and offline, against the references), CER streaming vs offline,
word-emission latency (audio time a word ends -> time its final spelling first shows in a partial,
or its final if never in a partial), real-time factor (base-size compute / audio), how often a word
shown in a partial is later revised, and whether any partial's stable prefix was broken.
Anchor in the same run: transformers' `pipeline("automatic-speech-recognition", chunk_length_s,
stride_length_s)` on the same files, with the latency it would have if fed live audio chunk by chunk.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    RESULTS,
    TTS_DEV,
    machine_info,
    markdown_table,
    update_readme,
    write_results,
)  # noqa: E402
from common import (
    STANDIN_MODEL as STANDIN,
)

from streaming_asr.audio import read_audio  # noqa: E402
from streaming_asr.config import StreamConfig  # noqa: E402
from streaming_asr.events import Final, Partial  # noqa: E402
from streaming_asr.model import CtcModel, FrameCache, ModelInput, ReuseInput, cpu_has_native_bf16  # noqa: E402
from streaming_asr.offline import transcribe_offline  # noqa: E402
from streaming_asr.session import StreamingSession  # noqa: E402
from streaming_asr.textmetrics import corpus_cer, corpus_wer, edit_distance  # noqa: E402

DEFAULT = StreamConfig()
PUSH_S = 0.02

# (left, chunk, lookahead) seconds and the variant: precision (fp32, int8 = dynamic quantisation of the
# Linear layers, bf16) + window path (recompute = today's full recompute, features = exact feature
# reuse, state = transformer state reuse); the serve default first
D = (DEFAULT.left_context_s, DEFAULT.chunk_s, DEFAULT.lookahead_s)  # 5.12 / 0.48 / 0.24
GRID = [
    (*D, "fp32+state"),
    (1.28, 0.64, 0.24, "fp32+recompute"),  # the previous default
    (1.28, 0.64, 0.24, "fp32+state"),
    (2.56, 0.48, 0.24, "fp32+state"),
    (2.56, 0.48, 0.24, "fp32+features"),
    (1.28, 0.64, 0.24, "int8+recompute"),  # the previous --quantize int8
    (2.56, 0.48, 0.24, "int8+state"),
    (2.56, 0.48, 0.24, "bf16+state"),
    (2.56, 0.64, 0.24, "fp32+state"),
    (2.56, 0.32, 0.16, "fp32+state"),
    (2.56, 0.48, 0.16, "fp32+state"),
    (2.56, 0.96, 0.24, "fp32+state"),
    (2.56, 0.48, 0.24, "fp32+state+r0.16"),
    (2.56, 0.48, 0.24, "fp32+state+la"),
    (2.56, 0.64, 0.24, "int8+state"),
]
QUICK_GRID = GRID[:3] + GRID[6:7]
BF16_FILES = 60  # bf16 is emulated (30x slower) on CPUs without native BF16: its row uses fewer files there
HF_ANCHORS = [(10.0, 4.0, 2.0), (4.0, 1.0, 1.0)]  # (chunk_length_s, stride left, stride right)


def variant_config(left: float, chunk: float, ahead: float, variant: str) -> StreamConfig:
    """'fp32+state', 'int8+recompute', 'fp32+state+r0.24' (state refresh of 0.24 s), 'fp32+state+la'
    (look-ahead feature reuse), ..."""
    parts = variant.split("+")
    path = parts[1]
    refresh = next((float(p[1:]) for p in parts[2:] if p.startswith("r")), 0.0)
    return StreamConfig(
        chunk_s=chunk,
        left_context_s=left,
        lookahead_s=ahead,
        state_refresh_s=refresh,
        feature_reuse=path in ("features", "state"),
        state_reuse=path == "state",
        lookahead_reuse="la" in parts[2:],
    )


class ComputeModel:
    """Seconds the base-size architecture needs for a window input, measured per shape on this CPU.

    Shapes are bucketed (100 ms of audio, 5 frames of cached context) and each bucket is timed once
    (best of `reps`: robust to other load on the machine). Reuse inputs are timed with a cache of
    the base model's real shape.
    """

    def __init__(self, threads: int, reps: int = 3, precision: str = "fp32") -> None:
        import torch
        from transformers import Wav2Vec2Config

        torch.set_num_threads(threads)
        self.model = CtcModel.from_config(Wav2Vec2Config(), name="base-random", precision=precision)
        self.reps = reps
        self.table: dict[tuple[int, ...], float] = {}
        self.model([np.zeros(16000, np.float32)])  # warm-up

    def __call__(self, item: ModelInput) -> float:
        if isinstance(item, ReuseInput):
            ahead = item.ahead.frames if item.ahead is not None else 0
            key: tuple[int, ...] = (
                -(-len(item.audio) // 1600),
                -(-item.new_from // 5),
                int(item.state),
                item.refresh,
                ahead,
            )
        else:
            key = (-(-len(item) // 1600),)
        if key not in self.table:
            self.table[key] = self._time(key)
        return self.table[key]

    def _time(self, key: tuple[int, ...]) -> float:
        import torch

        rng = np.random.default_rng(0)
        audio = rng.normal(0, 0.1, key[0] * 1600 + 80).astype(np.float32)
        item: ModelInput = audio
        if len(key) == 5:
            frames, state = key[1] * 5, bool(key[2])
            rows = self.model.reuse.state_rows if state else 1
            width = self.model.hidden_size if state else self.model.feature_dim
            cache = FrameCache(torch.randn(rows, frames, width, dtype=self.model.dtype)) if frames else None
            frames = min(frames, self.model.info.frames_for(audio.size) - 1)  # buckets round up: stay inside
            cache = FrameCache(cache.data[:, :frames]) if cache is not None and frames else None
            skip = max(0, min(key[4], self.model.info.frames_for(audio.size) - frames - 1))
            ahead = FrameCache(torch.randn(1, skip, self.model.hidden_size, dtype=self.model.dtype)) if skip else None
            item = ReuseInput(audio, frames, cache, state, min(key[3], frames), ahead)
        runs = []
        for _ in range(self.reps):
            t = time.perf_counter()
            self.model([item])
            runs.append(time.perf_counter() - t)
        return min(runs)


@dataclass
class FileRun:
    text: str
    latencies: list[float]
    appears: list[float]
    shown: int
    revised: int
    broken_stable: int
    compute_s: float
    audio_s: float
    windows: int


def stream_file(
    model: CtcModel, audio: np.ndarray, cfg: StreamConfig, compute: Callable[[ModelInput], float]
) -> FileRun:
    info = model.info
    sr = info.sample_rate
    session = StreamingSession(info, cfg)
    free_at = 0.0
    busy = 0.0
    windows = 0
    log: list[tuple[float, Partial | Final]] = []
    push = int(PUSH_S * sr)

    def run_ready(now: float) -> None:
        nonlocal free_at, busy, windows
        while (win := session.next_window()) is not None:
            lp = model([win.model_input])[0]
            cost = compute(win.model_input)
            busy += cost
            windows += 1
            free_at = max(now, free_at) + cost
            session.accept(win, lp)
            log.extend((free_at, ev) for ev in session.pop_events())

    for start in range(0, audio.size, push):
        session.push(audio[start : start + push])
        run_ready(min(audio.size, start + push) / sr)
    session.finish()
    run_ready(audio.size / sr)
    log.extend((free_at, ev) for ev in session.pop_events())

    latencies: list[float] = []
    appears: list[float] = []
    shown = revised = broken = 0
    finals = [(t, ev) for t, ev in log if isinstance(ev, Final)]
    for t_final, fin in finals:
        partials = [(t, ev) for t, ev in log if isinstance(ev, Partial) and ev.segment == fin.segment]
        final_words = [w.word for w in fin.words]
        seen: set[tuple[int, str]] = set()
        for _, p in partials:
            if not fin.text.startswith(p.text[: p.stable]):
                broken += 1
            seen.update(enumerate(p.text.split()))
        shown += len(seen)
        revised += sum(1 for i, w in seen if i >= len(final_words) or final_words[i] != w)
        split = [(t, p.text.split()) for t, p in partials]
        for i, w in enumerate(fin.words):
            first = next((t for t, ws in split if len(ws) > i and ws[i] == w.word), t_final)
            latencies.append(first - w.end)
            near = next((t for t, ws in split if len(ws) > i and _close(ws[i], w.word)), t_final)
            appears.append(near - w.end)
    text = " ".join(f.text for _, f in finals if f.text)
    return FileRun(text, latencies, appears, shown, revised, broken, busy, audio.size / sr, windows)


def _close(shown: str, final: str) -> bool:
    """The shown word is the final word give or take the weak model's spelling (CER <= 0.5)."""
    return edit_distance(shown, final) <= 0.5 * len(final)


def run_setting(
    model: CtcModel,
    files: list[tuple[np.ndarray, str]],
    offline: list[str],
    cfg: StreamConfig,
    compute: ComputeModel | None,
) -> dict[str, Any]:
    """One setting over all files; without a compute model (bf16 where it is emulated) no latency or RTF."""
    runs = [stream_file(model, audio, cfg, compute or (lambda _item: 0.0)) for audio, _ in files]
    refs = [ref for _, ref in files]
    lat = np.array([x for r in runs for x in r.latencies])
    appear = np.array([x for r in runs for x in r.appears])
    shown = sum(r.shown for r in runs)
    return {
        "left_context_s": cfg.left_context_s,
        "chunk_s": cfg.chunk_s,
        "lookahead_s": cfg.lookahead_s,
        "wer": round(corpus_wer(refs, [r.text for r in runs]), 4),
        "wer_offline": round(corpus_wer(refs, offline), 4),
        "cer_vs_offline": round(corpus_cer(offline, [r.text for r in runs]), 4),
        "latency_p50_ms": round(float(np.median(lat)) * 1000) if lat.size else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)) * 1000) if lat.size else None,
        "appear_p50_ms": round(float(np.median(appear)) * 1000) if appear.size else None,
        "rtf_base": round(sum(r.compute_s for r in runs) / sum(r.audio_s for r in runs), 3),
        "revised_share": round(sum(r.revised for r in runs) / max(1, shown), 3),
        "broken_stable_prefixes": sum(r.broken_stable for r in runs),
        "windows": sum(r.windows for r in runs),
    } | ({} if compute else {"latency_p50_ms": None, "latency_p95_ms": None, "appear_p50_ms": None, "rtf_base": None})


def hf_anchor(
    files: list[tuple[np.ndarray, str]],
    offline_words: list[list[float]],
    chunk: float,
    left: float,
    right: float,
    compute: ComputeModel,
) -> dict[str, Any]:
    """transformers' own chunked pipeline on the same files; latency if fed live chunk by chunk."""
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(STANDIN), device="cpu")
    hyps = [
        asr({"raw": a, "sampling_rate": 16000}, chunk_length_s=chunk, stride_length_s=(left, right))["text"]
        for a, _ in files
    ]
    step = chunk - left - right
    cost = compute(np.zeros(int(chunk * 16000), np.float32))
    lat = []
    for (audio, _), word_ends in zip(files, offline_words):
        dur = audio.size / 16000
        for end in word_ends:
            # the first chunk whose kept part holds the word end; emitted when that chunk has fully arrived
            i = max(0, int(np.ceil((end - (chunk - right)) / step)))
            arrival = min(dur, i * step + chunk)
            lat.append(arrival + min(cost, compute(np.zeros(int(min(chunk, dur) * 16000), np.float32))) - end)
    refs = [r for _, r in files]
    return {
        "anchor": f"HF pipeline chunk_length_s={chunk:g}, stride=({left:g},{right:g})",
        "wer": round(corpus_wer(refs, hyps), 4),
        "latency_p50_ms": round(float(np.median(lat)) * 1000),
        "latency_p95_ms": round(float(np.percentile(lat, 95)) * 1000),
        "rtf_base": round(cost / step, 3),
    }


def _cells(row: dict[str, Any]) -> dict[str, str]:
    """Table cells as text (WER to 3 decimals; the shared formatter would round to 2)."""
    return {k: (f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)) for k, v in row.items()}


def plot(rows: list[dict[str, Any]], anchors: list[dict[str, Any]], path: Path) -> None:
    """WER and CER-vs-offline against median latency; points numbered, the key beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), dpi=100, gridspec_kw={"right": 0.72, "wspace": 0.32})
    styles = {
        "fp32+state": ("o", "tab:blue"),
        "fp32+recompute": ("s", "tab:gray"),
        "fp32+features": ("D", "tab:purple"),
        "int8+recompute": ("v", "tab:red"),
        "int8+state": ("^", "tab:orange"),
    }
    numbered = [(i, r) for i, r in enumerate(rows, 1) if r["latency_p50_ms"] is not None]
    for ax, key, label in [(axes[0], "wer", "WER vs reference"), (axes[1], "cer_vs_offline", "CER vs offline output")]:
        for i, r in numbered:
            marker, color = styles.get(r["model"], ("o", "gray"))
            ax.scatter(
                r["latency_p50_ms"],
                r[key],
                marker=marker,
                color=color,
                s=160 if r["default"] else 45,
                edgecolor="black" if r["default"] else "none",
                zorder=3,
            )
            ax.annotate(str(i), (r["latency_p50_ms"], r[key]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if key == "wer":
            for a in anchors:
                ax.scatter(a["latency_p50_ms"], a["wer"], marker="x", color="gray", zorder=3)
            ax.axhline(numbered[0][1]["wer_offline"], color="green", ls="--", lw=1, label="offline WER")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_xscale("log")
        ax.set_xlabel("median word latency, ms (log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    key_lines = [
        f"{i:>2}  L{r['left_context_s']:g}/C{r['chunk_s']:g}/R{r['lookahead_s']:g} {r['model']}"
        f"  RTF {r['rtf_base']:.2f}{'  (default)' if r['default'] else ''}"
        for i, r in numbered
    ]
    key_lines += [f" x  {a['anchor'].replace('HF pipeline ', 'HF ')}" for a in anchors]
    fig.text(0.735, 0.5, "\n".join(key_lines), fontsize=7.5, family="monospace", va="center")
    fig.suptitle(
        "Streaming window geometry: accuracy vs latency (L/C/R = left context / chunk / look-ahead, s; "
        "big marker = default)",
        fontsize=10,
    )
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 files and 4 settings")
    ap.add_argument("--limit", type=int, default=None, help="use the first N files")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the base-size timing (2)")
    ap.add_argument(
        "--grid",
        default=None,
        help="only these settings: 'left/chunk/ahead/variant,...' e.g. '2.56/0.48/0.24/fp32+state'",
    )
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README's table")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild accuracy.md, accuracy.png and README's table from accuracy.json",
    )
    args = ap.parse_args()
    if args.report_only:
        import json

        data = json.loads((RESULTS / "accuracy.json").read_text())
        update_readme("accuracy", report(data))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    with open(TTS_DEV / "manifest.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    limit = args.limit or (40 if args.quick else None)
    rows = rows[:limit] if limit else rows
    grid = QUICK_GRID if args.quick else GRID
    if args.grid:
        grid = [(float(a), float(b), float(c), v) for a, b, c, v in (g.split("/") for g in args.grid.split(","))]
    model = CtcModel.load(str(STANDIN), device="cpu")
    files = [(read_audio(TTS_DEV / r["wav"], 16000)[0], r["reference"]) for r in rows]
    audio_s = sum(a.size for a, _ in files) / 16000
    print(f"{len(files)} files, {audio_s / 60:.1f} min of audio, {len(grid)} settings", file=sys.stderr)

    precisions = sorted({v.split("+")[0] for *_, v in grid})
    native_bf16 = cpu_has_native_bf16()
    computes = {p: ComputeModel(args.threads, precision=p) for p in precisions if p != "bf16" or native_bf16}
    compute = computes["fp32"]
    models = {p: model if p == "fp32" else CtcModel.load(str(STANDIN), device="cpu", precision=p) for p in precisions}

    offline_results = [transcribe_offline(model, model.info, a) for a, _ in files]
    offline = [t.text for t in offline_results]
    offline_word_ends = [[w.end for f in t.finals for w in f.words] for t in offline_results]

    results = []
    for left, chunk, ahead, variant in grid:
        precision = variant.split("+")[0]
        cfg = variant_config(left, chunk, ahead, variant)
        n = len(files) if precision != "bf16" or native_bf16 else min(len(files), BF16_FILES)
        t0 = time.perf_counter()
        res = run_setting(models[precision], files[:n], offline[:n], cfg, computes.get(precision))
        res["model"] = variant
        res["files"] = n
        res["default"] = (left, chunk, ahead, variant) == GRID[0]
        results.append(res)
        print(
            f"  L{left} C{chunk} R{ahead} {variant}: WER {res['wer']} CER-off {res['cer_vs_offline']} "
            f"p50 {res['latency_p50_ms']} ms RTF {res['rtf_base']} ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
    anchors = [hf_anchor(files, offline_word_ends, c, le, r, compute) for c, le, r in HF_ANCHORS]

    out = RESULTS
    out.mkdir(exist_ok=True)
    data = {
        "machine": machine_info(),
        "files": len(files),
        "audio_s": round(audio_s, 1),
        "threads": args.threads,
        "offline_wer": results[0]["wer_offline"],
        "settings": results,
        "anchors": anchors,
        "compute_table": {
            q: {"x".join(map(str, k)): round(t, 4) for k, t in c.table.items()} for q, c in computes.items()
        },
    }
    write_results("accuracy", data)
    md = report(data)
    print(md)
    if not args.quick and not args.limit and not args.grid and not args.no_readme:
        update_readme("accuracy", md)
    return 0


def report(data: dict[str, Any]) -> str:
    """accuracy.md (numbered table, what it means) and accuracy.png from a results dict."""
    results, anchors = data["settings"], data["anchors"]
    rows = []
    for n, r in enumerate(results, 1):
        rows.append(
            {
                **r,
                "n": n,
                "wer_rel": f"{(r['wer'] / r['wer_offline'] - 1) * 100:+.1f} %",
                "setting": f"{r['left_context_s']:g} / {r['chunk_s']:g} / {r['lookahead_s']:g}"
                + f" {r['model']}"
                + (f" ({r['files']} files)" if r.get("files", data["files"]) != data["files"] else "")
                + (" **(default)**" if r["default"] else ""),
            }
        )
    cols = {
        "n": "#",
        "setting": "left / chunk / look-ahead (s)",
        "wer": "WER",
        "wer_rel": "vs offline",
        "cer_vs_offline": "CER vs offline",
        "latency_p50_ms": "word latency p50 (ms)",
        "latency_p95_ms": "p95 (ms)",
        "appear_p50_ms": "word shown p50 (ms)",
        "rtf_base": f"compute / audio (base, {data.get('threads', 2)} thr)",
        "revised_share": "partial words revised",
    }
    anchor_rows = [
        {
            "n": "–",
            "setting": a["anchor"],
            "wer": a["wer"],
            "latency_p50_ms": a["latency_p50_ms"],
            "latency_p95_ms": a["latency_p95_ms"],
            "rtf_base": a["rtf_base"],
            "wer_rel": f"{(a['wer'] / data['offline_wer'] - 1) * 100:+.1f} %",
        }
        for a in anchors
    ]
    table = markdown_table([_cells(r) for r in rows + anchor_rows], cols)
    summary = (
        f"{data['files']} tts-dev files ({data['audio_s'] / 60:.1f} min), stand-in model; offline WER "
        f"{data['offline_wer']:.3f}. Latency and compute are base-960h-sized (random-weight "
        f"`Wav2Vec2Config()`), {data.get('threads', 2)} CPU threads, single stream. Word latency: audio time a "
        f"word ends -> its final spelling first shown (partial or final); 'word shown': first shown within "
        f"50 % CER of its final spelling (the stand-in's spellings flip more than a real model's). "
        f"fp32/int8/bf16: `--precision`; recompute: `--state-reuse off --feature-reuse off` (the whole "
        f"window each time, the previous default); features: `--state-reuse off` (exact feature reuse); state: "
        f"transformer state reuse (the `serve` default). A bf16 row with fewer files and no latency ran where "
        f"bf16 is emulated (no native BF16 on this CPU): accuracy only."
    )
    plot(results, anchors, RESULTS / "accuracy.png")
    md = table + "\n\n" + summary + "\n\n![WER vs latency](bench/results/accuracy.png)\n"
    (RESULTS / "accuracy.md").write_text(md)
    return md


if __name__ == "__main__":
    raise SystemExit(main())
