"""Fetching a checkpoint from the HuggingFace hub in a way an operator can plan.

A hub id is loaded from the local cache when the cache has it (no network at all); otherwise the
hub is probed once (a few seconds at most) before transformers is asked to download, so a machine
that cannot reach the hub gets the clear error at once instead of after minutes of retries.
`HF_HUB_OFFLINE=1` means the cache only. `streaming-asr download` prepares a directory for images
and air-gapped hosts.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from .info import ModelLoadError

PROBE_TIMEOUT_S = 3.0


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(name: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the hub answers for `name`; else why not (one request, no retries)."""
    url = f"{endpoint()}/api/models/{name}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            return f"the hub at {endpoint()} has no model {name!r} (HTTP {exc.code})" if exc.code == 404 else None
        return f"the hub at {endpoint()} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the hub at {endpoint()} cannot be reached ({reason})"


def load_from_hub(name: str, load: Callable[..., Any]) -> Any:
    """`load(name, local_files_only=...)` from the cache if it has the files, else after one probe."""
    try:
        return load(name, local_files_only=True)
    except OSError:
        pass  # not (completely) in the cache
    why = "HF_HUB_OFFLINE is set and the local cache does not have it" if offline() else hub_reachable(name)
    if why:
        raise ModelLoadError(
            f"cannot load {name!r}: {why}. On a machine that can reach the hub, run "
            f"`streaming-asr download {name} --to ./model`, copy ./model here and pass "
            "--model ./model"
        )
    return load(name)


def download(name: str, target: str) -> str:
    """Fetch `name` (hub id or directory) and save it, processor included, as a directory
    `--model` loads anywhere (from_pretrained layout)."""
    from pathlib import Path

    from transformers import AutoModelForCTC, AutoProcessor

    local = os.path.isdir(os.path.expanduser(name))

    def fetch(loader: Callable[..., Any]) -> Any:
        return loader(os.path.expanduser(name)) if local else load_from_hub(name, loader)

    try:
        processor, model = fetch(AutoProcessor.from_pretrained), fetch(AutoModelForCTC.from_pretrained)
    except OSError as exc:
        raise ModelLoadError(f"cannot load {name!r}: {exc}") from exc
    out = Path(target).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out)
    model.save_pretrained(out)
    if getattr(model.config, "adapter_attn_dim", None):  # MMS-style: the per-language adapters too
        _copy_adapters(name, local, out)
    return str(out)


def _copy_adapters(name: str, local: bool, out: Any) -> None:
    """`adapter.<lang>.safetensors` files next to the saved model (save_pretrained writes only the active one)."""
    import shutil
    from pathlib import Path

    if local:
        for path in Path(os.path.expanduser(name)).glob("adapter.*.safetensors"):
            shutil.copy(path, out / path.name)
        return
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(name, allow_patterns=["adapter.*.safetensors"], local_dir=str(out))
    except Exception as exc:  # noqa: BLE001 - the hub's own errors are many; the message says what is missing
        raise ModelLoadError(f"saved {name!r} but not its language adapters: {exc}") from exc
