"""`streaming-asr transcribe FILES`: offline (the HF-equivalent chunked pass) or streaming, text or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .options import add_engine_args, add_model_args, engine_config, model_precision, usable_config


def register(sub: Any) -> None:
    t = sub.add_parser("transcribe", help="transcribe audio files (WAV/FLAC/OGG)")
    t.add_argument("files", nargs="+", help="audio files")
    t.add_argument(
        "--stream",
        action="store_true",
        help="use the streaming algorithm (exactly as the server runs it) instead of offline",
    )
    t.add_argument("--push-ms", type=float, default=100.0, help="with --stream: audio per push (%(default)s ms)")
    t.add_argument("--json", action="store_true", help="print one JSON object per file with segments and words")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_model_args(t)
    add_engine_args(t)
    t.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = engine_config(args)
    import soundfile as sf

    from ..audio import read_audio
    from ..model import CtcModel
    from ..offline import transcribe_offline, transcribe_streaming

    model = CtcModel.load(args.model, device=args.device, threads=args.threads, precision=model_precision(args))
    config = usable_config(model, config)
    status = 0
    for path in args.files:
        try:
            audio, _ = read_audio(path, model.info.sample_rate)
        except (sf.LibsndfileError, OSError, RuntimeError) as exc:
            print(f"streaming-asr: error: cannot read {path}: {exc}", file=sys.stderr)
            status = 1
            continue
        bar = _progress_bar(path, audio.size / model.info.sample_rate, args.no_progress)
        if args.stream:
            push = max(1, int(args.push_ms / 1000 * model.info.sample_rate))

            def on_event(
                _ev: object, t: float, bar: Any = bar, total_s: float = audio.size / model.info.sample_rate
            ) -> None:
                bar(t / max(1e-9, total_s))

            result = transcribe_streaming(model, model.info, audio, config, push, on_event=on_event)
        else:
            result = transcribe_offline(model, model.info, audio, config.endpoint_silence_s, progress=bar)
        bar(1.0, done=True)
        if args.json:
            print(
                json.dumps(
                    {
                        "file": path,
                        "duration": round(result.duration_s, 3),
                        "text": result.text,
                        "segments": [f.to_dict() for f in result.finals],
                    }
                )
            )
        else:
            if len(args.files) > 1:
                print(f"# {path}")
            print(result.text)
    return status


def _progress_bar(name: str, seconds: float, disabled: bool):  # type: ignore[no-untyped-def]
    """A tqdm bar on stderr for files over 30 s (quiet for short ones and when not a tty)."""
    if disabled or seconds < 30 or not sys.stderr.isatty():
        return lambda fraction, done=False: None
    from tqdm import tqdm

    bar = tqdm(total=round(seconds, 1), unit="s audio", desc=os.path.basename(name), file=sys.stderr, leave=False)

    def update(fraction: float, done: bool = False) -> None:
        bar.n = round(min(1.0, fraction) * seconds, 1)
        bar.refresh()
        if done:
            bar.close()

    return update
