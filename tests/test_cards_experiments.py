"""Model cards and reports generated from results rows."""

import json
import re

import numpy as np
import pytest
from huggingface_hub import ModelCard, metadata_load

from mtl_study.cards import TEMPLATE_PATH, build_model_card
from mtl_study.report import ReportInputs, write_report
from mtl_study.stats import comparison_family, compare_arms, cross_domain_matrix, format_p

TASKS = [
    {"name": "narratives", "level": "document", "problem_type": "multi_label_classification", "labels": [f"N{i}" for i in range(9)]},
    {"name": "roles", "level": "span", "problem_type": "single_label_classification", "labels": ["Protagonist", "Antagonist", "Innocent"]},
]


def results(seeds=range(6)):
    rng = np.random.default_rng(1)
    rows = []
    for arm, shift in (("stl", 0.0), ("mtl", 0.04), ("mtl_adapters", 0.02)):
        for seed in seeds:
            for task in ("narratives", "roles"):
                for metric in ("macro_f1", "micro_f1", "exact_match"):
                    rows.append({"arm": arm, "seed": seed, "task": task, "eval_set": "test", "metric": metric,
                                 "value": float(0.5 + shift + rng.normal(0, 0.01)), "run_id": f"{arm}__seed{seed}"})
    return rows


def test_card_metadata_parses_and_matches_results(tmp_path):
    rows = results()
    run_rows = [r for r in rows if r["run_id"] == "mtl__seed3"]
    comparisons = compare_arms(rows, "mtl", "stl", "macro_f1")
    card = build_model_card(arm="mtl", seed=3, tasks=TASKS, run_rows=run_rows, all_rows=rows, comparisons=comparisons,
                            base_model="sentence-transformers/all-MiniLM-L6-v2", model_name="mtl-test",
                            recipe="architecture_comparison", sharing="hard",
                            model_options={"num_frozen_layers": 4, "max_length": 128, "stride": 32},
                            training={"loss_weighting": "equal", "learning_rate": 5e-4},
                            shift_statistics="| a | b |\n|---|---|\n| 1 | 2 |", load_path="org/mtl-test")
    path = tmp_path / "README.md"
    card.save(path)

    meta = metadata_load(path)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "multi-task-learning" in meta["tags"]
    (entry,) = meta["model-index"]
    assert entry["name"] == "mtl-test"
    assert meta["metrics"] == ["exact_match", "f1"]  # the Hub's metric ids, not ours (macro_f1, micro_f1)
    assert "\n# mtl-test\n" in path.read_text(encoding="utf-8")  # the title is the model's name, not empty
    loaded = ModelCard.load(path)
    # The Hub's convention: type f1 with the averaging in args, exact_match as is.
    hub = {"macro_f1": ("f1", "macro"), "micro_f1": ("f1", "micro"), "exact_match": ("exact_match", None)}
    parsed = {(e.task_name, e.metric_type, (e.metric_args or {}).get("average")): e.metric_value
              for e in loaded.data.eval_results}
    expected = {(f"{r['task']} ({r['eval_set']})", *hub[r["metric"]]): pytest.approx(r["value"]) for r in run_rows}
    assert parsed == expected
    for e in loaded.data.eval_results:
        assert re.fullmatch(r"(narratives|roles) \(test\)", e.task_name)
        assert e.metric_type in {"f1", "exact_match"}
    body = loaded.text
    for needle in ("## Tasks and labels", "Protagonist", "hard parameter sharing", "## Limitations",
                   "AutoModel.from_pretrained(\"org/mtl-test\")", "Wilcoxon", "## Shift statistics"):
        assert needle in body, needle
    # the body reports the p-value of the comparison against stl for the primary metric
    comp = next(c for c in comparisons if c.task == "roles")
    assert f"{comp.mean_difference:+.3f}" in body


def test_card_template_is_shipped_and_missing_template_is_clear(tmp_path):
    import tomllib
    from fnmatch import fnmatch

    from conftest import REPO_ROOT

    assert TEMPLATE_PATH.is_file()
    # Installed as package data of mtl_study (a non-editable install has no model_cards/ folder).
    package_dir = REPO_ROOT / "recipes" / "mtl_study"
    assert TEMPLATE_PATH.parent.parent == package_dir.resolve()
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["mtl_study"] == "recipes/mtl_study"
    relative = TEMPLATE_PATH.relative_to(package_dir.resolve()).as_posix()
    assert any(fnmatch(relative, pattern) for pattern in config["package-data"]["mtl_study"])
    assert (REPO_ROOT / "model_cards" / "README.md").is_file()  # the top-level folder stays and points to it
    with pytest.raises(FileNotFoundError, match="template"):
        build_model_card(arm="stl", seed=0, tasks=TASKS[:1], run_rows=[], all_rows=[], base_model="x/y",
                         model_name="m", recipe="r", sharing="stl", template_path=tmp_path / "nope.md")


def test_report_has_arms_tests_transfer_and_figures(tmp_path):
    rows = results()
    for r in rows:
        r["train_domain"] = "cc" if r["seed"] % 2 else "urw"
    history = [{"step": s, "loss": 1 / s, "narratives_loss": 1.2 / s, "roles_loss": 0.8 / s} for s in range(1, 6)]
    matrix = cross_domain_matrix(rows, task="roles", metric="macro_f1", arm="mtl")
    report = write_report(tmp_path, rows, ReportInputs(
        title="Architecture comparison", question="Does MTL help?", arm_order=["stl", "mtl", "mtl_adapters"],
        extra_comparisons=[("mtl", "mtl_adapters")], shift_statistics={"label_shift": {"jsd": 0.12}},
        cross_domain=[matrix], learning_curves={"mtl__seed0": ("mtl", history), "stl__seed0": ("stl", history)},
        tasks=["narratives", "roles"], outputs={"results": str(tmp_path / "results.jsonl")}))
    text = report.read_text()
    for arm in ("stl", "mtl", "mtl_adapters"):
        assert f"| {arm}" in text or f" {arm} |" in text
    assert "mtl − stl" in text and "mtl − mtl_adapters" in text
    assert "Negative transfer" in text and "Cross-domain matrix" in text and "label_shift.jsd" in text
    for figure in ("per_seed_scores.png", "learning_curves.png", "cross_domain_roles_0.png"):
        assert (tmp_path / "figures" / figure).stat().st_size > 1000
        assert f"figures/{figure}" in text


def test_report_states_when_too_few_seeds(tmp_path):
    text = write_report(tmp_path, results(seeds=range(3)), ReportInputs(title="t", question="q")).read_text()
    assert "unreachable" in text and "untestable" in text


def test_learning_curves_plot_a_task_only_for_runs_that_trained_it():
    from mtl_study.report import learning_curve_series

    stl_a = [{"step": s, "loss": 1 / s, "loss_a": 1 / s} for s in (1, 2, 3)]
    assert set(learning_curve_series(stl_a, "a")) == {"loss_a"}
    assert learning_curve_series(stl_a, "b") == {}
    plain = [{"step": s, "loss": 1 / s} for s in (1, 2)]  # no per-task keys: the total loss stands in
    assert learning_curve_series(plain, "a")["loss"] == ([1, 2], [1.0, 0.5])


def test_card_loads_what_was_pushed_and_never_shows_a_local_path(tmp_path):
    rows = results()
    family = comparison_family(rows, baseline="stl", metric="macro_f1", arm_order=["stl", "mtl", "mtl_adapters"])
    local = str(tmp_path / "machine" / "outputs")
    common = dict(arm="mtl", seed=3, tasks=TASKS, run_rows=[r for r in rows if r["run_id"] == "mtl__seed3"], all_rows=rows,
                  comparisons=[c for c in family if c.arm_a == "mtl" and c.arm_b == "stl"], model_name="m",
                  recipe="architecture_comparison", sharing="hard", base_model=f"{local}/backbone",
                  dataset_name=f"SYNTHETIC corpus generated into {local}/data",
                  data_mixture=f"SYNTHETIC corpus generated into {local}/data (not real news)",
                  shift_statistics=f"| corpus | {local}/data |", training={"output_dir": local})
    pushed = str(build_model_card(**common, load_path="org/exp", revision="mtl"))
    assert 'AutoModel.from_pretrained("org/exp", revision="mtl")' in pushed
    assert 'AutoTokenizer.from_pretrained("org/exp", revision="mtl")' in pushed
    local_card = str(build_model_card(**common, load_path=f"{local}/best/mtl"))
    assert 'AutoModel.from_pretrained("path/to/best/mtl")' in local_card and "revision" not in local_card
    for card in (pushed, local_card):
        assert str(tmp_path) not in card and "/machine/" not in card
        assert "backbone (a local backbone)" in card and "<local path>" in card
    assert "base_model" not in metadata_load_text(pushed)  # a local backbone is no Hub id: not declared
    # raw and adjusted p-values, significance on the adjusted one
    roles = next(c for c in family if c.arm_a == "mtl" and c.task == "roles")
    assert f"{format_p(roles.p_value)} | {format_p(roles.adjusted_p_value)} (holm) | {'yes' if roles.significant else 'no'} |" in pushed


def metadata_load_text(card_text: str) -> dict:
    import yaml

    return yaml.safe_load(card_text.split("---", 2)[1])


def test_scrub_local_paths_keeps_urls_and_ratios():
    from mtl_study.cards import scrub_local_paths

    assert scrub_local_paths("data in /tmp/x/y (real)") == "data in <local path> (real)"
    assert scrub_local_paths("~/data/x and C:\\Users\\me\\d") == "<local path> and <local path>"
    assert scrub_local_paths("C:/Users/me/d.csv, https://hf.co/org/x") == "<local path>, https://hf.co/org/x"
    kept = "see https://huggingface.co/org/m, 128 / 32, n/a, URW/CC"
    assert scrub_local_paths(kept) == kept


def test_relative_paths_that_exist_keep_only_their_name(tmp_path, monkeypatch):
    from mtl_study.cards import card_license, scrub_local_paths

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tickets.csv").write_text("x", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "data")
    assert scrub_local_paths("ticket table ../data/tickets.csv; org/model") == "ticket table tickets.csv; org/model"
    # the license note of a card names the data as the card does, without the machine's path
    _, note = card_license(None, False, scrub_local_paths(f"SemEval-2025 Task 10 release at {tmp_path}"))
    assert str(tmp_path) not in note and "<local path>" in note


def test_known_folders_with_spaces_keep_only_their_name(tmp_path):
    from mtl_study.cards import scrub_local_paths

    data = tmp_path / "My Data"
    data.mkdir()
    text = f"ticket table {data}/tickets.csv (real), model org/model"
    assert scrub_local_paths(text) != "ticket table My Data/tickets.csv (real), model org/model"  # the pattern alone
    assert scrub_local_paths(text, known_paths=[data, "org/model"]) == \
        "ticket table My Data/tickets.csv (real), model org/model"
    # "/" (a data folder "." resolved at the root of a container) has no name: never replaced; nor is a known
    # folder inside a longer path or a URL
    (tmp_path / "sem").mkdir()
    (tmp_path / "sem_other").mkdir()
    kept = f"https://example.org/a/b, {tmp_path / 'sem_other'}/x.csv"
    assert scrub_local_paths(kept, known_paths=["/", tmp_path / "sem"]) == "https://example.org/a/b, <local path>"


def test_a_shared_folder_names_no_local_backbone_path(tmp_path, monkeypatch):
    from mtl_study.cards import make_shareable

    folder = tmp_path / "best"
    (tmp_path / "models" / "bert").mkdir(parents=True)
    folder.mkdir()
    (folder / "training_args.bin").write_bytes(b"pickled token")
    monkeypatch.chdir(tmp_path)
    for local, shown in (("models/bert", ""), (str(tmp_path / "models" / "bert"), "")):
        (folder / "config.json").write_text(json.dumps({"backbone_config": {"_name_or_path": local}, "auto_map": {"a": "b"}}))
        make_shareable(folder, base_model=local)  # a local backbone has no Hub id to name
        config = json.loads((folder / "config.json").read_text())
        assert config["backbone_config"]["_name_or_path"] == shown and config["auto_map"] == {"a": "b"}
    (folder / "config.json").write_text(json.dumps({"backbone_config": {"_name_or_path": str(tmp_path / "models" / "bert")}}))
    make_shareable(folder, base_model="sentence-transformers/all-MiniLM-L6-v2")
    assert json.loads((folder / "config.json").read_text())["backbone_config"]["_name_or_path"] == \
        "sentence-transformers/all-MiniLM-L6-v2"
    assert not (folder / "training_args.bin").exists()


@pytest.mark.parametrize("requested, synthetic, expected, note", [
    (None, True, "apache-2.0", False),  # synthetic corpora: the backbone's license
    (None, False, "other", True),  # loaded data: its terms apply, and the card says so
    ("cc-by-nc-4.0", False, "cc-by-nc-4.0", False),  # the user's choice wins
])
def test_card_license_follows_the_training_data(tmp_path, requested, synthetic, expected, note):
    from mtl_study.cards import card_license

    license, license_note = card_license(requested, synthetic, "SemEval-2025 Task 10 release at somewhere")
    rows = results()
    card = build_model_card(arm="mtl", seed=0, tasks=TASKS, run_rows=[r for r in rows if r["run_id"] == "mtl__seed0"],
                            all_rows=rows, base_model="sentence-transformers/all-MiniLM-L6-v2", model_name="m",
                            recipe="architecture_comparison", sharing="hard", license=license,
                            license_note=license_note)
    card.save(tmp_path / "README.md")
    meta = metadata_load(tmp_path / "README.md")
    assert meta["license"] == expected
    assert (meta.get("license_name") == "training-data-terms") == (expected == "other")
    limitations = card.text.split("## Limitations")[1].split("##")[0]
    assert ("--card_license" in limitations) == note


def test_card_license_must_be_a_license_id():
    from mtl_study.config import parse_recipe_args

    with pytest.raises(ValueError, match="--card_license 'Apache 2.0'"):
        parse_recipe_args("architecture_comparison", ["--card_license", "Apache 2.0"])


@pytest.mark.parametrize("arm, folder_key, tasks", [("mtl", "mtl", TASKS), ("stl", "stl/narratives", TASKS[:1])])
def test_the_cards_load_snippet_runs_on_the_saved_model(tiny_backbone_dir, tmp_path, arm, folder_key, tasks):
    """A reader copies the card's snippet: it must run on the folder the card describes (a model with an entity
    task needs mentions), and name that folder (a single-task model sits in best/stl/<task>)."""
    from transformers import AutoTokenizer

    from modeling import MultiTaskModel

    rows = [r for r in results() if r["arm"] == arm and r["task"] in {t["name"] for t in tasks}]
    rows += [{"arm": arm, "seed": 3, "task": "narratives", "eval_set": "test", "metric": "official_narratives_samples_f1",
              "value": 0.5, "run_id": f"{arm}__seed3"}]
    card = str(build_model_card(arm=arm, seed=3, tasks=tasks, run_rows=[r for r in rows if r["seed"] == 3],
                                all_rows=rows, base_model="org/backbone", model_name="m", recipe="r",
                                sharing="hard" if arm == "mtl" else "stl", folder_key=folder_key))
    assert f'AutoModel.from_pretrained("path/to/best/{folder_key}")' in card
    official = [m for e in metadata_load_text(card)["model-index"][0]["results"] for m in e["metrics"]
                if (m.get("args") or {}).get("official")]
    assert [(m["type"], m["args"]["average"]) for m in official] == [("f1", "samples")]  # the Hub's id, not ours
    folder = tmp_path / "saved"
    MultiTaskModel.from_backbone(tiny_backbone_dir, tasks).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_backbone_dir).save_pretrained(folder)
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0].replace(f"path/to/best/{folder_key}", str(folder))
    exec(compile(snippet, "card snippet", "exec"), {})  # raises if the snippet does not run


def test_a_card_of_a_report_without_adjustment_says_its_p_values_are_raw():
    rows = results()
    run_rows = [r for r in rows if r["run_id"] == "mtl__seed3"]
    common = dict(arm="mtl", seed=3, tasks=TASKS, run_rows=run_rows, all_rows=rows, base_model="org/backbone",
                  model_name="m", recipe="r", sharing="hard")
    raw = str(build_model_card(**common, comparisons=comparison_family(rows, p_adjust="none")))
    assert "NOT adjusted for the other tests" in raw and "ADJUSTED p-value" not in raw
    holm = str(build_model_card(**common, comparisons=comparison_family(rows)))
    assert "ADJUSTED p-value" in holm and "NOT adjusted" not in holm
    # the stl arm's card holds no comparison: the report's setting decides
    assert "NOT adjusted for the other tests" in str(build_model_card(**{**common, "arm": "stl"}, p_adjust="none"))
