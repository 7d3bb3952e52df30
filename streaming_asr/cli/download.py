"""`streaming-asr download MODEL --to DIR`: a hub checkpoint as a directory, for images and air-gapped hosts."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    d = sub.add_parser("download", help="save a model (hub id or directory) as a directory for offline hosts")
    d.add_argument("model", help="HF hub id, e.g. facebook/wav2vec2-base-960h")
    d.add_argument("--to", required=True, metavar="DIR", help="where to save it (then: serve --model DIR)")
    d.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..model.hub import download

    print(f"streaming-asr: saved {args.model} to {download(args.model, args.to)} (serve --model DIR)")
    return 0
