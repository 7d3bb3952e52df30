"""Checkpoints of a run: DIR/best and DIR/last in the `from_pretrained` layout (model + processor, so
`--model DIR/best` serves it), and in DIR/last what `--resume` needs besides the weights.

Saves are atomic: everything goes into a sibling folder that replaces the old one by renames, so a
Ctrl-C (or a crash) mid-save leaves the previous checkpoint whole.

transformers 5 loads a tokenizer's non-default `word_delimiter_token` (e.g. "▁") only into its
special-tokens map, leaving the attribute at "|"; the saved tokenizer_config.json is made to name the
delimiter the run decoded with, so text decoded after reloading equals text decoded before saving.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..config import ConfigError
from ..model import ModelInfo

RESUME_JSON = "trainer_state.json"  # step, best, history, settings, model signature, rng states (numpy, python)
RESUME_TENSORS = "trainer_state.pt"  # optimizer, loss scaler, torch rng states
RUN_JSON = "finetune.json"  # in DIR/best: which step and eval it is


def signature(model: Any, info: ModelInfo) -> dict[str, Any]:
    """What must not change between a run and its resume: architecture (parameter shapes) and vocabulary."""
    shapes = sorted((name, tuple(p.shape)) for name, p in model.state_dict().items())
    digest = hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]
    return {"model_type": str(model.config.model_type), "parameters": digest, "vocab": list(info.vocab)}


def save_checkpoint(
    folder: Path, model: Any, processor: Any, delimiter: str | None, extra: dict[str, Any] | None = None
) -> None:
    """`model` and `processor` into `folder` (from_pretrained layout), atomically; `extra`: file name ->
    JSON-able object or, for names ending in .pt, something torch.save writes."""
    staging = folder.with_name(folder.name + ".saving")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    # no "Writing model shards" bar through the training's own output
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    if delimiter is not None:
        _keep_delimiter(staging, delimiter)
    for name, content in (extra or {}).items():
        if name.endswith(".pt"):
            torch.save(content, staging / name)
        else:
            (staging / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def _keep_delimiter(folder: Path, delimiter: str) -> None:
    """tokenizer_config.json names `delimiter` as the word delimiter (see the module docstring)."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("word_delimiter_token") != delimiter:
        config["word_delimiter_token"] = delimiter
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON part: numpy's and Python's generators, tensor part: torch's CPU and CUDA generators)."""
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss = random.getstate()
    as_json = {
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }
    tensors: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    return as_json, tensors


def set_rng_state(as_json: dict[str, Any], tensors: dict[str, Any]) -> None:
    kind, keys, pos, has_gauss, cached = as_json["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = as_json["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


@dataclass(frozen=True)
class ResumeState:
    """DIR/last's run state: the JSON part and the tensors (optimizer, scaler, torch generators)."""

    folder: Path
    state: dict[str, Any]
    tensors: dict[str, Any]


def has_run(out: Path) -> bool:
    return (out / "last" / RESUME_JSON).is_file() or (out / "history.json").is_file()


def load_resume(out: Path, model_name: str) -> ResumeState:
    """DIR/last's state for --resume; ConfigError when there is none or it was trained from another model."""
    folder = out / "last"
    previous = folder.with_name(folder.name + ".old")  # a save stopped between its two renames
    if not (folder / RESUME_JSON).is_file() and (previous / RESUME_JSON).is_file():
        folder = previous
    path = folder / RESUME_JSON
    if not path.is_file():
        raise ConfigError(f"--resume: nothing to resume in {out} (no {folder / RESUME_JSON}); leave --resume out")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        tensors = torch.load(folder / RESUME_TENSORS, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"--resume: {folder} is damaged ({exc}); start afresh with --overwrite") from None
    was = state.get("model_source")
    if was != model_source(model_name):
        raise ConfigError(
            f"--resume: {out} was fine-tuned from {state.get('model')!r}, not {model_name!r}; pass --model "
            f"{state.get('model')} to continue it, or another --out to fine-tune {model_name!r}"
        )
    return ResumeState(folder, state, tensors)


def model_source(name: str) -> str:
    """`name` as a comparable identity: a local directory's resolved path, else the hub id."""
    from ..model.checkpoint import is_local

    return str(Path(name).expanduser().resolve()) if is_local(name) else name
