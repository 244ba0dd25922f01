"""The SemEval tuning tool's pure pieces: the three-way article split, domain-constrained decoding, the summary table."""

import json

import datasets

from data_prep.semeval_official import constrain_to_domain
from semeval_tuning import summary_table, three_way_split

LABELS = ["Other", "URW: Praise of Russia: Other", "URW: Discrediting Ukraine: Other", "CC: Amplifying Climate Fears: Other"]


def _scored(*probabilities):
    return {"prediction": [], "scores": dict(zip(LABELS, probabilities))}


def test_domain_constraint_drops_other_domain_labels():
    # The CC label passes its threshold but the article is a Ukraine-war one (EN_UA_...): it must go.
    kept = constrain_to_domain("EN_UA_000001.txt", _scored(0.1, 0.7, 0.2, 0.9), LABELS, [0.5] * 4)
    assert kept == ["URW: Praise of Russia: Other"]


def test_domain_constraint_falls_back_to_best_allowed_label():
    # Only the other domain's label passes: the best-scoring label of the article's own domain (or Other) is chosen.
    kept = constrain_to_domain("EN_CC_000001.txt", _scored(0.3, 0.4, 0.2, 0.1), LABELS, [0.5, 0.3, 0.5, 0.5])
    assert kept == ["Other"]
    kept = constrain_to_domain("EN_CC_000001.txt", _scored(0.2, 0.9, 0.2, 0.3), LABELS, [0.5] * 4)
    assert kept == ["CC: Amplifying Climate Fears: Other"]


def test_domain_constraint_keeps_everything_when_the_id_names_no_domain():
    kept = constrain_to_domain("article7.txt", _scored(0.1, 0.7, 0.2, 0.9), LABELS, [0.5] * 4)
    assert kept == ["URW: Praise of Russia: Other", "CC: Amplifying Climate Fears: Other"]


def test_three_way_split_is_disjoint_covering_and_stratified():
    articles = datasets.Dataset.from_dict(
        {"id": [f"a{i}" for i in range(50)], "domain": ["URW"] * 30 + ["CC"] * 20}
    )
    train, validation, test = three_way_split(articles, 0.2, 0.25, seed=0)
    ids = [set(split["id"]) for split in (train, validation, test)]
    assert sum(map(len, ids)) == 50 and set().union(*ids) == set(articles["id"])
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sorted(test["domain"]).count("URW") == 6 and sorted(test["domain"]).count("CC") == 4
    again = three_way_split(articles, 0.2, 0.25, seed=0)
    assert list(again[2]["id"]) == list(test["id"])


def test_summary_table_rows(tmp_path):
    measures = {"narratives_samples_f1": 0.5, "subnarratives_samples_f1": 0.4, "fine_role_exact_match": 0.25,
                "main_role_accuracy": 0.75}
    row = {"tag": "k5", "steps": 100, "best_step": 80, "train_seconds": 123.4,
           "test": {"as_stored": measures, "domain_constrained": measures},
           "baselines": {"probe": measures, "all_other": measures}}
    path = tmp_path / "results.jsonl"
    parent_first = {**measures, "narratives_samples_f1": 0.61, "subnarratives_samples_f1": 0.47}
    newer = {**row, "tag": "k6", "test": {**row["test"], "parent_first": parent_first}}
    path.write_text(json.dumps(row) + "\n" + json.dumps(newer) + "\n", encoding="utf-8")
    lines = summary_table(path).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| k5 | 100 (80) | 123 | 0.500 | 0.400 |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    # Lines written before parent-first decoding have no such scores: a dash, not an error or a made-up figure.
    assert "| – |" in lines[2] and "| 0.610/0.470 |" in lines[3]



def test_domain_constraint_applies_the_relative_threshold_among_allowed_labels():
    # Both URW-side labels pass 0.3; with r = 0.5 only those within half of the best ALLOWED score stay (the CC
    # label's 0.95 is not allowed for a URW article, so it does not raise the floor).
    scored = _scored(0.35, 0.8, 0.1, 0.95)
    assert constrain_to_domain("EN_UA_000001.txt", scored, LABELS, [0.3] * 4) == ["Other", "URW: Praise of Russia: Other"]
    assert constrain_to_domain("EN_UA_000001.txt", scored, LABELS, [0.3] * 4, relative_threshold=0.5) == [
        "URW: Praise of Russia: Other"]
