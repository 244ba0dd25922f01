"""Multi-task models for Hugging Face: one shared encoder, a dict of task heads.

`import modeling` registers `MultiTaskConfig` / `MultiTaskModel` with `AutoConfig` / `AutoModel`, so
`AutoModel.from_pretrained(path)` returns a `MultiTaskModel`. Everything else is imported lazily, so
that importing the model does not pull in the trainer, the export code or the experiment runner.
"""

import importlib
from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel

from .configuration_multitask import MultiTaskConfig, TaskSpec
from .modeling_multitask import MultiTaskModel, MultiTaskOutput

AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
AutoModel.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)

# name -> submodule that defines it (imported on first access)
_LAZY_EXPORTS = {
    "MultiTaskCollator": "collator",
    "window_text": "windowing",
    "aggregate_document_scores": "windowing",
    "MultiTaskTrainer": "trainer",
    "MultiTaskTrainingArguments": "training_args",
    "compute_multitask_metrics": "metrics",
    "export_onnx": "export",
    "attach_frozen_prefix": "frozen_cache",
    "frozen_prefix_applies": "frozen_cache",
}

__all__ = ["MultiTaskConfig", "TaskSpec", "MultiTaskModel", "MultiTaskOutput", *_LAZY_EXPORTS]


def __getattr__(name):
    if name in _LAZY_EXPORTS:
        module = importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .collator import MultiTaskCollator
    from .export import export_onnx
    from .frozen_cache import attach_frozen_prefix, frozen_prefix_applies
    from .metrics import compute_multitask_metrics
    from .trainer import MultiTaskTrainer
    from .training_args import MultiTaskTrainingArguments
    from .windowing import aggregate_document_scores, window_text
