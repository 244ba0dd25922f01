"""Tables of labelled texts (missing labels, mixed types), label-leakage audit, synthetic ticket table."""

import json
import warnings

import pandas as pd
import pytest
from conftest import shared_data_path

from data_prep import (
    LabelLeakageWarning,
    SyntheticTicketsConfig,
    TableFormatError,
    audit_label_leakage,
    load_table,
    write_tickets,
)

TICKET_LABELS = ["ticket_type", "category", "sub_category1", "sub_category2", "business_service", "urgency", "impact"]


def test_csv_with_missing_labels_and_two_text_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("title,body,queue,urgency\nprinter,is broken,hw,3\n,vpn down,,1\nhello,,net,\n", encoding="utf-8")
    table = load_table(path, text_columns=("title", "body"), label_columns={"queue": "queue", "urgency": "priority"})
    assert table.examples["text"] == ["printer\nis broken", "vpn down", "hello"]
    assert table.examples["queue"] == ["hw", None, "net"] and table.examples["priority"] == ["3", "1", None]
    assert [t["labels"] for t in table.tasks] == [["hw", "net"], ["1", "3"]]
    assert table.counts["priority"] == {"labelled": 2, "missing": 1}


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_other_formats_and_given_label_names(tmp_path, suffix):
    frame = pd.DataFrame({"text": ["a b", "c d", "e f"], "y": [2.0, None, 10.0], "tags": ["x;z", "", "z"]})
    path = tmp_path / f"t.{suffix}"
    frame.to_json(path, orient="records", lines=True) if suffix == "jsonl" else frame.to_parquet(path)
    table = load_table(path, label_columns=["y", "tags"], multi_label_columns=["tags"], label_names={"y": ["10", "2", "7"]})
    assert table.examples["y"] == ["2", None, "10"] and table.examples["tags"] == [["x", "z"], None, ["z"]]
    assert table.tasks[0]["labels"] == ["10", "2", "7"] and table.tasks[1]["problem_type"] == "multi_label_classification"
    with pytest.raises(TableFormatError, match=r"row 1, column 'y': label '2' is not one of the given names \['10'\]"):
        load_table(path, label_columns=["y"], label_names={"y": ["10"]})


def test_mixed_type_label_column_is_a_clear_error(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("text,urgency\nfoo,3\nbar,high\nbaz,2\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"mixed.csv, column 'urgency': label column of mixed types \(number '3' at row 2; text 'high' at row 3\)"):
        load_table(path, label_columns=["urgency"])
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(json.dumps({"text": "a", "y": 1}) + "\n" + json.dumps({"text": "b", "y": "one"}) + "\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match="column 'y': label column of mixed types"):
        load_table(jsonl, label_columns=["y"])


def test_empty_text_duplicate_id_and_missing_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,title,body,y\n1,,,a\n2,x,y,b\n2,z,w,a\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"t.csv, row 2: empty text"):
        load_table(path, text_columns=("title", "body"), label_columns=["y"], id_column="id")
    with pytest.raises(TableFormatError, match=r"row 4, column 'id': duplicate id '2' \(first at row 3\)"):
        load_table(path, text_columns=("title", "body"), label_columns=["y"], id_column="id", on_error="skip")
    table = load_table(path, text_columns=("title", "body"), label_columns=["y"], on_error="skip")
    assert table.counts["_table"] == {"rows": 2, "skipped": 1}
    with pytest.raises(TableFormatError, match=r"columns \['nope'\] not found"):
        load_table(path, text_columns=("nope",), label_columns=["y"])


def test_leakage_audit_flags_urgency_and_impact_on_tickets_sample():
    table = load_table(shared_data_path("tickets_sample", "tickets_sample.csv"), text_columns=("title", "body"), label_columns=TICKET_LABELS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = audit_label_leakage(table.examples)
    assert report.is_flagged("ticket_type", "urgency") and report.is_flagged("ticket_type", "impact")
    messages = [str(w.message) for w in caught if issubclass(w.category, LabelLeakageWarning)]
    assert any("'urgency' is (nearly) a function of 'ticket_type'" in m for m in messages)
    assert any("'impact' is (nearly) a function of 'ticket_type'" in m for m in messages)
    assert not report.is_flagged("category", "sub_category2")  # related, not determined


def test_leakage_audit_on_informative_labels():
    rows = [{"a": str(i % 4), "b": str(i % 4 // 2), "c": str((i * 7 + i // 3) % 3)} for i in range(200)]
    report = audit_label_leakage(pd.DataFrame(rows), warn=False)
    assert report.is_flagged("a", "b") and not report.is_flagged("b", "a")  # b = a // 2, not the reverse
    assert not report.is_flagged("a", "c")
    unique = pd.DataFrame({"id_like": [str(i) for i in range(40)], "y": [str(i % 2) for i in range(40)]})
    assert not audit_label_leakage(unique, warn=False).is_flagged("id_like", "y")  # unique values prove nothing


def test_synthetic_tickets_related_not_deterministic_and_seeded(tmp_path, minilm_path):
    from transformers import AutoTokenizer

    first = write_tickets(SyntheticTicketsConfig(out=str(tmp_path / "a.csv"), rows=400, seed=5))
    second = write_tickets(SyntheticTicketsConfig(out=str(tmp_path / "b.csv"), rows=400, seed=5))
    assert first.read_bytes() == second.read_bytes()
    table = load_table(first, text_columns=("title", "body"), label_columns=["category", "urgency", "queue"], id_column="ticket_id")
    for task in ("category", "urgency", "queue"):
        assert 0 < table.counts[task]["missing"] < 0.4 * 400
    report = audit_label_leakage(table.examples, warn=False)
    assert not report.flagged
    assert max(p.cramers_v for p in report.pairs) > 0.3  # related
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    lengths = sorted(len(tokenizer(t)["input_ids"]) for t in table.examples["text"])
    assert 20 <= lengths[len(lengths) // 2] <= 40 and lengths[-1] > 2 * lengths[0]


def test_datasets_source_with_integer_codes():
    import datasets

    source = datasets.Dataset.from_dict({"title": ["a", "b", "c"], "body": ["x", "", "z"], "y": [3, None, 1]})
    table = load_table(source, text_columns=("title", "body"), label_columns=["y"])
    assert table.examples["text"] == ["a\nx", "b", "c\nz"] and table.examples["y"] == ["3", None, "1"]
    assert table.tasks[0]["labels"] == ["1", "3"]
