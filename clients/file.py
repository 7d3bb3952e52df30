"""Transcribe audio files through a streaming-asr server.

    python -m clients.file talk.wav [more.flac ...] [--url ws://127.0.0.1:2700/v1/stream]
                          [--realtime | --fast] [--json [--partials]] [--token T] [--chunk-ms 100]
                          [--output FILE [--format text|jsonl|vtt]]

Each file is one session, sent at its native sample rate and channel count (the server
resamples and downmixes). Finals go to stdout as ``[00:01.20-00:03.40] TEXT`` lines, or as JSON
lines with ``--json``; the live partial is drawn in place only on a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .asr_client import AsrClient, AsrError, ConnectionLost, Final, Partial, run_session_tasks
from .display import Console, ConsoleTextWriter
from .output import FORMATS, JsonLinesWriter, MultiWriter, TranscriptWriter, open_writer

DEFAULT_URL = "ws://127.0.0.1:2700/v1/stream"


def read_blocks(path: str | Path, chunk_ms: float) -> tuple[int, int, Iterator[np.ndarray]]:
    """(sample rate, channels, int16 blocks of ``chunk_ms`` as (frames, channels) arrays)."""
    info = sf.info(str(path))
    frames = max(1, round(info.samplerate * chunk_ms / 1000))
    blocks = sf.blocks(str(path), blocksize=frames, dtype="int16", always_2d=True)
    return info.samplerate, info.channels, blocks


async def stream_file(
    path: str | Path,
    url: str,
    *,
    token: str | None = None,
    realtime: bool = False,
    chunk_ms: float = 100.0,
    on_partial: Callable[[Partial], None] | None = None,
    on_final: Callable[[Final], None] | None = None,
    **start_options: Any,
) -> list[Final]:
    """Send one file as one session and return its finals (callbacks see events as they come)."""
    rate, channels, blocks = read_blocks(path, chunk_ms)
    finals: list[Final] = []
    async with AsrClient(url, sample_rate=rate, channels=channels, token=token, **start_options) as client:

        async def send() -> None:
            started = time.monotonic()
            sent_s = 0.0
            for block in blocks:
                await client.send_audio(block)
                sent_s += len(block) / rate
                if realtime:
                    await asyncio.sleep(max(0.0, started + sent_s - time.monotonic()))
            await client.stop()

        async def receive() -> None:
            async for event in client:
                if isinstance(event, Partial) and on_partial:
                    on_partial(event)
                elif isinstance(event, Final):
                    finals.append(event)
                    if on_final:
                        on_final(event)

        try:
            await run_session_tasks(send(), receive())
        except ConnectionLost:
            if client.fatal_error is None:
                raise
        if client.fatal_error is not None:
            raise AsrError(f"server ended the session: {client.fatal_error.code}: {client.fatal_error.message}")
    return finals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clients.file", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE", help="WAV/FLAC/OGG files (anything soundfile reads)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--token", default=None, help="server token (sent as 'Authorization: Bearer')")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="send audio at the speed it plays")
    pace.add_argument("--fast", action="store_true", help="send audio as fast as the server reads it (default)")
    parser.add_argument("--json", action="store_true", help="print JSON lines of finals instead of text")
    parser.add_argument("--partials", action="store_true", help="with --json: also print partials")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per message (default 100)")
    parser.add_argument("--output", "-o", default=None, help="also write the transcript to this file")
    parser.add_argument("--format", choices=FORMATS, default=None, help="--output format (default: from extension)")
    args = parser.parse_args(argv)
    if args.chunk_ms <= 0:
        parser.error("--chunk-ms must be positive")
    return args


async def run(args: argparse.Namespace, console: Console) -> int:
    stdout: TranscriptWriter = (
        JsonLinesWriter(console.out, partials=args.partials) if args.json else ConsoleTextWriter(console)
    )
    writer = MultiWriter(stdout)
    if args.output:
        writer.writers.append(open_writer(args.output, args.format))
    try:
        for path in args.files:
            if len(args.files) > 1 and not args.json:
                console.print(f"# {path}")
            extra = {"file": str(path)} if args.json and len(args.files) > 1 else {}

            def on_partial(p: Partial, extra=extra) -> None:
                console.live.set_text(p.text)
                writer.write_partial(p, **extra)

            def on_final(f: Final, extra=extra) -> None:
                console.live.set_text("")
                writer.write_final(f, **extra)

            try:
                await stream_file(
                    path,
                    args.url,
                    token=args.token,
                    realtime=args.realtime,
                    chunk_ms=args.chunk_ms,
                    on_partial=on_partial,
                    on_final=on_final,
                )
            except (OSError, sf.LibsndfileError, RuntimeError) as exc:
                console.message(f"error: {path}: {exc}")
                return 1
    finally:
        console.close()
        writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        return asyncio.run(run(args, console))
    except AsrError as exc:
        console.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        console.close()
        return 130


if __name__ == "__main__":
    sys.exit(main())
