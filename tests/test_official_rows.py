"""The official SemEval measures of a run's model as results rows (`mtl_study.official`)."""

import pytest
import torch

from data_prep.semeval import load_semeval
from data_prep.semeval_official import submission_from_articles
from mtl_study.data import load_experiment_data
from mtl_study.official import OFFICIAL_METRICS, gold_articles, official_rows, official_task_metrics


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return load_experiment_data(None, folder, synthetic_options={"num_documents": 24, "min_words": 20, "max_words": 40})


def test_gold_articles_rebuild_the_official_lines(experiment):
    # the examples carry every task at both granularities: the official gold lines come back exactly (the synthetic
    # corpus has a dev/ folder, which is the experiment's test set)
    released = {a["id"]: a for a in load_semeval(f"{experiment.data_dir}/dev")}
    rebuilt = gold_articles(experiment.test)
    assert len(rebuilt) == len(released) and any(a["mentions"] for a in rebuilt)
    assert submission_from_articles(rebuilt) == submission_from_articles(released[a["id"]] for a in rebuilt)


class _Oracle:
    """Stands in for a model: predicts each article's gold labels (known answer: every official measure is 1)."""

    def __init__(self, experiment, task_names, swap_roles=False):
        from modeling import MultiTaskConfig

        self.config = MultiTaskConfig(tasks=experiment.specs(task_names))
        self.gold = {e["text"]: e for e in experiment.test}
        self.swap_roles = swap_roles

    def predict(self, texts, mentions, tokenizer=None, batch_size=32, return_scores=True):
        results = []
        for text, spans in zip(texts, mentions):
            example, result = self.gold[text], {}
            for task in self.config.tasks:
                labels = task["labels"]
                gold = example[task["name"]]
                if task["level"] == "document":
                    result[task["name"]] = {"prediction": list(gold), "scores": {l: float(l in gold) for l in labels}}
                else:
                    chosen = [gold[i] for i in range(len(spans))]
                    if self.swap_roles and task["name"] == "entity_framing_coarse":
                        chosen = ["Protagonist" if role != "Protagonist" else "Antagonist" for role in chosen]
                    result[task["name"]] = [
                        {"prediction": c, "scores": {l: float(l == c or (isinstance(c, list) and l in c)) for l in labels}}
                        for c in chosen
                    ]
            results.append(result)
        return results


def test_an_oracle_scores_one_on_every_official_measure_credited_to_its_task(experiment):
    tasks = ["narratives_fine", "entity_framing_fine", "entity_framing_coarse"]
    scores = official_task_metrics(_Oracle(experiment, tasks), None, experiment.test)
    assert scores == {
        "narratives_fine": {"official_narratives_samples_f1": 1.0, "official_subnarratives_samples_f1": 1.0},
        "entity_framing_fine": {"official_fine_role_exact_match": 1.0},
        "entity_framing_coarse": {"official_main_role_accuracy": 1.0},  # the coarse head decides the main role
    }
    # a coarse head that is always wrong scores 0 (alone: with the fine task, their joint score decides)
    wrong = official_task_metrics(_Oracle(experiment, ["entity_framing_coarse"], swap_roles=True), None, experiment.test)
    assert wrong == {"entity_framing_coarse": {"official_main_role_accuracy": 0.0}}
    # a coarse narrative task alone is scored on narratives only; a fine entity task alone decides the main role
    assert official_task_metrics(_Oracle(experiment, ["narratives_coarse"]), None, experiment.test) == {
        "narratives_coarse": {"official_narratives_samples_f1": 1.0}}
    assert official_task_metrics(_Oracle(experiment, ["entity_framing_fine"]), None, experiment.test) == {
        "entity_framing_fine": {"official_fine_role_exact_match": 1.0, "official_main_role_accuracy": 1.0}}


def test_rows_of_a_real_model_only_for_the_scored_tasks(experiment, tiny_backbone_dir):
    from transformers import AutoTokenizer

    from modeling import MultiTaskModel

    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, experiment.specs(["narratives_fine", "entity_framing_fine"]),
                                         max_length=64, stride=16)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    rows = official_rows(model, tokenizer, {"test": experiment.test}, {"test": ["narratives_fine"]}, seed_note="x")
    assert {r["metric"] for r in rows} == {"official_narratives_samples_f1", "official_subnarratives_samples_f1"}
    assert all(r["task"] == "narratives_fine" and r["eval_set"] == "test" and 0 <= r["value"] <= 1
               and r["seed_note"] == "x" for r in rows)
    assert set(OFFICIAL_METRICS) >= {r["metric"] for r in rows}


def test_official_majority_baseline_is_the_most_frequent_answer(experiment):
    from collections import Counter

    from data_prep.semeval_official import Submission, submission_from_articles
    from data_prep.semeval_official_metrics import official_metrics
    from mtl_study.official import official_baseline_rows

    tasks = experiment.specs(["narratives_coarse", "entity_framing_coarse"])
    rows = official_baseline_rows(experiment.train, {"test": experiment.test}, tasks)
    assert {(r["arm"], r["task"], r["metric"]) for r in rows} == {
        ("baseline_majority", "narratives_coarse", "official_narratives_samples_f1"),
        ("baseline_majority", "entity_framing_coarse", "official_main_role_accuracy")}
    value = {r["metric"]: r["value"] for r in rows}
    # by hand: the most frequent training main role for every test mention
    roles = Counter(role for e in experiment.train for role in (e["entity_framing_coarse"] or []) if role)
    majority = roles.most_common(1)[0][0]
    test_roles = [role for e in experiment.test for role in (e["entity_framing_coarse"] or []) if role]
    assert value["official_main_role_accuracy"] == pytest.approx(sum(r == majority for r in test_roles) / len(test_roles))
    # by hand: the most frequent training narrative set for every article, scored officially
    sets = Counter(tuple(sorted(e["narratives_coarse"])) for e in experiment.train if e["narratives_coarse"] is not None)
    answer = sets.most_common(1)[0][0]
    articles = [a for a in gold_articles(experiment.test) if a["narratives"] is not None]
    gold = Submission(narratives=submission_from_articles(articles).narratives)
    guess = Submission(narratives=submission_from_articles(
        [{**a, "mentions": [], "narratives": list(answer), "subnarratives": [f"{n}: Other" if n != "Other" else n for n in answer]}
         for a in articles]).narratives)
    assert value["official_narratives_samples_f1"] == pytest.approx(official_metrics(gold, guess)["narratives_samples_f1"])
