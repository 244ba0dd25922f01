"""Parent-first decoding of hierarchical narrative labels (`data_prep.narrative_decoding`) and its use in the
domain-constrained decoding, the study's official rows and the submission command."""

import pytest
import torch

from data_prep.narrative_decoding import PARENT_THRESHOLD_ATTRIBUTE, parent_first_labels, tune_parent_threshold
from data_prep.semeval_official import constrain_to_domain

A1, A2, A3 = "URW: Blaming: Russia", "URW: Blaming: NATO", "URW: Blaming: Other"
B1 = "URW: Praise of Russia: Army"
C1 = "CC: Amplifying Climate Fears: Doom"
LABELS = ["Other", A1, A2, A3, B1, C1]
PARENTS = {A1: "URW: Blaming", A2: "URW: Blaming", A3: "URW: Blaming", B1: "URW: Praise of Russia",
           C1: "CC: Amplifying Climate Fears"}


def _scores(other, a1, a2, a3, b1, c1):
    return dict(zip(LABELS, (other, a1, a2, a3, b1, c1)))


def test_evidence_spread_over_subnarratives_keeps_their_narrative():
    # Blaming's three subnarratives at 0.45 / 0.45 / 0.05: noisy-or 1 - 0.55 * 0.55 * 0.95 = 0.713 >= 0.6, while
    # Praise's one subnarrative at 0.5 stays below. Flat thresholding at 0.4 would keep all three of A1, A2, B1.
    scores = _scores(0.2, 0.45, 0.45, 0.05, 0.5, 0.0)
    thresholds = dict.fromkeys(LABELS, 0.4)
    allowed = LABELS[1:]
    assert parent_first_labels(scores, allowed, PARENTS, thresholds, parent_threshold=0.6) == [A1, A2]
    assert parent_first_labels(scores, allowed, PARENTS, thresholds, parent_threshold=0.5) == [A1, A2, B1]
    # a kept narrative whose subnarratives all miss their thresholds brings its best one
    assert parent_first_labels(scores, allowed, PARENTS, dict.fromkeys(LABELS, 0.9), parent_threshold=0.6) == [A1]
    # the relative threshold applies to narratives (0.5 x 0.713 > 0.2) and to subnarratives within one
    weak = _scores(0.0, 0.9, 0.1, 0.0, 0.2, 0.0)
    assert parent_first_labels(weak, allowed, PARENTS, dict.fromkeys(LABELS, 0.05), 0.1, relative_threshold=0.5) == [A1]
    # nothing kept: the fallback, else the best allowed label
    quiet = _scores(0.9, 0.1, 0.1, 0.0, 0.15, 0.0)
    assert parent_first_labels(quiet, allowed, PARENTS, thresholds, 0.6) == [B1]
    assert parent_first_labels(quiet, allowed, PARENTS, thresholds, 0.6, fallback="Other") == ["Other"]


def test_other_alone_when_its_own_probability_reaches_one_half():
    # Blaming's noisy-or (0.713) passes the narrative threshold, but the model gives Other 0.55: Other alone has the
    # higher expected samples-F1 (>= 0.5 against <= 0.45), whatever the narratives score.
    thresholds, allowed = dict.fromkeys(LABELS, 0.4), LABELS[1:]
    for other, expected in ((0.55, ["Other"]), (0.5, ["Other"]), (0.45, [A1, A2])):
        scores = _scores(other, 0.45, 0.45, 0.05, 0.1, 0.0)
        assert parent_first_labels(scores, allowed, PARENTS, thresholds, 0.6, fallback="Other") == expected
    gated = _scores(0.9, 0.45, 0.45, 0.05, 0.1, 0.0)
    assert parent_first_labels(gated, allowed, PARENTS, thresholds, 0.6, fallback="Other", fallback_gate=None) == [A1, A2]
    assert parent_first_labels(gated, allowed, PARENTS, thresholds, 0.6) == [A1, A2]  # no fallback: no gate
    # the submission path (domain-constrained, parent first) applies it; flat decoding does not
    entry = {"prediction": [], "scores": gated}
    assert constrain_to_domain("EN_UA_000001.txt", entry, LABELS, [0.4] * 6, parents=PARENTS, parent_threshold=0.6) == ["Other"]
    assert "Other" in constrain_to_domain("EN_UA_000001.txt", entry, LABELS, [0.4] * 6)


def test_domain_constraint_decodes_parent_first_within_the_domain():
    # The CC subnarrative would win every comparison, but the article is a Ukraine-war one.
    scores = {"prediction": [], "scores": _scores(0.3, 0.45, 0.45, 0.05, 0.5, 0.99)}
    kept = constrain_to_domain("EN_UA_000001.txt", scores, LABELS, [0.4] * 6, parents=PARENTS, parent_threshold=0.6)
    assert kept == [A1, A2]
    assert constrain_to_domain("EN_UA_000001.txt", scores, LABELS, [0.4] * 6) == [A1, A2, B1]  # flat, as before
    assert constrain_to_domain("EN_UA_000001.txt", scores, LABELS, [0.4] * 6, parents=PARENTS,
                               parent_threshold=0.8) == ["Other"]


def test_tuning_takes_the_best_grid_value_and_the_middle_of_a_plateau():
    assert tune_parent_threshold(lambda t: -(t - 0.3) ** 2, grid=[0.1, 0.2, 0.3, 0.4]) == 0.3
    assert tune_parent_threshold(lambda t: 1.0 if 0.2 <= t <= 0.6 else 0.0, grid=[0.1, 0.2, 0.4, 0.6, 0.8]) == 0.4
    with pytest.raises(ValueError, match="empty grid"):
        tune_parent_threshold(lambda t: 0.0, grid=[])


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from mtl_study.data import load_experiment_data

    folder = tmp_path_factory.mktemp("corpus")
    return load_experiment_data(None, folder, synthetic_options={"num_documents": 24, "min_words": 20, "max_words": 40})


def test_study_tunes_the_threshold_on_validation_and_the_saved_model_keeps_it(experiment, tiny_backbone_dir, tmp_path):
    from transformers import AutoTokenizer

    from modeling import MultiTaskModel
    from mtl_study.official import official_task_metrics, tune_parent_first

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, experiment.specs(["narratives_fine", "entity_framing_fine"]),
                                         max_length=64, stride=16)
    flat = official_task_metrics(model, tokenizer, experiment.test)
    threshold = tune_parent_first(model, tokenizer, experiment.validation)
    assert threshold is not None and getattr(model.config, PARENT_THRESHOLD_ATTRIBUTE) == threshold
    model.save_pretrained(tmp_path / "model")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "model")
    assert getattr(loaded.config, PARENT_THRESHOLD_ATTRIBUTE) == threshold
    parent_first = official_task_metrics(loaded, tokenizer, experiment.test)
    assert set(parent_first) == set(flat)
    # The gold is the fine column's: a run whose coarse narrative labels are cleared (a single-task run) tunes the
    # same threshold, and articles whose fine labels it may not see (another domain's) are not used.
    coarse_cleared = experiment.validation.map(lambda row: {"narratives_coarse": None})
    assert tune_parent_first(model, tokenizer, coarse_cleared) == threshold
    fine_cleared = experiment.validation.map(lambda row: {"narratives_fine": None})
    assert tune_parent_first(model, tokenizer, fine_cleared) is None
    # a model without a fine narrative task has nothing to tune
    coarse = MultiTaskModel.from_backbone(tiny_backbone_dir, experiment.specs(["narratives_coarse"]), max_length=64, stride=16)
    assert tune_parent_first(coarse, tokenizer, experiment.validation) is None
    assert not hasattr(coarse.config, PARENT_THRESHOLD_ATTRIBUTE)


@pytest.mark.parametrize("parent_first", [True, False])
def test_recipe_saves_the_tuned_threshold_and_reports_the_decoding(tiny_backbone_dir, tmp_path, parent_first):
    import json

    from conftest import load_recipe

    recipe = load_recipe("architecture_comparison")
    out = tmp_path / "run"
    recipe.main(["--model_name_or_path", tiny_backbone_dir, "--output_dir", str(out), "--seeds", "0", "--arms", "mtl",
                 "--granularity", "fine", "--max_steps", "1", "--synthetic_num_documents", "16", "--max_length", "64",
                 "--num_frozen_layers", "1",
                 "--save_steps", "1", "--logging_steps", "1", "--parent_first_narratives", str(parent_first).lower()])
    summary = json.loads((out / "runs" / "mtl__seed0" / "run_summary.json").read_text())["extra"]
    config = json.loads((out / "best" / "mtl" / "config.json").read_text())
    setup = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| official measures"))
    if parent_first:
        threshold = summary["narrative_parent_threshold"]
        assert config[PARENT_THRESHOLD_ATTRIBUTE] == threshold
        assert f"parent first (narrative threshold tuned on validation per run: {threshold};" in setup
    else:
        assert "narrative_parent_threshold" not in summary and PARENT_THRESHOLD_ATTRIBUTE not in config
        assert "parent first" not in setup and "within the article's domain; one fine role per mention" in setup
