"""What a fine-tuning run is asked to do (`FinetuneSettings`) and what it produced (`FinetuneResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .amp import TRAINING_PRECISIONS
from .dataset import UNKNOWN_POLICIES
from .schedule import SHAPES, default_warmup

DEFAULT_MAX_STEPS = 1000  # when neither --max-steps nor --max-minutes is given


@dataclass(frozen=True)
class FinetuneSettings:
    """One run's settings (the CLI's flags; bench code builds it directly). Paths as given."""

    train: str
    eval: str
    model: str
    out: str
    max_steps: int | None = None  # optimizer steps, counted over resumes
    max_minutes: float | None = None  # wall minutes of this invocation, evals included
    lr: float = 1e-4
    weight_decay: float = 0.005
    warmup_steps: int | None = None  # None: 10 % of max_steps, or 50 with a time budget only
    decay: str = "linear"  # or "cosine"
    batch_seconds: float = 60.0  # padded audio seconds per forward
    grad_accum: int = 1
    eval_every: int = 200
    eval_at_start: bool = False  # an eval of the checkpoint as loaded, at step 0 (a baseline for plots)
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    threads: int | None = None
    train_feature_encoder: bool = False
    mask_time_prob: float | None = None  # None: the checkpoint's config.mask_time_prob
    skip_bad_rows: bool = False
    unknown: str = "error"  # or "drop"
    resume: bool = False
    overwrite: bool = False  # start afresh in an --out that holds an earlier run
    log_every: int = 50  # steps between log lines when there is no progress bar

    @property
    def steps_budget(self) -> int | None:
        """max_steps, or the default when no budget at all was given."""
        if self.max_steps is None and self.max_minutes is None:
            return DEFAULT_MAX_STEPS
        return self.max_steps

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else default_warmup(self.steps_budget)

    def check(self) -> FinetuneSettings:
        """ConfigError (exit 2) naming the first option out of range."""
        positive: dict[str, float | None] = {
            "--max-steps": self.max_steps,
            "--max-minutes": self.max_minutes,
            "--lr": self.lr,
            "--batch-seconds": self.batch_seconds,
            "--grad-accum": self.grad_accum,
            "--eval-every": self.eval_every,
            "--threads": self.threads,
            "--log-every": self.log_every,
        }
        for flag, value in positive.items():
            if value is not None and not value > 0:
                raise ConfigError(f"{flag} must be positive, got {value}")
        if self.weight_decay < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ConfigError("--weight-decay and --warmup-steps must not be negative")
        if self.mask_time_prob is not None and not 0.0 <= self.mask_time_prob < 1.0:
            raise ConfigError(f"--mask-time-prob must be in [0, 1), got {self.mask_time_prob}")
        choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("--decay", self.decay, SHAPES),
            ("--precision", self.precision, TRAINING_PRECISIONS),
            ("--unknown", self.unknown, UNKNOWN_POLICIES),
        )
        for name, choice, allowed in choices:
            if choice not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {choice!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues the run in --out; --overwrite starts a new one: pick one")
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinetuneResult:
    """Where a run left its checkpoints, and its evals (history.json's `evals`)."""

    out: Path
    last: Path  # DIR/last: loadable, plus what --resume needs
    best: Path | None  # DIR/best: the lowest eval WER so far (None until an eval ran)
    history_path: Path
    history: list[dict[str, Any]]
    steps: int  # optimizer steps, over resumes
    audio_seconds: float  # training audio seen, over resumes (padding excluded)
    best_wer: float | None
    best_cer: float | None
    best_step: int | None
    interrupted: bool  # stopped by Ctrl-C (the CLI exits 130)
    hypotheses: list[str] = field(default_factory=list)  # the last eval's texts, in eval-manifest order
