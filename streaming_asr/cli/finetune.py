"""`streaming-asr finetune --train TRAIN.tsv --eval EVAL.tsv --model M --out DIR`: CTC fine-tuning on a
manifest (streaming_asr/training/, imported only when the command runs, so start-up stays fast)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .options import add_encoder_args

EXIT_INTERRUPTED = 130


def register(sub: Any) -> None:
    f = sub.add_parser("finetune", help="fine-tune a CTC checkpoint on your own speech (TSV manifests)")
    f.add_argument("--train", required=True, metavar="TSV", help="training manifest: header row with wav, reference")
    f.add_argument("--eval", required=True, metavar="TSV", help="eval manifest (same format): WER/CER, best checkpoint")
    add_encoder_args(f, None, "the CTC checkpoint to fine-tune")
    f.add_argument("--out", required=True, metavar="DIR", help="where DIR/best, DIR/last and DIR/history.json go")
    b = f.add_argument_group("budget (at least one; neither: --max-steps 1000)")
    b.add_argument("--max-steps", type=int, default=None, help="optimizer steps in all, counted over resumes")
    b.add_argument("--max-minutes", type=float, default=None, help="wall minutes of this invocation, evals included")
    b.add_argument("--resume", action="store_true", help="continue the run in DIR/last (step, optimizer, schedule)")
    b.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds an earlier run")
    o = f.add_argument_group("optimisation")
    o.add_argument("--lr", type=float, default=1e-4, help="peak learning rate, AdamW (%(default)s)")
    o.add_argument("--weight-decay", type=float, default=0.005, help="AdamW weight decay (%(default)s)")
    o.add_argument(
        "--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 10%% of --max-steps, or 50)"
    )
    o.add_argument("--decay", choices=("linear", "cosine"), default="linear", help="decay to 2%% of --lr (linear)")
    o.add_argument("--batch-seconds", type=float, default=60.0, help="padded audio seconds per batch (%(default)s)")
    o.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step (%(default)s)")
    o.add_argument("--seed", type=int, default=0, help="batch order, dropout and masking (%(default)s)")
    o.add_argument(
        "--train-feature-encoder", action="store_true", help="train the CNN feature encoder too (default: frozen)"
    )
    o.add_argument(
        "--mask-time-prob", type=float, default=None, help="SpecAugment time masking (default: the checkpoint's config)"
    )
    o.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto = bf16 on CUDA with bf16 (else fp16 with a loss scaler), bf16 on CPUs with native BF16 "
        "(AVX-512 BF16 / AMX), else fp32 (default: auto)",
    )
    d = f.add_argument_group("data and evals")
    d.add_argument("--eval-every", type=int, default=200, help="steps between evals; one more at the end (%(default)s)")
    d.add_argument("--eval-at-start", action="store_true", help="also evaluate the checkpoint as loaded (step 0)")
    d.add_argument(
        "--skip-bad-rows", action="store_true", help="leave out bad manifest rows (reported) instead of failing"
    )
    d.add_argument(
        "--unknown",
        choices=("error", "drop"),
        default="error",
        help="characters the vocabulary cannot spell (digits, symbols): an error listing them, or dropped "
        "and reported (default: error)",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bar: a log line every --log-every steps")
    d.add_argument("--log-every", type=int, default=50, help="steps between log lines without a bar (%(default)s)")
    f.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..training import FinetuneSettings, finetune

    settings = FinetuneSettings(
        train=args.train,
        eval=args.eval,
        model=args.model,
        out=args.out,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        decay=args.decay,
        batch_seconds=args.batch_seconds,
        grad_accum=args.grad_accum,
        eval_every=args.eval_every,
        eval_at_start=args.eval_at_start,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
        train_feature_encoder=args.train_feature_encoder,
        mask_time_prob=args.mask_time_prob,
        skip_bad_rows=args.skip_bad_rows,
        unknown=args.unknown,
        resume=args.resume,
        overwrite=args.overwrite,
        log_every=args.log_every,
    )
    try:
        result = finetune(settings, progress=not args.no_progress)
    except KeyboardInterrupt:  # a second Ctrl-C: DIR/last is whatever the last finished save left
        print("streaming-asr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    from ..training.dataset import duration

    if result.best is not None:
        best = f"best WER {result.best_wer:.4f} CER {result.best_cer:.4f} at step {result.best_step}: {result.best}"
    else:
        best = "no eval ran"
    if result.interrupted:
        print(f"streaming-asr: interrupted at step {result.steps}: saved {result.last} (continue with --resume)")
    steps = f"{result.steps} step{'' if result.steps == 1 else 's'}"
    print(
        f"streaming-asr: {steps}, {duration(result.audio_seconds)} of audio seen; {best}; "
        f"last: {result.last}; history: {result.history_path}"
    )
    return EXIT_INTERRUPTED if result.interrupted else 0
