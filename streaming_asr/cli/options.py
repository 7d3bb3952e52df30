"""Options shared by the commands: the model, the streaming engine, and what a checkpoint allows."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING

from ..config import StreamConfig
from ..model import DEFAULT_MODEL, PRECISIONS

if TYPE_CHECKING:
    from ..decoding.lm import LmSettings


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=os.environ.get("STREAMING_ASR_MODEL", DEFAULT_MODEL),
        help="HF hub id or local directory with a CTC checkpoint (default: %(default)s)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads per model worker (default: cores / model workers)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto = fp16 on CUDA, bf16 on CPUs with native BF16 (AVX-512 BF16 / AMX), else fp32; "
        "int8 = dynamic quantisation of Linear layers, CPU only (default: auto)",
    )
    p.add_argument(
        "--quantize", choices=["none", "int8"], default="none", help="alias: --quantize int8 is --precision int8"
    )
    p.add_argument(
        "--language",
        default=None,
        metavar="ISO",
        help="adapter checkpoints (MMS, e.g. facebook/mms-1b-all): the language to load, e.g. fra; its "
        "adapter and vocabulary are switched in (serve: the default for sessions that name none); "
        "auto: detected with --lid-model (default: the checkpoint's own)",
    )


def model_precision(args: argparse.Namespace) -> str:
    return "int8" if args.quantize == "int8" else args.precision


def on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return value == "on"


def add_engine_args(p: argparse.ArgumentParser) -> None:
    d = StreamConfig()
    g = p.add_argument_group("streaming engine")
    g.add_argument("--chunk", type=float, default=d.chunk_s, help="seconds of new audio per window (%(default)s)")
    g.add_argument(
        "--left-context",
        type=float,
        default=d.left_context_s,
        help="seconds of earlier audio each window sees (%(default)s)",
    )
    g.add_argument(
        "--lookahead", type=float, default=d.lookahead_s, help="seconds of later audio each window sees (%(default)s)"
    )
    g.add_argument(
        "--endpoint-silence",
        type=float,
        default=d.endpoint_silence_s,
        help="non-speech seconds that close a segment, 0 = off (%(default)s)",
    )
    g.add_argument(
        "--max-segment", type=float, default=d.max_segment_s, help="longest segment in seconds (%(default)s)"
    )
    g.add_argument(
        "--feature-reuse",
        type=on_off,
        default=True,
        metavar="on|off",
        help="run the CNN feature encoder on new audio only, reusing its exact output for the "
        "left context (default: on)",
    )
    g.add_argument(
        "--state-reuse",
        type=on_off,
        default=True,
        metavar="on|off",
        help="run the transformer on new frames only, attending to the left context's cached "
        "keys/values (limited left-context attention; see README for what it costs in "
        "accuracy; off = recompute the left context every window) (default: on)",
    )
    g.add_argument(
        "--state-refresh",
        type=float,
        default=d.state_refresh_s,
        help="with state reuse: seconds of the newest left context the transformer runs again "
        "each window, with the new right context (more accuracy, more compute) (%(default)s)",
    )
    g.add_argument(
        "--lookahead-reuse",
        type=on_off,
        default=False,
        metavar="on|off",
        help="with state reuse: take the previous window's look-ahead features instead of running "
        "the CNN on them again (default: off)",
    )
    g.add_argument(
        "--max-catchup-chunks",
        type=int,
        default=d.max_catchup_chunks,
        help="a session that fell behind may own this many chunks in one window; 1 makes "
        "results independent of timing at some cost in throughput (%(default)s)",
    )


def engine_config(args: argparse.Namespace) -> StreamConfig:
    return StreamConfig(
        chunk_s=args.chunk,
        left_context_s=args.left_context,
        lookahead_s=args.lookahead,
        endpoint_silence_s=args.endpoint_silence,
        max_segment_s=args.max_segment,
        max_catchup_chunks=args.max_catchup_chunks,
        feature_reuse=args.feature_reuse or args.state_reuse,
        state_reuse=args.state_reuse,
        state_refresh_s=args.state_refresh if args.state_reuse else 0.0,
        lookahead_reuse=args.lookahead_reuse and args.state_reuse,
    ).validate()


def usable_config(model: object, config: StreamConfig) -> StreamConfig:
    """`config` without reuse where the checkpoint's architecture has no reuse path (logged)."""
    from dataclasses import replace

    if config.reuse != "recompute" and not getattr(model, "supports_reuse", False):
        logging.getLogger("streaming_asr").warning(
            "this checkpoint has no feature/state reuse path: recomputing every window"
        )
        return replace(config, feature_reuse=False, state_reuse=False)
    if config.state_reuse and not getattr(model, "supports_state_reuse", True):  # WavLM, conformers
        logging.getLogger("streaming_asr").warning(
            "this checkpoint's layers have no exact state reuse path: feature reuse only, "
            "the transformer recomputes the left context every window"
        )
        return replace(config, state_reuse=False, state_refresh_s=0.0, lookahead_reuse=False)
    return config


def add_encoder_args(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """--model/--device/--threads of the commands that run a checkpoint's encoder in fp32 (embed, units, classify)."""
    p.add_argument(
        "--model",
        default=default,
        required=default is None,
        help=f"HF hub id or local directory with {what}" + (" (default: %(default)s)" if default else ""),
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def add_lm_args(p: argparse.ArgumentParser, phrases: bool = False) -> None:
    """--lm and its knobs (transcribe and serve): finals decoded with an n-gram LM (decoding/lm.py)."""
    from ..decoding.lm import DEFAULT_BEAM_WIDTH, DEFAULT_LM_WEIGHT, DEFAULT_WORD_SCORE, PHRASE_MODES

    p.add_argument("--lm", default=None, metavar="PATH", help="n-gram LM (ARPA or KenLM binary) for finals")
    p.add_argument("--lm-weight", type=float, default=DEFAULT_LM_WEIGHT, help="LM weight, alpha (%(default)s)")
    p.add_argument("--word-score", type=float, default=DEFAULT_WORD_SCORE, help="bonus per word, beta (%(default)s)")
    p.add_argument("--beam-width", type=int, default=DEFAULT_BEAM_WIDTH, help="LM beam width (%(default)s)")
    if not phrases:  # transcribe has no phrase lists
        return
    p.add_argument(
        "--lm-phrases",
        choices=PHRASE_MODES,
        default="trie",
        help="how a session's phrases join the LM search: the phrase trie search with LM word scores "
        "(trie, measured better: bench/lm.py) or pyctcdecode's hotwords (default: %(default)s)",
    )


def lm_settings(args: argparse.Namespace) -> LmSettings | None:
    """The --lm options, checked (ConfigError: exit 2), or None without --lm."""
    if getattr(args, "lm", None) is None:
        return None
    from ..decoding.lm import LmSettings

    settings = LmSettings(
        args.lm, args.lm_weight, args.word_score, args.beam_width, getattr(args, "lm_phrases", "trie")
    )
    settings.check()
    return settings
