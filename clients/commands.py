"""Voice commands: run programs, print JSON events or POST webhooks when phrases are spoken.

    python -m clients.commands --commands commands.toml [--url URL] [--token T]
                               [--file WAV [--speed 1] | --device DEV ...]

``commands.toml``::

    wake_word = "computer"      # optional: must precede the phrase (same segment, or within
    wake_window_s = 5.0         #   this many seconds before)
    threshold = 0.8             # similarity 0..1 needed to fire
    cooldown_s = 2.0            # per command

    [[command]]
    phrase = "turn on the lights"
    action = "print"            # print a JSON event on stdout

    [[command]]
    phrase = "stop the music"
    action = "run"              # run a program (no shell)
    run = ["playerctl", "stop"]

    [[command]]
    phrase = "open the door"
    action = "post"             # POST the JSON event to a URL
    url = "http://127.0.0.1:8080/hook"

The phrases (and the wake word) are sent in ``start`` so the server biases decoding toward
them. Matching lives in :mod:`clients.command_matcher` (usable without any I/O).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tomllib
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .asr_client import Final, Partial
from .capture import CaptureError, CaptureSource, FileSource, SoundDeviceSource
from .command_matcher import Command, CommandHit, CommandMatcher
from .display import Console
from .live import EXIT_ERROR, LiveStreamer
from .mic import DEFAULT_URL, add_capture_arguments, check_capture_arguments, install_interrupt_handler, list_devices
from .output import final_line

ACTIONS = ("print", "run", "post")

__all__ = [
    "Command",
    "CommandConfig",
    "CommandHit",
    "CommandMatcher",
    "ConfigError",
    "hit_event",
    "load_config",
    "main",
]


class ConfigError(ValueError):
    """The commands file is invalid; the message says where."""


@dataclass(frozen=True)
class CommandConfig:
    commands: tuple[Command, ...]
    threshold: float = 0.8
    wake_word: str | None = None
    cooldown_s: float = 2.0
    wake_window_s: float = 5.0

    def matcher(self) -> CommandMatcher:
        return CommandMatcher(self.commands, self.threshold, self.wake_word, self.cooldown_s, self.wake_window_s)


def load_config(path: str | Path) -> CommandConfig:
    """Read and validate a commands TOML file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    entries = data.get("command")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[command]] entries")
    commands = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: command #{number}"
        phrase = entry.get("phrase")
        if not isinstance(phrase, str) or not phrase.strip():
            raise ConfigError(f"{where}: 'phrase' must be a non-empty string")
        action = entry.get("action", "print")
        if action not in ACTIONS:
            raise ConfigError(f"{where}: action must be one of {', '.join(ACTIONS)}, not {action!r}")
        run = entry.get("run", [])
        if action == "run" and (not isinstance(run, list) or not run or not all(isinstance(a, str) for a in run)):
            raise ConfigError(f'{where}: action \'run\' needs run = ["program", "arg", ...]')
        url = entry.get("url")
        if action == "post" and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}: action 'post' needs url = \"http(s)://...\"")
        threshold = entry.get("threshold")
        commands.append(
            Command(phrase, action, tuple(run), url, entry.get("name"), float(threshold) if threshold else None)
        )
    try:
        return CommandConfig(
            tuple(commands),
            threshold=float(data.get("threshold", 0.8)),
            wake_word=data.get("wake_word") or None,
            cooldown_s=float(data.get("cooldown_s", 2.0)),
            wake_window_s=float(data.get("wake_window_s", 5.0)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def hit_event(hit: CommandHit) -> dict[str, Any]:
    """The JSON event describing a hit (printed, or POSTed)."""
    return {
        "event": "command",
        "command": hit.command.label,
        "phrase": hit.command.phrase,
        "heard": hit.heard,
        "score": hit.score,
        "segment": hit.segment,
        "source": hit.source,
        "time": time.time(),
    }


class ActionRunner:
    """Carries out hits without blocking the event loop; failures become one-line messages."""

    def __init__(self, console: Console, out: TextIO | None = None) -> None:
        self.console = console
        self.out = out or sys.stdout
        self.tasks: set[asyncio.Task[None]] = set()

    def fire(self, hit: CommandHit) -> None:
        event = hit_event(hit)
        action = hit.command.action
        if action == "print":
            self.console.print(json.dumps(event), self.out)
            return
        self.console.message(f"command: {hit.command.label} (heard {hit.heard!r}, score {hit.score:.2f})")
        coro = self._run(hit.command.run) if action == "run" else self._post(hit.command.url or "", event)
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, argv: Sequence[str]) -> None:
        try:
            process = await asyncio.create_subprocess_exec(*argv)
            code = await process.wait()
        except OSError as exc:
            self.console.message(f"error: cannot run {argv[0]}: {exc}")
            return
        if code:
            self.console.message(f"warning: {argv[0]} exited with {code}")

    async def _post(self, url: str, event: dict[str, Any]) -> None:
        def post() -> int:
            request = urllib.request.Request(
                url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=5) as response:  # the URL comes from the user's config
                return int(response.status)

        try:
            await asyncio.to_thread(post)
        except OSError as exc:
            self.console.message(f"error: POST {url} failed: {exc}")

    async def drain(self, timeout: float = 5.0) -> None:
        """Let running actions finish before exiting."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)


async def run(args: argparse.Namespace, config: CommandConfig, console: Console) -> int:
    matcher = config.matcher()
    actions = ActionRunner(console)
    source: CaptureSource
    try:
        if args.file:
            source = FileSource(args.file, block_ms=args.block_ms, speed=args.speed)
        else:
            source = SoundDeviceSource(args.device, channels=args.channels, block_ms=args.block_ms)
    except CaptureError as exc:
        console.message(f"error: {exc}")
        return EXIT_ERROR
    except (OSError, RuntimeError) as exc:
        console.message(f"error: cannot read {args.file}: {exc}")
        return EXIT_ERROR

    def on_partial(partial: Partial) -> None:
        console.live.set_text(partial.text)
        for hit in matcher.feed_partial(partial.segment, partial.text, partial.stable, time.monotonic()):
            actions.fire(hit)

    def on_final(final: Final) -> None:
        console.live.set_text("")
        if final.text and not args.quiet:
            console.message(final_line(final))
        phrases = [(p.phrase, p.score) for p in final.phrases]
        for hit in matcher.feed_final(final.segment, final.text, time.monotonic(), phrases):
            actions.fire(hit)

    streamer = LiveStreamer(
        source,
        args.url,
        token=args.token,
        on_partial=on_partial,
        on_final=on_final,
        on_message=console.message,
        phrases=matcher.phrases,
    )
    install_interrupt_handler(streamer, console)
    try:
        return await streamer.run()
    except CaptureError as exc:
        console.message(f"error: {exc}")
        return EXIT_ERROR
    finally:
        await actions.drain()
        console.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clients.commands", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", required=False, help="commands TOML file")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server WebSocket URL (default {DEFAULT_URL})")
    add_capture_arguments(parser)
    parser.add_argument("--file", default=None, help="listen to a sound file instead of a microphone")
    parser.add_argument("--quiet", "-q", action="store_true", help="do not print the transcript on stderr")
    args = parser.parse_args(argv)
    args.file = args.file or args.simulate_file
    if not args.list_devices and not args.commands:
        parser.error("--commands FILE is required")
    check_capture_arguments(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if args.list_devices:
        return list_devices(console)
    try:
        config = load_config(args.commands)
    except ConfigError as exc:
        console.message(f"error: {exc}")
        return EXIT_ERROR
    try:
        return asyncio.run(run(args, config, console))
    except KeyboardInterrupt:
        console.close()
        return 130


if __name__ == "__main__":
    sys.exit(main())
