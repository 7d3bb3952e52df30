"""Terminal display for live transcripts: one status line rewritten in place above finals.

The live line (level meter + current partial) is only drawn on a terminal: on stdout when it
is a tty, else on stderr when that is a tty, else nowhere, so piped output stays clean.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import TextIO

import numpy as np

from .output import TextWriter

LEVEL_BARS = "▁▂▃▄▅▆▇█"
CLEAR_LINE = "\r\x1b[K"


def rms_dbfs(block: np.ndarray) -> float:
    """RMS level of an int16 or float (−1…1) block in dB relative to full scale."""
    if block.size == 0:
        return -math.inf
    samples = block.astype(np.float64)
    if block.dtype == np.int16:
        samples /= 32768.0
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def level_bar(dbfs: float, floor_db: float = -60.0) -> str:
    """One block character for a level between ``floor_db`` and 0 dBFS."""
    if not dbfs > floor_db:
        return " "
    fraction = min(1.0, (dbfs - floor_db) / -floor_db)
    return LEVEL_BARS[min(len(LEVEL_BARS) - 1, int(fraction * len(LEVEL_BARS)))]


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LiveLine:
    """A single line rewritten in place with ``\\r`` + clear-to-end-of-line."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, enabled: bool = True) -> None:
        out = out or sys.stdout
        err = err or sys.stderr
        self.stream: TextIO | None = None
        if enabled:
            self.stream = out if _isatty(out) else err if _isatty(err) else None
        self.level = ""  # shown only once a level has been set (the mic meter)
        self.text = ""
        self._shown = False

    @property
    def enabled(self) -> bool:
        return self.stream is not None

    def set_level(self, dbfs: float) -> None:
        bar = level_bar(dbfs)
        if bar != self.level:
            self.level = bar
            self._draw()

    def set_text(self, text: str) -> None:
        self.text = text
        self._draw()

    def clear(self) -> None:
        """Erase the line (before printing something else on the same terminal)."""
        if self.stream is not None and self._shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._shown = False

    def redraw(self) -> None:
        self._draw()

    def _draw(self) -> None:
        if self.stream is None:
            return
        width = shutil.get_terminal_size((80, 24)).columns - 1
        prefix = f"{self.level} " if self.level else ""
        text = self.text
        if len(prefix) + len(text) > width:  # keep the newest words visible
            text = "…" + text[len(text) - (width - len(prefix) - 1) :]
        line = prefix + text if self.level.strip() or text else ""
        self.stream.write(CLEAR_LINE + line)
        self.stream.flush()
        self._shown = bool(line)


class Console:
    """Finals and messages printed above a :class:`LiveLine` without garbling it."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, live: bool = True) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live = LiveLine(self.out, self.err, enabled=live)

    def print(self, line: str, stream: TextIO | None = None) -> None:
        self.live.clear()
        target = stream or self.out
        target.write(line + "\n")
        target.flush()
        self.live.redraw()

    def message(self, line: str) -> None:
        """A one-line status or error message on stderr."""
        self.print(line, self.err)

    def close(self) -> None:
        self.live.clear()


class ConsoleTextWriter(TextWriter):
    """Transcript lines through a :class:`Console`, so they never collide with the live line."""

    def __init__(self, console: Console) -> None:
        super().__init__(console.out)
        self.console = console

    def _emit(self, text: str) -> None:
        self.console.print(text.rstrip("\n"))
