"""The experiment's article-level splits: seeded by --split_seed, disjoint, the same for every run of a study."""

import pytest

from mtl_study.data import SPLIT_SEED, load_experiment_data

OPTIONS = {"num_documents": 40, "min_words": 20, "max_words": 30}


def _ids(data):
    return {name: set(getattr(data, name)["doc_id"]) for name in ("train", "validation", "test")}


def test_split_seed_chooses_the_validation_articles(tmp_path):
    default = _ids(load_experiment_data(None, tmp_path, synthetic_options=OPTIONS))
    again = _ids(load_experiment_data(None, tmp_path, synthetic_options=OPTIONS, split_seed=SPLIT_SEED))
    other = _ids(load_experiment_data(None, tmp_path, synthetic_options=OPTIONS, split_seed=7))
    assert default == again  # reproducible
    assert other["validation"] != default["validation"]
    assert other["test"] == default["test"]  # the synthetic corpus has its own dev/ folder: the test set stays
    for split in (default, other):
        assert not (split["train"] & split["validation"]) and not (split["train"] | split["validation"]) & split["test"]
        assert split["train"] | split["validation"] == default["train"] | default["validation"]


def _ticket_split(tmp_path, table, *options):
    from ticket_router import TicketArguments, load_tickets

    from mtl_study.config import parse_recipe_args

    args, training, _, tickets = parse_recipe_args(
        "ticket_router", ["--output_dir", str(tmp_path / "out"), "--data_file", str(table), "--label_columns", "team",
                          "--text_columns", "text", *options], extra=[TicketArguments])
    return load_tickets(training.output_dir, args, tickets)


def test_ticket_splits_keep_each_class_in_proportion_and_a_one_row_class_in_train(tmp_path):
    import pandas as pd

    teams = ["a"] * 100 + ["b"] * 20 + ["solo"]
    table = tmp_path / "tickets.csv"
    pd.DataFrame({"text": [f"ticket number {i}" for i in range(len(teams))], "team": teams}).to_csv(table, index=False)
    for seed in range(6):
        data = _ticket_split(tmp_path, table, "--split_seed", str(seed))
        test_teams, validation_teams = list(data.test["team"]), list(data.validation["team"])
        assert test_teams.count("b") == 4 and validation_teams.count("b") == 3  # 20 % of 20, then 20 % of 16
        assert "solo" in data.train["team"]
    plain = [_ticket_split(tmp_path, table, "--split_seed", str(seed), "--stratify_by", "none").test["team"]
             for seed in range(6)]
    assert {list(test).count("b") for test in plain} != {4}  # unstratified: the share of b varies by seed
    with pytest.raises(ValueError, match="--stratify_by 'queue': not a label column"):
        _ticket_split(tmp_path, table, "--stratify_by", "queue")


def test_ticket_splits_pool_a_long_tail_and_skip_a_constant_first_column(tmp_path):
    import pandas as pd

    teams = [f"team{i}" for i in range(100) for _ in range(3)]  # 100 classes of 3 rows: each too small to split
    table = tmp_path / "tickets.csv"
    pd.DataFrame({"text": [f"ticket number {i}" for i in range(300)], "team": teams, "kind": ["incident"] * 300,
                  }).to_csv(table, index=False)
    data = _ticket_split(tmp_path, table)
    assert (len(data.train), len(data.validation), len(data.test)) == (192, 48, 60)  # not 100 / 100 / 100
    # 'kind' is constant (audited, not trained): the default stratifies by the first TRAINED column, 'team'
    teams = ["a"] * 100 + ["b"] * 20
    pd.DataFrame({"text": [f"ticket number {i}" for i in range(120)], "kind": ["incident"] * 120, "team": teams,
                  }).to_csv(table, index=False)
    for seed in range(4):
        data = _ticket_split(tmp_path, table, "--split_seed", str(seed), "--label_columns", "kind", "team")
        assert set(data.tasks) == {"team"} and list(data.test["team"]).count("b") == 4


def test_a_text_repeated_under_two_ids_stays_in_one_split():
    import datasets

    from data_prep.splits import keep_repeated_texts_together

    def rows(*pairs):
        return datasets.Dataset.from_list([{"id": i, "text": t} for i, t in pairs])

    splits = {"train": rows(("a", "Same story."), ("b", "Other story.")), "validation": rows(("c", "same  story")),
              "test": rows(("d", "SAME story!"), ("e", "New story."), ("f", "fresh"))}
    splits["validation"] = rows(("c", "same  story"), ("g", "fresh"))
    out, moved = keep_repeated_texts_together(splits)
    assert moved == [("c", "validation", "train"), ("d", "test", "train"), ("f", "test", "validation")]
    assert out["train"]["id"] == ["a", "b", "c", "d"] and out["validation"]["id"] == ["g", "f"] and out["test"]["id"] == ["e"]
    unchanged, none = keep_repeated_texts_together({"train": rows(("a", "x")), "validation": rows(("b", "y")),
                                                    "test": rows(("c", "z"))})
    assert none == [] and unchanged["test"]["id"] == ["c"]
    # no test split (split_articles without test_fraction), a split outside `order` kept, texts without a word
    two, moved = keep_repeated_texts_together({"train": rows(("a", "???"), ("b", "x")),
                                               "validation": rows(("c", "!!!"), ("d", "X.")), "extra": rows(("e", "x"))})
    assert moved == [("d", "validation", "train")] and two["validation"]["id"] == ["c"] and two["extra"]["id"] == ["e"]


def test_no_semeval_text_is_scored_that_training_saw_under_another_id(tmp_path):
    from conftest import shared_data_path

    from data_prep.overlap import normalize_text

    data = load_experiment_data(str(shared_data_path("semeval2025_task10_en")), tmp_path)
    texts = {name: {normalize_text(t) for t in getattr(data, name)["text"]} for name in ("train", "validation", "test")}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert "EN_UA_104569.txt (test -> train)" in data.load_summary  # the same article as EN_UA_300050.txt
    assert len(data.train) + len(data.validation) + len(data.test) == 399


def test_the_synthetic_ticket_table_is_regenerated_when_its_settings_differ_or_it_was_cut_short(tmp_path):
    from ticket_router import TicketArguments, load_tickets

    from mtl_study.config import parse_recipe_args

    def rows_of(*options):
        args, training, _, tickets = parse_recipe_args(
            "ticket_router", ["--output_dir", str(tmp_path / "out"), *options], extra=[TicketArguments])
        data = load_tickets(training.output_dir, args, tickets)
        return len(data.train) + len(data.validation) + len(data.test)

    table = tmp_path / "out" / "data" / "tickets.csv"
    assert rows_of("--ticket_rows", "300") == 300
    assert rows_of("--ticket_rows", "80") == 80  # not the 300-row table left by the first launch
    first = table.read_text(encoding="utf-8")
    assert rows_of("--ticket_rows", "80") == 80 and table.read_text(encoding="utf-8") == first  # reused
    table.with_name("tickets.csv.config.json").unlink()  # as a kill between the table and its config leaves it
    table.write_text(first[: len(first) // 2], encoding="utf-8")
    assert rows_of("--ticket_rows", "80") == 80
    with pytest.raises(ValueError, match="--latency_repeats must be >= 1"):
        TicketArguments(latency_repeats=0)


def test_a_task_without_labels_is_refused_before_any_run(tmp_path):
    import shutil

    from conftest import shared_data_path

    from mtl_study.config import parse_recipe_args
    from mtl_study.study import Study

    release = tmp_path / "release"
    shutil.copytree(shared_data_path("semeval2025_task10_sample"), release)
    (release / "EN" / "subtask-1-annotations.txt").unlink()
    parsed = parse_recipe_args("architecture_comparison", ["--output_dir", str(tmp_path / "out"), "--data_dir",
                                                           str(release), "--arms", "mtl", "--seeds", "0"])
    study = Study(*parsed, "architecture_comparison", "t", "q")
    with pytest.raises(ValueError, match="task 'entity_framing_(coarse|fine)' has no labelled example in the training split"):
        study.check_runs(study.architecture_specs(list(study.data.tasks)))
