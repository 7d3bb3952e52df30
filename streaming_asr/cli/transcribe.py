"""`streaming-asr transcribe FILES`: offline (the HF-equivalent chunked pass) or streaming, text or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from ..tasks.language_id import add_lid_args, is_auto, load_language
from .options import (
    add_engine_args,
    add_lm_args,
    add_model_args,
    engine_config,
    lm_settings,
    model_precision,
    usable_config,
)

if TYPE_CHECKING:
    import numpy as np

    from ..model.encoder import Encoder
    from ..offline import Transcript
    from ..tasks.language_id import Detection


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
    t.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="offline: windows of up to N files per forward, output unchanged and in input order; "
        "group-norm checkpoints (base-960h) batch only equal-length windows, layer-norm ones pad and "
        "mask (default: %(default)s)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_model_args(t)
    add_lid_args(t, serve=False)
    add_engine_args(t)
    add_lm_args(t)
    t.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = engine_config(args)
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.stream and args.batch_size > 1:
        raise ConfigError("--batch-size works with offline transcription only: --stream runs each file on its own")
    lm = lm_settings(args)
    if lm is not None and args.batch_size > 1:
        raise ConfigError("--lm decodes each file's finals on their own: use it with --batch-size 1")
    import soundfile as sf

    from ..audio import read_audio
    from ..model import CtcModel
    from ..offline import transcribe_offline, transcribe_streaming

    model = CtcModel.load(
        args.model,
        device=args.device,
        threads=args.threads,
        precision=model_precision(args),
        language=load_language(args.language),
    )
    config = usable_config(model, config)
    lid = _lid_model(args, model)
    lm_decoder = None
    if lm is not None:
        from ..decoding.lm import LmDecoder

        lm_decoder = LmDecoder(model.info, lm)
    if args.batch_size > 1:
        return _run_batched(args, model, config.endpoint_silence_s)
    status = 0
    for path in args.files:
        try:
            audio, _ = read_audio(path, model.info.sample_rate)
        except (sf.LibsndfileError, OSError, RuntimeError) as exc:
            print(f"streaming-asr: error: cannot read {path}: {exc}", file=sys.stderr)
            status = 1
            continue
        bar = _progress_bar(path, audio.size / model.info.sample_rate, args.no_progress)
        forward, info, found = _file_language(args, model, lid, path, audio)
        rescorer = None
        if lm_decoder is not None:
            from ..decoding.lm import LmDecoder, LmRescorer

            decoder = lm_decoder if info is model.info else LmDecoder(info, lm_decoder.settings)
            rescorer = LmRescorer(decoder, info)
        if args.stream:
            push = max(1, int(args.push_ms / 1000 * info.sample_rate))

            def on_event(
                _ev: object, t: float, bar: Any = bar, total_s: float = audio.size / model.info.sample_rate
            ) -> None:
                bar(t / max(1e-9, total_s))

            result = transcribe_streaming(forward, info, audio, config, push, on_event=on_event, rescorer=rescorer)
        else:
            result = transcribe_offline(
                forward, info, audio, config.endpoint_silence_s, progress=bar, rescorer=rescorer
            )
        bar(1.0, done=True)
        _print_result(args, path, result, found)
    return status


def _lid_model(args: argparse.Namespace, model: Any) -> Encoder | None:
    """--language auto: the --lid-model encoder (ConfigError when the pair does not fit)."""
    if not is_auto(args.language):
        if args.lid_model:
            raise ConfigError("--lid-model detects the language for --language auto; add --language auto")
        return None
    if not args.lid_model:
        raise ConfigError("--language auto needs --lid-model M (a language-ID checkpoint, e.g. facebook/mms-lid-126)")
    if model.adapters is None:
        raise ConfigError(f"--language auto: {args.model!r} has no per-language adapters (it transcribes one language)")
    if args.batch_size > 1:
        raise ConfigError("--language auto picks each file's adapter: use it with --batch-size 1")
    from ..model.encoder import Encoder

    return Encoder.load(args.lid_model, "classify", device=str(model.device))


def _file_language(
    args: argparse.Namespace, model: Any, lid: Encoder | None, path: str, audio: np.ndarray
) -> tuple[Any, Any, Detection | None]:
    """(forward, ModelInfo, detection) for one file: in its detected language with --language auto."""
    if lid is None:
        return model, model.info, None
    from ..tasks.language_id import detect_language, in_language

    adapters = model.adapters
    found = detect_language(lid, audio, model.info.sample_rate, adapters.languages, adapters.default, args.lid_seconds)
    score = "no label names a language it has: the default" if found.fallback else f"score {found.score:.3f}"
    print(f"streaming-asr: {path}: language {found.language} ({score}, from {found.seconds:g} s)", file=sys.stderr)
    forward, info = in_language(model, found.language)
    return forward, info, found


def _print_result(args: argparse.Namespace, path: str, result: Transcript, found: Detection | None = None) -> None:
    if args.json:
        print(
            json.dumps(
                {
                    "file": path,
                    "duration": round(result.duration_s, 3),
                    "text": result.text,
                    "segments": [f.to_dict() for f in result.finals],
                    **({"language": found.language, "language_detection": found.to_dict()} if found else {}),
                },
                ensure_ascii=False,  # text in any script as it is (stdout is UTF-8: cli main)
            )
        )
    else:
        if len(args.files) > 1:
            print(f"# {path}")
        print(result.text)


def _run_batched(args: argparse.Namespace, model: Any, endpoint_silence_s: float) -> int:
    """`--batch-size N`: the files' windows through offline_batch, printed as one by one would (no progress bars)."""
    import soundfile as sf

    from ..audio import read_audio
    from ..offline_batch import BatchedTranscriber

    failed: list[str] = []

    def readable() -> Iterator[tuple[str, np.ndarray]]:
        for path in args.files:
            try:
                audio, _ = read_audio(path, model.info.sample_rate)
            except (sf.LibsndfileError, OSError, RuntimeError) as exc:
                print(f"streaming-asr: error: cannot read {path}: {exc}", file=sys.stderr)
                failed.append(path)
                continue
            yield path, audio

    runner = BatchedTranscriber(model, args.batch_size, endpoint_silence_s)
    for path, result in runner.transcribe(readable()):
        _print_result(args, path, result)
    return 1 if failed else 0


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
