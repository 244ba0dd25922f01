"""Benchmark section "export": the hard-shared model with all heads as one ONNX graph, onnxruntime vs PyTorch."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .core import Benchmark
from .figures import Figure
from .inputs import ticket_tasks


def run_export(bench: Benchmark) -> None:
    """Figure export_max_abs_diff."""
    from modeling.export import export_onnx

    tasks = ticket_tasks(min(2, bench.args.num_tasks)) + [
        {"name": "roles", "level": "span", "problem_type": "multi_label_classification",
         "labels": [f"role_{i}" for i in range(6)], "parents": None, "thresholds": None}
    ]
    model = bench.multitask_model(tasks).to("cpu")
    with tempfile.TemporaryDirectory() as workdir:
        model_dir = Path(workdir) / "model"
        model.save_pretrained(model_dir)
        bench.tokenizer.save_pretrained(model_dir)
        bench.log("export: torch.onnx.export of all heads as one graph, then onnxruntime vs PyTorch")
        start = time.perf_counter()
        result = export_onnx(model_dir, Path(workdir) / "model.onnx", verify=True)
        seconds = time.perf_counter() - start
        size_mib = result.path.stat().st_size / 2**20
    bench.figures.append(Figure(
        "export_max_abs_diff", f"export: one ONNX graph, {len(tasks)} heads; max |onnxruntime - PyTorch|",
        result.max_abs_diff, None, "abs diff", result.max_abs_diff, "",
        {"export_seconds": seconds, "onnx_mib": size_mib, "outputs": result.output_names,
         "inputs": result.input_names, "checked_shapes": result.checked_shapes},
    ))
