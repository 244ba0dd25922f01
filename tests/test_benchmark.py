"""The benchmark's measurements and what it optimises: padding-independent outputs, one backbone pass for all
heads, every mention kept by windowing, honest memory/timing probes, the table and the JSON keys."""

import json
import math

import numpy as np
import pytest
import torch

from data_prep.synthetic_text import TextGenerator
from mtl_study.benchmarking import SECTIONS, TARGETS, BenchmarkArguments, Figure, figures_to_json, format_table, run_benchmark
from mtl_study.benchmarking.inputs import mark_mention, synthetic_articles, ticket_tasks
from mtl_study.benchmarking.probes import backbone_module, count_calls, describe_machine, interleaved_timings, peak_memory_bytes

REQUIRED_KEYS = {
    "inference_speedup", "inference_memory_ratio", "train_throughput_ratio_varied", "train_overhead_fixed",
    "entity_token_ratio", "entity_time_ratio", "export_max_abs_diff", "frozen_cache_step_speedup",
    "frozen_cache_share_of_attainable", "grid_speedup_ray_2_workers", "grid_speedup_ray_2_workers_vs_all_cores",
}


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


TASKS = [
    {"name": "category", "level": "document", "problem_type": "single_label_classification", "labels": ["a", "b", "c"]},
    {"name": "tags", "level": "document", "problem_type": "multi_label_classification", "labels": ["x", "y"]},
    {"name": "roles", "level": "span", "problem_type": "single_label_classification", "labels": ["p", "q"]},
]


# ------------------------------------------------------------------------------------------ synthetic inputs
def test_synthetic_text_is_one_token_per_word(tokenizer):
    generator = TextGenerator.from_tokenizer(tokenizer, seed=0)
    for length in (1, 7, 30, 250):
        assert len(tokenizer(generator.text(length))["input_ids"]) == length + 2  # + [CLS], [SEP]


def test_synthetic_articles_have_the_requested_density(tokenizer):
    generator = TextGenerator.from_tokenizer(tokenizer, seed=1)
    articles = synthetic_articles(generator, num_articles=30, num_mentions=101, median_tokens=300)
    assert len(articles) == 30
    assert sum(len(a.mentions) for a in articles) == 101
    assert all(a.mentions for a in articles)  # every annotated article has a mention
    lengths = [len(tokenizer(a.text)["input_ids"]) for a in articles]
    assert 0.75 * 300 <= np.median(lengths) <= 1.25 * 300
    for article in articles:
        spans = sorted(article.mentions)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))  # no overlap
        for start, end in spans:
            mention = article.text[start:end]
            assert mention and mention == mention.strip() and all(w[0].isupper() for w in mention.split())


def test_mark_mention_wraps_exactly_the_span():
    assert mark_mention("alpha Beta Gamma delta", (6, 16)) == "alpha @ Beta Gamma @ delta"


def test_ticket_tasks_shapes():
    tasks = ticket_tasks(4)
    assert [t["name"] for t in tasks] == ["category", "urgency", "tags", "category_3"]
    assert {t["level"] for t in tasks} == {"document"}
    assert tasks[2]["problem_type"] == "multi_label_classification"


# ------------------------------------------------------------------------------------------ probes
def test_peak_memory_sees_allocations_and_only_them():
    cpu = torch.device("cpu")

    def allocate_64_mib():
        block = torch.ones(16 * 2**20)  # 64 MiB of float32, touched
        return float(block[-1])

    big, method = peak_memory_bytes(allocate_64_mib, cpu)
    small, _ = peak_memory_bytes(lambda: torch.ones(1000).sum(), cpu)
    assert 60 * 2**20 <= big <= 200 * 2**20, (big, method)
    # The forked child also pays for copy-on-write pages of the parent it touches (tens of MiB in a large
    # test process), the same for both probes: the 64 MiB block must stand out above that floor.
    assert big - small >= 48 * 2**20, (big, small, method)
    assert small < big / 2, (big, small, method)


def test_peak_memory_reports_failures():
    def broken():
        raise KeyError("no such model")

    with pytest.raises((RuntimeError, KeyError), match="no such model"):
        peak_memory_bytes(broken, torch.device("cpu"))


def test_interleaved_timings_alternate_candidates():
    calls = []
    timings = interleaved_timings(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, device=torch.device("cpu"),
        warmup=1,
    )
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert {k: len(v) for k, v in timings.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for values in timings.values() for t in values)


def test_table_and_json_report_targets(tmp_path):
    figures = [
        Figure("inference_speedup", "inference", 1.0, 3.0, "ms/text", 3.0, "x faster"),
        Figure("train_overhead_fixed", "fixed", 90.0, 100.0, "tokens/s", 0.10, "fraction slower"),
        Figure("export_max_abs_diff", "export", 2e-7, None, "abs diff", 2e-7, ""),
    ]
    assert [f.met for f in figures] == [True, False, True]
    machine = describe_machine(torch.device("cpu"), 1, False)
    assert machine["cpu_cores"] >= 1 and machine["precision"] == "fp32"
    table = format_table(figures, machine, repeats=5)
    assert "medians over 5 repeats" in table and machine["cpu"] in table
    lines = table.splitlines()
    assert lines[3].endswith("yes") and lines[4].endswith("NO") and lines[5].endswith("yes")
    args = BenchmarkArguments(backbone="unused", quick=True)
    payload = json.loads(json.dumps(figures_to_json(figures, machine, args, runtime_s=1.0)))
    assert payload["inference_speedup"] == 3.0 and payload["train_overhead_fixed"] == 0.10
    assert payload["targets_met"] == {"inference_speedup": True, "train_overhead_fixed": False,
                                      "export_max_abs_diff": True}
    # A target whose figure was not measured (its section absent) is neither checked nor shown.
    assert "grid_speedup_ray_2_workers" in TARGETS and "grid_speedup_ray_2_workers" not in payload
    assert "grid" not in table


def test_arguments_validate_sections():
    with pytest.raises(ValueError, match="--sections"):
        BenchmarkArguments(backbone="unused", sections="inference,speed")
    quick = BenchmarkArguments(backbone="unused", quick=True)
    full = BenchmarkArguments(backbone="unused")
    assert quick.repeats < full.repeats and quick.inference_texts < full.inference_texts
    for name, value in (("repeats", 0), ("train_fixed_steps", -1), ("entity_batch_size", 0)):
        with pytest.raises(ValueError, match=f"--{name} must be >= 1"):
            BenchmarkArguments(backbone="unused", **{name: value})
    assert BenchmarkArguments(backbone="unused", train_warmup_steps=0).train_warmup_steps == 0


# ------------------------------------------------------------------------------------------ what is optimised
@pytest.fixture(scope="module")
def model(tiny_backbone_dir):
    from modeling import MultiTaskModel

    torch.manual_seed(0)
    return MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, pooling="mean").eval()


def _rows(tokenizer, texts, spans_per_text):
    rows = []
    for index, (text, spans) in enumerate(zip(texts, spans_per_text)):
        encoded = tokenizer(text)
        rows.append({**{k: list(v) for k, v in encoded.items()}, "mention_spans": spans,
                     "mention_index": list(range(len(spans))), "example_index": index, "document_index": index})
    return rows


def test_outputs_do_not_depend_on_padding(model, tokenizer):
    """Dynamic padding and length grouping change how much padding a row gets: its logits must not change."""
    from modeling import MultiTaskCollator

    collator = MultiTaskCollator(tasks=model.config, tokenizer=tokenizer)
    generator = TextGenerator.from_tokenizer(tokenizer, seed=5)
    short, long = generator.text(6), generator.text(60)
    rows = _rows(tokenizer, [short, long], [[[1, 3]], [[2, 4], [50, 55]]])
    with torch.inference_mode():
        alone = model(**{k: v for k, v in collator(rows[:1]).items() if k != "labels"})
        batched = model(**{k: v for k, v in collator(rows).items() if k != "labels"})
        padded_more = model(**{k: v for k, v in MultiTaskCollator(tasks=model.config, tokenizer=tokenizer,
                                                                  pad_to_multiple_of=128)(rows).items()
                               if k != "labels"})
    assert batched.logits["category"].shape == (2, 3)
    for task in ("category", "tags"):
        torch.testing.assert_close(batched.logits[task][:1], alone.logits[task], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(padded_more.logits[task], batched.logits[task], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.logits["roles"][:1], alone.logits["roles"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_more.logits["roles"], batched.logits["roles"], atol=1e-5, rtol=1e-5)


def test_one_backbone_pass_serves_document_and_span_heads(model):
    backbone = backbone_module(model)
    inputs = {"input_ids": torch.randint(1000, 2000, (3, 20)), "attention_mask": torch.ones(3, 20, dtype=torch.long),
              "mention_spans": torch.tensor([[0, 1, 3], [2, 5, 9], [2, 10, 11]])}
    with torch.inference_mode(), count_calls(backbone) as calls:
        output = model(**inputs)
    assert calls[0] == 1
    assert set(output.logits) == {"category", "tags", "roles"} and output.logits["roles"].shape == (3, 2)


def test_windowing_keeps_every_mention(tokenizer):
    """Entity framing encodes windows, not truncated texts: no mention may be lost, none counted twice."""
    from modeling.windowing import window_text

    generator = TextGenerator.from_tokenizer(tokenizer, seed=7)
    articles = synthetic_articles(generator, num_articles=6, num_mentions=40, median_tokens=400)
    for article in articles:
        windows = window_text(tokenizer, article.text, article.mentions, max_length=128, stride=32)
        assigned = sorted(m for w in windows for m in w["mention_ids"])
        assert assigned == list(range(len(article.mentions)))
        assert all(len(w["input_ids"]) <= 128 for w in windows)


def test_a_registered_section_runs_and_its_figure_meets_its_target(tiny_backbone_dir, monkeypatch):
    """The extension point: a new Section in SECTIONS and a key in TARGETS are all a new figure needs."""
    from mtl_study.benchmarking import Section

    def run_toy(bench):
        bench.figures.append(Figure("toy_speedup", "toy", 1.0, 2.0, "s", 2.0, "x faster", {"seed": bench.args.seed}))

    monkeypatch.setitem(SECTIONS, "toy", Section("toy", run_toy))
    monkeypatch.setitem(TARGETS, "toy_speedup", (">=", 1.5))
    args = BenchmarkArguments(backbone=tiny_backbone_dir, sections="toy")
    result = run_benchmark(args)
    assert [(f.key, f.met) for f in result.figures] == [("toy_speedup", True)] and set(result.section_seconds) == {"toy"}
    assert ">= 1.5" in format_table(result.figures, result.machine, args.repeats)


def test_frozen_cache_section_times_both_variants_on_the_same_training(tiny_backbone_dir):
    """The frozen_cache figure on the tiny 2-layer backbone (k = 1 by default): both variants train on the same
    batches from the same weights, so the cached step computes the same loss as the full one."""
    args = BenchmarkArguments(backbone=tiny_backbone_dir, sections="frozen_cache", quick=True,
                              frozen_cache_steps=2, frozen_cache_max_length=24, frozen_cache_batch_size=4)
    figure, share = run_benchmark(args).figures
    assert figure.key == "frozen_cache_step_speedup" and figure.target == ">= 2.5" and figure.unit == "s/step"
    assert figure.ratio == pytest.approx(figure.baseline / figure.ours) and figure.ours > 0
    detail = figure.detail
    sizes = ("num_frozen_layers", "num_layers", "max_length", "batch_size")
    assert [detail[name] for name in sizes] == [1, 2, 24, 4]
    assert detail["cache_dtype"] == "float32" and detail["cache_build_s"] > 0
    assert detail["cache_windows"] == (args.frozen_cache_warmup_steps + 2) * 4
    assert {name: len(times) for name, times in detail["step_seconds"].items()} == {"full": 2, "cached": 2, "prefix": 2}
    # the ceiling of any cache: full step / (full step - the frozen prefix's forward), timed alongside
    assert 0 < detail["prefix_forward_s"] == share.detail["prefix_forward_s"]
    assert detail["attainable_speedup"] == pytest.approx(figure.baseline / (figure.baseline - detail["prefix_forward_s"]))
    assert share.key == "frozen_cache_share_of_attainable" and share.target == ""
    assert share.ratio == pytest.approx(figure.ratio / detail["attainable_speedup"])
    first = detail["first_step_loss"]
    assert math.isfinite(first["full"]) and first["cached"] == pytest.approx(first["full"], rel=1e-5, abs=1e-6)
    assert detail["loss_max_abs_diff"] < 1e-4 and detail["ratio_cpu_time"] > 0


def test_frozen_cache_section_rejects_an_impossible_k(tiny_backbone_dir):
    args = BenchmarkArguments(backbone=tiny_backbone_dir, sections="frozen_cache", quick=True, frozen_cache_layers=2)
    with pytest.raises(ValueError, match="--frozen_cache_layers must be in 1..1"):
        run_benchmark(args)
    with pytest.raises(ValueError, match="--frozen_cache_dtype"):
        BenchmarkArguments(backbone=tiny_backbone_dir, frozen_cache_dtype="bfloat16")


@pytest.mark.slow
def test_benchmark_end_to_end_writes_every_figure(tiny_backbone_dir, tmp_path):
    """The script on the tiny backbone with tiny sizes: every section runs, the JSON has every key."""
    import subprocess
    import sys
    from pathlib import Path

    output = tmp_path / "perf.json"
    script = Path(__file__).resolve().parents[1] / "recipes" / "benchmark.py"
    completed = subprocess.run([
        sys.executable, str(script),
        "--backbone", tiny_backbone_dir, "--quick", "--output", str(output), "--repeats", "1",
        "--inference_texts", "8", "--train_varied_examples", "24", "--train_baseline_steps", "1",
        "--train_fixed_steps", "2", "--train_warmup_steps", "1", "--entity_articles", "12",
        "--entity_mentions", "40", "--entity_median_tokens", "300", "--entity_timed_articles", "2",
        "--frozen_cache_steps", "1", "--frozen_cache_max_length", "32", "--frozen_cache_batch_size", "4",
        "--grid_seeds", "1", "--grid_max_steps", "2",
    ], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "medians over 1 repeats" in completed.stdout and "entity: done" in completed.stderr
    payload = json.loads(output.read_text())
    assert REQUIRED_KEYS <= set(payload)
    assert all(isinstance(payload[k], float) and math.isfinite(payload[k]) for k in REQUIRED_KEYS)
    assert payload["export_max_abs_diff"] <= 1e-4
    assert payload["entity_mentions_kept"] == 1.0
    assert payload["entity_backbone_passes_per_batch"] == 1.0
    assert payload["machine"]["cpu_cores"] >= 1
    # the grid section ran the main job's grid both ways and got the same rows
    assert payload["grid_speedup_ray_2_workers"] > 0
