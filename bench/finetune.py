"""Fine-tuning bench: adapt the stand-in to the voices it handles worst (slt) within a CPU budget.

    python bench/finetune.py                  # 30 min of training on 2 cores, plus ~10 min synthesis (cached)
    python bench/finetune.py --minutes 3      # a short run (no README update)

Needs Debian packages: flite festival festvox-us-slt-hts espeak-ng (the voices), bible-kjv python3-doc
(the sentences), fortunes wordnet-base (the overlap check), and matplotlib for the plot.

1. Synthesise (``finetune_data.py``, cached in /tmp/streaming-asr-finetune/): a training set of
   flite ``slt`` + festival ``cmu_us_slt_arctic_hts`` utterances (about a third of the audio espeak-ng
   voices the stand-in already knew, as rehearsal) and a separate slt eval set, on Bible + Python-docs sentences with
   nothing of tts-dev's fortunes / WordNet pool in them.
2. ``streaming-asr finetune --train … --eval … --model <stand-in> --max-minutes M``: the command as users
   run it, defaults except the budget and the eval interval. It keeps the checkpoint with the best WER
   on the synthesised eval set (never on tts-dev) in ``OUT/best``.
3. Score the stand-in and ``OUT/best`` on all of tts-dev (offline windowing, greedy, as ``transcribe``):
   WER and CER per voice family (slt: flite + festival; espeak: the held-out espeak-ng voices).
4. Plot eval-set WER/CER over training steps from ``OUT/history.json``.

Targets (issue 14): slt WER on tts-dev ≥ 30 % lower (relative) within 30 CPU minutes, espeak WER at most
5 % higher. Writes bench/results/finetune.json, .md and .png, updates README's bench:finetune section.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import finetune_data  # noqa: E402
import lm_corpus  # noqa: E402
from common import (  # noqa: E402
    REPO,
    RESULTS,
    SHARED,
    STANDIN_MODEL,
    machine_info,
    markdown_table,
    tts_dev_rows,
    update_readme,
    write_results,
)

from streaming_asr.textmetrics import corpus_cer, corpus_wer  # noqa: E402

CACHE = Path("/tmp/streaming-asr-finetune")
TRAIN_COUNT = 2400
REHEARSAL_COUNT = 700
EVAL_COUNT = 80


def sentences() -> tuple[list[str], list[str]]:
    """Training and eval sentences (4-18 words), disjoint, none holding a tts-dev pool sentence."""
    text = lm_corpus.corpus(lm_corpus.kjv_sentences()) + lm_corpus.corpus(lm_corpus.python_doc_sentences())
    text = [s for s in dict.fromkeys(text) if 4 <= len(s.split()) <= 18]
    refs = [r["reference"] for r in tts_dev_rows()]
    text = lm_corpus.without(text, lm_corpus.overlap(text, [*refs, *lm_corpus.pool(SHARED / "tools")]))
    random.Random(11).shuffle(text)
    return text[EVAL_COUNT * 3 :], text[: EVAL_COUNT * 3]


def prepare() -> tuple[Path, Path]:
    train_text, eval_text = sentences()
    slt = finetune_data.synthesise_set(train_text[:20000], CACHE / "train", TRAIN_COUNT, seed=1, rehearsal=0.2)
    more = finetune_data.synthesise_set(train_text[20000:], CACHE / "rehearsal", REHEARSAL_COUNT, seed=3, rehearsal=1.0)
    evals = finetune_data.synthesise_set(eval_text, CACHE / "eval", EVAL_COUNT, seed=2, rehearsal=0.0)
    return finetune_data.join_manifests([slt, more], CACHE / "train-all.tsv"), evals


def manifest_stats(path: Path) -> dict[str, Any]:
    lines = path.read_text().splitlines()[1:]
    voices: dict[str, float] = {}
    for line in lines:
        _, _, dur, voice, _ = line.split("\t")
        family = voice.split(":")[0] + (":slt" if "slt" in voice else "")
        voices[family] = voices.get(family, 0.0) + float(dur)
    return {"utterances": len(lines), "hours": sum(voices.values()) / 3600, "seconds_by_voice": voices}


def score(model_dir: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Greedy offline transcripts of tts-dev and WER/CER per voice family."""
    from streaming_asr.audio import read_audio
    from streaming_asr.model import CtcModel
    from streaming_asr.offline import transcribe_offline

    model = CtcModel.load(model_dir, threads=2)
    hyps = [transcribe_offline(model, model.info, read_audio(str(r["wav"]), 16000)[0]).text for r in rows]
    refs = [r["reference"] for r in rows]
    out: dict[str, Any] = {}
    for family, keep in (
        ("slt", lambda v: "slt" in v),
        ("espeak", lambda v: v.startswith("espeak")),
        ("all", lambda v: True),
    ):
        idx = [i for i, r in enumerate(rows) if keep(r["voice"])]
        out[family] = {
            "files": len(idx),
            "wer": corpus_wer([refs[i] for i in idx], [hyps[i] for i in idx]),
            "cer": corpus_cer([refs[i] for i in idx], [hyps[i] for i in idx]),
        }
    out["hyps"] = hyps
    return out


def plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["wer"] for h in history], marker="o", label="eval WER (synthesised slt set)")
    ax.plot(steps, [h["cer"] for h in history], marker="s", label="eval CER")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("error rate")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Fine-tuning the stand-in on slt speech")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget, wall minutes (%(default)s)")
    parser.add_argument("--eval-every", type=int, default=100, help="eval interval in steps (%(default)s)")
    parser.add_argument("--lr", type=float, default=3e-4, help="finetune --lr (%(default)s)")
    parser.add_argument("--batch-seconds", type=float, default=30.0, help="finetune --batch-seconds (%(default)s)")
    parser.add_argument("--prepare-only", action="store_true", help="synthesise the sets and stop")
    parser.add_argument("--extra", default="", help="more finetune options, one string")
    parser.add_argument(
        "--variant", default="", help="a name for a run with --extra options: results go to finetune-NAME.* (no README)"
    )
    args = parser.parse_args(argv)
    begun = time.perf_counter()
    train, evals = prepare()
    data_s = time.perf_counter() - begun
    print(f"data ready in {data_s:.0f} s: {manifest_stats(train)}", file=sys.stderr)
    if args.prepare_only:
        return 0
    out = CACHE / f"run-{args.minutes:g}min{'-' + args.variant if args.variant else ''}"
    cmd = [sys.executable, "-m", "streaming_asr", "finetune", "--train", str(train), "--eval", str(evals)]
    cmd += ["--model", str(STANDIN_MODEL), "--out", str(out), "--max-minutes", str(args.minutes)]
    cmd += ["--eval-every", str(args.eval_every), "--threads", "2", "--eval-at-start", "--overwrite"]
    cmd += ["--lr", str(args.lr), "--batch-seconds", str(args.batch_seconds), "--no-progress", *args.extra.split()]
    print("+", " ".join(cmd), file=sys.stderr)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    train_wall = time.perf_counter() - started
    history = json.loads((out / "history.json").read_text())
    evals_h = history["evals"] if isinstance(history, dict) else history
    rows = tts_dev_rows()
    before, after = score(str(STANDIN_MODEL), rows), score(str(out / "best"), rows)
    table = []
    for family in ("slt", "espeak", "all"):
        b, a = before[family], after[family]
        table.append(
            {
                "voices": family,
                "files": b["files"],
                "wer_before": b["wer"],
                "wer_after": a["wer"],
                "wer_change": a["wer"] / b["wer"] - 1,
                "cer_before": b["cer"],
                "cer_after": a["cer"],
            }
        )
    full = args.minutes >= 30 and not args.extra
    name = "finetune" if full else f"finetune-{args.variant}" if args.variant else "finetune-short"
    best = min(evals_h, key=lambda h: (h["wer"], h["cer"]))
    slt, esp = table[0], table[1]
    md = "\n".join(
        [
            f"Training set: {manifest_stats(train)['hours']:.2f} h synthesised ({manifest_stats(train)['utterances']} "
            f"utterances: flite slt, festival slt HTS, espeak-ng rehearsal voices), eval set "
            f"{manifest_stats(evals)['utterances']} slt utterances on other sentences; sentences from the KJV "
            f"Bible and the Python docs, none from tts-dev's fortunes / WordNet pool. `streaming-asr finetune` "
            f"for {args.minutes:g} wall minutes on {machine_info()['cpu_count']} CPU cores (defaults: frozen "
            f"feature encoder, AdamW, the checkpoint's SpecAugment; `--lr {args.lr:g} --batch-seconds "
            f"{args.batch_seconds:g}{' ' + args.extra if args.extra else ''}`), best eval checkpoint at step "
            f"{best['step']} (eval WER {best['wer']:.2f}). Scored on tts-dev (offline, greedy):",
            "",
            markdown_table(
                table,
                {
                    "voices": "tts-dev voices",
                    "files": "files",
                    "wer_before": "WER before",
                    "wer_after": "WER after",
                    "wer_change": "WER change",
                    "cer_before": "CER before",
                    "cer_after": "CER after",
                },
            ),
            "",
            f"slt WER {slt['wer_change']:+.1%} (target ≤ −30 %), espeak WER {esp['wer_change']:+.1%} "
            f"(target ≤ +5 %). Eval WER over training: `bench/results/{name}.png`. Training "
            f"{train_wall / 60:.1f} min wall including evals; regenerate with `python bench/finetune.py`.",
        ]
    )
    print(md)
    plot(evals_h, RESULTS / f"{name}.png")
    write_results(
        name,
        {
            "machine": machine_info(),
            "minutes": args.minutes,
            "command": cmd,
            "train_set": manifest_stats(train),
            "eval_set": manifest_stats(evals),
            "history": history,
            "table": table,
            "examples": [
                {"ref": r["reference"], "voice": r["voice"], "before": before["hyps"][i], "after": after["hyps"][i]}
                for i, r in enumerate(rows)
                if i % 30 == 3
            ],
        },
    )
    (RESULTS / f"{name}.md").write_text(md + "\n")
    if full and not update_readme("finetune", md):
        print("README has no bench:finetune markers; wrote only the md file", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
