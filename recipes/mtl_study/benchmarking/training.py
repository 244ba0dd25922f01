"""Benchmark section "training": throughput in non-padding tokens/s of MultiTaskTrainer (length-grouped
batches, dynamic padding) vs a plain transformers.Trainer padding to a fixed length, on short texts of varied
length; and both at one fixed length (the cost of the multi-task machinery itself)."""

from __future__ import annotations

import gc
import math
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch

from .core import Benchmark
from .figures import Figure
from .inputs import random_label, ticket_tasks
from .probes import median, synchronize


def _alternating_throughput(bench: Benchmark, warmup_steps: int, build: dict[str, Callable[[str], Any]]) -> dict[str, list[dict[str, Any]]]:
    """Train each candidate once per repeat and measure its throughput; candidates alternate which runs
    first, so that neither always meets the same machine state (a busy spell hits both)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in build}
    names = list(build)
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(bench.args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                trainer = build[name](workdir)
                runs[name].append(_throughput(bench, trainer, warmup_steps))
                del trainer
                gc.collect()
    return runs


def _throughput(bench: Benchmark, trainer, warmup_steps: int) -> dict[str, Any]:
    """Train, timing each step after `warmup_steps`, in wall-clock and in CPU time of this process.

    A step's time runs from the end of the previous step to the end of this one: data loading,
    collation (dynamic padding), forward, backward, optimizer. Non-padding tokens are counted from the
    `attention_mask` each forward receives. CPU time (all threads of this process) is what the step
    cost this process; on a machine shared with other jobs it is far less noisy than wall-clock.
    """
    from transformers import PrinterCallback, TrainerCallback

    device = bench.device
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


def _training_args(bench: Benchmark, cls, output_dir: str, max_steps: int, **extra):
    kwargs = dict(
        output_dir=output_dir,
        per_device_train_batch_size=bench.args.train_batch_size,
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
        seed=bench.args.seed,
        bf16=bench.bf16,
        use_cpu=bench.device.type == "cpu",
    )
    kwargs.update(extra)
    return cls(**kwargs)


def _plain_trainer(bench: Benchmark, texts, labels, num_labels, max_length, max_steps, workdir, pad_to_max=True):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments, default_data_collator

    encoded = bench.tokenizer(texts, truncation=True, max_length=max_length,
                             padding="max_length" if pad_to_max else False)
    data = Dataset.from_dict({**encoded, "labels": labels})
    torch.manual_seed(bench.args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        bench.args.backbone, num_labels=num_labels, attn_implementation="sdpa"
    )
    args = _training_args(bench, TrainingArguments, workdir, max_steps)
    return Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)


def _multitask_trainer(bench: Benchmark, texts, task_labels, tasks, max_steps, workdir, **arg_overrides):
    from datasets import Dataset

    from data_prep import encode_for_model
    from modeling import MultiTaskCollator, MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments

    examples = Dataset.from_dict(
        {"doc_id": [f"t{i}" for i in range(len(texts))], "text": texts, "mentions": [[] for _ in texts],
         **task_labels}
    )
    encoded = encode_for_model(examples, bench.tokenizer, tasks, max_length=bench.args.train_baseline_max_length,
                               stride=min(bench.args.stride, bench.args.train_baseline_max_length // 4))
    torch.manual_seed(bench.args.seed)
    model = MultiTaskModel.from_backbone(bench.args.backbone, tasks, sharing="hard",
                                         backbone_kwargs={"attn_implementation": "sdpa"})
    args = _training_args(bench, MultiTaskTrainingArguments, workdir, max_steps, group_by_length=True, **arg_overrides)
    return MultiTaskTrainer(
        model=model, args=args, train_dataset=encoded,
        data_collator=MultiTaskCollator(tasks=tasks, tokenizer=bench.tokenizer),
    )


def run_training(bench: Benchmark) -> None:
    """Figures train_throughput_ratio_varied and train_overhead_fixed (runs on every process)."""
    args = bench.args
    tasks = ticket_tasks(args.num_tasks)
    generator = bench.text_generator(2)
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
    bench.log(f"training (varied lengths): {len(texts)} texts, median {int(np.median(lengths)) + 2} tokens, "
             f"{args.repeats} repeats")
    results = _alternating_throughput(bench, warm, {
        "multitask": lambda workdir: _multitask_trainer(bench, texts, task_labels, tasks, mt_steps, workdir),
        "plain_padded": lambda workdir: _plain_trainer(bench, texts, plain_labels, len(first["labels"]),
                                                            args.train_baseline_max_length, base_steps, workdir),
    })
    ours = median([r["tokens_per_s"] for r in results["multitask"]])
    base = median([r["tokens_per_s"] for r in results["plain_padded"]])
    bench.figures.append(Figure(
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
    bench.log(f"training (fixed length {length}): {args.repeats} repeats x {steps} steps")
    fixed = _alternating_throughput(bench, warm, {
        "multitask": lambda workdir: _multitask_trainer(bench, texts, task_labels, tasks, steps, workdir),
        "plain": lambda workdir: _plain_trainer(bench, texts, plain_labels, len(first["labels"]), length, steps,
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
    bench.figures.append(Figure(
        "train_overhead_fixed",
        f"training, fixed length {length}: MultiTaskTrainer ({len(tasks)} heads) vs Trainer (1 head), cost",
        ours, base, "tokens/s", overhead, "fraction slower (CPU time)",
        {"overhead_wall_clock": overhead_wall, "runs": fixed},
    ))

# --- 3. entity framing -----------------------------------------------------------------------------
