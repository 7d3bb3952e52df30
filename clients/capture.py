"""Audio capture for live clients: sound card or file, both through one callback path.

A :class:`CaptureSource` calls :meth:`AudioBridge.callback` from its own thread with blocks of
int16 audio, exactly as sounddevice calls an ``InputStream`` callback. The bridge hands the
blocks to the event loop with ``loop.call_soon_threadsafe`` and never blocks the audio thread:
when the consumer falls behind, whole blocks are dropped and counted.

:class:`FileSource` replays a file through that same callback (for tests and
``--simulate-file``), so everything after the sound card is exercised without one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

try:  # PortAudio is missing on many servers: fail only when capture is asked for
    import sounddevice as sd

    SOUNDDEVICE_ERROR: str | None = None
except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
    sd = None  # type: ignore[assignment]
    SOUNDDEVICE_ERROR = str(exc)

AudioCallback = Callable[[np.ndarray, int, Any, Any], None]
"""sounddevice's input callback signature: ``(indata, frames, time, status)``."""


class CaptureError(Exception):
    """Capture cannot start: no PortAudio, no input device, unknown device..."""


@dataclass(frozen=True)
class Block:
    """A captured block; ``start_frame`` counts every frame captured before it, dropped ones too."""

    start_frame: int
    data: np.ndarray


class AudioBridge:
    """Thread-safe hand-over of audio blocks from a capture thread to an asyncio consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_blocks: int = 100) -> None:
        self.loop = loop
        self.max_blocks = max_blocks
        self.queue: asyncio.Queue[Block | None] = asyncio.Queue()  # None marks end of audio
        self.frames = 0
        self.dropped_blocks = 0
        self.status_warnings = 0  # PortAudio input overflows reported by the callback
        self.ended = False
        self.on_block: Callable[[Block], None] | None = None

    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """The audio-thread callback: copy (PortAudio reuses the buffer) and hand over."""
        if status:
            self.status_warnings += 1
        try:
            self.loop.call_soon_threadsafe(self._put, indata.copy())
        except RuntimeError:  # the loop is closed: we are shutting down
            pass

    def end(self) -> None:
        """Called by a source when its audio is over (end of file)."""
        try:
            self.loop.call_soon_threadsafe(self._put_end)
        except RuntimeError:
            pass

    def _put(self, data: np.ndarray) -> None:
        block = Block(self.frames, data)
        self.frames += len(data)
        if self.on_block is not None:
            self.on_block(block)
        if self.queue.qsize() >= self.max_blocks:
            self.dropped_blocks += 1
            return
        self.queue.put_nowait(block)

    def _put_end(self) -> None:
        self.ended = True
        self.queue.put_nowait(None)


class CaptureSource(Protocol):
    """Delivers int16 ``(frames, channels)`` blocks to a sounddevice-style callback."""

    sample_rate: int
    channels: int

    def start(self, callback: AudioCallback, on_end: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- sound card


def require_sounddevice() -> Any:
    if sd is None:
        raise CaptureError(
            f"audio capture needs the PortAudio library ({SOUNDDEVICE_ERROR}); "
            "install it, e.g. 'apt-get install libportaudio2' or 'brew install portaudio'"
        )
    return sd


def input_devices() -> list[tuple[int, dict[str, Any]]]:
    """(index, device info) of every device with input channels."""
    devices = require_sounddevice().query_devices()
    return [(i, dict(d)) for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]


def default_input_index() -> int | None:
    try:
        index = require_sounddevice().default.device[0]
    except (TypeError, IndexError):
        return None
    return int(index) if index is not None and int(index) >= 0 else None


def find_input_device(spec: str | int | None) -> tuple[int, dict[str, Any]]:
    """An input device by index, by case-insensitive name substring, or the default one."""
    inputs = input_devices()
    if not inputs:
        raise CaptureError("no audio input device found")
    if spec is None or spec == "":
        default = default_input_index()
        return next(((i, d) for i, d in inputs if i == default), inputs[0])
    if isinstance(spec, int) or str(spec).isdigit():
        index = int(spec)
        for i, d in inputs:
            if i == index:
                return i, d
        raise CaptureError(f"no input device with index {index} (see --list-devices)")
    matches = [(i, d) for i, d in inputs if str(spec).lower() in str(d.get("name", "")).lower()]
    if not matches:
        raise CaptureError(f"no input device matches {spec!r} (see --list-devices)")
    return matches[0]


def describe_input_devices() -> list[str]:
    """Lines for ``--list-devices``: index, name, default rate, input channels; ``*`` = default."""
    default = default_input_index()
    lines = []
    for i, d in input_devices():
        mark = "*" if i == default else " "
        lines.append(
            f"{mark}{i:3d}  {d.get('name', '?')}  "
            f"({int(d.get('default_samplerate', 0))} Hz, {d.get('max_input_channels', 0)} ch)"
        )
    return lines


class SoundDeviceSource:
    """Captures from a sound card at its native default rate (the server resamples)."""

    def __init__(self, device: str | int | None = None, channels: int = 1, block_ms: float = 80.0) -> None:
        index, info = find_input_device(device)
        self.device_index = index
        self.device_name = str(info.get("name", index))
        self.sample_rate = round(float(info.get("default_samplerate") or 16000))
        self.channels = max(1, min(int(channels), int(info.get("max_input_channels", 1)), 8))
        self.block_frames = max(1, round(self.sample_rate * block_ms / 1000))
        self._stream: Any = None

    def start(self, callback: AudioCallback, on_end: Callable[[], None]) -> None:
        module = require_sounddevice()
        try:
            self._stream = module.InputStream(
                device=self.device_index,
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype="int16",
                blocksize=self.block_frames,
                callback=callback,
            )
            self._stream.start()
        except Exception as exc:  # noqa: BLE001 (PortAudioError, ValueError for bad settings...)
            raise CaptureError(f"cannot open input device {self.device_name!r}: {exc}") from None

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.stop()
            stream.close()


# --------------------------------------------------------------------------- file


class FileSource:
    """Replays a sound file through the capture callback, in real time or ``speed`` times faster."""

    def __init__(self, path: str | Path, block_ms: float = 80.0, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        info = sf.info(str(path))
        self.path = Path(path)
        self.sample_rate = int(info.samplerate)
        self.channels = int(info.channels)
        self.block_frames = max(1, round(self.sample_rate * block_ms / 1000))
        self.speed = speed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, callback: AudioCallback, on_end: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(callback, on_end), name="file-capture", daemon=True)
        self._thread.start()

    def _run(self, callback: AudioCallback, on_end: Callable[[], None]) -> None:
        started = time.monotonic()
        played = 0
        for block in sf.blocks(str(self.path), blocksize=self.block_frames, dtype="int16", always_2d=True):
            if self._stop.is_set():
                return
            played += len(block)
            # a sound card delivers a block once it has been recorded: wait for its end
            delay = started + played / self.sample_rate / self.speed - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            callback(block, len(block), None, None)
        on_end()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
