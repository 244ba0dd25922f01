"""Benchmark section "frozen_cache": training-step time of an entity-framing model whose k lowest layers are
frozen, without vs with the frozen-prefix cache (:mod:`modeling.frozen_cache`), and the one-off time to build
that cache.

Both variants start from the same weights and train on the same batches of full-length windows, each with
its own AdamW; a step is what the Trainer's loop does per batch: a batched read from the dataset, collation,
forward, backward, optimizer step. Steps alternate between the variants (A B A B ...) after a warm-up, so a
busy spell of a shared machine hits both alike. Each step is seeded, so dropout in the trained layers draws
the same masks in both variants: their losses must agree (the detail reports the largest difference).

The cache can at best remove the frozen prefix's forward pass from a step, so the speedup it can reach is
``full step / (full step - prefix forward)``, whatever the implementation; the prefix forward (embeddings and the
k frozen layers, eval mode, no grad, on the same batches) is timed alongside, and figure
``frozen_cache_share_of_attainable`` says how much of that ceiling the cache reaches (what reading and collating
the stored states costs). With one trainable layer left (k = 5 of 6) the ceiling is about 2.5 on a CPU.
"""

from __future__ import annotations

import copy
import tempfile
import time
from typing import Any

import torch

from .core import Benchmark
from .figures import Figure
from .inputs import framing_tasks, synthetic_windows
from .probes import autocast_context, interleaved_timings, median

_CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict):  # the collator's `labels`: {task: tensor}
        return {key: _to_device(item, device) for key, item in value.items()}
    return value.to(device) if isinstance(value, torch.Tensor) else value


def read_batch(data, collate, index: int, batch_size: int, device: torch.device) -> dict:
    """Batch `index` of `data`, collated and on `device`: one batched read, as torch's DataLoader does through
    `Dataset.__getitems__`."""
    start = index * batch_size
    if start + batch_size > len(data):
        raise RuntimeError(f"batch {index + 1}: the dataset holds only {len(data)} rows")
    return _to_device(collate(data.__getitems__(list(range(start, start + batch_size)))), device)


class TrainingSteps:
    """Consecutive training steps of `model` over `data`, batch i at the i-th call; `losses[i]` is its loss."""

    def __init__(self, model, data, collate, batch_size: int, device: torch.device, seed: int, bf16: bool = False):
        self.model = model.train()
        self.data, self.collate, self.batch_size = data, collate, batch_size
        self.device, self.seed, self.bf16 = device, seed, bf16
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        self.losses: list[float] = []
        self.cpu_seconds: list[float] = []  # CPU time of this process per step (all threads)

    def __call__(self) -> None:
        began = time.process_time()
        index = len(self.losses)
        batch = read_batch(self.data, self.collate, index, self.batch_size, self.device)
        torch.manual_seed(self.seed + index)  # same dropout masks in both variants at the same step
        with autocast_context(self.device, self.bf16):
            loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(float(loss.detach()))
        self.cpu_seconds.append(time.process_time() - began)


class PrefixPasses:
    """The frozen prefix's forward pass (what the cache stores) on batch i at the i-th call."""

    def __init__(self, model, data, collate, batch_size: int, device: torch.device, bf16: bool = False):
        self.model, self.data, self.collate, self.batch_size = model, data, collate, batch_size
        self.device, self.bf16, self.calls = device, bf16, 0

    def __call__(self) -> None:
        batch = read_batch(self.data, self.collate, self.calls, self.batch_size, self.device)
        with torch.no_grad(), autocast_context(self.device, self.bf16):
            self.model.frozen_prefix_states(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        self.calls += 1


def run_frozen_cache(bench: Benchmark) -> None:
    """Figure frozen_cache_step_speedup: median training-step time without / with the cache."""
    from datasets import Dataset
    from transformers import AutoConfig

    from modeling import MultiTaskCollator
    from modeling.frozen_cache import attach_frozen_prefix, frozen_prefix_reason

    args = bench.args
    num_layers = AutoConfig.from_pretrained(args.backbone).num_hidden_layers
    k = num_layers - 1 if args.frozen_cache_layers is None else args.frozen_cache_layers
    if not 0 < k < num_layers:
        raise ValueError(f"--frozen_cache_layers must be in 1..{num_layers - 1} for this {num_layers}-layer "
                         f"backbone, got {k}")
    tasks = framing_tasks()
    full_model = bench.multitask_model(tasks, num_frozen_layers=k)
    reason = frozen_prefix_reason(full_model)
    if reason is not None:
        raise ValueError(f"frozen_cache section: the model's frozen prefix cannot be cached: {reason}")
    cached_model = copy.deepcopy(full_model)
    bs, length = args.frozen_cache_batch_size, args.frozen_cache_max_length
    warmup, timed = args.frozen_cache_warmup_steps, args.frozen_cache_steps
    windows = Dataset.from_list(synthetic_windows(bench.tokenizer, (warmup + timed) * bs, length, args.seed + 6))
    collate = MultiTaskCollator(tasks=tasks, tokenizer=bench.tokenizer)

    with tempfile.TemporaryDirectory() as cache_dir:  # a fresh folder: the build is measured, never reused
        began = time.perf_counter()
        with_cache = attach_frozen_prefix(cached_model, windows, cache_dir, batch_size=64,
                                          dtype=_CACHE_DTYPES[args.frozen_cache_dtype])
        build_s = time.perf_counter() - began  # states come back to the CPU: the device work is done
        bench.log(f"frozen cache: {k} of {num_layers} layers, {len(windows)} windows of {length} tokens cached "
                  f"in {build_s:.1f} s; timing {warmup} + {timed} steps of {bs} per variant")
        steps = {
            "full": TrainingSteps(full_model, windows, collate, bs, bench.device, args.seed, bench.bf16),
            "cached": TrainingSteps(cached_model, with_cache, collate, bs, bench.device, args.seed, bench.bf16),
        }
        prefix = PrefixPasses(full_model, windows, collate, bs, bench.device, bench.bf16)
        timings = interleaved_timings({**steps, "prefix": prefix}, timed, bench.device, warmup=warmup)

    full_s, cached_s, prefix_s = median(timings["full"]), median(timings["cached"]), median(timings["prefix"])
    saved_per_step = full_s - cached_s
    attainable = full_s / (full_s - prefix_s) if full_s > prefix_s else float("nan")
    # CPU time is far less noisy than wall-clock when other jobs share the cores (meaningful on CPU only).
    cpu_s = {name: median(s.cpu_seconds[warmup:]) for name, s in steps.items()}
    loss_diff = max(abs(a - b) for a, b in zip(steps["full"].losses, steps["cached"].losses))
    bench.log(f"frozen cache: step {full_s * 1000:.0f} ms without, {cached_s * 1000:.0f} ms with the cache "
              f"(x{full_s / cached_s:.2f}; the prefix forward takes {prefix_s * 1000:.0f} ms, so at most "
              f"x{attainable:.2f}); cache built once in {build_s:.1f} s")
    bench.figures.append(Figure(
        "frozen_cache_step_speedup",
        f"training step, {k} of {num_layers} layers frozen, {length} tokens x {bs}: without vs with the "
        f"{args.frozen_cache_dtype} frozen-prefix cache",
        cached_s, full_s, "s/step", full_s / cached_s, "x faster",
        {"num_frozen_layers": k, "num_layers": num_layers, "max_length": length, "batch_size": bs,
         "cache_dtype": args.frozen_cache_dtype, "cache_build_s": build_s, "cache_windows": len(windows),
         "cache_pays_back_after_steps": build_s / saved_per_step if saved_per_step > 0 else None,
         "prefix_forward_s": prefix_s, "attainable_speedup": attainable,
         "ratio_cpu_time": cpu_s["full"] / cpu_s["cached"], "warmup_steps": warmup,
         "first_step_loss": {name: s.losses[0] for name, s in steps.items()},
         "loss_max_abs_diff": loss_diff, "step_seconds": timings},
    ))
    bench.figures.append(Figure(
        "frozen_cache_share_of_attainable",
        f"frozen-prefix cache: speedup reached / attainable (full step / (full step - the {k} frozen layers' forward))",
        full_s / cached_s, attainable, "x", (full_s / cached_s) / attainable, "of the ceiling",
        {"prefix_forward_s": prefix_s, "full_step_s": full_s, "cached_step_s": cached_s},
    ))
