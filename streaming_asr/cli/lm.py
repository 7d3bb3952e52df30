"""`streaming-asr lm build TEXT... --order 3 --out lm.arpa`: an n-gram LM for `--lm` from text files."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    lm = sub.add_parser("lm", help="n-gram language models for --lm decoding")
    actions = lm.add_subparsers(dest="lm_command", required=True)
    b = actions.add_parser("build", help="build an ARPA LM from text files (needs Debian's irstlm)")
    b.add_argument("texts", nargs="+", metavar="TEXT", help="UTF-8 text files, a sentence per line")
    b.add_argument("--order", type=int, default=3, help="n-gram order (%(default)s)")
    b.add_argument("--out", required=True, metavar="LM.arpa", help="the ARPA file to write")
    b.add_argument(
        "--case",
        choices=("upper", "lower", "keep"),
        default="upper",
        help="the case of the model's vocabulary (wav2vec2 English: upper) (default: %(default)s)",
    )
    b.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..decoding.lm_build import build_arpa

    try:
        sentences = build_arpa(args.texts, args.out, args.order, args.case)
    except RuntimeError as exc:
        print(f"streaming-asr: error: {exc}", file=sys.stderr)
        return 1
    print(f"streaming-asr: wrote {args.out}: a {args.order}-gram LM from {sentences} sentence(s) (use --lm {args.out})")
    return 0
