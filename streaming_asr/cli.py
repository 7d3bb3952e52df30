"""`streaming-asr` command line: `transcribe` files (offline or streaming), `serve` over WebSockets,
`download` a model for offline hosts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .config import ConfigError, StreamConfig
from .model import DEFAULT_MODEL, PRECISIONS, ModelLoadError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming-asr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

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

    d = sub.add_parser("download", help="save a model (hub id or directory) as a directory for offline hosts")
    d.add_argument("model", help="HF hub id, e.g. facebook/wav2vec2-base-960h")
    d.add_argument("--to", required=True, metavar="DIR", help="where to save it (then: serve --model DIR)")

    s = sub.add_parser("serve", help="run the WebSocket server")
    from .server import add_server_args

    add_server_args(s)
    add_model_args(s)
    add_engine_args(s)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    sources: dict[str, str] = {}
    if "serve" in argv:
        from .server.options import layer_defaults

        subcommands: Any = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        serve = subcommands["serve"]
        sources = layer_defaults(serve, argv[argv.index("serve") + 1 :])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "log_format", "text") == "json":
        from .logformat import use_json_logs

        use_json_logs()
    if sources:
        from .server.options import describe

        logging.getLogger("streaming_asr.server").info("event=config %s", describe(args, sources))
    for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        if args.command == "download":
            from .model.hub import download

            print(f"streaming-asr: saved {args.model} to {download(args.model, args.to)} (serve --model DIR)")
            return 0
        config = engine_config(args)
        if args.command == "transcribe":
            return _transcribe(args, config)
        from .server import serve_from_args

        return serve_from_args(args, config)
    except (ModelLoadError, ConfigError) as exc:
        print(f"streaming-asr: error: {exc}", file=sys.stderr)
        return 2


def _transcribe(args: argparse.Namespace, config: StreamConfig) -> int:
    import soundfile as sf

    from .audio import read_audio
    from .model import CtcModel
    from .offline import transcribe_offline, transcribe_streaming

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


def usable_config(model: object, config: StreamConfig) -> StreamConfig:
    """`config` without reuse where the checkpoint's architecture has no reuse path (logged)."""
    from dataclasses import replace

    if config.reuse != "recompute" and not getattr(model, "supports_reuse", False):
        logging.getLogger("streaming_asr").warning(
            "this checkpoint has no feature/state reuse path: recomputing every window"
        )
        return replace(config, feature_reuse=False, state_reuse=False)
    return config


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
