"""window_text: long texts cut into overlapping windows, every mention placed whole in one window."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from modeling.windowing import aggregate_document_scores, window_text


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir):
    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


def long_text_with_mentions(words=120):
    vocabulary = ["alpha", "beta", "gamma", "delta", "kappa", "omega"]
    text = " ".join(vocabulary[i % len(vocabulary)] + str(i) for i in range(words))
    mentions, position = [], 0
    for i in range(0, words, 7):
        word = vocabulary[i % len(vocabulary)] + str(i)
        start = text.index(word, position)
        following = vocabulary[(i + 1) % len(vocabulary)] + str(i + 1)
        end = text.index(following, start) + len(following) if i + 1 < words else start + len(word)
        mentions.append((start, end))  # two-word mentions, some straddling window borders
        position = start
    return text, mentions


def test_short_text_gives_one_window(tokenizer):
    windows = window_text(tokenizer, "The hero saves the town.", [(4, 8), (19, 23)], max_length=64, stride=16)
    assert len(windows) == 1
    window = windows[0]
    assert window["window_index"] == 0 and window["mention_ids"] == [0, 1]
    assert window["input_ids"] == tokenizer("The hero saves the town.")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(window["input_ids"])
    assert [tokens[s:e] for s, e in window["mention_spans"]] == [["hero"], ["town"]]


def test_every_mention_lands_whole_in_exactly_one_window(tokenizer):
    text, mentions = long_text_with_mentions()
    windows = window_text(tokenizer, text, mentions, max_length=32, stride=8)
    assert len(windows) > 5
    assert [w["window_index"] for w in windows] == list(range(len(windows)))
    assert all(len(w["input_ids"]) <= 32 for w in windows)
    assigned = [m for w in windows for m in w["mention_ids"]]
    assert sorted(assigned) == list(range(len(mentions)))  # each mention exactly once
    full = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for window in windows:
        tokens = window["input_ids"]
        for (start, end), mention_id in zip(window["mention_spans"], window["mention_ids"]):
            char_start, char_end = mentions[mention_id]
            expected = [
                token for token, (s, e) in zip(full["input_ids"], full["offset_mapping"]) if s < char_end and e > char_start
            ]
            assert tokens[start:end] == expected  # all of the mention's tokens, nothing else
            assert start >= 1 and end <= len(tokens) - 1  # never on special tokens


def test_white_space_at_a_mention_edge_does_not_push_it_out_of_its_window(tokenizer):
    # At an inner window edge no token covers the space next to "zeta": the mention still fits the window.
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    words = text.split()
    for stride in (0, 1):
        windows = window_text(tokenizer, text, [], max_length=8, stride=stride)
        last_word = tokenizer.decode(windows[0]["input_ids"][1:-1]).split()[-1]
        start = text.index(last_word)
        for span in ((start, start + len(last_word) + 1), (start - 1, start + len(last_word))):
            (placed,) = [w for w in window_text(tokenizer, text, [span], max_length=8, stride=stride) if w["mention_ids"]]
            first, end = placed["mention_spans"][0]
            assert tokenizer.decode(placed["input_ids"][first:end]) == last_word
    assert last_word in words


def test_mentions_are_placed_where_most_centred(tokenizer):
    text, mentions = long_text_with_mentions()
    windows = window_text(tokenizer, text, mentions, max_length=32, stride=12)
    for window in windows:
        for start, end in window["mention_spans"]:
            # with a 12-token overlap a two-word mention can always be kept off the window's outer border
            assert start > 1 or window["window_index"] == 0
            assert end < len(window["input_ids"]) - 1 or window["window_index"] == len(windows) - 1


def test_consecutive_windows_overlap_by_stride(tokenizer):
    text, _ = long_text_with_mentions(60)
    windows = window_text(tokenizer, text, max_length=24, stride=6)
    first, second = windows[0]["input_ids"][1:-1], windows[1]["input_ids"][1:-1]
    assert first[-6:] == second[:6]


def test_errors_name_the_problem(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        window_text(tokenizer, "   ")
    with pytest.raises(ValueError, match=r"mention 1 \(3, 99\) is out of range"):
        window_text(tokenizer, "short text", [(0, 5), (3, 99)])
    with pytest.raises(ValueError, match="covers no token"):
        window_text(tokenizer, "two  words", [(3, 5)])
    text = " ".join(["word"] * 40)
    with pytest.raises(ValueError, match=r"mention 0 .*longer than a window"):
        window_text(tokenizer, text, [(0, len(text))], max_length=16, stride=4)
    with pytest.raises(ValueError, match="stride"):
        window_text(tokenizer, text, max_length=16, stride=14)
    # A short mention is lost too when it straddles a window boundary and the overlap is too small to show it whole.
    straddling = " ".join(["word"] * 13 + ["alpha", "beta", "gamma"] + ["word"] * 20)
    start = straddling.index("alpha")
    with pytest.raises(ValueError, match=r"straddles a window boundary .* at most 1 tokens long \(raise --stride\)"):
        window_text(tokenizer, straddling, [(start, start + len("alpha beta gamma"))], max_length=16, stride=0)
    assert window_text(tokenizer, straddling, [(start, start + len("alpha beta gamma"))], max_length=16, stride=4)


def test_aggregate_document_scores():
    logits = torch.tensor([[2.0, -1.0], [-3.0, 0.5]])
    multi = aggregate_document_scores(logits, "multi_label_classification")  # default: mean of the logits
    np.testing.assert_allclose(multi, torch.sigmoid(logits.mean(0)).numpy(), rtol=1e-6)
    any_window = aggregate_document_scores(logits, "multi_label_classification", aggregation="max")
    np.testing.assert_allclose(any_window, torch.sigmoid(logits).amax(0).numpy(), rtol=1e-6)
    # with a linear head, the mean of the windows' logits is the head applied to the mean of their states
    head = torch.nn.Linear(4, 2)
    states = torch.randn(3, 4)
    with torch.no_grad():
        np.testing.assert_allclose(aggregate_document_scores(head(states), "multi_label_classification"),
                                   torch.sigmoid(head(states.mean(0))).numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        aggregate_document_scores([[0.2, 0.9], [0.6, 0.1]], "multi_label_classification", from_logits=False), [0.4, 0.5]
    )
    with pytest.raises(ValueError, match="unknown aggregation 'sum'"):
        aggregate_document_scores(logits, "multi_label_classification", aggregation="sum")
    single = aggregate_document_scores(logits.numpy(), "single_label_classification")
    np.testing.assert_allclose(single, torch.softmax(logits, -1).mean(0).numpy(), rtol=1e-6)
    probabilities = [[0.2, 0.8], [0.6, 0.4]]
    np.testing.assert_allclose(
        aggregate_document_scores(probabilities, "single_label_classification", from_logits=False), [0.4, 0.6]
    )
    with pytest.raises(ValueError, match="unknown problem_type"):
        aggregate_document_scores(probabilities, "regression")
