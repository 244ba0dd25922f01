"""Known-answer controls: the synthetic corpora plant (or withhold) the relation, and the verdicts read the tests right."""

import json
from collections import Counter

import pytest

from conftest import load_recipe
from data_prep.synthetic import SHARED_WORDS
from data_prep.synthetic_controls import CUE_WORDS, ControlsConfig, control_examples, controls_datasets
from mtl_study.controls import control_section, control_specs, control_verdicts


def cue_of(text):
    (cue,) = [w for w in text.rstrip(".").lower().split() if w in CUE_WORDS]
    return cue


def test_the_planted_relation():
    config = ControlsConfig(train_documents=600, test_documents=600)
    positive, negative = control_examples("positive", config), control_examples("negative", config)
    cue_class = {w: i // config.cues_per_class for i, w in enumerate(config.cue_words)}
    for split in ("train", "test"):
        for row in positive[split]:
            latent = cue_class[cue_of(row["text"])]
            assert set(row["text"].rstrip(".").lower().split()) <= set(SHARED_WORDS) | set(CUE_WORDS)
            if split == "train":
                assert row["auxiliary_positive"] == f"aux_{latent}"  # the auxiliary task IS the latent
            if row["primary_positive"] is not None:
                assert row["primary_positive"] == f"class_{latent}"
        # the controls differ in their auxiliary labels only
        assert ([(r["text"], r["primary_negative"]) for r in negative[split]]
                == [(r["text"], r["primary_positive"]) for r in positive[split]])
        if split != "train":  # the auxiliary task is a training signal only
            assert {r["auxiliary_positive"] for r in positive[split]} == {r["auxiliary_negative"] for r in negative[split]} == {None}
    # scarce primary labels in training only
    assert sum(r["primary_positive"] is not None for r in positive["train"]) == round(0.10 * 600)
    assert all(r["primary_negative"] is not None for r in negative["test"])
    # the negative auxiliary label is independent of the text: balanced within every latent class
    per_class = Counter((cue_class[cue_of(r["text"])], r["auxiliary_negative"]) for r in negative["train"])
    assert {aux for _, aux in per_class} == {"aux_0", "aux_1"}
    for z in range(config.num_classes):
        share = per_class[z, "aux_0"] / (per_class[z, "aux_0"] + per_class[z, "aux_1"])
        assert 0.38 < share < 0.62
    # ... and of the cue word itself: the same cue word carries both labels
    labels_of_cue = {}
    for r in negative["train"]:
        labels_of_cue.setdefault(cue_of(r["text"]), set()).add(r["auxiliary_negative"])
    assert sum(len(labels) == 2 for labels in labels_of_cue.values()) >= 0.9 * len(labels_of_cue)
    assert control_examples("positive", config) == positive  # deterministic
    assert control_examples("negative", ControlsConfig(seed=1))["train"] != negative["train"]
    assert not set(CUE_WORDS) & set(SHARED_WORDS)


def test_datasets_and_specs():
    splits = controls_datasets(ControlsConfig(train_documents=20, validation_documents=5, test_documents=5))
    assert len(splits["train"]) == 40 and set(splits["train"]["control"]) == {"positive", "negative"}
    negative_rows = splits["train"].filter(lambda r: r["control"] == "negative")
    assert set(negative_rows["primary_positive"]) == {None} and set(negative_rows["auxiliary_positive"]) == {None}
    specs = control_specs([0, 1])
    assert [s.run_id for s in specs[:4]] == ["stl__positive__seed0", "mtl__positive__seed0", "stl__negative__seed0",
                                             "mtl__negative__seed0"]
    assert specs[1].tasks == ["primary_positive", "auxiliary_positive"] and specs[0].tasks == ["primary_positive"]
    assert specs[2].condition == {"control": "negative", "primary_task": "primary_negative"}
    with pytest.raises(ValueError, match="negative_auxiliary_classes must be >= 2"):
        ControlsConfig(negative_auxiliary_classes=1)
    # 4 labelled texts drawn, none of class 1: the first class-1 text is labelled too, so every class can be learnt
    small = controls_datasets(ControlsConfig(seed=3, train_documents=40))["train"]
    positive = [label for label, c in zip(small["primary_positive"], small["control"]) if c == "positive"]
    assert sorted({label for label in positive if label}) == ["class_0", "class_1", "class_2"] and sum(map(bool, positive)) == 5
    # the default corpus already labels every class: it is unchanged (7 / 9 / 8 labelled texts per class)
    default = controls_datasets(ControlsConfig())["train"]
    counts = Counter(label for label, c in zip(default["primary_positive"], default["control"])
                                 if c == "positive" and label)
    assert [counts[f"class_{k}"] for k in range(3)] == [7, 9, 8]


def fake_rows(gain_positive, gain_negative, seeds=range(8)):
    rows = []
    for control, gain in (("positive", gain_positive), ("negative", gain_negative)):
        for s in seeds:
            for arm in ("stl", "mtl"):
                wobble = 0.01 * ((s * 7) % 5 - 2) if arm == "mtl" else 0.0
                rows.append({"arm": arm, "seed": s, "task": f"primary_{control}", "eval_set": "test", "metric": "macro_f1",
                             "control": control, "value": 0.6 + (gain + 0.001 * s + wobble if arm == "mtl" else 0.0)})
    return rows


def test_verdicts():
    good = {v["control"]: v for v in control_verdicts(fake_rows(0.3, 0.0))}
    assert good["positive"]["behaved"] and good["positive"]["adjusted_p_value"] == pytest.approx(2 * 2 / 2**8)
    assert good["negative"]["behaved"] and good["negative"]["adjusted_p_value"] >= 0.05
    assert "Both controls behaved" in control_section(fake_rows(0.3, 0.0))
    # a significant LOSS on the negative control is real negative transfer (random labels cost the shared layer), not
    # an invented gain: it behaved, and the note says what was found
    harmed = {v["control"]: v for v in control_verdicts(fake_rows(0.3, -0.3))}
    assert harmed["negative"]["behaved"] is True and harmed["positive"]["behaved"]
    section = control_section(fake_rows(0.3, -0.3))
    assert "real negative transfer" in harmed["negative"]["note"] and "Both controls behaved" in section
    assert "mtl is significantly lower" in section and "Not significant is not equivalent" not in section
    bad = {v["control"]: v for v in control_verdicts(fake_rows(0.0, 0.3))}  # a "gain" where none can exist
    assert bad["positive"]["behaved"] is False and bad["negative"]["behaved"] is False
    assert "did NOT behave" in control_section(fake_rows(0.0, 0.3))
    few = control_verdicts(fake_rows(0.3, 0.0, seeds=range(6)))  # 2 tests under Holm need 7 seeds
    assert [v["behaved"] for v in few] == [None, None]
    assert "untestable" in control_section(fake_rows(0.3, 0.0, seeds=range(6)))


def test_recipe_runs_end_to_end_on_a_tiny_backbone(tiny_backbone_dir, tmp_path):
    recipe = load_recipe("transfer_controls")
    out = tmp_path / "controls"
    # no --config: the recipe runs its YAML (recipes/configs/transfer_controls.yaml) by default
    recipe.main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(out), "--seeds", "0", "--max_steps", "1",
                 "--num_frozen_layers", "1"])
    trained_with = json.loads((out / "runs" / "mtl__negative__seed0" / "training_args.json").read_text())
    assert trained_with["eval_steps"] == 5 and trained_with["task_sampling"] == "equal"  # the YAML's values
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    conditions = {(r["arm"], r["control"], r["primary_task"], r["task"]) for r in rows if r["eval_set"] == "test"}
    assert conditions == {("stl", "positive", "primary_positive", "primary_positive"),
                          ("mtl", "positive", "primary_positive", "primary_positive"),
                          ("stl", "negative", "primary_negative", "primary_negative"),
                          ("mtl", "negative", "primary_negative", "primary_negative")}
    report = (out / "report.md").read_text()
    assert "## Known-answer controls" in report and "untestable (too few seeds)" in report


def rows_with_differences(positive_differences, negative_gain=0.0):
    """Control rows whose mtl - stl difference on the positive control is given seed by seed."""
    rows = []
    for s, difference in enumerate(positive_differences):
        for control, gain in (("positive", difference), ("negative", negative_gain + 0.001 * ((s * 7) % 5 - 2))):
            for arm in ("stl", "mtl"):
                rows.append({"arm": arm, "seed": s, "task": f"primary_{control}", "eval_set": "test",
                             "metric": "macro_f1", "control": control, "value": 0.6 + (gain if arm == "mtl" else 0.0)})
    return rows


def test_a_positive_control_won_by_one_outlier_seed_did_not_behave():
    # 15 of 16 seeds favour stl a little, one favours mtl hugely: the mean is positive and the two-sided test is
    # significant (p = 0.005, Holm x 2 = 0.01), but the ranks say stl wins, so the planted transfer was NOT found.
    differences = [-0.01 - 0.001 * i for i in range(15)] + [1.0]
    verdict = {v["control"]: v for v in control_verdicts(rows_with_differences(differences))}["positive"]
    comparison = verdict["comparison"]
    assert comparison.mean_difference > 0 and comparison.significant and comparison.effect_size < 0
    assert verdict["behaved"] is False


def test_tied_seeds_do_not_count_towards_testability():
    # 8 seeds, but mtl and stl are identical on 3: the test ranks 5 pairs, whose best raw p is 2/2^5 = 0.0625, so
    # with 2 tests neither verdict means anything, although 8 seeds alone could have reached 0.0156.
    differences = [0.0, 0.0, 0.0, 0.3, 0.31, 0.32, 0.33, 0.34]
    verdict = {v["control"]: v for v in control_verdicts(rows_with_differences(differences))}["positive"]
    assert verdict["comparison"].n_pairs == 8 and verdict["comparison"].testable_pairs == 5
    assert verdict["behaved"] is None


def test_a_significant_result_decides_even_when_ties_lower_the_pairs():
    """Negative control: mtl wins 6 of 8 seeds, 2 ties. Its 6 pairs reach adjusted p 0.0312 in a family whose other
    test has 8 pairs (Holm ranks it second: max(2 x 0.0078, 0.0312)), so the invented gain must be reported, not
    hidden as "too few seeds"."""
    rows = rows_with_differences([0.3 + 0.01 * s for s in range(8)])
    for row in rows:
        if row["control"] == "negative" and row["arm"] == "mtl":
            row["value"] = 0.6 + (0.0 if row["seed"] < 2 else 0.2 + 0.01 * row["seed"])
    verdicts = {v["control"]: v for v in control_verdicts(rows)}
    assert verdicts["negative"]["adjusted_p_value"] == pytest.approx(2 / 2**6)
    assert verdicts["negative"]["behaved"] is False and verdicts["positive"]["behaved"] is True
    section = control_section(rows)
    assert "did NOT behave" in section and "Too few seeds" not in section
    assert "can reach no lower than 0.0312" in section  # the per-test Holm floor, not 2 x 2/2^6 = 0.0625


def test_a_missing_control_is_never_called_behaved():
    rows = [r for r in fake_rows(0.3, 0.0) if r["control"] == "negative"]  # every positive-control run failed
    verdicts = {v["control"]: v for v in control_verdicts(rows)}
    assert verdicts["positive"]["behaved"] is None and verdicts["positive"]["note"].startswith("missing")
    section = control_section(rows)
    assert "Both controls behaved" not in section and "Control(s) positive missing" in section


def test_verdicts_of_runs_that_ended_still_improving_are_provisional():
    section = control_section(fake_rows(0.3, 0.0), not_converged=["mtl__positive__seed3"])
    assert "Both controls behaved" in section and "**Provisional:** 1 control run(s)" in section


def test_holm_floors_per_test_with_unequal_pairs():
    from mtl_study.stats import min_adjusted_p_value, min_adjusted_p_values

    assert min_adjusted_p_values([8, 6]) == pytest.approx([2 * 2 / 2**8, 2 / 2**6])
    assert min_adjusted_p_values([7, 7]) == pytest.approx([min_adjusted_p_value(7, 2)] * 2)
    # three tests of 10, 6 and 6 pairs: a 6-pair test is ranked second or third behind the other 6-pair one
    assert min_adjusted_p_values([10, 6, 6]) == pytest.approx([3 * 2 / 2**10, 2 * 2 / 2**6, 2 * 2 / 2**6])
    # Benjamini-Hochberg: the 8-pair test's p = 2/2**8 is ranked first of 2, so adjusted 2 x p / 1, unless the other
    # test's floor lets m x t / k be smaller (2 x 2/2**6 / 2 = 2/2**6 is not)
    assert min_adjusted_p_values([8, 6], "bh") == pytest.approx([2 * 2 / 2**8, 2 / 2**6])
    assert min_adjusted_p_values([8, 8], "bh") == pytest.approx([2 / 2**8] * 2)  # both at the floor: raw
    # a test whose arms tie on every seed (floor 1) still counts in m: 2 x 2/2**8 for the other
    assert min_adjusted_p_values([8, 0], "bh") == pytest.approx([2 * 2 / 2**8, 1.0])
    from mtl_study.stats import adjust_p_values

    assert adjust_p_values([2 / 2**8, 1.0], "bh")[0] == pytest.approx(2 * 2 / 2**8)
