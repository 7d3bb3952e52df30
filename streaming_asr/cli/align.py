"""`streaming-asr align AUDIO TRANSCRIPT`: word and character times for a known transcript (CTC forced
alignment over the whole file), as JSON, SubRip, WebVTT or a Praat TextGrid."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..tasks.align_formats import FORMATS
from .options import add_model_args, model_precision


def register(sub: Any) -> None:
    a = sub.add_parser("align", help="word and character times for a known transcript (forced alignment)")
    a.add_argument("audio", help="audio file (WAV/FLAC/OGG), any rate: resampled to the model's")
    a.add_argument("transcript", help="the transcript itself, or @FILE to read it from a UTF-8 file (@- for stdin)")
    a.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="json (words, chars, skipped), srt / vtt (one cue per word), textgrid (Praat, "
        "tiers words and chars) (default: %(default)s)",
    )
    add_model_args(a)
    a.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import soundfile as sf

    from ..audio import read_audio, resample
    from ..tasks.align import AlignError, align_audio
    from ..tasks.align_formats import render

    try:
        transcript = _transcript(args.transcript)
    except (OSError, UnicodeDecodeError) as exc:
        return _bad(f"cannot read the transcript {args.transcript[1:]}: {exc}")
    if not transcript.strip():
        return _bad("the transcript is empty")
    try:
        audio, rate = read_audio(args.audio)
    except (sf.LibsndfileError, OSError, RuntimeError, ValueError) as exc:
        return _bad(f"cannot read {args.audio}: {exc}")
    if audio.size == 0:
        return _bad(f"{args.audio} has no audio")
    from ..model import CtcModel

    model = CtcModel.load(args.model, device=args.device, threads=args.threads, precision=model_precision(args))
    audio = resample(audio, rate, model.info.sample_rate)
    try:
        alignment = align_audio(model, model.info, audio, transcript)
    except AlignError as exc:
        return _bad(f"{args.audio}: {exc}")
    sys.stdout.write(render(alignment, args.format))
    return 0


def _transcript(arg: str) -> str:
    if not arg.startswith("@"):
        return arg
    if arg == "@-":
        return sys.stdin.read()
    with open(arg[1:], encoding="utf-8") as fh:
        return fh.read()


def _bad(message: str) -> int:
    print(f"streaming-asr: error: {message}", file=sys.stderr)
    return 2
