"""Configuration of a multi-task model: a nested backbone config plus an ordered list of task specifications.

This file is copied next to every saved checkpoint (``trust_remote_code`` loading), with its sibling
``vocabulary.py``: it imports nothing else from this repository, only standard/``transformers`` modules.
"""


import copy
import math
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


from .vocabulary import (  # noqa: F401 (re-exported)
    DOCUMENT, MULTI_LABEL, PROBLEM_TYPES, SINGLE_LABEL, SPAN, TASK_LEVELS, WINDOW_AGGREGATIONS,
)
SHARING_MODES = ("hard", "adapters")
DOCUMENT_POOLINGS = ("cls", "mean")
SPAN_POOLINGS = ("mean", "max")

# Task names become module names (``heads.<task>``), PEFT adapter names and dataset columns (``labels.<task>``),
# so they must not contain dots or spaces.
_TASK_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")

# LoRA targets (attention query/value projections) per backbone family. PEFT's own table lacks some encoders
# (DistilBERT, MPNet), hence this local one; unknown families fall back to PEFT's table at model build time.
LORA_QUERY_VALUE_MODULES = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
    "distilbert": ["q_lin", "v_lin"],
    "mpnet": ["q", "v"],
    "modernbert": ["Wqkv"],
}

DEFAULT_MAX_LENGTH = 512
DEFAULT_STRIDE = 128

#: model types whose position ids start after the padding index (transformers' RoBERTa-style embeddings)
POSITIONS_AFTER_PADDING = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                                     "data2vec-text", "mpnet", "longformer"})


def usable_positions(backbone_config) -> int | None:
    """The longest input the backbone can embed: ``max_position_embeddings``, less ``pad_token_id + 1`` for the
    RoBERTa family (514 positions hold 512 tokens); None when the config does not say."""
    positions = getattr(backbone_config, "max_position_embeddings", None)
    if positions and getattr(backbone_config, "model_type", None) in POSITIONS_AFTER_PADDING:
        positions -= (getattr(backbone_config, "pad_token_id", None) or 0) + 1
    return positions


class TaskConfigError(ValueError):
    """An invalid task specification or model option; the message names the offending field."""


@dataclass
class TaskSpec:
    """One task of a multi-task model. Stored in :class:`MultiTaskConfig` as a plain JSON dict.

    Example::

        TaskSpec(name="narratives", level="document", problem_type="multi_label_classification",
                 labels=["A", "B"], thresholds=[0.5, 0.4])
    """

    name: str = field(metadata={"help": "Unique task name (letters, digits, '_' or '-')."})
    level: str = field(default=DOCUMENT, metadata={"help": "'document' (one label per text) or 'span' (per mention)."})
    problem_type: str = field(
        default=SINGLE_LABEL,
        metadata={"help": "'single_label_classification' or 'multi_label_classification'."},
    )
    labels: list[str] = field(default_factory=list, metadata={"help": "Ordered label names; index = class id."})
    parents: dict[str, str] | None = field(
        default=None, metadata={"help": "Hierarchical tasks: fine label -> coarse label (coarse may be any name)."}
    )
    thresholds: list[float] | None = field(
        default=None, metadata={"help": "Multi-label decision thresholds in [0, 1], one per label (default 0.5)."}
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (the form stored in ``MultiTaskConfig.tasks``)."""
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskSpec":
        """Build from a dict, rejecting unknown keys (typos would otherwise be silently dropped)."""
        if not isinstance(data, dict):
            raise TaskConfigError(f"a task must be a dict or TaskSpec, got {type(data).__name__}: {data!r}")
        known = {"name", "level", "problem_type", "labels", "parents", "thresholds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TaskConfigError(
                f"task {data.get('name', '?')!r}: unknown field(s) {unknown}; expected a subset of {sorted(known)}"
            )
        if "name" not in data:
            raise TaskConfigError(f"task is missing the required field 'name': {data!r}")
        return cls(**copy.deepcopy(data))


def normalize_task(task: TaskSpec | dict[str, Any], position: int = 0) -> dict[str, Any]:
    """Validate one task specification and return it as a plain dict with every field present.

    Raises :class:`TaskConfigError` (a ``ValueError``) naming the task and the field at fault.
    """
    spec = task if isinstance(task, TaskSpec) else TaskSpec.from_dict(task)
    where = f"tasks[{position}]"
    name = spec.name
    if not isinstance(name, str) or not _TASK_NAME_PATTERN.match(name):
        raise TaskConfigError(
            f"{where}.name: {name!r} is not a valid task name (use letters, digits, '_' or '-', no dots or spaces)"
        )
    where = f"task {name!r}"
    if spec.level not in TASK_LEVELS:
        raise TaskConfigError(f"{where}: unknown level {spec.level!r}; expected one of {list(TASK_LEVELS)}")
    if spec.problem_type not in PROBLEM_TYPES:
        raise TaskConfigError(
            f"{where}: unknown problem_type {spec.problem_type!r}; expected one of {list(PROBLEM_TYPES)}"
        )
    labels = list(spec.labels) if isinstance(spec.labels, (list, tuple)) else spec.labels
    if not isinstance(labels, list) or not labels:
        raise TaskConfigError(f"{where}: 'labels' must be a non-empty list of label names, got {spec.labels!r}")
    for label in labels:
        if not isinstance(label, str) or not label:
            raise TaskConfigError(f"{where}: every label must be a non-empty string, got {label!r}")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise TaskConfigError(f"{where}: duplicate label(s) {duplicates} in 'labels'")
    if spec.problem_type == SINGLE_LABEL and len(labels) < 2:
        raise TaskConfigError(
            f"{where}: a single_label_classification task needs at least 2 labels, got {labels}"
            " (use multi_label_classification for a single yes/no label)"
        )
    parents = spec.parents
    if parents is not None:
        if not isinstance(parents, dict):
            raise TaskConfigError(f"{where}: 'parents' must be a dict fine label -> coarse label, got {parents!r}")
        unknown = sorted(fine for fine in parents if fine not in labels)
        if unknown:
            raise TaskConfigError(f"{where}: 'parents' names unknown label(s) {unknown}; labels are {labels}")
        bad = {fine: coarse for fine, coarse in parents.items() if not isinstance(coarse, str) or not coarse}
        if bad:
            raise TaskConfigError(f"{where}: 'parents' values must be non-empty strings, got {bad}")
        parents = dict(parents)
    thresholds = spec.thresholds
    if hasattr(thresholds, "tolist"):  # a numpy array or a tensor (what threshold tuning computes)
        thresholds = thresholds.tolist()
    if isinstance(thresholds, (list, tuple)):
        thresholds = [value.item() if hasattr(value, "item") else value for value in thresholds]  # numpy / torch scalars
    if thresholds is not None:
        if spec.problem_type != MULTI_LABEL:
            raise TaskConfigError(f"{where}: 'thresholds' only apply to multi_label_classification tasks")
        if not isinstance(thresholds, (list, tuple)) or len(thresholds) != len(labels):
            raise TaskConfigError(
                f"{where}: 'thresholds' must have one value per label ({len(labels)}), got {thresholds!r}"
            )
        for label, value in zip(labels, thresholds):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
                raise TaskConfigError(f"{where}: threshold for label {label!r} must be in [0, 1], got {value!r}")
        thresholds = [float(value) for value in thresholds]
    return {
        "name": name,
        "level": spec.level,
        "problem_type": spec.problem_type,
        "labels": labels,
        "parents": parents,
        "thresholds": thresholds,
    }


def default_adapter_config(backbone_model_type: str | None) -> dict[str, Any]:
    """The default PEFT adapter: LoRA r=8, alpha=16, dropout=0.1 on the attention query/value projections."""
    return {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "target_modules": copy.deepcopy(LORA_QUERY_VALUE_MODULES.get(backbone_model_type or "")),
        "bias": "none",
    }


def _json_ready(value: Any, name: str) -> Any:
    """`value` as config.json can hold it: enums as their values (``PeftType.LORA`` -> ``"LORA"``), sets and tuples
    as lists (sets sorted); anything else that JSON cannot hold is refused, naming the field."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {key: _json_ready(item, f"{name}.{key}") for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_json_ready(item, name) for item in value)
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, name) for item in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TaskConfigError(f"{name}: {type(value).__name__} value {value!r} cannot be saved in config.json")


class MultiTaskConfig(PreTrainedConfig):
    r"""Configuration of a [`MultiTaskModel`]: one shared encoder (any `AutoModel` encoder) and a dict of task heads.

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            Config of the shared encoder (BERT, RoBERTa, DeBERTa-v2, DistilBERT, ...). A dict must carry the
            backbone's `model_type`. Defaults to a BERT-base config.
        tasks (`list[dict | TaskSpec]`):
            Ordered task specifications (see [`TaskSpec`]); stored as plain dicts.
        sharing (`str`, defaults to `"hard"`):
            `"hard"`: one backbone pass serves every head. `"adapters"`: one PEFT adapter per task on a frozen
            shared backbone; each head reads the backbone with its own adapter active.
        adapter_config (`dict`, *optional*):
            PEFT config (a `PeftConfig` or its `to_dict()`, with `peft_type`) used for every task adapter when
            `sharing="adapters"`. Defaults to LoRA r=8, alpha=16, dropout=0.1 on attention query/value.
        pooling (`str`, defaults to `"cls"`): document-head pooling, `"cls"` (first token) or `"mean"` (masked mean).
        span_pooling (`str`, defaults to `"mean"`): how span heads pool a mention's tokens, `"mean"` or `"max"`.
        span_context (`bool`, defaults to `False`): span heads also read the mention's window, mean-pooled (their
            input is `[mention; window]`, twice the hidden size): a role is framed by what surrounds the mention
            more than by the mention's own tokens.
        head_dropout (`float`, defaults to 0.1): dropout before each head layer.
        head_hidden_size (`int`, *optional*): size of an optional hidden layer (GELU) in every head.
        num_frozen_layers (`int`, defaults to 0): freeze the embeddings and this many lowest encoder layers
            (partial sharing); 0 freezes nothing. The frozen part always runs in eval mode (no dropout), so its
            output can be cached (`modeling.frozen_cache`).
        max_length (`int`, *optional*): tokens per window for long texts; defaults to
            min(512, the positions the backbone can use: `max_position_embeddings`, less `pad_token_id + 1` for
            RoBERTa-style models, whose positions start after the padding index).
        stride (`int`, *optional*): tokens of overlap between consecutive windows; defaults to
            min(128, max_length // 4).
        window_aggregation (`str`, defaults to `"mean"`): how a multi-label document task combines the windows of
            a long text: `"mean"` (sigmoid of the mean logit; consistent with training, where each window carries
            its document's labels) or `"max"` (a label shown in any window). Single-label tasks average the
            windows' probabilities either way. See `modeling.windowing.aggregate_document_scores`.
        relative_threshold (`float`, defaults to 0.0): multi-label decisions also require a label's probability
            to reach this fraction of the row's top probability (0 turns it off). With many rare labels a single
            threshold low enough to recall them also admits every weak label of a confident row; 0.5 keeps only
            labels at least half as likely as the best one (issue 14: +0.02 samples-F1 on SemEval subnarratives).
            Used by `predict`, the trainer's evaluation and its threshold tuning.
        top1_fallback (`bool`, defaults to `True`): a multi-label row where no label passes predicts its top label
            (the `Other` fallback) instead of nothing. `MultiTaskTrainer` sets it from ``--top1_fallback``, so a
            saved model's `predict` decides as its evaluation and threshold tuning did.
    """

    model_type: ClassVar[str] = "multi_task"
    sub_configs_defaults: ClassVar[dict] = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    backbone_config: PreTrainedConfig | dict | None = None
    tasks: list = field(default_factory=list)
    sharing: str = "hard"
    adapter_config: dict | None = None
    pooling: str = "cls"
    span_pooling: str = "mean"
    span_context: bool = False
    head_dropout: float = 0.1
    head_hidden_size: int | None = None
    num_frozen_layers: int = 0
    max_length: int | None = None
    stride: int | None = None
    window_aggregation: str = "mean"
    relative_threshold: float = 0.0
    top1_fallback: bool = True

    def __post_init__(self, **kwargs):
        if isinstance(self.backbone_config, dict):  # else transformers fails with a bare KeyError on the type
            from transformers import CONFIG_MAPPING

            model_type = self.backbone_config.get("model_type")
            if model_type not in CONFIG_MAPPING:
                raise TaskConfigError(f"backbone_config.model_type: {model_type!r} is not a transformers model type "
                                      "(e.g. 'bert', 'roberta'); a backbone_config dict needs one")
        super().__post_init__(**kwargs)  # builds self.backbone_config from a dict (resolved by its model_type)
        self.validate_options()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """`PretrainedConfig.from_dict`, then the checks again: transformers sets keyword overrides (e.g.
        ``from_pretrained(folder, tasks=...)``) with `setattr` after construction, which would skip them."""
        loaded = super().from_dict(config_dict, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).validate_options()
        return loaded

    def validate_options(self) -> None:
        """Check (and normalise) every option; raises `TaskConfigError` naming the faulty field."""
        self.tasks = self._validated_tasks(self.tasks)
        if self.sharing not in SHARING_MODES:
            raise TaskConfigError(f"sharing: unknown mode {self.sharing!r}; expected one of {list(SHARING_MODES)}")
        if self.pooling not in DOCUMENT_POOLINGS:
            raise TaskConfigError(f"pooling: unknown value {self.pooling!r}; expected one of {list(DOCUMENT_POOLINGS)}")
        if self.span_pooling not in SPAN_POOLINGS:
            raise TaskConfigError(
                f"span_pooling: unknown value {self.span_pooling!r}; expected one of {list(SPAN_POOLINGS)}"
            )
        if not isinstance(self.span_context, bool):
            raise TaskConfigError(f"span_context: must be true or false, got {self.span_context!r}")
        if self.window_aggregation not in WINDOW_AGGREGATIONS:
            raise TaskConfigError(
                f"window_aggregation: unknown value {self.window_aggregation!r}; expected one of {list(WINDOW_AGGREGATIONS)}"
            )
        if hasattr(self.relative_threshold, "item"):  # a numpy or torch scalar
            self.relative_threshold = self.relative_threshold.item()
        if isinstance(self.relative_threshold, bool) or not isinstance(self.relative_threshold, (int, float)) or not (
            0 <= self.relative_threshold < 1
        ):
            raise TaskConfigError(f"relative_threshold: must be a float in [0, 1), got {self.relative_threshold!r}")
        if not isinstance(self.top1_fallback, bool):
            raise TaskConfigError(f"top1_fallback: must be true or false, got {self.top1_fallback!r}")
        if isinstance(self.head_dropout, bool) or not isinstance(self.head_dropout, (int, float)) or not (
            0 <= self.head_dropout < 1
        ):
            raise TaskConfigError(f"head_dropout: must be a float in [0, 1), got {self.head_dropout!r}")
        if self.head_hidden_size is not None and (
            isinstance(self.head_hidden_size, bool) or not isinstance(self.head_hidden_size, int) or self.head_hidden_size < 1
        ):
            raise TaskConfigError(f"head_hidden_size: must be a positive int or None, got {self.head_hidden_size!r}")
        num_layers = getattr(self.backbone_config, "num_hidden_layers", None)
        if isinstance(self.num_frozen_layers, bool) or not isinstance(self.num_frozen_layers, int) or self.num_frozen_layers < 0:
            raise TaskConfigError(f"num_frozen_layers: must be an int >= 0, got {self.num_frozen_layers!r}")
        if num_layers is not None and self.num_frozen_layers > num_layers:
            raise TaskConfigError(
                f"num_frozen_layers: {self.num_frozen_layers} is out of range; the backbone has {num_layers} layers"
            )
        max_positions = usable_positions(self.backbone_config)
        if self.max_length is None:
            self.max_length = min(DEFAULT_MAX_LENGTH, max_positions) if max_positions else DEFAULT_MAX_LENGTH
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 8:
            raise TaskConfigError(f"max_length: must be an int >= 8, got {self.max_length!r}")
        if max_positions and self.max_length > max_positions:
            raise TaskConfigError(
                f"max_length: {self.max_length} exceeds the {max_positions} positions the backbone can use "
                f"(max_position_embeddings {self.backbone_config.max_position_embeddings})"
            )
        if self.stride is None:
            self.stride = min(DEFAULT_STRIDE, self.max_length // 4)
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or not 0 <= self.stride < self.max_length // 2:
            raise TaskConfigError(
                f"stride: must be an int in [0, max_length // 2) = [0, {self.max_length // 2}), got {self.stride!r}"
            )
        if hasattr(self.adapter_config, "to_dict") and not isinstance(self.adapter_config, dict):  # a PeftConfig
            self.adapter_config = self.adapter_config.to_dict()
        if isinstance(self.adapter_config, dict):
            self.adapter_config = _json_ready(self.adapter_config, "adapter_config")
        if self.sharing == "adapters":
            if self.adapter_config is None:
                self.adapter_config = default_adapter_config(getattr(self.backbone_config, "model_type", None))
            if not isinstance(self.adapter_config, dict) or "peft_type" not in self.adapter_config:
                raise TaskConfigError(
                    f"adapter_config: must be a dict of a PEFT config including 'peft_type', got {self.adapter_config!r}"
                )
        elif self.adapter_config is not None and not isinstance(self.adapter_config, dict):
            raise TaskConfigError(f"adapter_config: must be a dict or None, got {self.adapter_config!r}")

    @staticmethod
    def _validated_tasks(tasks) -> list[dict[str, Any]]:
        if tasks is None:
            return []
        if isinstance(tasks, (dict, TaskSpec)) or not isinstance(tasks, (list, tuple)):
            raise TaskConfigError(f"tasks: must be a list of task dicts/TaskSpec, got {type(tasks).__name__}")
        normalized = [normalize_task(task, position) for position, task in enumerate(tasks)]
        names = [task["name"] for task in normalized]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise TaskConfigError(f"tasks: duplicate task name(s) {duplicates}")
        return normalized

    # ------------------------------------------------------------------ helpers
    @property
    def task_names(self) -> list[str]:
        """Task names in their configured order."""
        return [task["name"] for task in self.tasks]

    def get_task(self, name: str) -> dict[str, Any]:
        """The task dict named `name` (KeyError listing the known tasks otherwise)."""
        for task in self.tasks:
            if task["name"] == name:
                return task
        raise KeyError(f"unknown task {name!r}; this model's tasks are {self.task_names}")

    def num_labels_of(self, name: str) -> int:
        """Number of labels (classes) of task `name`."""
        return len(self.get_task(name)["labels"])

    def thresholds_of(self, name: str) -> list[float]:
        """Decision thresholds of a task (0.5 per label when none are stored)."""
        task = self.get_task(name)
        return list(task["thresholds"]) if task["thresholds"] is not None else [0.5] * len(task["labels"])

    def set_thresholds(self, name: str, thresholds: list[float] | None) -> None:
        """Store validated decision thresholds for multi-label task `name` (e.g. after tuning on validation data);
        they are saved with the model and used by `predict`. `None` restores the 0.5 default."""
        position = self.task_names.index(self.get_task(name)["name"])
        self.tasks[position] = normalize_task({**self.tasks[position], "thresholds": thresholds}, position)


__all__ = ["MultiTaskConfig", "TaskSpec", "TaskConfigError", "normalize_task", "default_adapter_config"]
