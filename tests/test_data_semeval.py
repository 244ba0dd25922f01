"""SemEval-2025 Task 10 loader: the real sample, and every bad-input error (small broken corpora in tmp_path)."""

from pathlib import Path

import pytest
from conftest import shared_data_path

from data_prep import (
    FINE_ROLES,
    FINE_TO_MAIN,
    MAIN_ROLES,
    SemEvalFormatError,
    load_narrative_taxonomy,
    load_semeval,
    utf16_offset_table,
)

SAMPLE = ("semeval2025_task10_sample",)


def test_fixed_role_taxonomy_matches_sample_file():
    assert len(MAIN_ROLES) == 3 and len(FINE_ROLES) == 22
    import json

    path = shared_data_path(*SAMPLE, "taxonomy", "taxonomy_subtask1_2.json")
    roles = json.loads(path.read_text(encoding="utf-8"))["subtask1_entity_roles"]
    assert {fine: main for main, fines in roles.items() for fine in fines} == FINE_TO_MAIN


def test_sample_loads_with_every_mention_matching_and_counts_matching_files():
    root = shared_data_path(*SAMPLE)
    articles, report = load_semeval(root, return_report=True)
    raw = sorted(p.name for p in (root / "EN" / "raw-documents").iterdir())
    lines1 = [l for l in (root / "EN" / "subtask-1-annotations.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    lines2 = [l for l in (root / "EN" / "subtask-2-annotations.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    assert sorted(articles["id"]) == raw
    assert report.articles == len(raw) and report.subtask2_lines == len(lines2)
    assert report.subtask1_lines == report.mentions == len(lines1)
    assert report.articles_with_entity_annotations == len({l.split("\t")[0] for l in lines1})
    assert not report.skipped
    by_id = {row["id"]: row for row in articles}
    for line in lines1:  # every annotation line is a mention whose text matches its span
        fields = line.rstrip("\r").split("\t")
        row = by_id[fields[0]]
        assert any(m["text"] == fields[1] and row["text"][m["start"] : m["end"]] == fields[1] for m in row["mentions"])
    for row in articles:
        assert row["domain"] == ("URW" if "_UA_" in row["id"] else "CC")
        assert len(row["narratives"]) == len(set(row["narratives"]))  # repeated narratives de-duplicated


def test_non_bmp_article_offsets_are_converted():
    root = shared_data_path(*SAMPLE)
    articles = load_semeval(root)
    row = next(r for r in articles if r["id"] == "EN_UA_002668.txt")
    assert utf16_offset_table(row["text"]) is not None  # it has characters outside the BMP
    assert [row["text"][m["start"] : m["end"]] for m in row["mentions"]] == [m["text"] for m in row["mentions"]]
    # the raw UTF-16 offsets (end inclusive) would be wrong as Python indices after the emoji
    line = next(l for l in (root / "EN" / "subtask-1-annotations.txt").read_text().splitlines() if "\tRussia\t1589" in l)
    start, end = (int(v) for v in line.split("\t")[2:4])
    assert row["text"][start : end + 1] != "Russia"


def test_urw_id_article_with_cc_narratives_is_counted():
    _, report = load_semeval(shared_data_path(*SAMPLE), return_report=True)
    assert "EN_UA_103011.txt" in report.articles_with_labels_of_other_domain


def test_taxonomy_files_read():
    taxonomy = load_narrative_taxonomy(shared_data_path(*SAMPLE, "taxonomy"))
    assert len(taxonomy.narratives("URW")) == 11 and len(taxonomy.narratives("CC")) == 10
    assert len(taxonomy.subnarratives("URW")) == 49 and len(taxonomy.subnarratives("CC")) == 44


# ---------------------------------------------------------------- broken corpora
GOOD_TEXT = "Putin met Zelensky in Kyiv. \U0001F600 Then NATO said no.\n"


def make_corpus(tmp_path: Path, subtask1=None, subtask2=None, articles=None) -> Path:
    root = tmp_path / "corpus"
    raw = root / "EN" / "raw-documents"
    raw.mkdir(parents=True)
    articles = {"EN_UA_000001.txt": GOOD_TEXT, "EN_CC_000002.txt": "Greta spoke.\n"} if articles is None else articles
    for name, text in articles.items():
        (raw / name).write_text(text, encoding="utf-8", newline="")
    # NATO starts at python index 35, UTF-16 offset 36 (one emoji before it), inclusive end 39
    subtask1 = subtask1 if subtask1 is not None else [
        "EN_UA_000001.txt\tPutin\t0\t4\tAntagonist\tInstigator",
        "EN_UA_000001.txt\tNATO\t36\t39\tProtagonist\tGuardian\tPeacemaker",
    ]
    subtask2 = subtask2 if subtask2 is not None else [
        "EN_UA_000001.txt\tURW: Discrediting Ukraine;URW: Discrediting Ukraine\tURW: Discrediting Ukraine: Other;URW: Discrediting Ukraine: Ukraine is a puppet of the West",
        "EN_CC_000002.txt\tOther\tOther",
    ]
    for name, lines in (("subtask-1-annotations.txt", subtask1), ("subtask-2-annotations.txt", subtask2)):
        if lines:  # [] = no such file (an existing empty annotation file is an error)
            (root / "EN" / name).write_bytes("".join(l + "\r\n" for l in lines).encode())
    return root


def test_small_corpus_loads(tmp_path):
    articles, report = load_semeval(make_corpus(tmp_path), return_report=True)
    row = articles[1] if articles[1]["id"] == "EN_UA_000001.txt" else articles[0]
    assert [m["text"] for m in row["mentions"]] == ["Putin", "NATO"]
    assert row["mentions"][1]["fine_roles"] == ["Guardian", "Peacemaker"]
    assert row["narratives"] == ["URW: Discrediting Ukraine"]
    assert report.mentions == 2 and report.articles_with_non_bmp_characters == 1


@pytest.mark.parametrize(
    "subtask1, subtask2, articles, message, reason",
    [
        (["EN_UA_000001.txt\tPutin\t0"], None, None, "subtask-1-annotations.txt, line 1: expected at least 6", "malformed subtask-1 line"),
        (["EN_UA_000001.txt\tPutin\tzero\t4\tAntagonist\tInstigator"], None, None, "line 1, field 'start': 'zero' is not an integer", "malformed subtask-1 line"),
        # int() reads these as 0 / 4; a typo in an offset must not be moved to another span
        (["EN_UA_000001.txt\tPutin\t+0\t4\tAntagonist\tInstigator"], None, None, "line 1, field 'start': '+0' is not an integer", "malformed subtask-1 line"),
        (["EN_UA_000001.txt\tPutin\t0\t\uff14\tAntagonist\tInstigator"], None, None, "line 1, field 'end': '\uff14' is not an integer", "malformed subtask-1 line"),
        (None, ["EN_UA_000001.txt\tOther"], None, "subtask-2-annotations.txt, line 1: expected 3 tab-separated", "malformed subtask-2 line"),
        (["EN_UA_000001.txt\tPutin\t0\t4\tAntagonist\tInstigator", "EN_UA_000001.txt\tNo\t40\t99\tAntagonist\tSpy"], None, None, "line 2, field 'start/end': span [40, 99]", "offset out of range"),
        (["EN_UA_000001.txt\tNATO\t35\t38\tAntagonist\tSpy"], None, None, "field 'mention': mention 'NATO' does not match the article text ' NAT'", "mention text mismatch"),
        (["EN_UA_000001.txt\tPutin\t0\t4\tAntagonist\tHero"], None, None, "fine role 'Hero' is not one of the 22", "label outside the taxonomy"),
        (["EN_UA_000001.txt\tPutin\t0\t4\tVillain\tSpy"], None, None, "main role 'Villain' is not one of", "label outside the taxonomy"),
        (["EN_UA_000001.txt\tPutin\t0\t4\tProtagonist\tSpy"], None, None, "fine role 'Spy' belongs to main role 'Antagonist'", "label outside the taxonomy"),
        (None, ["EN_CC_000002.txt\tCC: Made up narrative\tOther"], None, "field 'narratives': label 'CC: Made up narrative' is not in the taxonomy", "label outside the taxonomy"),
        (None, ["EN_CC_000002.txt\tSports\tOther"], None, "label 'Sports' is neither 'Other' nor prefixed by a domain", "label outside the taxonomy"),
        (["EN_UA_009999.txt\tPutin\t0\t4\tAntagonist\tSpy"], None, None, "line 1, field 'article_id': article 'EN_UA_009999.txt' is not in raw-documents/", "missing article"),
        (None, ["EN_CC_000002.txt\tOther\tOther", "EN_CC_000002.txt\tOther\tOther"], None, "line 2, field 'article_id': duplicate line for article 'EN_CC_000002.txt'", "duplicate article id"),
        (["EN_UA_000001.txt\tPutin\t0\t4\tAntagonist\tSpy", "EN_UA_000001.txt\tPutin\t0\t4\tAntagonist\tSpy"], None, None, "line 2: duplicate annotation of span [0, 4]", "duplicate mention"),
        ([], [], {"EN_UA_000001.txt": GOOD_TEXT, "EN_CC_000003.txt": " \n"}, "EN_CC_000003.txt: article is empty", "empty article"),
    ],
)
def test_bad_input_errors_name_file_line_field_and_can_be_skipped(tmp_path, subtask1, subtask2, articles, message, reason):
    root = make_corpus(tmp_path, subtask1, subtask2, articles)
    taxonomy = shared_data_path(*SAMPLE, "taxonomy") if "taxonomy" in message else None
    with pytest.raises(SemEvalFormatError) as error:
        load_semeval(root, taxonomy_dir=taxonomy)
    assert message in str(error.value)
    _, report = load_semeval(root, taxonomy_dir=taxonomy, on_error="skip", return_report=True)
    assert report.skipped[reason] == 1 and message in report.problems[0]


def test_a_label_spelled_in_two_cases_is_an_error_without_a_taxonomy(tmp_path):
    subtask2 = ["EN_UA_000001.txt\tURW: Discrediting Ukraine\tURW: Discrediting Ukraine: Other",
                "EN_CC_000002.txt\tURW: discrediting Ukraine\tURW: discrediting Ukraine: Other"]
    root = make_corpus(tmp_path, None, subtask2)
    with pytest.raises(SemEvalFormatError, match=r"subtask-2-annotations.txt, line 2, field 'narratives': label "
                                                 r"'URW: discrediting Ukraine' differs only in case from 'URW: "
                                                 r"Discrediting Ukraine' \(line 1\)"):
        load_semeval(root)
    articles, report = load_semeval(root, on_error="skip", return_report=True)
    assert len(articles) == 1 and report.skipped["label outside the taxonomy"] == 1


def test_subnarrative_without_its_narrative_is_an_error(tmp_path):
    root = make_corpus(tmp_path, subtask2=["EN_CC_000002.txt\tOther\tCC: Downplaying climate change: Other", "EN_UA_000001.txt\tOther\tOther"])
    with pytest.raises(SemEvalFormatError, match="belongs to narrative 'CC: Downplaying climate change', which the narratives column lacks"):
        load_semeval(root)


def test_duplicate_article_across_languages(tmp_path):
    root = make_corpus(tmp_path)
    (root / "FR" / "raw-documents").mkdir(parents=True)
    (root / "FR" / "raw-documents" / "EN_CC_000002.txt").write_text("Encore.\n", encoding="utf-8")
    with pytest.raises(SemEvalFormatError, match="article id 'EN_CC_000002.txt' also occurs in language 'EN'"):
        load_semeval(root, languages=("EN", "FR"))


def test_missing_folders_and_unlabelled_release(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder for language 'EN'"):
        load_semeval(tmp_path)
    root = make_corpus(tmp_path)
    (root / "EN" / "subtask-1-annotations.txt").unlink()
    (root / "EN" / "subtask-2-annotations.txt").unlink()
    articles = load_semeval(root)  # an unlabelled (test) release
    assert articles["narratives"] == [None, None] and articles["has_entity_annotations"] == [False, False]


def test_undecodable_article_and_bad_taxonomy_files(tmp_path):
    root = make_corpus(tmp_path, subtask1=[], subtask2=[])
    (root / "EN" / "raw-documents" / "EN_CC_000009.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(SemEvalFormatError, match="EN_CC_000009.txt: article is not valid UTF-8"):
        load_semeval(root)
    taxonomy = tmp_path / "taxonomy"
    taxonomy.mkdir()
    (taxonomy / "taxonomy_subtask1_2.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="taxonomy_subtask1_2.json: not valid JSON"):
        load_narrative_taxonomy(taxonomy)
    (taxonomy / "taxonomy_subtask1_2.json").write_text(
        '{"subtask1_entity_roles": {"Protagonist": ["Hero"]}, "subtask2_narratives": {}}', encoding="utf-8"
    )
    with pytest.raises(ValueError, match="'subtask1_entity_roles' differs from the fixed task taxonomy"):
        load_narrative_taxonomy(taxonomy)


@pytest.mark.parametrize("name", ["subtask-1-annotations.txt", "subtask-2-annotations.txt"])
@pytest.mark.parametrize("content", [b"", b"\r\n\r\n"], ids=["0-byte", "blank-lines"])
def test_empty_annotation_file_is_an_error_or_a_counted_skip(tmp_path, name, content):
    root = make_corpus(tmp_path)
    (root / "EN" / name).write_bytes(content)
    with pytest.raises(SemEvalFormatError, match=f"{name}: annotation file is empty"):
        load_semeval(root)
    articles, report = load_semeval(root, on_error="skip", return_report=True)
    assert report.skipped == {"empty annotation file": 1} and name in report.problems[0]
    assert len(articles) == 2 and "empty annotation file" in articles.info.description
    if name.startswith("subtask-1"):
        assert report.mentions == 0 and report.articles_without_narratives == 0
    else:
        assert report.articles_without_narratives == 2 and report.mentions == 2


def test_article_without_a_subtask2_line_is_an_error_or_a_counted_skip(tmp_path):
    root = make_corpus(tmp_path, subtask2=["EN_CC_000002.txt\tOther\tOther"])
    with pytest.raises(SemEvalFormatError, match=r"raw-documents/EN_UA_000001.txt: article has no line in .*subtask-2-annotations.txt"):
        load_semeval(root)
    articles, report = load_semeval(root, on_error="skip", return_report=True)
    assert articles["id"] == ["EN_CC_000002.txt"] and report.skipped == {"article without a subtask-2 line": 1}
    assert report.mentions == 0  # the dropped article's mentions go with it


def test_stray_files_in_raw_documents_are_skipped_and_counted(tmp_path, caplog):
    root = make_corpus(tmp_path)
    raw = root / "EN" / "raw-documents"
    (raw / "notes.md").write_text("my notes\n", encoding="utf-8")
    (raw / "EN_XX_000003.txt").write_text("no domain\n", encoding="utf-8")
    (raw / "my_notes.txt").write_text("not named like an article\n", encoding="utf-8")
    (raw / "old").mkdir()
    with caplog.at_level("WARNING", logger="data_prep.semeval"):
        articles, report = load_semeval(root, return_report=True)  # also with on_error="raise": not articles
    assert sorted(articles["id"]) == ["EN_CC_000002.txt", "EN_UA_000001.txt"] and set(articles["domain"]) == {"URW", "CC"}
    assert report.skipped == {"stray file": 4} and report.articles == 2
    assert sum("notes.md: not an article" in r.getMessage() for r in caplog.records) == 1
    assert "stray file" in articles.info.description


def test_byte_order_marks_do_not_shift_offsets(tmp_path):
    root = make_corpus(tmp_path, articles={"EN_UA_000001.txt": "\ufeff" + GOOD_TEXT, "EN_CC_000002.txt": "Greta spoke.\n"})
    for name in ("subtask-1-annotations.txt", "subtask-2-annotations.txt"):
        path = root / "EN" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    articles, report = load_semeval(root, return_report=True)
    row = articles[1] if articles[1]["id"] == "EN_UA_000001.txt" else articles[0]
    assert row["text"] == GOOD_TEXT and [m["text"] for m in row["mentions"]] == ["Putin", "NATO"]
    assert report.articles_with_byte_order_mark == 1 and not report.skipped


def test_sample_still_loads_identically():
    articles, report = load_semeval(shared_data_path(*SAMPLE), return_report=True)
    assert len(articles) == 24 and report.mentions == 63 and not report.skipped


def test_article_ids_of_other_languages_load_with_their_domain(tmp_path):
    """Other languages' releases name files PT_230.txt (no domain) or RU-URW-1004.txt: they are articles. The domain
    comes from the id alone: where it names none, it is None (the gold labels must not choose a domain's articles)."""
    root = make_corpus(tmp_path, subtask1=[], articles={"PT_230.txt": "Texto.\n", "RU-URW-1004.txt": "Текст.\n",
                                                        "BG_670.txt": "Текст.\n"},
                       subtask2=["PT_230.txt\tCC: Amplifying Climate Fears;URW: Discrediting Ukraine\t"
                                 "CC: Amplifying Climate Fears: Other;URW: Discrediting Ukraine: Other",
                                 "RU-URW-1004.txt\tOther\tOther", "BG_670.txt\tOther\tOther"])
    articles, report = load_semeval(root, return_report=True)
    assert dict(zip(articles["id"], articles["domain"])) == {"BG_670.txt": None, "PT_230.txt": None, "RU-URW-1004.txt": "URW"}
    assert report.skipped == {} and report.articles_with_labels_of_other_domain == []
