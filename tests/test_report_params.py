"""Model size per arm: parameter counts recorded once per run (row metadata, not metrics), shown in the report's
setup and in the model card's architecture section; the note under the learning curves."""

import json
import re

import pytest
from huggingface_hub import ModelCard

from conftest import load_recipe

from modeling import MultiTaskModel
from mtl_study.official import OFFICIAL_METRICS
from mtl_study.cards import build_model_card
from mtl_study.report import (
    LOSS_CURVES_NOTE,
    ReportInputs,
    arm_table,
    format_count,
    parameter_table,
    write_report,
)
from mtl_study.study import count_parameters

TASKS = [
    {"name": "a", "level": "document", "problem_type": "multi_label_classification", "labels": ["x", "y", "z"]},
    {"name": "b", "level": "span", "problem_type": "single_label_classification", "labels": ["p", "q"]},
]
# Sizes of the models of each run (the real defaults give about these: MiniLM-L6, 5 frozen layers).
SIZES = {"stl__a": (1_778_314, 22_569_226), "stl__b": (1_775_619, 22_566_531), "mtl": (1_779_469, 22_570_381),
         "mtl_adapters": (29_581, 22_717_837)}


def rows_with_sizes(seeds=range(6), with_sizes=True):
    rows = []
    for seed in seeds:
        for key, (trainable, total) in SIZES.items():
            arm, _, tag = key.partition("__")
            for task in ([tag] if tag else ["a", "b"]):
                for metric in ("macro_f1", "micro_f1"):
                    row = {"arm": arm, "seed": seed, "task": task, "eval_set": "test", "metric": metric,
                           "value": 0.5 + 0.01 * seed + (0.02 if arm == "mtl" else 0.0),
                           "run_id": "__".join(p for p in (arm, tag, f"seed{seed}") if p)}
                    if with_sizes:
                        row.update(trainable_parameters=trainable, total_parameters=total)
                    rows.append(row)
    return rows


def test_format_count():
    assert [format_count(n) for n in (950, 29_581, 1_778_314, 22_569_226, 335_000_000, 7e9)] == \
        ["950", "29.6k", "1.78M", "22.6M", "335M", "7B"]


def test_count_parameters_follows_freezing_and_adapters(tiny_backbone_dir):
    def numel(model, keep):
        return sum(p.numel() for name, p in model.named_parameters() if keep(name))

    hard = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, num_frozen_layers=0)
    counts = count_parameters(hard)
    assert counts["trainable_parameters"] == counts["total_parameters"] == numel(hard, lambda n: True)

    frozen = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, num_frozen_layers=1)
    counts = count_parameters(frozen)
    lowest = numel(frozen, lambda n: "embeddings." in n or re.search(r"layer\.0\.", n) is not None)
    assert lowest > 0 and counts["trainable_parameters"] == counts["total_parameters"] - lowest

    adapters = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, sharing="adapters", num_frozen_layers=1)
    counts = count_parameters(adapters)
    heads = numel(adapters, lambda n: n.startswith("heads."))
    upper_adapters = numel(adapters, lambda n: "lora_" in n and re.search(r"layer\.1\.", n) is not None)
    lower_adapters = numel(adapters, lambda n: "lora_" in n and re.search(r"layer\.0\.", n) is not None)
    assert heads > 0 and upper_adapters > 0 and lower_adapters > 0
    # only the heads and the adapters above the frozen layers train; the adapters inside frozen layers do not
    assert counts["trainable_parameters"] == heads + upper_adapters
    assert counts["total_parameters"] == count_parameters(frozen)["total_parameters"] + upper_adapters + lower_adapters


def test_report_shows_parameters_per_arm_without_touching_the_statistics(tmp_path):
    rows = rows_with_sizes()
    order = ["stl", "mtl", "mtl_adapters"]
    text = write_report(tmp_path, rows, ReportInputs(title="t", question="q", arm_order=order)).read_text()
    section = text.split("### Trainable parameters per arm", 1)[1].split("## Results", 1)[0]
    table = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| "))}
    assert table["Arm"][-1] == "Trainable vs stl"
    assert table["stl"] == ["one model per task", "1.78M", "22.6M", "7.9%", "100.0%"]
    assert table["mtl"] == ["one model for 2 tasks", "1.78M", "22.6M", "7.9%", "100.1%"]
    assert table["mtl_adapters"] == ["one model for 2 tasks", "29.6k", "22.7M", "0.1%", "1.7%"]
    assert section.index("| stl") < section.index("| mtl |") < section.index("| mtl_adapters")
    without_baseline = parameter_table([r for r in rows if r["arm"] != "stl"], order)
    assert "Trainable vs" not in without_baseline and "| mtl_adapters | one model for 2 tasks | 29.6k |" in without_baseline
    # the counts are metadata: one row per metric as before, and the same results tables as without them
    plain = rows_with_sizes(with_sizes=False)
    assert f"{len(plain)} results rows" in text
    assert arm_table(rows, "macro_f1", order) == arm_table(plain, "macro_f1", order)
    assert arm_table(rows, "macro_f1", order) in text


def test_a_multi_task_run_scored_on_one_task_is_still_one_model_for_its_tasks():
    """transfer_controls: an mtl run trains a primary and an auxiliary task but is scored on the primary only."""
    rows = [{"arm": arm, "seed": s, "task": "primary", "eval_set": "test", "metric": "macro_f1", "value": 0.5,
             "run_id": f"{arm}__seed{s}", "trainable_parameters": 100 + (arm == "mtl"), "total_parameters": 1000,
             "trained_tasks": 2 if arm == "mtl" else 1} for arm in ("stl", "mtl") for s in range(2)]
    table = parameter_table(rows, ["stl", "mtl"])
    assert "| mtl | one model for 2 tasks |" in table and "| stl | one model for 1 task |" in table
    older = [{k: v for k, v in r.items() if k != "trained_tasks"} for r in rows]  # results without the field
    assert "| mtl | one model for 1 task |" in parameter_table(older, ["stl", "mtl"])


def test_report_without_counts_omits_the_table_and_notes_the_summed_loss(tmp_path):
    history = [{"step": s, "loss": 2 / s, "loss_a": 1 / s, "loss_b": 1 / s} for s in range(1, 5)]
    text = write_report(tmp_path, rows_with_sizes(with_sizes=False), ReportInputs(
        title="t", question="q", learning_curves={"mtl__seed0": ("mtl", history)}, tasks=["a", "b"])).read_text()
    assert "Trainable parameters" not in text
    note = text.split("![learning curves](figures/learning_curves.png)", 1)[1].strip().splitlines()[0]
    assert note == f"*{LOSS_CURVES_NOTE}*"
    assert "sum of the per-task mean losses" in note and "`loss_<task>`" in note


@pytest.mark.parametrize("run_id, expected", [
    ("mtl_adapters__seed3", "29.6k trainable of 22.7M (0.1%; 29,581 of 22,717,837)"),
    ("mtl__seed3", "1.78M trainable of 22.6M (7.9%; 1,779,469 of 22,570,381)"),
])
def test_card_architecture_shows_the_saved_models_parameters(tmp_path, run_id, expected):
    rows = rows_with_sizes()
    run_rows = [r for r in rows if r["run_id"] == run_id]
    arm = run_rows[0]["arm"]

    def architecture(card_rows, **options):
        card = build_model_card(arm=arm, seed=3, tasks=TASKS, run_rows=card_rows, all_rows=rows, base_model="org/base",
                                model_name="m", recipe="architecture_comparison",
                                sharing="adapters" if arm == "mtl_adapters" else "hard",
                                model_options={"num_frozen_layers": 5}, **options)
        card.save(tmp_path / "README.md")
        return ModelCard.load(tmp_path / "README.md").text.split("## Architecture", 1)[1].split("## Training", 1)[0]

    section = architecture(run_rows)
    assert f"- Parameters: {expected}; frozen weights" in section
    assert "- Sharing:" in section and "- Pooling:" in section  # the rest of the section is intact
    stripped = [{k: v for k, v in r.items() if not k.endswith("_parameters")} for r in run_rows]
    assert "Parameters:" not in architecture(stripped)
    explicit = architecture(stripped, parameters={"trainable_parameters": 500, "total_parameters": 2000})
    assert "- Parameters: 500 trainable of 2k (25.0%; 500 of 2,000)" in explicit


def test_recipe_records_the_counts_once_per_run_in_rows_summary_report_and_card(tiny_backbone_dir, tmp_path):
    recipe = load_recipe("architecture_comparison")
    out = tmp_path / "run"
    recipe.main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(out), "--seeds", "0", "--arms", "mtl",
                 "mtl_adapters", "--max_steps", "1", "--synthetic_num_documents", "16", "--max_length", "64",
                 "--num_frozen_layers", "1", "--lora_r", "2", "--save_steps", "1", "--logging_steps", "1", "--per_device_eval_batch_size", "64"])
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    counts = {}
    for r in rows:
        counts.setdefault(r["run_id"], set()).add((r["trainable_parameters"], r["total_parameters"]))
    assert set(counts) == {"mtl__seed0", "mtl_adapters__seed0"} and all(len(c) == 1 for c in counts.values())
    (mtl,), (adapters,) = counts["mtl__seed0"], counts["mtl_adapters__seed0"]
    assert 0 < adapters[0] < mtl[0] < mtl[1] < adapters[1]  # adapters add weights but train far fewer
    assert {r["metric"] for r in rows} <= {"macro_f1", "micro_f1", "samples_f1", "exact_match", "coarse_macro_f1",
                                           "main_role_accuracy", *OFFICIAL_METRICS}  # no metric row for the counts
    summary = json.loads((out / "runs" / "mtl_adapters__seed0" / "run_summary.json").read_text())
    assert (summary["extra"]["trainable_parameters"], summary["extra"]["total_parameters"]) == adapters
    report = (out / "report.md").read_text()
    assert f"| mtl_adapters | one model for 2 tasks | {format_count(adapters[0])} | {format_count(adapters[1])} |" in report
    card = (out / "best" / "mtl_adapters" / "README.md").read_text()
    assert f"- Parameters: {format_count(adapters[0])} trainable of {format_count(adapters[1])}" in card
