"""The experiment's article-level splits: seeded by --split_seed, disjoint, the same for every run of a study."""

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
