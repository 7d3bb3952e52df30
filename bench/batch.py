"""Batched file transcription: files per second with `transcribe --batch-size` 1 vs 4 vs 8, in one run.

    python bench/batch.py            # 16 files of 8 s per model, batch 1 / 4 / 8, best of 3 (~10 min on 2 cores)
    python bench/batch.py --quick    # 2 files of 2 s, batch 1 / 2, once: checks that the bench works

Two base-size architectures with random weights (speed, not accuracy, is measured):

* `Wav2Vec2ForCTC(Wav2Vec2Config())`, group norm like base-960h: it buckets (only equal-length
  windows share a forward), so its files are tts-dev speech cut to equal length;
* `Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True)`: it pads and masks, so its
  files have mixed lengths (uniform in 0.5-1.5 x the length, the same audio in total).

Each batch size runs the CLI's code path in process (read_audio, then `transcribe_offline` file by
file for 1, `offline_batch.BatchedTranscriber` for more), after a warm-up; the sizes take turns
round by round and the best round of each counts, so background load hits all alike. "same text"
checks each file's text against batch size 1.

Writes bench/results/batch.json and batch.md (README section `bench:batch`); --quick writes
batch-quick.json / .md and leaves the README alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import RESULTS, machine_info, markdown_table, tts_dev_rows, update_readme, write_results  # noqa: E402

from streaming_asr.audio import read_audio  # noqa: E402
from streaming_asr.model import CtcModel  # noqa: E402
from streaming_asr.offline import transcribe_offline  # noqa: E402
from streaming_asr.offline_batch import BatchedTranscriber  # noqa: E402

RATE = 16000
ARCHITECTURES = {  # name: (Wav2Vec2Config overrides, equal lengths?)
    "base, group norm (bucketed)": ({}, True),
    "base, layer norm (padded + masked)": ({"feat_extract_norm": "layer", "do_stable_layer_norm": True}, False),
}


def speech(total_s: float) -> np.ndarray:
    """tts-dev utterances end to end, at least `total_s` seconds."""
    pieces, have = [], 0
    for row in tts_dev_rows():
        audio = read_audio(row["wav"], RATE)[0]
        pieces.append(audio)
        have += audio.size
        if have >= total_s * RATE:
            break
    return np.concatenate(pieces)


def write_files(target: Path, count: int, seconds: float, equal: bool, seed: int = 0) -> list[str]:
    """`count` WAVs of `seconds` each (equal) or of mixed lengths with the same mean, cut from tts-dev speech."""
    rng = np.random.default_rng(seed)
    lengths = [seconds] * count if equal else list(rng.uniform(0.5, 1.5, count) * seconds)
    audio = speech(sum(lengths) + 1)
    paths, at = [], 0
    for i, s in enumerate(lengths):
        n = int(s * RATE)
        path = target / f"{'eq' if equal else 'mix'}-{i:02d}.wav"
        sf.write(path, audio[at : at + n], RATE, subtype="PCM_16")
        paths.append(str(path))
        at += n
    return paths


def transcribe_files(model: CtcModel, paths: list[str], batch: int) -> tuple[list[str], dict[str, Any]]:
    """What `streaming-asr transcribe --batch-size batch` runs, minus printing: texts and grouping facts."""
    if batch == 1:
        texts = [transcribe_offline(model, model.info, read_audio(p, RATE)[0]).text for p in paths]
        return texts, {}
    runner = BatchedTranscriber(model, batch)
    texts = [t.text for _, t in runner.transcribe((p, read_audio(p, RATE)[0]) for p in paths)]
    s = runner.stats
    samples = s.padded + sum(sf.info(p).frames for p in paths)  # one window a file: padding share of the input
    return texts, {
        "forwards": s.forwards,
        "windows": s.windows,
        "mean_batch": round(s.windows / max(1, s.forwards), 2),
        "padding_pct": round(100 * s.padded / max(1, samples), 1),
    }


def bench_model(name: str, overrides: dict[str, Any], paths: list[str], batches: list[int], rounds: int) -> list[dict]:
    from transformers import Wav2Vec2Config

    model = CtcModel.from_config(Wav2Vec2Config(**overrides), name=name, precision="fp32")
    transcribe_files(model, paths[:2], 1)  # warm-up: allocations, oneDNN primitives
    transcribe_files(model, paths[:2], min(2, max(batches)))
    best: dict[int, float] = {}
    texts: dict[int, list[str]] = {}
    facts: dict[int, dict[str, Any]] = {}
    for _ in range(rounds):
        for b in batches:
            t0 = time.perf_counter()
            texts[b], facts[b] = transcribe_files(model, paths, b)
            best[b] = min(best.get(b, float("inf")), time.perf_counter() - t0)
            print(f"  {name}: batch {b}: {len(paths) / (time.perf_counter() - t0):.2f} files/s", flush=True)
    audio_s = sum(sf.info(p).duration for p in paths)
    rows = []
    for b in batches:
        rows.append(
            {
                "model": name,
                "files": len(paths),
                "audio_s": round(audio_s, 1),
                "batch": b,
                "seconds": round(best[b], 2),
                "files_per_s": round(len(paths) / best[b], 2),
                "speedup": round(best[1] / best[b], 2),
                "same_text": sum(a == e for a, e in zip(texts[b], texts[1], strict=True)),
                **facts[b],
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 files of 2 s, batch 1 and 2, one round")
    ap.add_argument("--files", type=int, default=16, help="files per model (%(default)s)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each file (mean for mixed) (%(default)s)")
    ap.add_argument("--batches", default="1,4,8", help="batch sizes, 1 first (%(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the best of each size counts (%(default)s)")
    args = ap.parse_args()
    files, seconds, rounds = (2, 2.0, 1) if args.quick else (args.files, args.seconds, args.rounds)
    batches = [1, 2] if args.quick else sorted({1, *(int(b) for b in args.batches.split(","))})
    import torch

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (overrides, equal) in ARCHITECTURES.items():
            paths = write_files(Path(tmp), files, seconds, equal)
            rows += bench_model(name, overrides, paths, batches, rounds)
    data = {
        "machine": machine_info(),
        "torch_threads": torch.get_num_threads(),
        "files": files,
        "seconds_per_file": seconds,
        "rounds": rounds,
        "command": " ".join(["python", "bench/batch.py", *sys.argv[1:]]),
        "rows": rows,
    }
    name = "batch-quick" if args.quick else "batch"
    write_results(name, data)
    md = report(data)
    (RESULTS / f"{name}.md").write_text(md, encoding="utf-8")
    print(md)
    if not args.quick:
        update_readme("batch", md)
    return 0


def report(data: dict[str, Any]) -> str:
    cols = {
        "model": "architecture (random weights)",
        "files": "files",
        "audio_s": "audio s",
        "batch": "--batch-size",
        "files_per_s": "files / s",
        "speedup": "vs one by one",
        "mean_batch": "windows per forward",
        "padding_pct": "padding %",
        "same_text": "same text",
    }
    m = data["machine"]
    return (
        markdown_table(data["rows"], cols) + "\n\n"
        f"{data['files']} files of {data['seconds_per_file']:g} s per architecture (group norm: equal lengths; "
        f"layer norm: mixed, {data['seconds_per_file']:g} s on average), fp32, {data['torch_threads']} torch threads, "
        f"{m['cpu_count']} x {m['cpu_model']}; best of {data['rounds']} rounds; `{data['command']}`. "
        "Same text: files whose text equals batch size 1's.\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
