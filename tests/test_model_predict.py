"""MultiTaskModel.predict: raw texts to label names, windowing of long texts, clear input errors; MiniLM end to end."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from modeling import MultiTaskModel
from modeling.windowing import aggregate_document_scores, window_text

from test_model_save_load import run_without_package

TASKS = [
    {"name": "frames", "problem_type": "multi_label_classification", "labels": ["x", "y", "z"], "thresholds": [0.0, 1.0, 0.5]},
    {"name": "topic", "labels": ["politics", "sport"]},
    {"name": "role", "level": "span", "labels": ["hero", "villain", "victim"]},
]


@pytest.fixture(scope="module")
def tiny_model(tiny_backbone_dir):
    torch.manual_seed(0)
    return MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, max_length=32, stride=8)


def test_predict_returns_label_names_and_uses_thresholds(tiny_model):
    text = "The hero saved the town from the villain."
    [result] = tiny_model.predict([text], mentions=[[(4, 8), (33, 40)]])
    assert set(result) == {"frames", "topic", "role"}
    assert "x" in result["frames"] and "y" not in result["frames"]  # thresholds 0.0 and 1.0 decide these
    assert result["topic"] in ("politics", "sport")
    assert len(result["role"]) == 2 and all(label in ("hero", "villain", "victim") for label in result["role"])
    [scored] = tiny_model.predict([text], mentions=[[(4, 8), (33, 40)]], return_scores=True)
    assert scored["topic"]["prediction"] == result["topic"]
    assert pytest.approx(sum(scored["topic"]["scores"].values())) == 1.0
    assert [entry["prediction"] for entry in scored["role"]] == result["role"]


def test_long_texts_are_windowed_not_truncated(tiny_model, tiny_backbone_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    text = " ".join(f"sentence {i} tells about the hero." for i in range(30))
    last = text.rindex("hero")
    mentions = [(text.index("hero"), text.index("hero") + 4), (last, last + 4)]
    windows = window_text(tokenizer, text, mentions, max_length=32, stride=8)
    assert len(windows) > 3
    [result] = tiny_model.predict([text], mentions=[mentions], return_scores=True)
    assert len(result["role"]) == 2  # the mention near the end is classified too
    # Document probabilities aggregate every window, not just the first one.
    tiny_model.eval()
    with torch.no_grad():
        window_logits = [
            tiny_model(input_ids=torch.tensor([w["input_ids"]]), attention_mask=torch.tensor([w["attention_mask"]])).logits[
                "frames"
            ][0]
            for w in windows
        ]
    expected = aggregate_document_scores(torch.stack(window_logits), "multi_label_classification")
    np.testing.assert_allclose(list(result["frames"]["scores"].values()), expected, rtol=1e-5, atol=1e-6)
    # The config's window aggregation is the one predict uses (max differs from the default mean here).
    tiny_model.config.window_aggregation = "max"
    try:
        [any_window] = tiny_model.predict([text], mentions=[mentions], return_scores=True)
    finally:
        tiny_model.config.window_aggregation = "mean"
    expected_max = aggregate_document_scores(torch.stack(window_logits), "multi_label_classification", aggregation="max")
    np.testing.assert_allclose(list(any_window["frames"]["scores"].values()), expected_max, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected_max, expected)
    # Batch composition does not change predictions.
    together = tiny_model.predict(["A short one.", text], mentions=[[], mentions], batch_size=3, return_scores=True)
    for task in ("frames", "topic"):
        np.testing.assert_allclose(
            list(together[1][task]["scores"].values()), list(result[task]["scores"].values()), rtol=1e-5, atol=1e-6
        )


def test_predict_input_errors(tiny_model):
    with pytest.raises(ValueError, match="mentions are required.*'role'"):
        tiny_model.predict(["some text"])
    with pytest.raises(ValueError, match="text 1 is empty"):
        tiny_model.predict(["some text", ""], mentions=[[], []])
    with pytest.raises(ValueError, match=r"text 0: mention 0 \(5, 50\) is out of range"):
        tiny_model.predict(["some text"], mentions=[[(5, 50)]])
    with pytest.raises(ValueError, match="2 texts but 1 mention lists"):
        tiny_model.predict(["a", "b"], mentions=[[]])
    with pytest.raises(TypeError, match="text 1 must be a str, got float"):
        tiny_model.predict(["some text", float("nan")], mentions=[[], []])
    with pytest.raises(TypeError, match="text 0 must be a str, got NoneType"):
        tiny_model.predict([None], mentions=[[]])


@pytest.mark.parametrize("offsets", [(0.0, 4), (0, 4.7), (True, 4), ("0", "4")])
def test_predict_refuses_non_integer_mention_offsets(tiny_model, offsets):
    with pytest.raises(ValueError, match=r"text 1: mention 1: character offsets must be integers"):
        tiny_model.predict(["some text", "other text"], mentions=[[(0, 4)], [(0, 5), offsets]])


def test_predict_accepts_numpy_integer_offsets(tiny_model):
    plain = tiny_model.predict(["some text"], mentions=[[(0, 4)]], return_scores=True)
    numpy_offsets = tiny_model.predict(["some text"], mentions=[[(np.int64(0), np.int32(4))]], return_scores=True)
    assert numpy_offsets == plain


def test_minilm_document_and_span_task_save_load_remote_predict(minilm_path, tmp_path):
    """The embedded MiniLM: build, save, reload through AutoModel and as remote code; predictions identical."""
    torch.manual_seed(0)
    tasks = [
        {"name": "narrative", "problem_type": "multi_label_classification", "labels": ["war", "economy", "health"]},
        {"name": "role", "level": "span", "labels": ["protagonist", "antagonist", "innocent"]},
    ]
    model = MultiTaskModel.from_backbone(minilm_path, tasks, max_length=64, stride=16)
    texts = [
        "The minister defended the budget while the opposition leader attacked it.",
        " ".join(["Inflation rose again as the central bank hesitated."] * 12) + " The governor resigned.",
    ]
    mentions = [[(4, 12), (51, 58)], [(len(texts[1]) - 22, len(texts[1]) - 14)]]
    before = model.predict(texts, mentions=mentions, return_scores=True)

    folder = tmp_path / "minilm-mtl"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    loaded = AutoModel.from_pretrained(folder)
    assert isinstance(loaded, MultiTaskModel)
    assert loaded.predict(texts, mentions=mentions, return_scores=True) == before

    script = (
        "import json, sys\n"
        "sys.modules['modeling'] = None\n"
        "from transformers import AutoModel\n"
        "model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        f"texts, mentions = json.loads({json.dumps(json.dumps([texts, mentions]))})\n"
        "print(json.dumps(model.predict(texts, mentions=mentions, return_scores=True)))\n"
    )
    remote = run_without_package(script, folder, tmp_path)
    assert remote == json.loads(json.dumps(before))


def test_predict_falls_back_to_the_top_label_when_no_label_passes(tiny_backbone_dir):
    torch.manual_seed(0)
    tasks = [{"name": "frames", "problem_type": "multi_label_classification", "labels": ["x", "y", "z"],
              "thresholds": [1.0, 1.0, 1.0]}]  # sigmoid < 1: no label can pass
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, tasks, max_length=32, stride=8)
    [scored] = model.predict(["Nothing passes these thresholds."], return_scores=True)
    scores = scored["frames"]["scores"]
    assert scored["frames"]["prediction"] == [max(scores, key=scores.get)]


def test_predict_leaves_a_row_empty_when_the_model_was_trained_without_fallback(tiny_backbone_dir, tmp_path):
    torch.manual_seed(0)
    tasks = [{"name": "frames", "problem_type": "multi_label_classification", "labels": ["x", "y", "z"],
              "thresholds": [1.0, 1.0, 1.0]}]
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, tasks, max_length=32, stride=8, top1_fallback=False)
    assert model.predict(["Nothing passes these thresholds."]) == [{"frames": []}]
    model.save_pretrained(tmp_path / "saved")
    AutoTokenizer.from_pretrained(tiny_backbone_dir).save_pretrained(tmp_path / "saved")
    reloaded = MultiTaskModel.from_pretrained(tmp_path / "saved")
    assert reloaded.config.top1_fallback is False
    assert reloaded.predict(["Nothing passes these thresholds."]) == [{"frames": []}]
    with pytest.raises(Exception, match="top1_fallback: must be true or false"):
        MultiTaskModel.from_backbone(tiny_backbone_dir, tasks, max_length=32, stride=8, top1_fallback="no")
