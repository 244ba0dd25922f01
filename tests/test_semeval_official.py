"""SemEval-2025 Task 10 official formats both ways, the official measures, the scorer and the submit command."""

import json
import os
import random
import shutil

import numpy as np
import pytest
from sklearn import metrics

from conftest import shared_data_path
from data_prep.semeval import SemEvalFormatError, load_semeval, read_semeval_articles
from data_prep.semeval_official import (
    MentionLine,
    NarrativeLine,
    Submission,
    read_subtask1,
    submission_from_articles,
    submission_from_predictions,
    task_roles,
    utf16_span,
)
from data_prep.semeval_official_metrics import METRIC_NAMES, load_official_classes, official_metrics, samples_f1
from data_prep.semeval_official_metrics import main as score_main
from data_prep.semeval_submit import main as submit_main
from data_prep.tasks import entity_framing_task, narrative_task
from data_prep.taxonomy import NarrativeTaxonomy, load_narrative_taxonomy, write_narrative_taxonomy

N1, N2 = "URW: Praise of Russia", "URW: Discrediting Ukraine"
S1, S2 = f"{N1}: Russia is a guarantor of peace", f"{N2}: Ukraine is a puppet"
C1 = "CC: Criticism of institutions"
C1S = f"{C1}: Criticism of the EU"
TAXONOMY = NarrativeTaxonomy.from_labels([N1, N2, C1], [S1, S2, C1S, f"{N1}: Other"])


# ------------------------------------------------------------------------------------------ offsets, round trips
def test_utf16_span_counts_surrogate_pairs_and_is_inclusive():
    text = "\U0001F600 Bill Gates \U0001F30D met the BBC."
    start = text.index("Bill")
    assert utf16_span(text, start, start + 10) == (3, 12)  # the emoji is 2 UTF-16 units, 1 Python character
    bbc = text.index("BBC")
    assert utf16_span(text, bbc, bbc + 3) == (bbc + 2, bbc + 4)
    assert utf16_span("plain", 0, 5) == (0, 4)
    with pytest.raises(ValueError, match="outside a text of 5"):
        utf16_span("plain", 2, 9)


def test_written_gold_loads_back_identically_with_non_bmp_text(tmp_path):
    text = "\U0001F600\U0001F600 Bill Gates said the BBC lied. \u00e9 Greta \U0001F30D Thunberg?\r\nEnd."
    spans = [("Bill Gates", "Antagonist", ["Deceiver", "Corrupt"]), ("Greta \U0001F30D Thunberg", "Protagonist", ["Rebel"])]
    mentions = []
    for mention, main, fine in spans:
        start = text.index(mention)
        mentions.append({"start": start, "end": start + len(mention), "text": mention, "main_role": main, "fine_roles": fine})
    article = {"id": "EN_UA_000001.txt", "text": text, "mentions": mentions, "narratives": [N1], "subnarratives": [S1]}
    submission = submission_from_articles([article])
    assert [line.start for line in submission.mentions] == [text.index("Bill") + 2, text.index("Greta") + 2]
    (tmp_path / "EN" / "raw-documents").mkdir(parents=True)
    (tmp_path / "EN" / "raw-documents" / article["id"]).write_bytes(text.encode("utf-8"))
    submission.write(tmp_path / "EN")
    [row] = load_semeval(tmp_path).to_list()
    assert row["mentions"] == mentions
    assert (row["narratives"], row["subnarratives"]) == ([N1], [S1])
    assert Submission.read(tmp_path / "EN") == submission


def test_sample_round_trip_gives_the_organisers_lines_back(tmp_path):
    sample = shared_data_path("semeval2025_task10_sample")
    rows, _ = read_semeval_articles(sample)
    submission = submission_from_articles(rows)
    emoji_row = next(r for r in rows if r["id"] == "EN_UA_002668.txt")
    emoji_lines = [line for line in submission.mentions if line.article_id == "EN_UA_002668.txt"]
    python_starts = [m["start"] for m in emoji_row["mentions"]]
    assert emoji_lines and [line.start for line in emoji_lines] != python_starts  # UTF-16 offsets drift after emoji
    original = read_subtask1(sample / "EN" / "subtask-1-annotations.txt")
    assert {(l.key, l.mention, l.main_role, frozenset(l.fine_roles)) for l in original} == {
        (l.key, l.mention, l.main_role, frozenset(l.fine_roles)) for l in submission.mentions
    }
    shutil.copytree(sample / "EN" / "raw-documents", tmp_path / "EN" / "raw-documents")
    shutil.copytree(sample / "taxonomy", tmp_path / "taxonomy")
    submission.write(tmp_path / "EN")
    reloaded, _ = read_semeval_articles(tmp_path)
    assert reloaded == rows


def test_readers_name_file_line_and_field(tmp_path):
    path = tmp_path / "subtask-1-annotations.txt"
    path.write_text("EN_UA_1.txt\tBBC\t3\t5\tAntagonist\tSpy\r\nEN_UA_1.txt\tBBC\tx\t5\tAntagonist\r\n", encoding="utf-8")
    with pytest.raises(SemEvalFormatError, match=r"subtask-1-annotations.txt, line 2, field 'start'"):
        read_subtask1(path)
    path.write_text("EN_UA_1.txt\tBBC\t3\t5\tAntagonist\tSpy\nEN_UA_1.txt\tBBC\t3\t5\tInnocent\tVictim\n")
    with pytest.raises(SemEvalFormatError, match="line 2.*same mention span as line 1"):
        read_subtask1(path)
    (tmp_path / "st2").mkdir()
    (tmp_path / "st2" / "subtask-2-annotations.txt").write_text("EN_UA_1.txt\tOther\n")
    with pytest.raises(SemEvalFormatError, match="subtask-2-annotations.txt, line 1: expected 3 tab-separated fields"):
        Submission.read(tmp_path / "st2")
    with pytest.raises(FileNotFoundError, match="neither"):
        Submission.read(tmp_path / "nothing")
    # a label with spaces around it is no class to the organisers' scorer (which splits on ';' as it is): refused
    (tmp_path / "st2" / "subtask-2-annotations.txt").write_text("EN_UA_1.txt\tURW: A; URW: B\tOther\n")
    with pytest.raises(SemEvalFormatError, match="line 1, field 'narratives': label ' URW: B' has white space"):
        Submission.read(tmp_path / "st2")
    path.write_text("EN_UA_1.txt\tBBC\t3\t5\tAntagonist\t Spy\n")
    with pytest.raises(SemEvalFormatError, match="line 1, field 'roles': role ' Spy' has white space"):
        read_subtask1(path)


def test_submission_inputs_are_read_as_the_loader_reads_them(tmp_path, caplog):
    from data_prep.semeval_submit import attach_mentions, read_documents

    documents = tmp_path / "raw-documents"
    documents.mkdir()
    # A byte order mark before the text: offsets count from the first character after it, as the loader reads it.
    (documents / "EN_UA_1.txt").write_text("\ufeffPutin met Zelensky.", encoding="utf-8")
    (documents / "notes.md").write_text("not an article", encoding="utf-8")  # would get a line the scorer rejects
    with caplog.at_level("WARNING"):
        articles = read_documents(documents)
    assert [a["id"] for a in articles] == ["EN_UA_1.txt"] and articles[0]["text"].startswith("Putin")
    assert "notes.md" in caplog.text
    mentions = tmp_path / "mentions.txt"
    mentions.write_text("\ufeffEN_UA_1.txt\tPutin\t0\t4\n", encoding="utf-8")  # a marked mentions file too
    assert attach_mentions(articles, mentions) == 1
    mention = articles[0]["mentions"][0]
    assert articles[0]["text"][mention["start"]:mention["end"]] == "Putin"


def test_other_languages_article_names_are_documents_and_a_domainless_id_is_decoded_over_both_domains(tmp_path):
    from data_prep.semeval_official import constrain_to_domain
    from data_prep.semeval_submit import read_documents

    documents = tmp_path / "raw-documents"
    documents.mkdir()
    for name in ("PT_230.txt", "RU-URW-1004.txt"):
        (documents / name).write_text("Texto da notícia.", encoding="utf-8")
    assert [a["id"] for a in read_documents(documents)] == ["PT_230.txt", "RU-URW-1004.txt"]
    labels = ["Other", "URW: Discrediting Ukraine", "CC: Amplifying Climate Fears"]
    scored = {"scores": {"Other": 0.1, "URW: Discrediting Ukraine": 0.9, "CC: Amplifying Climate Fears": 0.8}}
    assert constrain_to_domain("RU-URW-1004.txt", scored, labels, [0.5] * 3) == ["URW: Discrediting Ukraine"]
    assert constrain_to_domain("PT_230.txt", scored, labels, [0.5] * 3) == labels[1:]


# ------------------------------------------------------------------------------------------ predictions -> lines
def _article(article_id="EN_UA_000001.txt", text="Putin met Zelensky in Kyiv.", spans=()):
    return {"id": article_id, "text": text, "mentions": [{"start": s, "end": e} for s, e in spans]}


def test_task_roles_are_read_from_labels():
    specs = [
        entity_framing_task("fine").spec,
        entity_framing_task("coarse").spec,
        narrative_task(TAXONOMY, "fine").spec,
        narrative_task(TAXONOMY, "coarse", domain="URW").spec,
        {"name": "topic", "level": "document", "labels": ["a", "b"]},
    ]
    roles = task_roles(specs)
    assert (roles.entity_fine, roles.entity_coarse) == ("entity_framing_fine", "entity_framing_coarse")
    assert roles.narrative_fine == ["narratives_fine"] and roles.narrative_coarse == ["narratives_coarse_urw"]
    assert roles.parents["narratives_fine"][S1] == N1 and roles.domains["narratives_coarse_urw"] == "URW"
    with pytest.raises(ValueError, match="both predict entity_fine"):
        task_roles([entity_framing_task("fine").spec, entity_framing_task("fine", name="other").spec])


def test_narrative_lines_respect_the_hierarchy():
    fine, coarse = narrative_task(TAXONOMY, "fine").spec, narrative_task(TAXONOMY, "coarse").spec
    cases = [
        ({"narratives_fine": [S1, "Other"]}, [fine], ((N1,), (S1,))),  # Other dropped beside a domain label
        ({"narratives_fine": []}, [fine], (("Other",), ("Other",))),
        ({"narratives_coarse": [N2]}, [coarse], ((N2,), (f"{N2}: Other",))),
        ({"narratives_fine": [S1], "narratives_coarse": [N2, N1]}, [fine, coarse], ((N2, N1), (S1, f"{N2}: Other"))),
        ({"narratives_fine": ["Other"]}, [fine], (("Other",), ("Other",))),
    ]
    for prediction, specs, expected in cases:
        [line] = submission_from_predictions([_article()], [prediction], specs).narratives
        assert (line.narratives, line.subnarratives) == expected, prediction


def test_per_domain_head_is_ignored_on_articles_of_the_other_domain():
    urw, cc = narrative_task(TAXONOMY, "fine", "URW").spec, narrative_task(TAXONOMY, "fine", "CC").spec
    prediction = {urw["name"]: [S2], cc["name"]: [C1S]}
    lines = submission_from_predictions([_article(), _article("EN_CC_000002.txt")], [prediction] * 2, [urw, cc]).narratives
    assert [line.subnarratives for line in lines] == [(S2,), (C1S,)]


def test_entity_lines_one_main_role_and_official_offsets():
    fine = entity_framing_task("fine").spec
    text = "\U0001F600 Putin met Zelensky."
    article = _article(text=text, spans=[(2, 7), (12, 20)])
    scored = {
        "prediction": ["Guardian", "Tyrant", "Instigator"],
        "scores": {"Guardian": 0.6, "Tyrant": 0.9, "Instigator": 0.7, "Victim": 0.1},
    }
    below = {"prediction": [], "scores": {"Guardian": 0.2, "Victim": 0.4, "Tyrant": 0.1}}
    lines = submission_from_predictions([article], [{fine["name"]: [scored, below]}], [fine], "thresholded").mentions
    assert lines == [
        MentionLine(article["id"], "Putin", 3, 7, "Antagonist", ("Tyrant", "Instigator")),
        MentionLine(article["id"], "Zelensky", 13, 20, "Innocent", ("Victim",)),
    ]
    # The default ("best") keeps one fine role per mention: the best-scoring one.
    best = submission_from_predictions([article], [{fine["name"]: [scored, below]}], [fine]).mentions
    assert [(l.start, l.end, l.main_role, l.fine_roles) for l in best] == [(3, 7, "Antagonist", ("Tyrant",)),
                                                                            (13, 20, "Innocent", ("Victim",))]
    with pytest.raises(ValueError, match="fine_roles must be one of"):
        submission_from_predictions([article], [{fine["name"]: [scored, below]}], [fine], "top3")
    # Plain labels: the majority main role decides; nothing above threshold and no scores is an error.
    plain = submission_from_predictions([article], [{fine["name"]: [["Guardian", "Tyrant", "Spy"], ["Victim"]]}], [fine])
    assert [(l.main_role, l.fine_roles) for l in plain.mentions] == [("Antagonist", ("Tyrant", "Spy")), ("Innocent", ("Victim",))]
    with pytest.raises(ValueError, match="mention 1: no fine role above its threshold"):
        submission_from_predictions([article], [{fine["name"]: [["Spy"], []]}], [fine])
    # A coarse head decides the main role; fine roles of other main roles are dropped.
    coarse = entity_framing_task("coarse").spec
    both = submission_from_predictions(
        [article], [{fine["name"]: [["Guardian", "Tyrant"], ["Spy"]], coarse["name"]: ["Protagonist", "Innocent"]}], [fine, coarse]
    )
    assert [(l.main_role, l.fine_roles) for l in both.mentions] == [("Protagonist", ("Guardian",)), ("Innocent", ())]
    # With scores from both heads, "best" takes the pair with the highest P(fine) x P(main): a confident fine role
    # outweighs a coarse head that leans the other way (0.9 x 0.45 > 0.1 x 0.55), and a plain coarse label confines
    # the choice to its fine roles.
    leaning = {"prediction": "Protagonist", "scores": {"Antagonist": 0.45, "Protagonist": 0.55, "Innocent": 0.0}}
    sure = {"prediction": ["Tyrant"], "scores": {"Tyrant": 0.9, "Guardian": 0.1, "Victim": 0.05}}
    joint = submission_from_predictions([article], [{fine["name"]: [sure, sure], coarse["name"]: [leaning, "Innocent"]}],
                                        [fine, coarse])
    assert [(l.main_role, l.fine_roles) for l in joint.mentions] == [("Antagonist", ("Tyrant",)), ("Innocent", ("Victim",))]
    unsure = {"prediction": [], "scores": {"Tyrant": 0.3, "Guardian": 0.25, "Victim": 0.05}}
    sway = {"prediction": "Protagonist", "scores": {"Antagonist": 0.2, "Protagonist": 0.8, "Innocent": 0.0}}
    swayed = submission_from_predictions([article], [{fine["name"]: [unsure, unsure], coarse["name"]: [sway, sway]}],
                                         [fine, coarse])
    assert [(l.main_role, l.fine_roles) for l in swayed.mentions] == [("Protagonist", ("Guardian",))] * 2
    with pytest.raises(ValueError, match="2 mentions but 1 entity predictions"):
        submission_from_predictions([article], [{fine["name"]: [["Spy"]]}], [fine])


# ------------------------------------------------------------------------------------------ metrics
def _organisers_samples_f1(gold, pred, classes):
    """The released subtask-2 scorer's definition: per article, binary F1 of the one-hot rows, then mean/std."""
    scores = []
    for true_labels, predicted_labels in zip(gold, pred):
        y_true = [int(c in true_labels) for c in classes]
        y_pred = [int(c in predicted_labels) for c in classes]
        scores.append(metrics.f1_score(y_true, y_pred, zero_division=0))
    return float(np.mean(scores)), float(np.std(scores))


def test_samples_f1_matches_the_organisers_definition_and_sklearn():
    rng = random.Random(0)
    classes = [f"L{i}" for i in range(8)]
    gold = [set(rng.sample(classes, rng.randint(0, 3))) for _ in range(60)]
    pred = [set(rng.sample(classes + ["unknown"], rng.randint(0, 4))) for _ in range(60)]
    gold[0], pred[0] = set(), set()  # both empty: F1 = 0 (zero_division=0)
    mean, std = samples_f1(gold, pred, classes)
    assert (mean, std) == pytest.approx(_organisers_samples_f1(gold, pred, classes))
    assert 0.05 < mean < 0.6 and std > 0
    hot = lambda sets: [[int(c in s) for c in classes] for s in sets]  # noqa: E731
    assert mean == pytest.approx(metrics.f1_score(hot(gold), hot(pred), average="samples", zero_division=0))
    assert samples_f1([{"a", "b"}], [{"a"}]) == (pytest.approx(2 / 3), 0.0)


def test_official_metrics_align_by_key_and_compare_role_sets():
    gold = Submission(
        mentions=[
            MentionLine("A", "x", 0, 1, "Antagonist", ("Deceiver", "Corrupt")),
            MentionLine("A", "y", 5, 6, "Protagonist", ("Guardian",)),
            MentionLine("B", "z", 0, 3, "Innocent", ("Victim",)),
        ],
        narratives=[NarrativeLine("A", (N1,), (S1,)), NarrativeLine("B", ("Other",), ("Other",))],
    )
    pred = Submission(
        mentions=[
            MentionLine("B", "z", 0, 3, "Innocent", ("Victim", "Exploited")),
            MentionLine("A", "y", 5, 6, "Antagonist", ("Spy",)),
            MentionLine("A", "x", 0, 1, "Antagonist", ("Corrupt", "Deceiver")),  # same set, other order: a match
        ],
        narratives=[NarrativeLine("B", ("Other",), ("Other",)), NarrativeLine("A", (N1, N2), (S1, f"{N2}: Other"))],
    )
    scores = official_metrics(gold, pred)
    assert list(scores) == list(METRIC_NAMES)
    assert scores["fine_role_exact_match"] == pytest.approx(1 / 3)
    assert scores["main_role_accuracy"] == pytest.approx(2 / 3)
    assert scores["narratives_samples_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["subnarratives_samples_f1"] == pytest.approx((2 / 3 + 1) / 2)
    # With the taxonomy as class list, labels outside it are ignored ("N2: Other" is not in TAXONOMY).
    assert official_metrics(gold, pred, TAXONOMY)["subnarratives_samples_f1"] == pytest.approx(1.0)
    assert np.isnan(official_metrics(Submission(narratives=gold.narratives), pred)["main_role_accuracy"])
    with pytest.raises(ValueError, match="subtask 1: the prediction lacks 1 gold entries"):
        official_metrics(gold, Submission(mentions=pred.mentions[:2], narratives=pred.narratives))
    # What the organisers' scorer refuses is refused, naming the line: unknown role names, another mention text.
    for bad, message in [(MentionLine("B", "z", 0, 3, "Villain", ("Victim",)), "span 0-3: unknown main role 'Villain'"),
                         (MentionLine("B", "z", 0, 3, "Innocent", ("Victim", "Hero")), r"unknown fine role\(s\) \['Hero'\]"),
                         (MentionLine("B", "zz", 0, 3, "Innocent", ("Victim",)), "predicted mention 'zz' differs from the gold 'z'")]:
        with pytest.raises(ValueError, match=f"subtask 1, article B, {message}" if "span" in message else message):
            official_metrics(gold, Submission(mentions=[bad, *pred.mentions[1:]], narratives=pred.narratives))


def test_official_class_lists_come_from_the_organisers_files(tmp_path):
    write_narrative_taxonomy(TAXONOMY, tmp_path)
    narratives, subnarratives = load_official_classes(tmp_path)
    assert set(narratives) == {"Other", N1, N2, C1} and S1 in subnarratives
    # The organisers' flat list wins over the JSON (the English release's JSON adds 3 subnarratives to it).
    (tmp_path / "subtask2_subnarratives.txt").write_text(f"Other\n{S1}\n", encoding="utf-8")
    assert load_official_classes(tmp_path)[1] == ["Other", S1]
    gold = Submission(narratives=[NarrativeLine("A", (N2,), (S2,))])
    assert official_metrics(gold, gold, load_official_classes(tmp_path))["subnarratives_samples_f1"] == 0.0
    for name in ("subtask2_narratives.txt", "subtask2_subnarratives.txt"):
        (tmp_path / name).unlink()
    assert load_official_classes(tmp_path) == (["Other", *TAXONOMY.narratives()], ["Other", *TAXONOMY.subnarratives()])


def test_scorer_command(tmp_path, capsys):
    gold = Submission(
        mentions=[MentionLine("A", "x", 0, 1, "Antagonist", ("Spy",))], narratives=[NarrativeLine("A", (N1,), (S1,))]
    )
    pred = Submission(
        mentions=[MentionLine("A", "x", 0, 1, "Antagonist", ("Spy", "Tyrant"))], narratives=[NarrativeLine("A", (N1,), (S1,))]
    )
    gold.write(tmp_path / "gold" / "EN")
    pred.write(tmp_path / "pred")
    assert score_main(["--gold", str(tmp_path / "gold"), "--pred", str(tmp_path / "pred")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["fine_role_exact_match"] == 0.0 and scores["main_role_accuracy"] == 1.0
    assert scores["narratives_samples_f1"] == 1.0 and scores["subnarratives_samples_f1_std"] == 0.0
    Submission(narratives=[NarrativeLine("B", ("Other",), ("Other",))]).write(tmp_path / "other")
    assert score_main(["--gold", str(tmp_path / "gold"), "--pred", str(tmp_path / "other")]) == 2
    assert "subtask 2: the prediction lacks 1 gold entries ['A']" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ submit command
SAMPLE_ARTICLES = ("EN_UA_002668.txt", "EN_CC_100016.txt", "EN_UA_103011.txt")  # emoji; CC; URW id with CC labels


def _release(source, folder):
    """A SemEval-layout release: the shared sample, or (always available) a synthetic one whose articles start with emoji."""
    if source == "sample":
        return shared_data_path("semeval2025_task10_sample"), SAMPLE_ARTICLES
    from data_prep.synthetic import SyntheticConfig, generate_synthetic_corpus

    config = SyntheticConfig(out=str(folder), train_articles=4, dev_articles=0, emoji_rate=1.0, entity_annotation_rate=1.0)
    release = generate_synthetic_corpus(config)
    return release, tuple(sorted(p.name for p in (release / "EN" / "raw-documents").iterdir())[:3])


@pytest.fixture(params=["sample", "synthetic"])
def inputs(request, tmp_path, tiny_backbone_dir):
    """3 articles (non-BMP characters before mentions), their gold lines, a mentions file and a saved tiny model."""
    import torch
    from transformers import AutoTokenizer

    from modeling import MultiTaskModel

    release, articles = _release(request.param, tmp_path / "release")
    documents = tmp_path / "EN" / "raw-documents"
    documents.mkdir(parents=True)
    for name in articles:
        shutil.copy(release / "EN" / "raw-documents" / name, documents / name)
    shutil.copytree(release / "taxonomy", tmp_path / "taxonomy")
    rows, _ = read_semeval_articles(release)
    gold = submission_from_articles(r for r in rows if r["id"] in articles)
    assert any(len(r["text"].encode("utf-16-le")) // 2 != len(r["text"]) for r in rows if r["id"] in articles)
    gold.write(tmp_path / "gold")
    mentions = tmp_path / "subtask-1-entity-mentions.txt"
    lines = [f"{line.article_id}\t{line.mention}\t{line.start}\t{line.end}\r\n" for line in gold.mentions]
    mentions.write_text("".join(lines), encoding="utf-8")

    taxonomy = load_narrative_taxonomy(release / "taxonomy")
    specs = [entity_framing_task("fine").spec, narrative_task(taxonomy, "fine").spec]
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    MultiTaskModel.from_backbone(tiny_backbone_dir, specs, max_length=128, stride=32).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_backbone_dir).save_pretrained(model_dir)
    return tmp_path, documents, mentions, gold, model_dir, articles


def test_submit_end_to_end_and_score(inputs, capsys):
    root, documents, mentions, gold, saved_model, articles = inputs
    out = root / "EN"
    command = ["--model", str(saved_model), "--documents", str(documents), "--mentions", str(mentions), "--out", str(out)]
    assert submit_main(command) == 0
    written = Submission.read(out)
    assert [l.key for l in written.mentions] == [l.key for l in gold.mentions]
    assert sorted(l.article_id for l in written.narratives) == sorted(articles)
    # The written files are valid annotations: the loader (taxonomy, role hierarchy, mention texts) accepts them.
    rows = load_semeval(root).to_list()
    assert {r["id"] for r in rows if r["has_entity_annotations"]} == {l.article_id for l in gold.mentions}
    capsys.readouterr()
    assert score_main(["--gold", str(root / "gold"), "--pred", str(out), "--taxonomy", str(root / "taxonomy")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert all(0.0 <= scores[name] <= 1.0 for name in METRIC_NAMES)
    # --fine-roles thresholded writes every fine role above threshold (the random model passes many); the default
    # ("best") writes one per mention, more only on an exact tie
    assert submit_main([*command[:-1], str(root / "thresholded"), "--fine-roles", "thresholded"]) == 0
    thresholded = Submission.read(root / "thresholded")
    assert [l.key for l in thresholded.mentions] == [l.key for l in written.mentions]
    assert max(len(l.fine_roles) for l in thresholded.mentions) > max(len(l.fine_roles) for l in written.mentions) >= 1


def test_submit_keeps_narratives_in_the_article_domain_unless_told_not_to(inputs):
    """The tiny random model spreads its narratives over both domains; the default submission keeps, per article,
    only its own domain's labels and `Other`; --no-domain-constraint writes the plain predictions."""
    from data_prep.taxonomy import domain_of_article_id, domain_of_label

    root, documents, mentions, _, saved_model, _ = inputs
    command = ["--model", str(saved_model), "--documents", str(documents), "--mentions", str(mentions)]
    assert submit_main([*command, "--out", str(root / "constrained")]) == 0
    assert submit_main([*command, "--out", str(root / "plain"), "--no-domain-constraint"]) == 0

    def foreign(folder):
        return sum(1 for line in Submission.read(folder).narratives
                   for label in (*line.narratives, *line.subnarratives)
                   if domain_of_label(label) not in (None, domain_of_article_id(line.article_id)))

    assert foreign(root / "constrained") == 0
    assert foreign(root / "plain") > 0  # else this test could not fail


def test_submit_decodes_parent_first_with_the_models_threshold_unless_told_not_to(inputs, tmp_path_factory):
    """A stored narrative_parent_threshold above 1 keeps no narrative: every article is `Other`; --no-parent-first
    ignores it (the random model passes many subnarratives)."""
    from modeling import MultiTaskModel

    root, documents, mentions, _, saved_model, _ = inputs
    model_dir = tmp_path_factory.mktemp("parent_first")
    shutil.copytree(saved_model, model_dir, dirs_exist_ok=True)
    model = MultiTaskModel.from_pretrained(model_dir)
    model.config.narrative_parent_threshold = 1.01
    model.config.save_pretrained(model_dir)
    command = ["--model", str(model_dir), "--documents", str(documents), "--mentions", str(mentions)]
    assert submit_main([*command, "--out", str(root / "parent_first")]) == 0
    assert submit_main([*command, "--out", str(root / "flat"), "--no-parent-first"]) == 0
    assert {(l.narratives, l.subnarratives) for l in Submission.read(root / "parent_first").narratives} == {(("Other",), ("Other",))}
    assert any(l.narratives != ("Other",) for l in Submission.read(root / "flat").narratives)


def test_submit_validates_inputs_before_loading_the_model(inputs, tmp_path_factory, capsys):
    root, documents, mentions, _, saved_model, _ = inputs
    broken_model = tmp_path_factory.mktemp("config_only")
    shutil.copy(saved_model / "config.json", broken_model / "config.json")  # no weights: loading it would fail
    base = ["--model", str(broken_model), "--out", str(root / "out")]

    def error(*args):
        assert submit_main([*base, *args]) == 2
        return capsys.readouterr().err

    missing = error("--documents", str(root / "raw-documents-missing"), "--mentions", str(mentions))
    assert "raw-documents-missing: folder of raw documents not found" in missing
    assert "has an entity-framing task: give --mentions" in error("--documents", str(documents))
    lines = mentions.read_text(encoding="utf-8").splitlines()
    bad = lines[0].split("\t")
    bad[3] = "99999"
    (root / "bad.txt").write_text("\n".join([lines[1], "\t".join(bad)]) + "\n", encoding="utf-8")
    out_of_range = error("--documents", str(documents), "--mentions", str(root / "bad.txt"))
    assert "bad.txt, line 2, field 'start/end': span" in out_of_range
    (documents / "EN_UA_999999.txt").write_text("  \n", encoding="utf-8")
    assert "EN_UA_999999.txt: document is empty" in error("--documents", str(documents), "--mentions", str(mentions))
    (documents / "EN_UA_999999.txt").unlink()
    (root / "empty.txt").write_text("\r\n", encoding="utf-8")
    assert "empty.txt: no mention lines" in error("--documents", str(documents), "--mentions", str(root / "empty.txt"))
    (root / "a_file").write_text("not a folder", encoding="utf-8")
    named = ["--documents", str(documents), "--mentions", str(mentions)]
    assert "a_file is a file" in error(*named, "--out", str(root / "a_file"))  # the last --out wins
    assert "--batch-size must be >= 1" in error(*named, "--batch-size", "0")
    # A folder without a tokenizer is named before the weights are loaded ...
    assert "no tokenizer could be loaded from the folder" in error(*named)
    # ... and one with it reaches the model, whose missing weights are then named.
    for name in os.listdir(saved_model):
        if name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(saved_model / name, broken_model / name)
    assert "no weights file" in error(*named)
    # A config.json that is JSON but not a model's is named with its field.
    (broken_model / "config.json").write_text("[1, 2]", encoding="utf-8")
    assert "config.json: no 'tasks' field" in error(*named)
    (broken_model / "config.json").write_text('{"tasks": "narratives"}', encoding="utf-8")
    assert "config.json: field 'tasks' must be a list of task specs" in error(*named)


def test_the_submit_command_never_asks_to_trust_the_models_copied_code(inputs, tmp_path):
    """In a fresh process the saved folder's model type is unknown to transformers until `modeling` is imported:
    reading the tokenizer first made transformers ask to run the folder's code (and run it on "y")."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    root, documents, mentions, _, saved_model, _ = inputs
    no_weights = tmp_path / "no_weights"
    shutil.copytree(saved_model, no_weights, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    command = [sys.executable, "-m", "data_prep.semeval_submit", "--model", str(no_weights), "--documents",
               str(documents), "--mentions", str(mentions), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                            cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "no weights file" in result.stderr, result.stderr[-2000:]
    assert "custom code" not in result.stdout + result.stderr


def test_submit_refuses_to_leave_an_earlier_runs_file_beside_its_own(inputs, tmp_path_factory, capsys):
    """A narratives-only model writing into a folder that holds an entity file from an earlier run would leave that
    file to be scored as its own: refused before the model loads, unless --keep-existing."""
    from modeling import MultiTaskModel

    root, documents, mentions, _, saved_model, _ = inputs
    narratives_only = tmp_path_factory.mktemp("narratives_only")
    model = MultiTaskModel.from_pretrained(saved_model)
    model.config.tasks = [t for t in model.config.tasks if t["level"] == "document"]
    model.config.save_pretrained(narratives_only)  # config only: a refusal must come before the weights are read
    out = root / "combined"
    out.mkdir()
    (out / "subtask-1-annotations.txt").write_text("earlier\n", encoding="utf-8")
    command = ["--model", str(narratives_only), "--documents", str(documents), "--out", str(out)]
    assert submit_main(command) == 2
    assert "holds subtask-1-annotations.txt from an earlier run" in capsys.readouterr().err
    assert submit_main([*command, "--keep-existing"]) == 2  # let through: it now fails on the missing tokenizer
    assert "no tokenizer could be loaded" in capsys.readouterr().err
    assert (out / "subtask-1-annotations.txt").read_text(encoding="utf-8") == "earlier\n"  # nothing touched


# ------------------------------------------------------------------------------------------ frozen probe
def test_probe_embeddings_average_windows(tiny_backbone_dir):
    from data_prep.semeval_official_probe import embed_articles

    short, long = "A short text.", " ".join(f"word{i}" for i in range(300))
    together = embed_articles([short, long], tiny_backbone_dir, window=64, batch_size=3)
    alone = embed_articles([short], tiny_backbone_dir, window=64)
    assert together.shape == (2, 32) and np.allclose(together[0], alone[0], atol=1e-5)
    assert not np.allclose(together[1], embed_articles([long[:40]], tiny_backbone_dir, window=64)[0])


def test_probe_cross_validation_and_all_other_floor(tmp_path):
    from data_prep.semeval_official_probe import run_probe

    sample = shared_data_path("semeval2025_task10_sample")
    rows, _ = read_semeval_articles(sample)
    cache = tmp_path / "embeddings.npy"
    np.save(cache, np.random.default_rng(0).normal(size=(len(rows), 16)))
    result = run_probe(sample, "unused: the cache holds the embeddings", folds=3, cache=cache)
    assert result["articles"] == len(rows) and result["folds"] == 3
    from sklearn.model_selection import KFold

    splits = KFold(3, shuffle=True, random_state=0).split(rows)
    other_share = [np.mean([rows[i]["narratives"] == ["Other"] for i in test]) for _, test in splits]
    assert result["all_other"]["narratives_samples_f1"]["folds"] == pytest.approx(other_share, abs=1e-4)
    for probe in ("fine_probe", "coarse_probe"):
        assert all(0.0 <= f <= 1.0 for f in result[probe]["subnarratives_samples_f1"]["folds"])
