#!/usr/bin/env python
"""Benchmark: what one shared encoder with K heads saves against the usual single-task recipes.

Run it (CPU, one GPU, or several through accelerate; only the main process prints and writes)::

    accelerate launch recipes/benchmark.py                      # full run, a few minutes on 2 CPU cores
    accelerate launch recipes/benchmark.py --quick               # reduced sizes, about 4 minutes on 2 idle cores
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
5. frozen-prefix cache (``--sections frozen_cache``): training-step time of an entity-framing model with
   all layers but the top one frozen (5 of MiniLM's 6), full-length windows of 128 tokens, batches of 16,
   without vs with the cached output of the frozen layers (float32), and the one-off time to build the cache.

All inputs are synthetic and generated here (seeded): the figures measure cost, not accuracy, and need
no data download. The measurements live in the recipe layer, `mtl_study.benchmarking` (one module per
section; `mtl_study/benchmarking/sections.py` says how to add one).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

# Run from a checkout without installing it: the repository root holds `modeling` and `data_prep`, recipes/
# holds `mtl_study`.
_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE.parent), str(_HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from mtl_study.benchmarking import BenchmarkArguments, figures_to_json, format_table, run_benchmark  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    from accelerate import PartialState
    from datasets.utils.logging import disable_progress_bar
    from transformers import HfArgumentParser
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    state = PartialState()
    if state.device.type == "cpu":  # accelerate launch exports OMP_NUM_THREADS=1: the cores would sit idle
        from mtl_study.study import use_cpu_threads

        use_cpu_threads(None, state.num_processes)
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s", stream=sys.stderr)
    logging.getLogger("benchmark").setLevel(logging.INFO)  # section progress (main process only)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    result = run_benchmark(args, state)
    if state.is_main_process:
        print(format_table(result.figures, result.machine, args.repeats))
        print(f"runtime: {result.runtime_s:.0f} s")
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            payload = figures_to_json(result.figures, result.machine, args, result.runtime_s)
            Path(args.output).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
