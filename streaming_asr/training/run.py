"""One fine-tuning run's setup and state: the checked data, the model on its device, the optimizer, where
the epoch is, the evals so far, and the files it writes (DIR/best, DIR/last, DIR/history.json).

A fresh run starts from `--model`; `--resume` starts from DIR/last (its weights, optimizer, loss scaler,
random generators, step, epoch position, best so far and history) after checking it was trained from
the same model with the same trainable parameters.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..model import ModelLoadError, load_pretrained
from ..model.families import family_of
from ..model.info import info_from
from .amp import Precision, resolve_device, resolve_training_precision
from .batches import plan_batches
from .dataset import Dataset, Example, load_dataset
from .evaluate import Evaluator
from .manifest import read_manifest
from .schedule import Schedule
from .settings import FinetuneResult, FinetuneSettings
from .state import (
    RESUME_JSON,
    RESUME_TENSORS,
    RUN_JSON,
    ResumeState,
    has_run,
    load_resume,
    model_source,
    rng_state,
    save_checkpoint,
    set_rng_state,
    signature,
)
from .text import TextNormaliser

log = logging.getLogger("streaming_asr.training")


class Run:
    def __init__(self, settings: FinetuneSettings) -> None:
        s = self.settings = settings
        self.out = Path(s.out).expanduser()
        self.best_dir, self.last_dir, self.history_path = (
            self.out / "best",
            self.out / "last",
            self.out / "history.json",
        )
        resume = load_resume(self.out, s.model) if s.resume else None
        earlier = resume is None and has_run(self.out)
        if earlier and not s.overwrite:
            raise ConfigError(
                f"{self.out} already holds a fine-tuning run: --resume to continue it, --overwrite to "
                "start afresh, or another --out"
            )
        self.device = resolve_device(s.device)
        self.precision = Precision(resolve_training_precision(s.precision, self.device), self.device)
        if s.threads:
            torch.set_num_threads(s.threads)
        for manifest in (s.train, s.eval):  # a wrong path or header fails before the model loads
            read_manifest(manifest)
        self.model, self.processor = load_pretrained(str(resume.folder) if resume else s.model, "AutoModelForCTC")
        self.info = info_from(self.model.config, self.processor, s.model)
        self._check_model(resume)
        self.delimiter = self.info.vocab[self.info.delimiter_id] if self.info.delimiter_id >= 0 else None
        normaliser = TextNormaliser.from_info(self.info)
        self.train = self._dataset(s.train, normaliser, check_length=True)
        self.evalset = self._dataset(s.eval, normaliser, check_length=False)
        extractor = getattr(self.processor, "feature_extractor", self.processor)
        self.with_mask = bool(getattr(extractor, "return_attention_mask", False))
        if earlier:  # --overwrite: the earlier run goes only once this one's model and data are checked
            for stale in (self.best_dir, self.last_dir):
                shutil.rmtree(stale, ignore_errors=True)
            self.history_path.unlink(missing_ok=True)
        self.model.to(self.device)
        if not s.train_feature_encoder:
            self.model.freeze_feature_encoder()
        if s.mask_time_prob is not None:
            self.model.config.mask_time_prob = s.mask_time_prob
        self.model.train()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in self.trainable if p.ndim >= 2]
        no_decay = [p for p in self.trainable if p.ndim < 2]  # biases, norm weights, the mask embedding
        groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for all parameters (on 2 CPU cores 12x faster than the per-tensor loop)
        self.optimizer = torch.optim.AdamW(groups, lr=s.lr, fused=True)
        self.max_steps = s.steps_budget
        warmup = s.warmup  # a resumed run keeps its warm-up unless --warmup-steps says otherwise
        if resume is not None and s.warmup_steps is None:
            warmup = int(resume.state.get("warmup", warmup))
        self.schedule = Schedule(s.lr, warmup, self.max_steps, s.decay)
        self.evaluator = Evaluator(self.model, self.processor, self.info, self.evalset.examples, self.device)
        self.step = self.epoch = self.index = self.skipped_batches = 0
        self.audio_seconds = self.seconds_before = self.time_progress_at_start = 0.0
        self.best: dict[str, Any] | None = None
        self.evals: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.hypotheses: list[str] = []
        self.loss_ema: float | None = None
        self.lengths = [e.samples for e in self.train.examples]
        budget = s.batch_seconds * self.info.sample_rate
        if long := sum(n > budget for n in self.lengths):
            log.warning(
                "%d training utterance(s) longer than --batch-seconds %g: each is a batch of its own",
                long,
                s.batch_seconds,
            )
        if resume is not None:
            self._restore(resume)
        else:
            torch.manual_seed(s.seed)
            np.random.seed(s.seed)
            random.seed(s.seed)
        self.plan = plan_batches_for(self, self.epoch)
        self.runs.append(
            {
                "started_at_step": self.step,
                "started": _now(),
                "settings": s.as_dict(),
                "precision": self.precision.name,
                "device": self.device,
                "attention_mask": self.with_mask,
            }
        )
        log.info(
            "fine-tuning %s on %s (%s, %s): %d trainable parameters, feature encoder %s, step %d%s",
            s.model, self.device, self.precision.name, "attention mask" if self.with_mask else "no attention mask",
            sum(p.numel() for p in self.trainable), "trained" if s.train_feature_encoder else "frozen",
            self.step, f" of {self.max_steps}" if self.max_steps else "",
        )  # fmt: skip

    def _check_model(self, resume: ResumeState | None) -> None:
        config = self.model.config
        if family_of(config).front_end != "waveform" or not hasattr(self.model, "freeze_feature_encoder"):
            raise ModelLoadError(f"{self.settings.model!r}: fine-tuning supports waveform CTC checkpoints only")
        if getattr(config, "adapter_attn_dim", None):
            raise ModelLoadError(f"{self.settings.model!r}: fine-tuning language-adapter checkpoints is not supported")
        if resume is not None and resume.state.get("signature") != signature(self.model, self.info):
            raise ConfigError(f"--resume: {resume.folder} does not match the run's model (architecture or vocabulary)")

    def _dataset(self, manifest: str, normaliser: TextNormaliser, check_length: bool) -> Dataset:
        s = self.settings
        data = load_dataset(
            manifest, normaliser, self.info, check_length=check_length, skip_bad_rows=s.skip_bad_rows, unknown=s.unknown
        )
        for line in data.report():
            log.info("%s", line)
        return data

    def _restore(self, resume: ResumeState) -> None:
        state, tensors = resume.state, resume.tensors
        if state["settings"].get("train_feature_encoder") != self.settings.train_feature_encoder:
            raise ConfigError("--resume: --train-feature-encoder must be as in the run being resumed")
        try:
            self.optimizer.load_state_dict(tensors["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"--resume: the optimizer state in {resume.folder} does not fit: {exc}") from None
        self.precision.scaler.load_state_dict(tensors["scaler"])
        set_rng_state(state["rng"], tensors)
        self.step, self.epoch, self.index = int(state["step"]), int(state["epoch"]), int(state["index"])
        self.audio_seconds, self.seconds_before = float(state["audio_seconds"]), float(state["seconds"])
        self.time_progress_at_start = float(state.get("time_progress") or 0.0)
        self.best, self.loss_ema, self.skipped_batches = state["best"], state["loss_ema"], state["skipped_batches"]
        self.evals, self.runs = list(state["history"]["evals"]), list(state["history"]["runs"])
        log.info("resuming %s at step %d (epoch %d)", resume.folder, self.step, self.epoch)

    # ------------------------------------------------------------ data position
    def next_batch(self) -> list[Example]:
        if self.index >= len(self.plan):
            self.set_position(self.epoch + 1, 0)
        batch = [self.train.examples[i] for i in self.plan[self.index]]
        self.index += 1
        return batch

    def set_position(self, epoch: int, index: int) -> None:
        if epoch != self.epoch:
            self.plan = plan_batches_for(self, epoch)
        self.epoch, self.index = epoch, index

    # ------------------------------------------------------------ files
    def history(self) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "train": {
                "manifest": str(self.train.manifest),
                "rows": len(self.train.examples),
                "seconds": self.train.seconds,
            },
            "eval": {"manifest": str(self.evalset.manifest), "rows": len(self.evalset.examples)},
            "settings": self.settings.as_dict(),
            "runs": self.runs,
            "best": self.best,
            "evals": self.evals,
        }

    def write_history(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        staging = self.history_path.with_suffix(".json.saving")
        staging.write_text(json.dumps(self.history(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        staging.replace(self.history_path)

    def save_best(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.best_dir, self.model, self.processor, self.delimiter, {RUN_JSON: self.best})

    def save_last(self, seconds: float, time_progress: float | None) -> None:
        as_json, tensors = rng_state()
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "index": self.index,
            "audio_seconds": self.audio_seconds,
            "seconds": seconds,
            "time_progress": time_progress,
            "warmup": self.schedule.warmup_steps,
            "best": self.best,
            "loss_ema": self.loss_ema,
            "skipped_batches": self.skipped_batches,
            "model": self.settings.model,
            "model_source": model_source(self.settings.model),
            "signature": signature(self.model, self.info),
            "settings": self.settings.as_dict(),
            "rng": as_json,
            "history": self.history(),
        }
        tensors.update(optimizer=self.optimizer.state_dict(), scaler=self.precision.scaler.state_dict())
        self.out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            self.last_dir, self.model, self.processor, self.delimiter, {RESUME_JSON: state, RESUME_TENSORS: tensors}
        )

    def finish(self, interrupted: bool, seconds: float, time_progress: float | None) -> FinetuneResult:
        """DIR/last and history.json written; the result."""
        self.save_last(self.seconds_before + seconds, time_progress)
        self.write_history()
        best = self.best or {}
        return FinetuneResult(
            out=self.out,
            last=self.last_dir,
            best=self.best_dir if self.best else None,
            history_path=self.history_path,
            history=list(self.evals),
            steps=self.step,
            audio_seconds=self.audio_seconds,
            best_wer=best.get("wer"),
            best_cer=best.get("cer"),
            best_step=best.get("step"),
            interrupted=interrupted,
            hypotheses=list(self.hypotheses),
        )


def plan_batches_for(run: Run, epoch: int) -> list[list[int]]:
    budget = int(run.settings.batch_seconds * run.info.sample_rate)
    return plan_batches(run.lengths, budget, run.settings.seed, epoch)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
