"""Live captions from a microphone.

    python -m clients.mic [URL] [--token T] [--device INDEX|NAME] [--channels N] [--block-ms 80]
                          [--output FILE [--format text|jsonl|vtt]] [--no-partials]
    python -m clients.mic --list-devices
    python -m clients.mic --simulate-file talk.wav [--speed 2]     # no sound card needed

Captures at the device's native rate (the server resamples), shows the live partial with a level
meter on the terminal and prints finals as ``[MM:SS.cc-MM:SS.cc] TEXT``. Ctrl-C sends ``stop`` and
prints the last final; a second Ctrl-C quits at once. A dropped connection is retried with
backoff; segment numbers and times continue across reconnects.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from .asr_client import Final, Partial
from .capture import Block, CaptureError, CaptureSource, FileSource, SoundDeviceSource, describe_input_devices
from .display import Console, ConsoleTextWriter, rms_dbfs
from .live import EXIT_ERROR, LiveStreamer
from .output import FORMATS, MultiWriter, open_writer

DEFAULT_URL = "ws://127.0.0.1:2700/v1/stream"


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the mic and command clients."""
    parser.add_argument("--token", default=None, help="server token (sent as 'Authorization: Bearer')")
    parser.add_argument("--device", default=None, help="input device index or name substring (default: system default)")
    parser.add_argument(
        "--channels", type=int, default=1, help="channels to capture and send (server downmixes; default 1)"
    )
    parser.add_argument("--block-ms", type=float, default=80.0, help="capture block length (default 80 ms)")
    parser.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    parser.add_argument(
        "--simulate-file", metavar="FILE", default=None, help="capture from a sound file instead of a device"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="--simulate-file pace (1 = real time)")


def check_capture_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validation of the options add_capture_arguments added (exits through parser.error)."""
    if args.speed <= 0 or args.block_ms <= 0 or not 1 <= args.channels <= 8:
        parser.error("--speed and --block-ms must be positive, --channels 1..8")


def list_devices(console: Console) -> int:
    try:
        lines = describe_input_devices()
    except CaptureError as exc:
        console.message(f"error: {exc}")
        return EXIT_ERROR
    if not lines:
        console.message("error: no audio input device found")
        return EXIT_ERROR
    console.print("  idx  name  (default rate, input channels); * = default")
    for line in lines:
        console.print(line)
    return 0


def make_source(args: argparse.Namespace) -> CaptureSource:
    """The capture source the options ask for; raises CaptureError with a one-line reason."""
    if args.simulate_file:
        try:
            return FileSource(args.simulate_file, block_ms=args.block_ms, speed=args.speed)
        except (OSError, RuntimeError, ValueError) as exc:
            raise CaptureError(f"cannot read {args.simulate_file}: {exc}") from None
    return SoundDeviceSource(args.device, channels=args.channels, block_ms=args.block_ms)


def install_interrupt_handler(streamer: LiveStreamer, console: Console) -> None:
    """First Ctrl-C: stop cleanly (last final still printed). Second: quit now."""

    def on_interrupt() -> None:
        if streamer.stopping:
            streamer.abort()
        else:
            console.message("stopping... (Ctrl-C again to quit now)")
            streamer.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_interrupt)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            pass


async def run(args: argparse.Namespace, console: Console) -> int:
    try:
        source = make_source(args)
    except CaptureError as exc:
        console.message(f"error: {exc}")
        return EXIT_ERROR
    name = getattr(source, "device_name", None) or getattr(source, "path", "")
    console.message(f"capturing from {name} at {source.sample_rate} Hz, {source.channels} ch -> {args.url}")

    writer = MultiWriter(ConsoleTextWriter(console))
    if args.output:
        try:
            writer.writers.append(open_writer(args.output, args.format))
        except OSError as exc:
            console.message(f"error: cannot write {args.output}: {exc}")
            return EXIT_ERROR

    def on_partial(partial: Partial) -> None:
        console.live.set_text(partial.text)

    def on_final(final: Final) -> None:
        console.live.set_text("")
        writer.write_final(final)

    def on_block(block: Block) -> None:
        console.live.set_level(rms_dbfs(block.data))

    streamer = LiveStreamer(
        source,
        args.url,
        token=args.token,
        on_partial=on_partial if not args.no_partials else None,
        on_final=on_final,
        on_message=console.message,
        on_block=on_block if console.live.enabled else None,
        interim_results=not args.no_partials,
    )
    install_interrupt_handler(streamer, console)
    try:
        return await streamer.run()
    except CaptureError as exc:
        console.message(f"error: {exc}")
        return EXIT_ERROR
    finally:
        writer.close()
        console.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clients.mic", description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"server WebSocket URL (default {DEFAULT_URL})")
    add_capture_arguments(parser)
    parser.add_argument("--output", "-o", default=None, help="also write the transcript to this file")
    parser.add_argument("--format", choices=FORMATS, default=None, help="--output format (default: from extension)")
    parser.add_argument("--no-partials", action="store_true", help="ask for finals only")
    args = parser.parse_args(argv)
    check_capture_arguments(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if args.list_devices:
        return list_devices(console)
    try:
        return asyncio.run(run(args, console))
    except KeyboardInterrupt:  # platforms without loop signal handlers
        console.close()
        return 130


if __name__ == "__main__":
    sys.exit(main())
