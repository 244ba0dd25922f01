"""`MultiTaskTrainingArguments`: `transformers.TrainingArguments` plus the multi-task knobs.

Every new field carries `help` metadata, so `HfArgumentParser(MultiTaskTrainingArguments)` exposes them on the
command line, e.g. ``--loss_weighting uncertainty --task_weights narratives=2 roles=1 --task_sampling temperature``.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from .metrics import MACRO_AVERAGES
from .thresholds import THRESHOLD_STRATEGIES

LOSS_WEIGHTINGS = ("static", "uncertainty", "gradnorm", "pcgrad", "dwa")
TASK_SAMPLINGS = ("none", "proportional", "temperature", "equal")
CLASS_WEIGHTINGS = ("none", "balanced")


def parse_task_float_pairs(items, field_name: str) -> dict[str, float]:
    """Parse ``["name=value", ...]`` (or a dict, or one comma-separated string) into ``{name: float}``.

    Raises ValueError naming `field_name` and the offending item, so a typo on the command line is easy to find.
    """
    if items is None:
        return {}
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        if isinstance(items, str):
            items = [part for part in items.split(",") if part.strip()]
        pairs = []
        for item in items:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"--{field_name}: expected items of the form 'task=value', got {item!r}")
            name, value = item.split("=", 1)
            pairs.append((name.strip(), value.strip()))
    parsed: dict[str, float] = {}
    for name, value in pairs:
        if not name:
            raise ValueError(f"--{field_name}: empty task name in {name!r}={value!r}")
        if name in parsed:
            raise ValueError(f"--{field_name}: task {name!r} given twice")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--{field_name}: value for task {name!r} is not a number: {value!r}") from None
        if not number >= 0 or number == float("inf"):
            raise ValueError(f"--{field_name}: value for task {name!r} must be a finite number >= 0, got {value!r}")
        parsed[name] = number
    return parsed


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """Training arguments for `MultiTaskTrainer`.

    Defaults differ from `TrainingArguments` where multi-task training needs it: `remove_unused_columns=False`
    (the per-task ``labels.<task>`` columns are not `forward` arguments), `metric_for_best_model="mean_macro_f1"`
    (so `greater_is_better` resolves to True), and `ddp_find_unused_parameters` left to the trainer, which turns
    it off for hard parameter sharing (every head is kept in the graph, so it is safe and faster).
    """

    # --- loss weighting -------------------------------------------------------------------------
    loss_weighting: str = field(
        default="static",
        metadata={
            "help": "How task losses are combined: 'static' (fixed --task_weights, equal by default), 'uncertainty' "
            "(learned homoscedastic uncertainty, Kendall et al. 2018), 'gradnorm' (Chen et al. 2018, on the last "
            "shared layer), 'pcgrad' (Yu et al. 2020, projecting conflicting task gradients on the shared "
            "parameters) or 'dwa' (dynamic weight average, Liu et al. 2019).",
            "choices": list(LOSS_WEIGHTINGS),
        },
    )
    task_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "Static task weights as 'task=weight' items, e.g. `--task_weights narratives=2 roles=1`. "
            "Tasks not named get 1.0. Used by 'static' and 'pcgrad'.",
            "nargs": "+",
        },
    )
    weighting_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Optimizer steps trained with equal task weights (plain summed loss) before the weighting "
            "strategy takes over."
        },
    )
    gradnorm_alpha: float = field(
        default=1.5,
        metadata={"help": "GradNorm asymmetry alpha: larger values pull slower-training tasks harder (paper: 0.12-3)."},
    )
    gradnorm_learning_rate: float = field(
        default=0.025,
        metadata={"help": "Learning rate of the GradNorm task weights (updated by their own gradient step)."},
    )
    dwa_temperature: float = field(
        default=2.0,
        metadata={"help": "Dynamic weight average temperature T: weights are softmax(r_k / T) * K (paper: T=2)."},
    )
    uncertainty_init: float = field(
        default=0.0,
        metadata={"help": "Initial log-variance s = log(sigma^2) of every task for 'uncertainty' weighting."},
    )
    uncertainty_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the learned log-variances of 'uncertainty' weighting (default: "
            "--head_learning_rate, else --learning_rate). Fine-tuning learning rates (~1e-5..1e-4) move them little "
            "in a short run; 1e-2 lets them adapt."
        },
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the task heads (and of learned loss weights), in their own optimizer groups; "
            "the encoder (adapters included) keeps --learning_rate. Default: --learning_rate for everything. Freshly "
            "initialised heads often train better with a larger rate (e.g. 1e-3 with an encoder at 2e-5)."
        },
    )

    # --- sampling -------------------------------------------------------------------------------
    task_sampling: str = field(
        default="none",
        metadata={
            "help": "How training examples are drawn when tasks come from different sources: 'none' (plain "
            "shuffling), 'proportional' (each source by its size), 'temperature' (size^(1/T)) or 'equal'. A "
            "source is the set of tasks an example carries labels for (or --task_sampling_column). Batches may "
            "mix tasks.",
            "choices": list(TASK_SAMPLINGS),
        },
    )
    sampling_temperature: float = field(
        default=2.0,
        metadata={"help": "Temperature T of --task_sampling temperature: source probability ~ size^(1/T)."},
    )
    oversample: list[str] | None = field(
        default=None,
        metadata={
            "help": "Oversample scarce tasks as 'task=factor' items, e.g. `--oversample roles=3`: every source "
            "carrying that task is drawn `factor` times as often.",
            "nargs": "+",
        },
    )
    task_sampling_column: str | None = field(
        default=None,
        metadata={
            "help": "Optional training-set column whose values define the sources for --task_sampling (e.g. "
            "'domain'); by default a source is the set of tasks an example is labelled for."
        },
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Length-grouped batching: batches of examples of similar length (with the collator's dynamic "
            "padding) waste far less compute on padding. Same as --train_sampling_strategy group_by_length, and "
            "combined with --task_sampling."
        },
    )
    length_grouping_megabatch: int = field(
        default=50,
        metadata={
            "help": "Length grouping sorts random windows of this many batches by length, keeping batch order "
            "random while each batch holds similar lengths."
        },
    )

    # --- class imbalance ------------------------------------------------------------------------
    class_weighting: str = field(
        default="none",
        metadata={
            "help": "'balanced': class weights n/(C*n_c) for single-label tasks and pos_weight = negatives/positives "
            "for multi-label tasks, from the training label frequencies; 'none': unweighted losses.",
            "choices": list(CLASS_WEIGHTINGS),
        },
    )
    max_class_weight: float = field(
        default=50.0,
        metadata={"help": "Upper bound on any class weight / pos_weight from --class_weighting balanced."},
    )

    # --- head initialisation -------------------------------------------------------------------
    linear_probe_init: bool = field(
        default=False,
        metadata={
            "help": "Before training, fit every single-layer head as a logistic regression on the backbone's pooled "
            "features of the training set (LP-FT; `modeling.linear_probe`), then fine-tune. Use a head learning "
            "rate close to the encoder's: a large one undoes the fit."
        },
    )
    linear_probe_c: float = field(
        default=0.05,
        metadata={"help": "--linear_probe_init: inverse L2 strength (scikit-learn's C) on standardised features."},
    )

    # --- evaluation -----------------------------------------------------------------------------
    macro_average: str = field(
        default="present",
        metadata={
            "help": "Labels averaged by macro-F1: 'present' (labels gold or predicted in the evaluation set, as "
            "sklearn's f1_score(average='macro', zero_division=nan); default) or 'all' (every label of the task, "
            "scoring absent labels as 0, as the SemEval study did).",
            "choices": list(MACRO_AVERAGES),
        },
    )
    tune_thresholds: bool = field(
        default=True,
        metadata={
            "help": "Choose the decision thresholds of multi-label heads on the validation set at each evaluation "
            "during training (by --threshold_strategy) and store them in the model config (used by predict and "
            "saved with the model)."
        },
    )
    threshold_strategy: str = field(
        default="shared",
        metadata={
            "help": "How multi-label thresholds are chosen on validation data: 'shared' (one threshold per task "
            "maximising samples-F1; robust on small validation sets; default), 'per_label' (the shared threshold, "
            "refined per label for labels with at least --threshold_min_support validation positives) or 'none' "
            "(keep the stored thresholds, 0.5 by default). Tuning every label alone on ~80 articles drives rare "
            "labels to near-zero thresholds that predict them everywhere.",
            "choices": list(THRESHOLD_STRATEGIES),
        },
    )
    threshold_min_support: int = field(
        default=5,
        metadata={"help": "--threshold_strategy per_label: validation positives a label needs for its own threshold."},
    )
    top1_fallback: bool = field(
        default=True,
        metadata={
            "help": "Multi-label evaluation: a row where no label reaches its threshold predicts its top-scoring "
            "label (the 'Other' fallback) instead of nothing; also used when choosing thresholds."
        },
    )
    threshold_tuning_set: str | None = field(
        default=None,
        metadata={
            "help": "When eval_dataset is a dict: the name of the set thresholds are tuned on (default: the first)."
        },
    )
    log_per_label_metrics: bool = field(
        default=True,
        metadata={"help": "Add per-label F1 (eval_<task>_f1_<label>) to the evaluation metrics."},
    )
    calibration_bins: int = field(
        default=15,
        metadata={"help": "Number of equal-width confidence bins of the expected calibration error."},
    )

    # --- changed defaults -----------------------------------------------------------------------
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Keep False for multi-task training: the per-task label columns and the indices used by "
            "evaluation are not `forward` arguments and must reach the collator."
        },
    )
    metric_for_best_model: str | None = field(
        default="mean_macro_f1",
        metadata={
            "help": "Metric for the best checkpoint and early stopping; default the mean macro-F1 across tasks "
            "(and across evaluation sets when eval_dataset is a dict)."
        },
    )

    def __post_init__(self):
        for option in fields(self):  # ours and TrainingArguments' (--learning_rate inf, --weight_decay nan)
            value = getattr(self, option.name, None)
            if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison below
                raise ValueError(f"--{option.name} must be a finite number, got {value!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"--loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if self.task_sampling not in TASK_SAMPLINGS:
            raise ValueError(f"--task_sampling must be one of {TASK_SAMPLINGS}, got {self.task_sampling!r}")
        if self.linear_probe_c <= 0:
            raise ValueError(f"--linear_probe_c must be > 0, got {self.linear_probe_c}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(f"--class_weighting must be one of {CLASS_WEIGHTINGS}, got {self.class_weighting!r}")
        if self.threshold_strategy not in THRESHOLD_STRATEGIES:
            raise ValueError(f"--threshold_strategy must be one of {THRESHOLD_STRATEGIES}, got {self.threshold_strategy!r}")
        if self.threshold_min_support < 1:
            raise ValueError(f"--threshold_min_support must be >= 1, got {self.threshold_min_support}")
        if not isinstance(self.top1_fallback, bool):  # it is written into the saved model's config, which checks it
            raise ValueError(f"--top1_fallback must be true or false, got {self.top1_fallback!r}")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise ValueError(f"--head_learning_rate must be > 0, got {self.head_learning_rate}")
        if self.macro_average not in MACRO_AVERAGES:
            raise ValueError(f"--macro_average must be one of {MACRO_AVERAGES}, got {self.macro_average!r}")
        if self.weighting_warmup_steps < 0:
            raise ValueError(f"--weighting_warmup_steps must be >= 0, got {self.weighting_warmup_steps}")
        if self.uncertainty_learning_rate is not None and not self.uncertainty_learning_rate > 0:
            raise ValueError(f"--uncertainty_learning_rate must be > 0, got {self.uncertainty_learning_rate}")
        for name in ("sampling_temperature", "dwa_temperature", "gradnorm_learning_rate", "max_class_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)!r}")
        if self.gradnorm_alpha < 0:
            raise ValueError(f"--gradnorm_alpha must be >= 0, got {self.gradnorm_alpha}")
        if self.calibration_bins < 1:
            raise ValueError(f"--calibration_bins must be >= 1, got {self.calibration_bins}")
        if self.length_grouping_megabatch < 1:
            raise ValueError(f"--length_grouping_megabatch must be >= 1, got {self.length_grouping_megabatch}")
        # Normalise the CLI lists early so a malformed item fails before any model is loaded.
        if isinstance(self.task_weights, str):
            self.task_weights = [self.task_weights]
        if isinstance(self.oversample, str):
            self.oversample = [self.oversample]
        self.task_weight_map = parse_task_float_pairs(self.task_weights, "task_weights")
        self.oversample_map = parse_task_float_pairs(self.oversample, "oversample")
        if any(factor <= 0 for factor in self.oversample_map.values()):
            raise ValueError(f"--oversample factors must be > 0, got {self.oversample_map}")
        if self.group_by_length:
            self.train_sampling_strategy = "group_by_length"
        super().__post_init__()
        # transformers checks the names only when a Trainer is built; a study would fail at its first run
        from transformers.integrations import get_reporting_integration_callbacks

        try:
            get_reporting_integration_callbacks(self.report_to)
        except ValueError as error:
            raise ValueError(f"--report_to: {error}") from None


def check_arguments_for_model(args: MultiTaskTrainingArguments | None, model) -> MultiTaskTrainingArguments:
    """`MultiTaskTrainer`'s checks of its arguments against its model, before `Trainer.__init__` (default arguments
    when None); sets ``ddp_find_unused_parameters`` from the model's sharing when unset."""
    if args is None:
        args = MultiTaskTrainingArguments(output_dir="tmp_trainer")
    if not isinstance(args, MultiTaskTrainingArguments):
        raise TypeError(
            f"MultiTaskTrainer needs MultiTaskTrainingArguments, got {type(args).__name__}; the multi-task "
            "options (loss weighting, sampling, metrics) live there"
        )
    if model is not None:
        config = getattr(model, "config", None)
        if getattr(config, "tasks", None) is None:
            raise TypeError(f"MultiTaskTrainer needs a MultiTaskModel (config.tasks), got {type(model).__name__}")
        if args.ddp_find_unused_parameters is None:
            # Every head stays in the graph (absent tasks contribute logits.sum() * 0), so DDP never meets an
            # unused parameter with hard sharing; per-task adapters are used only by their task.
            args.ddp_find_unused_parameters = getattr(config, "sharing", "hard") != "hard"
        if args.loss_weighting == "gradnorm":
            from .task_gradients import gradnorm_parameters

            gradnorm_parameters(model)  # fail now, not mid-training, when nothing shared is trainable
    if args.loss_weighting in ("pcgrad", "gradnorm") and args.fp16:
        raise ValueError(
            f"--loss_weighting {args.loss_weighting} computes per-task gradients outside the fp16 GradScaler; "
            "train with --bf16 or in fp32"
        )
    return args
