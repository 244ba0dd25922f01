"""Synthetic SemEval-layout corpus (determinism, knobs, loadable) and the shift statistics / command."""

import hashlib
from pathlib import Path

import pytest
from conftest import shared_data_path

from data_prep import SyntheticConfig, generate_synthetic_corpus, jensen_shannon_divergence, load_semeval
from data_prep import shift as shift_module


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed_and_says_synthetic(tmp_path):
    a = generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path / "a"), seed=7, train_articles=30, dev_articles=6))
    b = generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path / "b"), seed=7, train_articles=30, dev_articles=6))
    c = generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path / "c"), seed=8, train_articles=30, dev_articles=6))
    assert digest(a) == digest(b) != digest(c)
    assert "SYNTHETIC" in (a / "README.md").read_text() and "SYNTHETIC" in (a / "taxonomy" / "taxonomy_subtask1_2.json").read_text()
    assert b"\r\n" in (a / "EN" / "subtask-2-annotations.txt").read_bytes()


def test_loads_like_the_real_release_with_both_domains_and_tasks(tmp_path):
    out = generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path / "s"), train_articles=60, dev_articles=10, emoji_rate=0.5))
    articles, report = load_semeval(out, return_report=True)
    dev = load_semeval(out / "dev")
    assert report.articles == 60 and len(dev) == 10 and not report.skipped
    assert report.articles_per_domain == {"URW": 30, "CC": 30} and report.articles_with_non_bmp_characters > 0
    assert report.mentions > 60 and report.articles_with_entity_annotations < 60
    ids = articles["id"]
    assert all(i.startswith(("EN_UA_", "EN_CC_")) for i in ids) and not set(ids) & set(dev["id"])
    assert any(n == ["Other"] for n in articles["narratives"])
    assert any(s.endswith(": Other") for subs in articles["subnarratives"] for s in subs)


def test_long_text_knob_gives_articles_beyond_512_tokens(tmp_path, minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    out = generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path / "l"), train_articles=20, dev_articles=0, long_text_fraction=1.0))
    articles = load_semeval(out)
    lengths = [len(tokenizer(t, verbose=False)["input_ids"]) for t in articles["text"]]
    assert min(lengths) > 512
    late = 0
    for text, mentions in zip(articles["text"], articles["mentions"]):
        offsets = tokenizer(text, return_offsets_mapping=True, verbose=False)["offset_mapping"]
        late += sum(sum(1 for s, e in offsets if e > s and e <= m["start"]) >= 511 for m in mentions)
    assert late > 0  # mentions beyond token 512 exist: windowing matters


def test_concept_shift_reuses_cues_with_other_labels(tmp_path):
    from data_prep.synthetic import _Design

    plain, shifted = _Design(SyntheticConfig(out="x")), _Design(SyntheticConfig(out="x", concept_shift=1.0))
    assert plain.role_cue["URW"] == plain.role_cue["CC"]
    assert sum(shifted.role_cue["URW"][r] != shifted.role_cue["CC"][r] for r in shifted.roles) == len(shifted.roles)
    cue_urw = {shifted.narrative_cue[n] for n in shifted.tree["URW"]}
    assert cue_urw == {shifted.narrative_cue[n] for n in shifted.tree["CC"]}
    assert not cue_urw & {plain.narrative_cue[n] for n in plain.tree["CC"]}


def test_jsd_bounds():
    assert jensen_shannon_divergence({"a": 1}, {"a": 5}) == 0.0
    assert jensen_shannon_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)


def test_shift_rises_with_lexical_knob(tmp_path, capsys):
    values = []
    for knob in (0.0, 0.5, 1.0):
        out = generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path / str(knob)), train_articles=40, dev_articles=0, lexical_shift=knob))
        report = shift_module.main(["--data_dir", str(out), "--no_embeddings"])
        values.append(report.token_jsd)
    assert values[0] < values[1] < values[2] and values[2] - values[0] > 0.3
    printed = capsys.readouterr().out
    assert "token JSD (base 2)" in printed and "entity_framing_fine: label-prior JSD" in printed


def test_shift_command_on_sample_domains(capsys):
    root = shared_data_path("semeval2025_task10_sample")
    report = shift_module.main(["--data_dir", str(root), "--max_length", "128"])
    assert (report.name_a, report.name_b) == ("CC", "URW")
    assert 0.1 < report.token_jsd < 0.9 and 0.05 < report.embedding_cosine_distance < 1.0
    narratives = next(t for t in report.tasks if t.task == "narratives_coarse")
    assert narratives.label_set_overlap < 0.5  # the domains' narratives differ
    assert "embedding cosine distance" in capsys.readouterr().out


def test_text_generator_is_seeded_and_plants_cues_in_both_backends():
    import numpy as np

    from data_prep.synthetic_text import TextGenerator

    vocabulary = ["alpha", "beta", "gamma", "delta"]
    for rng in (lambda: 7, lambda: np.random.default_rng(7)):
        first, second = TextGenerator(vocabulary, rng()), TextGenerator(vocabulary, rng())
        words = first.with_cues(first.words(20), ["CUE1", "CUE2"])
        assert words == second.with_cues(second.words(20), ["CUE1", "CUE2"])  # same seed, same text
        assert len(words) == 22 and words.index("CUE1") >= 0 and set(words) - {"CUE1", "CUE2"} <= set(vocabulary)
        sentence = first.sentence(3, 5, special=["ZETA"], share=1.0)
        assert sentence.startswith("Zeta") and sentence.endswith(".") and 3 <= len(sentence.split()) <= 5
        lengths = first.lengths(200, median=30, sigma=0.6, low=4, high=60)
        assert lengths.min() >= 4 and lengths.max() <= 60 and 24 <= np.median(lengths) <= 36
    with pytest.raises(ValueError, match="empty vocabulary"):
        TextGenerator([])


def test_regenerating_into_a_corpus_folder_replaces_it_and_a_foreign_folder_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    generate_synthetic_corpus(SyntheticConfig(out=str(out), train_articles=12, dev_articles=10))
    assert (out / "dev" / "EN").is_dir()
    generate_synthetic_corpus(SyntheticConfig(out=str(out), train_articles=8, dev_articles=0))
    assert not (out / "dev").exists()  # else load_experiment_data would test on the old corpus's dev split
    assert len(load_semeval(out)) == 8
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"holds \['notes.txt'\], which no synthetic corpus has"):
        generate_synthetic_corpus(SyntheticConfig(out=str(foreign), train_articles=8))
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"

    # the recipes' default corpus is generated once, then reused while its settings match
    import mtl_study.data as data_module

    from data_prep import synthetic

    calls = []
    original = synthetic.generate_synthetic_corpus
    monkeypatch.setattr(synthetic, "generate_synthetic_corpus", lambda config: calls.append(config) or original(config))
    for _ in range(2):
        data_module.generate_default_corpus(tmp_path / "default", 24, 20, 40)
    assert len(calls) == 1
