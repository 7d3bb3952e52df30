"""The one place checkpoints are loaded: a hub id (cache first, one probe: hub.py) or a local
directory, any transformers head (CTC, the bare encoder for embeddings, pretraining with its
quantizer, audio classification), with its processor or feature extractor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .hub import load_from_hub
from .info import ModelLoadError


def is_local(name: str) -> bool:
    """A path (absolute, ./relative, ~ or an existing directory) rather than a hub id."""
    return name.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(name))


def load_pretrained(name: str, model_class: str, processor_class: str = "AutoProcessor") -> tuple[Any, Any]:
    """(model in eval mode, processor) for `name`; `model_class` / `processor_class` are transformers
    class names (e.g. "AutoModelForCTC", "AutoModel", "Wav2Vec2ForPreTraining",
    "AutoModelForAudioClassification"; "AutoProcessor", "AutoFeatureExtractor"). Raises
    ModelLoadError with what to do, never a raw traceback."""
    import transformers

    model_cls = getattr(transformers, model_class)
    processor_cls = getattr(transformers, processor_class)
    local = is_local(name)
    if local and not Path(name).expanduser().is_dir():
        raise ModelLoadError(f"model directory {name!r} does not exist")
    path = str(Path(name).expanduser()) if local else name
    try:
        if local:
            processor = processor_cls.from_pretrained(path)
            model = model_cls.from_pretrained(path)
        else:  # the cache first, then one probe of the hub: fail in seconds when it is unreachable
            processor = load_from_hub(name, processor_cls.from_pretrained)
            model = load_from_hub(name, model_cls.from_pretrained)
    except OSError as exc:
        if local:
            raise ModelLoadError(f"cannot load model from directory {path!r}: {exc}") from exc
        raise ModelLoadError(
            f"cannot load {name!r} from the HuggingFace hub ({type(exc).__name__}); "
            "download it where the hub is reachable (`streaming-asr download "
            f"{name} --to ./model`) and pass the directory: --model ./model"
        ) from exc
    except ValueError as exc:  # e.g. a checkpoint whose architecture has no such head
        raise ModelLoadError(f"{name!r} cannot be loaded as {model_class}: {str(exc)[:300]}") from exc
    return model.eval(), processor
