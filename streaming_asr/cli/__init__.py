"""`streaming-asr` command line: one module per command family, each with `register(subparsers)`
(its parser, `handler=run`) and `run(args) -> exit code`.

Exit codes: 0 done, 2 bad input or configuration (a message, no traceback), 1 a runtime failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from ..config import ConfigError
from ..model import ModelLoadError
from . import align, classify, download, embed, finetune, lm, serve, transcribe, units
from .options import add_engine_args, add_model_args, engine_config, model_precision, usable_config

COMMANDS = (transcribe, download, serve, align, embed, units, classify, lm, finetune)  # the order --help lists them in
DESCRIPTION = "Real-time speech recognition with wav2vec2-family CTC models: files, streams and more."

__all__ = [
    "add_engine_args",
    "add_model_args",
    "build_parser",
    "engine_config",
    "main",
    "model_precision",
    "usable_config",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming-asr", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    sources: dict[str, str] = {}
    if "serve" in argv:
        from ..server.options import layer_defaults

        subcommands: Any = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        serve_parser = subcommands["serve"]
        sources = layer_defaults(serve_parser, argv[argv.index("serve") + 1 :])
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # transcripts in any script: UTF-8, whatever the locale says
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(encoding="utf-8")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "log_format", "text") == "json":
        from ..logformat import use_json_logs

        use_json_logs()
    if sources:
        from ..server.options import describe

        logging.getLogger("streaming_asr.server").info("event=config %s", describe(args, sources))
    for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        code: int = args.handler(args)
        return code
    except (ModelLoadError, ConfigError) as exc:
        print(f"streaming-asr: error: {exc}", file=sys.stderr)
        return 2
