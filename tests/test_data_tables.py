"""Tables of labelled texts (missing labels, mixed types), label-leakage audit, synthetic ticket table."""

import json
import warnings

import numpy as np
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
    with pytest.raises(TableFormatError, match=r"(line|row) 1, column 'y': label '2' is not one of the given names \['10'\]"):
        load_table(path, label_columns=["y"], label_names={"y": ["10"]})


def test_mixed_type_label_column_is_a_clear_error(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("text,urgency\nfoo,3\nbar,high\nbaz,2\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"mixed.csv, column 'urgency': label column of mixed types \(number '3' at line 2; text 'high' at line 3\)"):
        load_table(path, label_columns=["urgency"])
    # Python's float() reads "4_0" as 40 and "1e1" as 10: typos in a code column must not become new classes
    for typo in ("4_0", "1e1", "\uff14"):
        path.write_text(f"text,urgency\nfoo,3\nbar,{typo}\nbaz,2\n", encoding="utf-8")
        with pytest.raises(TableFormatError, match=rf"mixed types \(number '3' at line 2; text '{typo}' at line 3\)"):
            load_table(path, label_columns=["urgency"])
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(json.dumps({"text": "a", "y": 1}) + "\n" + json.dumps({"text": "b", "y": "one"}) + "\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match="column 'y': label column of mixed types"):
        load_table(jsonl, label_columns=["y"])


def test_empty_text_duplicate_id_and_missing_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,title,body,y\n1,,,a\n2,x,y,b\n2,z,w,a\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"t.csv, line 2: empty text"):
        load_table(path, text_columns=("title", "body"), label_columns=["y"], id_column="id")
    with pytest.raises(TableFormatError, match=r"line 4, column 'id': duplicate id '2' \(first at line 3\)"):
        load_table(path, text_columns=("title", "body"), label_columns=["y"], id_column="id", on_error="skip")
    table = load_table(path, text_columns=("title", "body"), label_columns=["y"], on_error="skip")
    assert table.counts["_table"] == {"rows": 2, "skipped": 1}
    path.write_text("id,title,body,y\n1,x,y,a\n ,z,w,a\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"line 3, column 'id': empty id"):
        load_table(path, text_columns=("title", "body"), label_columns=["y"], id_column="id")
    assert len(table.skipped) == 1 and table.skipped[0][0] == 2 and "empty text" in table.skipped[0][1]
    with pytest.raises(TableFormatError, match=r"columns \['nope'\] not found"):
        load_table(path, text_columns=("nope",), label_columns=["y"])



@pytest.mark.parametrize("marker", ["NaN", "nan", "NA", "null", "None", "N/A"])
@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_missing_markers_mean_no_label_in_every_format(tmp_path, marker, suffix):
    frame = pd.DataFrame({"text": ["a", "b", "c"], "y": ["x", marker, "z"]})
    path = tmp_path / f"t.{suffix}"
    {"csv": lambda: frame.to_csv(path, index=False), "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(path)}[suffix]()
    table = load_table(path, label_columns=["y"])
    assert table.examples["y"] == ["x", None, "z"] and table.tasks[0]["labels"] == ["x", "z"]
    assert table.counts["y"] == {"labelled": 2, "missing": 1}


@pytest.mark.parametrize("value, message", [
    ("inf", r"t.csv, line 3, column 'y': label 'inf' is not a finite number"),
    ("-Infinity", r"line 3, column 'y': label '-Infinity' is not a finite number"),
    ("2.5", r"t.csv, line 3, column 'y': label '2.5' is a non-integral number"),
])
def test_non_finite_and_non_integral_codes_are_refused_in_csv(tmp_path, value, message):
    path = tmp_path / "t.csv"
    path.write_text(f"text,y\na,1\nb,{value}\nc,2\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=message):
        load_table(path, label_columns=["y"])
    table = load_table(path, label_columns=["y"], on_error="skip")
    assert table.examples["y"] == ["1", "2"] and table.counts["_table"] == {"rows": 2, "skipped": 1}
    assert table.skipped[0][0] == 3 and value in table.skipped[0][1]


def test_two_spellings_of_one_code_are_refused_not_merged(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("text,y\na,01\nb,2\nc,1\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"codes.csv, column 'y': ambiguous integer codes '01' \(line 2\) and '1' \(line 4\)"):
        load_table(path, label_columns=["y"])
    path.write_text("text,y\na,3.0\nb,4.0\nc,\n", encoding="utf-8")  # a float column with gaps, as pandas writes it
    assert load_table(path, label_columns=["y"]).examples["y"] == ["3", "4", None]


def test_short_and_long_rows_are_errors_naming_the_line(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("text,queue,urgency\na,hw,1\nb,net\nc,hw,2,extra\nd,net,3\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"short.csv, line 3: 2 fields where the header has 3"):
        load_table(path, label_columns=["queue", "urgency"])
    table = load_table(path, label_columns=["queue", "urgency"], on_error="skip")
    assert table.examples["text"] == ["a", "d"]
    assert [line for line, _ in table.skipped] == [3, 4] and "4 fields" in table.skipped[1][1]


def test_quoted_multiline_record_keeps_its_line_numbers(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,y\n"two\nlines",a\n,b\n', encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"q.csv, line 4: empty text"):
        load_table(path, label_columns=["y"])


@pytest.mark.parametrize("content, message", [
    (b"text,y\na,1\n\xff\xfe,2\n", r"bad.csv, line 3: not valid UTF-8"),
    (b'text,y\n"unclosed,1\n', r"bad.csv, line \d+: not valid CSV"),
    (b"text,text,y\na,b,1\n", r"bad.csv, line 1: duplicate column names \['text'\]"),
])
def test_unreadable_csv_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(TableFormatError, match=message):
        load_table(path, label_columns=["y"])


def test_unreadable_json_lines_and_parquet_name_the_file(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "a", "y": 1}\n{"text": "b", "y": \n', encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_table(jsonl, label_columns=["y"])
    parquet = tmp_path / "bad.parquet"
    parquet.write_bytes(b"not a parquet file")
    with pytest.raises(TableFormatError, match=r"bad.parquet: cannot read as Parquet"):
        load_table(parquet, label_columns=["y"])


def test_byte_order_mark_does_not_rename_the_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("text,y\na,x\n", encoding="utf-8-sig")
    assert load_table(path, label_columns=["y"]).examples["text"] == ["a"]


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


def test_an_unquoted_comma_is_reported_for_its_row_not_as_a_mixed_column(tmp_path):
    # "hello, world" unquoted: 4 fields, and the shifted cell (' world') would have looked like a text label.
    path = tmp_path / "comma.csv"
    path.write_text("title,body,urgency\nt1,a,1\nt2,b,2\nt3,hello, world,3\nt4,d,3\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"comma.csv, line 4: 4 fields where the header has 3"):
        load_table(path, text_columns=["title", "body"], label_columns=["urgency"])
    table = load_table(path, text_columns=["title", "body"], label_columns=["urgency"], on_error="skip")
    assert table.examples["urgency"] == ["1", "2", "3"] and [line for line, _ in table.skipped] == [4]


def test_codes_are_read_alike_in_every_format(tmp_path):
    # JSON strings "1" and "1.0" are two spellings of code 1, refused as in a CSV; numbers 1 and 1.0 are one code.
    path = tmp_path / "codes.jsonl"
    path.write_text("".join(json.dumps({"text": t, "y": y}) + "\n" for t, y in [("a", "1"), ("b", "1.0"), ("c", "2")]))
    with pytest.raises(TableFormatError, match=r"codes.jsonl, column 'y': ambiguous integer codes '1' \(line 1\) and "
                                               r"'1.0' \(line 2\)"):
        load_table(path, label_columns=["y"])
    path.write_text("".join(json.dumps({"text": t, "y": y}) + "\n" for t, y in [("a", 1), ("b", 1.0), ("c", "2.0")]))
    assert load_table(path, label_columns=["y"]).examples["y"] == ["1", "1", "2"]
    frame = pd.DataFrame({"text": ["a", "b"], "y": ["3", "3.0"]}, dtype=object)
    with pytest.raises(TableFormatError, match="ambiguous integer codes '3'"):
        load_table(frame, label_columns=["y"])


def test_json_arrays_are_label_sets_only_in_multi_label_columns(tmp_path):
    path = tmp_path / "sets.jsonl"
    path.write_text("".join(json.dumps({"text": t, "y": y}) + "\n" for t, y in [("a", ["x", "z"]), ("b", ["x"])]))
    assert load_table(path, label_columns=["y"], multi_label_columns=["y"]).examples["y"] == [["x", "z"], ["x"]]
    with pytest.raises(TableFormatError, match=r"sets.jsonl, line 1, column 'y': list value \['x', 'z'\] in a single-label "
                                               r"column .*multi_label_columns"):
        load_table(path, label_columns=["y"])


def test_json_lines_may_hold_unicode_line_separators_in_strings(tmp_path):
    path = tmp_path / "sep.jsonl"  # pandas' to_json(lines=True, force_ascii=False) writes U+2028 raw
    path.write_text(json.dumps({"text": "one\u2028two", "y": "a"}, ensure_ascii=False) + "\n" +
                    json.dumps({"text": "three", "y": "b"}) + "\n", encoding="utf-8")
    assert load_table(path, label_columns=["y"]).examples["text"] == ["one\u2028two", "three"]


def test_leakage_audit_reads_pandas_na_as_no_label():
    # b copies a wherever a is known; where a is <NA> (a nullable column), b is noise: a determines b.
    known = [1, 2, 3] * 10
    frame = pd.DataFrame({"a": pd.array(known + [pd.NA] * 30, dtype="Int64"),
                          "b": pd.array(known + [1, 2, 3, 2, 1, 3] * 5, dtype="Int64")})
    pair = next(p for p in audit_label_leakage(frame, tasks=["a", "b"], warn=False).pairs if p.given == "a")
    assert pair.examples == 30 and pair.flagged


def test_leakage_audit_reads_numpy_arrays_as_label_lists():
    # Dataset.to_pandas() and pd.read_parquet give a multi-label column as numpy arrays (an empty one: no label)
    import datasets

    rows = {"a": [str(i % 2) for i in range(40)], "b": [["x", "y"] if i % 2 else ["z"] for i in range(40)]}
    frame = datasets.Dataset.from_dict(rows).to_pandas()
    assert isinstance(frame["b"][0], np.ndarray)
    frame.loc[0, "b"] = np.array([], dtype=object)
    pair = next(p for p in audit_label_leakage(frame, tasks=["a", "b"], warn=False).pairs if p.given == "a")
    assert pair.flagged and pair.examples == 39
    assert audit_label_leakage(pd.DataFrame(rows), tasks=["a", "b"], warn=False).is_flagged("a", "b")


def test_leakage_audit_flags_a_rule_that_holds_for_one_value_only():
    """"ticket_type 1 implies urgency 3" where ticket_type varies: U stays near 0.5, yet a model reads urgency off
    ticket_type on every type-1 ticket. The global U misses it; the per-value rule check must not."""
    rng = np.random.default_rng(0)
    ticket_type = rng.integers(0, 2, 400)
    urgency = np.where(ticket_type == 1, 3, rng.integers(1, 4, 400))
    frame = pd.DataFrame({"ticket_type": ticket_type.astype(str), "urgency": urgency.astype(str),
                          "noise": rng.integers(0, 3, 400).astype(str)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = audit_label_leakage(frame)
    pair = next(p for p in report.pairs if p.given == "ticket_type" and p.target == "urgency")
    assert pair.uncertainty_coefficient < 0.7 and pair.flagged and pair.partial
    assert [(r["given_value"], r["target_value"]) for r in pair.rules] == [("1", "3")]
    assert "partial: ticket_type = '1' -> urgency = '3'" in pair.note
    messages = [str(w.message) for w in caught if issubclass(w.category, LabelLeakageWarning)]
    # the reverse (urgency 1 or 2 implies type 0) is a rule too: one warning per determined task
    assert report.is_flagged("urgency", "ticket_type") and len(messages) == 2
    assert any(m.startswith("label leakage: 'urgency' is partly determined by 'ticket_type'") for m in messages)
    assert not any(report.is_flagged(a, b) for a, b in [("noise", "urgency"), ("urgency", "noise"), ("ticket_type", "noise")])
    # an unrelated column against a target that is '3' on ~93% of the rows: its values reach 95% purity by chance
    chance = [pd.DataFrame({"noise": rng.integers(0, 3, 400).astype(str),
                            "urgency": np.where(rng.random(400) < 0.93, "3", "1")}) for _ in range(30)]
    assert not any(audit_label_leakage(f, warn=False).is_flagged("noise", "urgency") for f in chance)
    # a rule covering a sliver of the rows, or a near-constant target, is not a flag
    rare = frame.assign(ticket_type=np.where(np.arange(400) < 20, "9", "0"),
                        urgency=np.where(np.arange(400) < 20, "3", urgency))
    assert not audit_label_leakage(rare, tasks=["ticket_type", "urgency"], warn=False).is_flagged("ticket_type", "urgency")


def test_text_overlap_counts_exact_and_near_duplicates_of_test_texts():
    from data_prep import text_overlap

    train = ["New purchase PO: dear team, purchased monitor, please log allocation after the item arrives",
             "VPN connection drops every hour since the update", "Printer on floor 3 is out of toner"]
    test = ["new purchase po dear team purchased monitor please log allocation after the item arrives!",  # exact
            "New purchase PO: dear team, purchased speaker, please log allocation after the item arrives",  # near
            "Payroll question about my holiday allowance", "???"]
    overlap = text_overlap(train, test, threshold=0.6)
    assert (overlap.exact, overlap.near, overlap.test_texts) == (1, 2, 4)
    assert list(overlap.nearest_train_index[:2]) == [0, 0] and overlap.nearest_similarity[2] < 0.3
    assert overlap.nearest_train_index[3] == -1  # "???" shares no word with any training text
    assert text_overlap(["!!!", "a b"], ["!!!"]).nearest_train_index.tolist() == [0]  # exact, though without a vector
    # texts without a word repeat only themselves, and an empty text repeats nothing
    assert text_overlap(["???", "", "printer broken"], ["!!!", "😀😀", "", "???"]).exact == 1
    assert "1 of 4 test texts (25.0%) repeat a training text exactly; 2 (50.0%)" in overlap.summary()
    assert text_overlap(train, test, threshold=0.99).near == 1
    with pytest.raises(ValueError, match="threshold must be in"):
        text_overlap(train, test, threshold=0)


def test_a_table_of_mostly_malformed_rows_is_refused_naming_the_first_reasons(tmp_path, caplog):
    path = tmp_path / "t.csv"
    good = [f"{i},a text,{i % 2}" for i in range(8)]
    bad = [f"{i},,{i % 2}" for i in range(8, 10)]  # empty texts
    path.write_text("id,text,y\n" + "\n".join(good + bad) + "\n", encoding="utf-8")
    assert len(load_table(path, label_columns=["y"], on_error="skip", max_skipped_fraction=0.2).examples) == 8
    with pytest.raises(TableFormatError, match=r"t.csv: 2 of 10 rows are malformed \(more than 10%\); the first: "
                                               r".*t.csv, line 10: empty text"):
        load_table(path, label_columns=["y"], on_error="skip", max_skipped_fraction=0.1)
    # every row malformed: the reason, not "no labels at all"
    path.write_text("id,text,y\n" + "\n".join(f"{line}," for line in good) + "\n", encoding="utf-8")
    with pytest.raises(TableFormatError, match=r"8 of 8 rows are malformed \(all\); the first: .*line 2: 4 fields where "
                                               r"the header has 3"):
        load_table(path, label_columns=["y"], on_error="skip")
    # a long tail of malformed rows is logged up to a limit, and counted in full
    many = [f"{i},a text,{i % 2}" for i in range(100)] + [f"{i},,0" for i in range(100, 130)]
    path.write_text("id,text,y\n" + "\n".join(many) + "\n", encoding="utf-8")
    caplog.clear()
    table = load_table(path, label_columns=["y"], on_error="skip", max_skipped_fraction=0.5)
    assert len(table.skipped) == 30 and sum(r.message.startswith("skipped:") for r in caplog.records) == 20
