"""Manifest rows checked against one checkpoint: readable audio, spellable references, enough frames.

The audio is not decoded here (soundfile reads the header: length and rate), so checking a few hours
of files takes seconds; batches read their audio when they are built.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..model import ModelInfo
from ..tasks.align import min_frames
from .manifest import ManifestError, line_list, read_manifest
from .text import TextNormaliser, describe_characters

log = logging.getLogger("streaming_asr.training")

UNKNOWN_POLICIES = ("error", "drop")
EXAMPLE_CHARACTERS = 3  # characters whose rows the error lists


@dataclass(frozen=True)
class Example:
    """A row ready to train or evaluate on."""

    line: int
    wav: Path
    samples: int  # at the model's sampling rate (from the file's header)
    labels: tuple[int, ...]
    text: str  # the normalised reference


@dataclass
class Dataset:
    """A manifest's usable rows and what was changed or left out on the way."""

    manifest: Path
    examples: list[Example]
    removed: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)
    romanised: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)  # "3 rows: why: lines ..." per reason

    rate: int = 16000

    @property
    def seconds(self) -> float:
        return sum(e.samples for e in self.examples) / self.rate

    def report(self) -> list[str]:
        """Log lines: size, characters removed / romanised / dropped, rows skipped."""
        lines = [f"{self.manifest}: {len(self.examples)} rows, {duration(self.seconds)} of audio"]
        if self.removed:
            lines.append(f"{self.manifest}: removed (not in the vocabulary): {describe_characters(self.removed)}")
        if self.romanised:
            lines.append(f"{self.manifest}: spelled without accents: {describe_characters(self.romanised)}")
        if self.unknown:
            lines.append(f"{self.manifest}: dropped unknown characters: {describe_characters(self.unknown)}")
        if self.skipped:
            lines.append(f"{self.manifest}: skipped bad rows (--skip-bad-rows): " + "; ".join(self.skipped))
        return lines


def duration(seconds: float) -> str:
    """`14.4 s`, `12.3 min` or `2.31 h`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def audio_samples(path: Path, rate: int) -> int | None:
    """The file's length in samples at `rate`, from its header; None when soundfile cannot read it."""
    import soundfile as sf

    try:
        facts = sf.info(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError):
        return None
    if facts.frames <= 0 or facts.samplerate <= 0:
        return None if facts.frames < 0 else 0
    return int(round(facts.frames * rate / facts.samplerate))


def load_dataset(
    manifest: str | Path,
    normaliser: TextNormaliser,
    info: ModelInfo,
    *,
    check_length: bool = True,
    skip_bad_rows: bool = False,
    unknown: str = "error",
) -> Dataset:
    """The manifest's rows as examples; ManifestError naming the lines when rows are bad (unless
    `skip_bad_rows`: then they are left out and listed in `skipped`) or references hold characters the
    vocabulary cannot spell (unless `unknown="drop"`: then those characters are dropped and counted)."""
    if unknown not in UNKNOWN_POLICIES:
        raise ManifestError(f"--unknown must be one of {', '.join(UNKNOWN_POLICIES)}, got {unknown!r}")
    rows, problems = read_manifest(manifest)
    data = Dataset(problems.manifest, [], rate=info.sample_rate)
    unknown_rows: dict[str, list[int]] = {}
    row_unknown: dict[int, Counter[str]] = {}
    for row in rows:
        if not row.wav.is_file():
            if "audio file missing" not in problems.lines:
                problems.details.append(f"first missing audio file: {row.wav}")
            problems.add("audio file missing", row.line)
            continue
        samples = audio_samples(row.wav, info.sample_rate)
        if samples is None:
            problems.add("audio file unreadable (not WAV/FLAC/OGG, or damaged)", row.line)
            continue
        if not row.reference.strip():
            problems.add("empty reference", row.line)
            continue
        text = normaliser.normalise(row.reference)
        if text.unknown:
            row_unknown[row.line] = text.unknown
            for ch in text.unknown:
                unknown_rows.setdefault(ch, []).append(row.line)
            if unknown == "error":
                problems.add("reference has characters the vocabulary cannot spell", row.line)
                continue
        if not text.labels:
            problems.add("reference has nothing the vocabulary can spell", row.line)
            continue
        if check_length:
            frames, needed = info.frames_for(samples), min_frames(text.labels)
            if frames < needed:
                problems.add(
                    "audio too short for its transcript (CTC needs a frame per label and per repeat)", row.line
                )
                continue
        data.examples.append(Example(row.line, row.wav, samples, text.labels, text.text))
        data.removed.update(text.removed)
        data.romanised.update(text.romanised)
        data.unknown.update(text.unknown)
    if unknown_rows and unknown == "error":
        counts: Counter[str] = Counter()
        for c in row_unknown.values():
            counts.update(c)
        problems.details.append(
            f"characters the vocabulary cannot spell: {describe_characters(counts)}; rows with them: "
            + "; ".join(f"{ch!r}: {line_list(unknown_rows[ch])}" for ch, _ in counts.most_common(EXAMPLE_CHARACTERS))
            + " (pass --unknown drop to drop such characters)"
        )
    if problems and not skip_bad_rows:
        raise problems.error()
    data.skipped = [*problems.summary(), *problems.details]
    if not data.examples:
        raise ManifestError(f"{data.manifest}: no usable rows left: " + "; ".join(data.skipped))
    return data
