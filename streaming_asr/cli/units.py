"""`streaming-asr units FILE`: per-frame codebook indices of a pre-training checkpoint's quantizer, as JSON
on stdout or an int64 (frames, groups) array in an .npy."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from ..tasks.embed import TaskInputError
from ..tasks.units import unit_indices, units_json
from .embed import bad_input, check_files, check_lengths, output_path, read_input, runtime_failure
from .options import add_encoder_args

DEFAULT_UNITS_MODEL = "facebook/wav2vec2-base"  # pre-training checkpoint: it still has its quantizer


def register(sub: Any) -> None:
    u = sub.add_parser("units", help="discrete units: per-frame codebook indices of a pre-training checkpoint")
    u.add_argument("file", help="audio file (WAV/FLAC/OGG; resampled to the model's rate)")
    u.add_argument(
        "--format",
        choices=("json", "npy"),
        default="json",
        help='json: {"frame_s", "groups", "entries", "units": [[i_1, ..., i_G], ...]}; npy: an int64 '
        "(frames, groups) array, needs --out (default: %(default)s)",
    )
    u.add_argument("--out", metavar="F", default=None, help="write here instead of stdout")
    add_encoder_args(u, DEFAULT_UNITS_MODEL, "a checkpoint with a quantizer (Wav2Vec2ForPreTraining)")
    u.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.format == "npy" and not args.out:
            raise TaskInputError("bad_output", "--format npy writes a file: give --out F.npy")
        out = output_path(args.out) if args.out else None
        durations = check_files([args.file])
    except TaskInputError as exc:
        return bad_input(exc)
    from ..model.encoder import Encoder

    encoder = Encoder.load(args.model, "units", device=args.device, threads=args.threads)
    try:
        check_lengths([args.file], durations, encoder.info)
        units = unit_indices(encoder, read_input(args.file, encoder.info))
    except TaskInputError as exc:
        return bad_input(exc)
    except (RuntimeError, MemoryError) as exc:
        return runtime_failure(exc)
    try:
        if args.format == "npy":
            assert out is not None
            with open(out, "wb") as fh:  # np.save(path) would add .npy to a name without it
                np.save(fh, units)
        elif out is not None:
            out.write_text(json.dumps(units_json(encoder, units)) + "\n")
        else:
            print(json.dumps(units_json(encoder, units)))
    except OSError as exc:
        print(f"streaming-asr: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    return 0
