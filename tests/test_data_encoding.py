"""Task specs, multi-task examples, windowed encoding (no mention lost), splits and ablation sets."""

import pytest
from conftest import shared_data_path
from transformers import AutoTokenizer

from data_prep import (
    FINE_ROLES,
    OTHER,
    SyntheticConfig,
    cross_domain_examples,
    duplication_control,
    encode_for_model,
    generate_synthetic_corpus,
    label_column,
    load_narrative_taxonomy,
    load_semeval,
    per_domain_eval_sets,
    semeval_tasks,
    single_task_examples,
    split_articles,
    task_specs,
    to_multitask_examples,
    token_count,
    windows_by_document,
)


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def sample():
    root = shared_data_path("semeval2025_task10_sample")
    articles = load_semeval(root)
    taxonomy = load_narrative_taxonomy(root / "taxonomy")
    return articles, taxonomy


def test_task_specs_granularities(sample):
    articles, taxonomy = sample
    fine = semeval_tasks(taxonomy, entity_granularity="fine", narrative_granularity="fine")
    specs = task_specs(fine)
    assert specs[0]["labels"] == list(FINE_ROLES) and specs[0]["level"] == "span"
    assert specs[0]["parents"]["Guardian"] == "Protagonist"
    assert specs[1]["labels"][0] == OTHER and specs[1]["parents"]["URW: Discrediting Ukraine: Other"] == "URW: Discrediting Ukraine"
    coarse = task_specs(semeval_tasks(taxonomy, entity_granularity="coarse", narrative_granularity="coarse", narrative_domains="per_domain"))
    assert [s["name"] for s in coarse] == ["entity_framing_coarse", "narratives_coarse_urw", "narratives_coarse_cc"]
    assert coarse[0]["problem_type"] == "single_label_classification" and len(coarse[0]["labels"]) == 3
    assert all(label == OTHER or label.startswith("CC: ") for label in coarse[2]["labels"])
    with pytest.raises(ValueError, match="duplicate task names"):
        task_specs([*fine, fine[0]])


def test_per_domain_examples_drop_other_domain_labels(sample):
    articles, taxonomy = sample
    tasks = semeval_tasks(taxonomy, narrative_granularity="coarse", narrative_domains="per_domain")
    examples = to_multitask_examples(articles, tasks)
    row = examples[examples["doc_id"].index("EN_UA_103011.txt")]
    assert row["narratives_coarse_urw"] == ["URW: Praise of Russia"] and row["narratives_coarse_cc"] is None
    assert all(label is None for d, label in zip(examples["domain"], examples["narratives_coarse_urw"]) if d == "CC")


def test_windowing_keeps_every_mention_of_the_sample(sample, tokenizer):
    articles, taxonomy = sample
    tasks = semeval_tasks(taxonomy)
    examples = to_multitask_examples(articles, tasks)
    encoded = encode_for_model(examples, tokenizer, tasks, max_length=512, stride=128)
    total = sum(len(m) for m in examples["mentions"])
    assert sorted(i for row in encoded["mention_index"] for i in row) == list(range(total))
    assert len(encoded) > len(examples)  # long articles became several windows
    assert max(encoded["length"]) <= 512 and encoded["example_index"] == list(range(len(encoded)))
    flat = [(d, m) for d, ms in zip(examples["doc_id"], examples["mentions"]) for m in ms]
    texts = {d: t for d, t in zip(examples["doc_id"], examples["text"])}
    for row in encoded:
        for (start, end), index in zip(row["mention_spans"], row["mention_index"]):
            doc_id, mention = flat[index]
            decoded = tokenizer.decode(row["input_ids"][start:end]).replace(" ", "").lower()
            assert decoded == texts[doc_id][mention["start"] : mention["end"]].replace(" ", "").lower()
        labels = row[label_column("entity_framing_fine")]
        assert len(labels) == len(row["mention_spans"]) and all(sum(v) >= 1 for v in labels)
    # evaluation regroups windows by document; document labels repeat on every window
    groups = windows_by_document(encoded)
    assert sorted(groups) == list(range(len(examples)))
    for document, rows in groups.items():
        assert [encoded[r]["window_index"] for r in rows] == list(range(len(rows)))
        assert len({tuple(encoded[r][label_column("narratives_fine")]) for r in rows}) == 1


def test_encoding_label_errors_and_missing_labels(tokenizer):
    import datasets

    tasks = [
        {"name": "topic", "level": "document", "problem_type": "single_label_classification", "labels": ["a", "b"]},
        {"name": "role", "level": "span", "problem_type": "single_label_classification", "labels": ["x", "y"]},
    ]
    examples = datasets.Dataset.from_list(
        [
            {"doc_id": "d0", "text": "Alice met Bob.", "mentions": [{"start": 0, "end": 5}], "topic": "b", "role": ["y"]},
            {"doc_id": "d1", "text": "Nothing here.", "mentions": [], "topic": None, "role": None},
        ]
    )
    encoded = encode_for_model(examples, tokenizer, tasks, max_length=32, stride=8)
    assert encoded[label_column("topic")] == [1, -100] and encoded[label_column("role")] == [[1], []]
    bad = examples.map(lambda r: {"topic": "c" if r["doc_id"] == "d1" else r["topic"]})
    with pytest.raises(ValueError, match="document 'd1' \\(row 1\\), task 'topic': label 'c' is not one of the 2 labels"):
        encode_for_model(bad, tokenizer, tasks, max_length=32, stride=8)
    with pytest.raises(ValueError, match="field 'labels' is empty"):
        encode_for_model(examples, tokenizer, [{**tasks[0], "labels": []}], max_length=32, stride=8)


@pytest.fixture(scope="module")
def synthetic_examples(tmp_path_factory):
    out = generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path_factory.mktemp("syn")), train_articles=40, dev_articles=10))
    articles = load_semeval(out)
    tasks = semeval_tasks(load_narrative_taxonomy(out / "taxonomy"), narrative_granularity="coarse")
    return to_multitask_examples(articles, tasks), tasks, load_semeval(out / "dev")


def test_split_by_article_stratified_and_seeded(synthetic_examples):
    examples, _, dev = synthetic_examples
    a = split_articles(examples, validation_fraction=0.25, seed=3, test=dev)
    b = split_articles(examples, validation_fraction=0.25, seed=3)
    assert a["validation"]["doc_id"] == b["validation"]["doc_id"]
    assert not set(a["train"]["doc_id"]) & set(a["validation"]["doc_id"])
    assert sorted(a["validation"]["domain"]).count("URW") == sorted(a["validation"]["domain"]).count("CC") == 5
    assert len(a["test"]) == 10
    with pytest.raises(ValueError, match="duplicate article ids"):
        split_articles(examples.select([0, 0, 1, 2]))


def test_ablation_sets(synthetic_examples, tokenizer):
    examples, tasks, _ = synthetic_examples
    names = [t.name for t in tasks]
    cross = cross_domain_examples(examples, {names[0]: "URW", names[1]: "CC"})
    for row in cross:
        assert row[names[0]] is None or row["domain"] == "URW"
        assert row[names[1]] is None or row["domain"] == "CC"
        assert row[names[0]] is None or row[names[1]] is None  # no example teaches both tasks
    single = single_task_examples(examples, names[1], names)
    assert all(v is None for v in single[names[0]]) and len(single) == len(examples)
    assert set(per_domain_eval_sets(examples)) == {"CC", "URW"}

    encoded_multi = encode_for_model(examples, tokenizer, tasks, max_length=128, stride=32)
    encoded_single = encode_for_model(examples.select(range(15)), tokenizer, tasks, max_length=128, stride=32)
    target = token_count(encoded_multi)
    control, report = duplication_control(encoded_single, target, seed=1)
    assert report.tokens == token_count(control) and 0 <= report.token_gap < max(encoded_single["length"])
    assert report.full_copies == target // report.source_tokens and report.rows == len(control)
    assert control["example_index"] == list(range(len(control)))
