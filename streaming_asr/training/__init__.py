"""CTC fine-tuning: manifests, text normalisation, the training loop and its checkpoints."""

from .loop import finetune
from .settings import FinetuneResult, FinetuneSettings

__all__ = ["FinetuneResult", "FinetuneSettings", "finetune"]
