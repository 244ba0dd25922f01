"""Benchmark section "inference": one MultiTaskModel with K heads vs K single-task models on the same batches
(speed-up, and the peak memory of each set-up, loading included)."""

from __future__ import annotations

import gc

import torch

from .core import Benchmark
from .figures import Figure
from .inputs import batches_by_length, pad_batch, ticket_tasks
from .probes import autocast_context, interleaved_timings, median, peak_memory_bytes


def run_inference(bench: Benchmark) -> None:
    """Figures inference_speedup, inference_memory_ratio, inference_memory_saving."""
    args = bench.args
    tasks = ticket_tasks(args.num_tasks)
    generator = bench.text_generator(1)
    lengths = generator.lengths(args.inference_texts, args.inference_median_tokens, 0.6, 4, 254)
    texts = [generator.text(int(n)) for n in lengths]
    encoded = bench.tokenizer(texts, truncation=True, max_length=256)
    rows = [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(texts))]
    batches = [pad_batch(b, bench.tokenizer.pad_token_id, bench.device) for b in batches_by_length(rows, args.inference_batch_size)]
    autocast = lambda: autocast_context(bench.device, bench.bf16)  # noqa: E731

    def run(models, selected=batches):
        with torch.inference_mode(), autocast():
            for batch in selected:
                for model in models:
                    model(**batch)

    # Peak memory: load the model(s) and run the largest batch (activations peak there).
    largest = [max(batches, key=lambda b: b["input_ids"].numel())]

    bench.log(f"inference: measuring peak memory (1 model with {len(tasks)} heads vs {len(tasks)} models)")
    memory_multi, method = peak_memory_bytes(lambda: run([bench.multitask_model(tasks)], largest), bench.device)
    memory_one, _ = peak_memory_bytes(lambda: run([bench.single_task_model(tasks[0])], largest), bench.device)
    memory_all, _ = peak_memory_bytes(lambda: run([bench.single_task_model(t) for t in tasks], largest), bench.device)

    multi = bench.multitask_model(tasks)
    singles = [bench.single_task_model(t) for t in tasks]
    bench.log(f"inference: timing {len(texts)} texts x {args.repeats} repeats")
    timings = interleaved_timings(
        {"multi": lambda: run([multi]), "singles": lambda: run(singles)}, args.repeats, bench.device
    )
    t_multi, t_singles = median(timings["multi"]), median(timings["singles"])
    n_tokens = sum(len(row["input_ids"]) for row in rows)
    common = {"texts": len(texts), "tokens": n_tokens, "batch_size": args.inference_batch_size,
              "timings_s": timings, "memory_method": method}
    bench.figures.append(Figure(
        "inference_speedup", f"inference: 1 model x {len(tasks)} heads vs {len(tasks)} models",
        t_multi * 1000 / len(texts), t_singles * 1000 / len(texts), "ms/text", t_singles / t_multi,
        "x faster", common,
    ))
    bench.figures.append(Figure(
        "inference_memory_ratio", "inference peak memory: multi-task vs ONE single-task model",
        memory_multi / 2**20, memory_one / 2**20, "MiB", memory_multi / memory_one, "x one model",
        {"three_models_mib": memory_all / 2**20, "three_models_vs_multi": memory_all / memory_multi},
    ))
    bench.figures.append(Figure(
        "inference_memory_saving", f"inference peak memory: {len(tasks)} single-task models vs multi-task",
        memory_multi / 2**20, memory_all / 2**20, "MiB", memory_all / memory_multi, "x less", {},
    ))
    del multi, singles
    gc.collect()

# --- 2. training --------------------------------------------------------------------------------------
