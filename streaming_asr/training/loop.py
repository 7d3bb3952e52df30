"""The trainer: optimizer steps over length-bucketed batches, evals, best/last checkpoints, budgets, Ctrl-C.

`finetune(settings)` is the whole run (the CLI calls it; so can bench code). One optimizer step is
`grad_accum` batches of CTC loss (fp32 log-softmax, the config's reduction, zero_infinity), gradients
clipped to norm 1, AdamW (no weight decay on biases and norm weights) at the schedule's rate. The
feature encoder is frozen unless asked otherwise; SpecAugment-style masking is whatever the checkpoint's
config says (transformers applies it in train mode). A first Ctrl-C finishes (or, mid-accumulation,
abandons) the current step and saves DIR/last; a second one raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from contextlib import nullcontext
from types import FrameType
from typing import Any

import numpy as np
import torch

from .batches import Batch, read_batch
from .run import Run
from .settings import FinetuneResult, FinetuneSettings

log = logging.getLogger("streaming_asr.training")

CLIP_NORM = 1.0
LOSS_SMOOTHING = 0.9  # EMA weight of the shown training loss


class StopFlag:
    """SIGINT while training: the first sets `requested`, a second raises KeyboardInterrupt (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this step and saving the last checkpoint (Ctrl-C again to quit at once)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def finetune(settings: FinetuneSettings, progress: bool = True) -> FinetuneResult:
    """Fine-tune `settings.model` on `settings.train`, evaluating on `settings.eval`; see the module docstring.

    ConfigError / ModelLoadError (with a message naming what to fix) before training starts for bad
    settings, manifests or checkpoints. `progress`: a tqdm bar on stderr when it is a terminal (else, or
    when False, a log line every `settings.log_every` steps).
    """
    started = time.monotonic()  # --max-minutes counts the whole invocation, loading and checks included
    run = Run(settings.check())
    with StopFlag() as stop:  # before this, Ctrl-C is a plain KeyboardInterrupt: nothing to save yet
        return Trainer(run, stop, progress, started).train()


class Trainer:
    def __init__(self, run: Run, stop: StopFlag, progress: bool, started: float) -> None:
        self.run = run
        self.stop = stop
        self.show_bar = progress and sys.stderr.isatty()
        self.started = started
        self.interval_losses: list[float] = []  # step losses since the last eval
        self.audio_now = 0.0  # training audio seconds in this invocation
        self.train_wall = 0.0  # wall seconds of this invocation's steps (evals excluded)
        self.last_eval_s = 0.0
        self.lr = 0.0  # the rate of the last step

    # ------------------------------------------------------------ budgets
    def time_fraction(self) -> float | None:
        minutes = self.run.settings.max_minutes
        if minutes is None:
            return None
        used = (time.monotonic() - self.started) / (minutes * 60)
        start = self.run.time_progress_at_start
        return min(1.0, start + (1.0 - start) * used)

    def out_of_budget(self) -> bool:
        r = self.run
        if r.max_steps is not None and r.step >= r.max_steps:
            return True
        minutes = r.settings.max_minutes
        return minutes is not None and time.monotonic() - self.started + self.last_eval_s >= minutes * 60

    # ------------------------------------------------------------ one step
    def loss(self, batch: Batch) -> torch.Tensor:
        r = self.run
        values = torch.from_numpy(batch.input_values).to(r.device)
        mask = None if batch.attention_mask is None else torch.from_numpy(batch.attention_mask).to(r.device)
        config = r.model.config
        masking = config.mask_time_prob
        if int(batch.input_frames.max()) < getattr(config, "mask_time_length", 1):
            config.mask_time_prob = 0.0  # shorter than one time mask: transformers would refuse to mask it
        try:
            with r.precision.autocast():
                logits = r.model(values, attention_mask=mask).logits
        finally:
            config.mask_time_prob = masking
        log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        frames = torch.from_numpy(np.minimum(batch.input_frames, log_probs.shape[0])).to(r.device)
        cudnn = torch.backends.cudnn.flags(enabled=False) if r.device.startswith("cuda") else nullcontext()
        with cudnn:
            loss: torch.Tensor = torch.nn.functional.ctc_loss(
                log_probs,
                torch.from_numpy(batch.targets).to(r.device),
                frames,
                torch.from_numpy(batch.target_lengths).to(r.device),
                blank=r.info.blank_id,
                reduction=getattr(r.model.config, "ctc_loss_reduction", "mean"),
                zero_infinity=True,
            )
        return loss

    def step(self) -> bool:
        """One optimizer step; False when Ctrl-C abandoned it part-way (its batches are redone on resume)."""
        r = self.run
        at = (r.epoch, r.index)
        r.optimizer.zero_grad(set_to_none=True)
        total, seconds, began = 0.0, 0.0, time.monotonic()
        for micro in range(r.settings.grad_accum):
            if micro and self.stop.requested:
                r.optimizer.zero_grad(set_to_none=True)
                r.set_position(*at)
                return False
            batch = read_batch(r.next_batch(), r.info, r.with_mask)
            loss = self.loss(batch) / r.settings.grad_accum
            if torch.isfinite(loss):
                r.precision.scaler.scale(loss).backward()
                total += float(loss.item())
            else:
                r.skipped_batches += 1
                log.warning("a batch gave a non-finite loss: left out of this step (%d so far)", r.skipped_batches)
            seconds += batch.seconds
        lr = r.schedule.rate(r.step, self.time_fraction())
        for group in r.optimizer.param_groups:
            group["lr"] = lr
        r.precision.scaler.unscale_(r.optimizer)
        torch.nn.utils.clip_grad_norm_(r.trainable, CLIP_NORM)
        r.precision.scaler.step(r.optimizer)
        r.precision.scaler.update()
        r.step += 1
        r.audio_seconds += seconds
        self.audio_now += seconds
        self.train_wall += time.monotonic() - began
        r.loss_ema = total if r.loss_ema is None else LOSS_SMOOTHING * r.loss_ema + (1 - LOSS_SMOOTHING) * total
        self.interval_losses.append(total)
        self.lr = lr
        return True

    # ------------------------------------------------------------ evals
    def evaluate(self) -> bool:
        """An eval at the current step (history, log line, DIR/best if better); False if Ctrl-C abandoned it."""
        r = self.run
        result = r.evaluator(lambda: self.stop.requested)
        if result is None:
            return False
        self.last_eval_s = result.seconds
        losses, self.interval_losses = self.interval_losses, []
        entry = {
            "step": r.step,
            "seconds": round(r.seconds_before + time.monotonic() - self.started, 2),
            "audio_seconds_seen": round(r.audio_seconds, 2),
            "wer": round(result.wer, 5),
            "cer": round(result.cer, 5),
            "train_loss": round(float(np.mean(losses)), 5) if losses else None,
        }
        r.evals.append(entry)
        r.hypotheses = result.hypotheses
        better = r.best is None or (result.wer, result.cer) < (r.best["wer"], r.best["cer"])
        if better:
            r.best = {"step": r.step, "wer": entry["wer"], "cer": entry["cer"], "path": str(r.best_dir)}
            r.save_best()
        r.write_history()
        best = r.best or {}
        log.info(
            "eval at step %d: WER %.4f CER %.4f (%d utterances, %.1f s)%s; best WER %.4f at step %d",
            r.step, result.wer, result.cer, len(result.hypotheses), result.seconds,
            " - new best, saved" if better else "", best.get("wer", 0.0), best.get("step", 0),
        )  # fmt: skip
        return True

    # ------------------------------------------------------------ the run
    def train(self) -> FinetuneResult:
        r = self.run
        s = r.settings
        first = r.step
        evaluated_at = {e["step"] for e in r.evals}
        if s.eval_at_start and r.step not in evaluated_at and not self.evaluate():
            return self.finish()
        bar = self._bar()
        with self._logging():
            try:
                while not self.stop.requested and not self.out_of_budget():
                    if not self.step():
                        break
                    self._report(bar, first)
                    if r.step % s.eval_every == 0 and not self.evaluate():
                        break
            finally:
                if bar is not None:
                    bar.close()
            done = {e["step"] for e in r.evals}
            if not self.stop.requested and r.step not in done:
                self.evaluate()
        return self.finish()

    def finish(self) -> FinetuneResult:
        return self.run.finish(self.stop.requested, time.monotonic() - self.started, self.time_fraction())

    def _bar(self) -> Any:
        if not self.show_bar:
            return None
        from tqdm import tqdm

        r = self.run
        return tqdm(total=r.max_steps, initial=r.step, unit="step", file=sys.stderr, dynamic_ncols=True)

    def _logging(self) -> Any:
        if not self.show_bar:
            return nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()  # log lines above the bar instead of through it

    def _report(self, bar: Any, first: int) -> None:
        r = self.run
        speed = self.audio_now / max(1e-9, self.train_wall)
        loss = r.loss_ema if r.loss_ema is not None else float("nan")
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.3f}", audio=f"{speed:.1f}s/s", lr=f"{self.lr:.2e}", refresh=False)
            bar.update(1)
        elif r.step == first + 1 or r.step % r.settings.log_every == 0:
            total = f"/{r.max_steps}" if r.max_steps else ""
            log.info("step %d%s: loss %.4f, lr %.2e, %.1f s of audio per second", r.step, total, loss, self.lr, speed)
