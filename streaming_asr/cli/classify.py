"""`streaming-asr classify FILES --model M`: audio classification (language id, emotion, speaker...), one
JSON line per file in the order given: `[{"label", "score"}, ...]`, best first."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..tasks.classify import DEFAULT_TOP_K, classify
from ..tasks.embed import TaskInputError
from .embed import bad_input, check_files, check_lengths, read_input, runtime_failure
from .options import add_encoder_args


def register(sub: Any) -> None:
    c = sub.add_parser(
        "classify", help="classify audio files (language id, emotion, speaker: an audio-classification model)"
    )
    c.add_argument("files", nargs="+", help="audio files (WAV/FLAC/OGG; resampled to the model's rate)")
    c.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help="labels per file, highest score first; 0 = all (default: %(default)s)",
    )
    add_encoder_args(c, None, "an AutoModelForAudioClassification checkpoint, e.g. facebook/mms-lid-126")
    c.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.top_k < 0:
            raise TaskInputError("invalid_top_k", f"--top-k must be 0 (all labels) or more, got {args.top_k}")
        durations = check_files(args.files)
    except TaskInputError as exc:
        return bad_input(exc)
    from ..model.encoder import Encoder

    encoder = Encoder.load(args.model, "classify", device=args.device, threads=args.threads)
    try:
        check_lengths(args.files, durations, encoder.info)
        for path in args.files:
            print(json.dumps(classify(encoder, read_input(path, encoder.info), args.top_k)), flush=True)
    except TaskInputError as exc:
        return bad_input(exc)
    except (RuntimeError, MemoryError) as exc:
        return runtime_failure(exc)
    return 0
