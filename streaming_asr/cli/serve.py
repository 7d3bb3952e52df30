"""`streaming-asr serve`: the WebSocket/HTTP server (its options live in server/settings.py)."""

from __future__ import annotations

import argparse
from typing import Any

from .options import add_engine_args, add_lm_args, add_model_args, engine_config


def register(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the WebSocket server")
    from ..server import add_server_args

    add_server_args(s)
    add_model_args(s)
    add_engine_args(s)
    add_lm_args(s, phrases=True)
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..server import serve_from_args

    return serve_from_args(args, engine_config(args))
