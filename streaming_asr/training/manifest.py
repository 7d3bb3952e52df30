"""Training manifests: a TSV with a header row, columns found by name (`wav`, `reference`; any others are
ignored, in any order), audio paths relative to the manifest's folder or absolute.

Every problem is collected before anything is reported, so one run names all the bad rows of a file
(the first few line numbers and a count per reason) instead of failing on the first.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError

REQUIRED = ("wav", "reference")
SHOWN_LINES = 5


class ManifestError(ConfigError):
    """A manifest that cannot be trained on; the message names the file, the lines and why."""


@dataclass(frozen=True)
class ManifestRow:
    """One data row: its line in the file (the header is line 1), the audio file, the transcript as written."""

    line: int
    wav: Path
    reference: str


@dataclass
class Problems:
    """Bad rows of one manifest, by reason, in the order found."""

    manifest: Path
    lines: dict[str, list[int]] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)  # extra lines for the message (e.g. unknown characters)

    def add(self, reason: str, line: int) -> None:
        self.lines.setdefault(reason, []).append(line)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def summary(self) -> list[str]:
        """One line per reason: `3 rows: audio file missing: lines 4, 7, 9`."""
        return [
            f"{len(lines)} row{'s' if len(lines) != 1 else ''}: {reason}: {line_list(lines)}"
            for reason, lines in self.lines.items()
        ]

    def error(self) -> ManifestError:
        """All problems as one error (exit 2)."""
        body = "\n  ".join([*self.summary(), *self.details])
        return ManifestError(f"{self.manifest}: {body}\n  (fix these rows, or pass --skip-bad-rows to leave them out)")


def line_list(lines: Iterable[int]) -> str:
    """`lines 2, 3, 5, 8, 13 and 4 more (9 in all)`."""
    ordered = sorted(lines)
    shown = ", ".join(map(str, ordered[:SHOWN_LINES]))
    word = "line" if len(ordered) == 1 else "lines"
    if len(ordered) > SHOWN_LINES:
        return f"{word} {shown} and {len(ordered) - SHOWN_LINES} more ({len(ordered)} in all)"
    return f"{word} {shown}"


def read_manifest(path: str | Path) -> tuple[list[ManifestRow], Problems]:
    """The rows of `path` and the rows that are structurally bad (too few fields).

    ManifestError for a file that cannot be read, lacks a `wav` or `reference` column, or has no rows.
    """
    manifest = Path(path).expanduser()
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"{manifest}: manifest file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{manifest}: cannot read the manifest: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None:
        raise ManifestError(f"{manifest}: empty manifest (no header row, no rows)")
    names = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ManifestError(
            f"{manifest}: line 1: the header has no {' or '.join(repr(c) for c in missing)} column "
            f"(it has: {', '.join(repr(h) for h in header) or 'nothing'}); a tab-separated header row "
            "naming `wav` and `reference` is required"
        )
    wav_col, ref_col = names.index("wav"), names.index("reference")
    rows: list[ManifestRow] = []
    problems = Problems(manifest)
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue  # blank lines are not rows
        if len(fields) <= max(wav_col, ref_col):
            problems.add("fewer tab-separated fields than the header", line)
            continue
        wav = Path(fields[wav_col].strip()).expanduser()
        rows.append(ManifestRow(line, wav if wav.is_absolute() else manifest.parent / wav, fields[ref_col]))
    if not rows and not problems:
        raise ManifestError(f"{manifest}: empty manifest: a header row and no data rows")
    return rows, problems
