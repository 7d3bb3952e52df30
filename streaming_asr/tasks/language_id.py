"""Language ID for adapter checkpoints (`--language auto --lid-model M`): which adapter to run.

An audio-classification checkpoint whose labels are language codes (facebook/mms-lid-126: ISO
639-3, as MMS adapters are named) listens to the first `seconds` of the audio (all of it when
shorter). Its labels are ranked by softmax score (tasks/classify.py: the model's own logits); the
best-scoring label that names a served language (model/adapters.match_language: "de" and "deu"
both name "deu") wins, so a top label the server does not serve gives way to the next one that it
does. When no label names a served language, or the audio is too short for one frame, the default
language is used and the detection says so (`fallback`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio import resample
from ..config import ConfigError
from ..model.adapters import match_language
from .classify import classify
from .embed import TaskInputError

if TYPE_CHECKING:
    from ..model import ModelInfo
    from ..model.encoder import Encoder

AUTO = "auto"
DEFAULT_SECONDS = 3.0
MIN_SECONDS, MAX_SECONDS = 0.5, 30.0
SERVER_MAX_SECONDS = 10.0  # a server holds at most its backlog limit of a session's audio (max_backlog_s)


@dataclass(frozen=True)
class Detection:
    """The language a stream or file is transcribed in, and why."""

    language: str  # a served language, as the checkpoint names it
    score: float | None  # the LID probability of `label`; None on a fallback
    label: str | None  # the LID label that named `language` (the model's top label on a fallback)
    seconds: float  # audio it was detected from
    fallback: bool = False  # no LID label named a served language (or too little audio): the default

    def to_dict(self) -> dict[str, Any]:
        score = None if self.score is None else round(self.score, 4)
        return {
            "language": self.language,
            "score": score,
            "label": self.label,
            "detected_from_s": round(self.seconds, 3),
            "fallback": self.fallback,
        }


def choose_language(
    ranked: Sequence[dict[str, Any]], languages: Sequence[str], default: str, seconds: float
) -> Detection:
    """The best-scoring label of `ranked` (best first) that names one of `languages`; else `default`."""
    for entry in ranked:
        found = match_language(str(entry["label"]), languages)
        if found is not None:
            return Detection(found, float(entry["score"]), str(entry["label"]), seconds)
    top = str(ranked[0]["label"]) if ranked else None
    return Detection(default, None, top, seconds, fallback=True)


def detect_language(
    encoder: Encoder, audio: np.ndarray, rate: int, languages: Sequence[str], default: str, seconds: float
) -> Detection:
    """Detect from the first `seconds` of `audio` (at `rate`; resampled to the LID model's rate)."""
    head = audio[: max(0, int(round(seconds * rate)))]
    used = head.size / rate
    lid_rate = encoder.info.sample_rate
    try:
        ranked = classify(encoder, resample(head, rate, lid_rate), top_k=0)
    except TaskInputError:  # shorter than one frame: nothing to listen to
        return Detection(default, None, None, used, fallback=True)
    return choose_language(ranked, languages, default, used)


def is_auto(code: str | None) -> bool:
    """`--language auto` / `"language": "auto"`: detect the language (any case, spaces around)."""
    return code is not None and code.strip().lower() == AUTO


def load_language(code: str | None) -> str | None:
    """The `language` to load a checkpoint with for --language `code` (auto: the checkpoint's own)."""
    return None if is_auto(code) else code


def check_seconds(value: float) -> float:
    """--lid-seconds within MIN_SECONDS..MAX_SECONDS (ConfigError otherwise)."""
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        raise ConfigError(f"--lid-seconds must be between {MIN_SECONDS:g} and {MAX_SECONDS:g}, got {value:g}")
    return float(value)


def seconds_arg(text: str) -> float:
    """argparse type of --lid-seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lid-seconds must be a number, got {text!r}") from None
    try:
        return check_seconds(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_lid_args(p: argparse.ArgumentParser, serve: bool) -> None:
    """--lid-model and --lid-seconds (transcribe and serve)."""
    what = "sessions in language 'auto' (asked in 'start', or all that name none with --language auto)"
    p.add_argument(
        "--lid-model",
        default=None,
        metavar="M",
        help="adapter checkpoints: a language-ID checkpoint (audio classification with language-code "
        "labels, e.g. facebook/mms-lid-126) that picks the adapter of "
        + (what if serve else "each file with --language auto")
        + " (default: none)",
    )
    bounds = f"{MIN_SECONDS:g}-{SERVER_MAX_SECONDS:g}" if serve else f"{MIN_SECONDS:g}-{MAX_SECONDS:g}"
    p.add_argument(
        "--lid-seconds",
        type=seconds_arg,
        default=DEFAULT_SECONDS,
        metavar="S",
        help=f"seconds of audio the language is detected from, {bounds}"
        + ("; partials of an auto session start only after them plus one LID forward" if serve else "")
        + " (%(default)s)",
    )


def in_language(model: Any, language: str) -> tuple[Callable[[Sequence[Any]], Any], ModelInfo]:
    """A forward that runs `model`'s windows in `language` (an adapter checkpoint's), and its ModelInfo."""
    from ..model import LanguageInput

    adapters = model.adapters
    if language == adapters.default:
        return model, model.info

    def forward(windows: Sequence[Any]) -> Any:
        return model([LanguageInput(language, w) for w in windows])

    return forward, adapters.info(language)
