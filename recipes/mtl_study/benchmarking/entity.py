"""Benchmark section "entity": entity framing at the density of the SemEval-2025 Task 10 English release,
each 512-token window encoded once for all its mentions vs one marked 512-token pass per mention (encoded
tokens, wall time, mentions kept, backbone passes per batch of a joint narratives + entities model)."""

from __future__ import annotations

import gc
from typing import Any, Sequence

import numpy as np
import torch

from .core import Benchmark
from .figures import Figure
from .inputs import Article, batches_by_length, framing_tasks, mark_mention, pad_batch, synthetic_articles
from .probes import autocast_context, backbone_module, count_calls, interleaved_timings, median


def run_entity(bench: Benchmark) -> None:
    """Figures entity_token_ratio, entity_joint_token_ratio, entity_time_ratio, entity_mentions_kept,
    entity_backbone_passes_per_batch."""
    from modeling import MultiTaskCollator
    from modeling.windowing import window_text

    args = bench.args
    tokenizer = bench.tokenizer
    generator = bench.text_generator(3)
    articles = synthetic_articles(generator, args.entity_articles, args.entity_mentions, args.entity_median_tokens)
    narratives, roles = framing_tasks()
    collator = MultiTaskCollator(tasks=[narratives, roles], tokenizer=tokenizer)

    def windows_of(selected: Sequence[Article], with_mentions_only: bool) -> list[dict[str, Any]]:
        """Windows of each article; for entity framing alone, only those that hold mentions need encoding."""
        rows = []
        for doc_index, article in enumerate(selected):
            for window in window_text(tokenizer, article.text, article.mentions, max_length=args.max_length,
                                      stride=args.stride):
                if with_mentions_only and not window["mention_ids"]:
                    continue
                rows.append({
                    "input_ids": window["input_ids"], "attention_mask": window["attention_mask"],
                    **({"token_type_ids": window["token_type_ids"]} if "token_type_ids" in window else {}),
                    "mention_spans": [list(span) for span in window["mention_spans"]],
                    "mention_index": list(window["mention_ids"]),
                    "document_index": doc_index, "example_index": len(rows),
                    "window_index": window["window_index"], "length": len(window["input_ids"]),
                })
        return rows

    def marked_rows(selected: Sequence[Article]) -> tuple[list[dict[str, Any]], int]:
        texts = [mark_mention(a.text, span) for a in selected for span in a.mentions]
        encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
        marker_id = tokenizer.convert_tokens_to_ids("@")
        rows, kept = [], 0
        for i in range(len(texts)):
            ids = encoded["input_ids"][i]
            kept += ids.count(marker_id) >= 2  # both markers survived truncation
            rows.append({key: encoded[key][i] for key in encoded.keys()})
        return rows, kept

    # token counts over the whole corpus (cheap: tokenisation only)
    def encoded_tokens(rows) -> int:  # what the encoder processes: batch x padded length, summed
        return sum(len(b) * max(len(r["input_ids"]) for r in b)
                   for b in batches_by_length(rows, args.entity_batch_size))

    all_windows = windows_of(articles, with_mentions_only=False)
    mention_windows = windows_of(articles, with_mentions_only=True)
    all_marked, kept_marked = marked_rows(articles)
    tokens_ours = encoded_tokens(mention_windows)
    tokens_base = encoded_tokens(all_marked)
    # A joint model (narratives + entities) encodes every window once; the two-model pipeline adds one
    # 512-token truncated pass per article for narratives to the per-mention passes.
    truncated = tokenizer([a.text for a in articles], truncation=True, max_length=args.max_length)
    tokens_joint = encoded_tokens(all_windows)
    tokens_pipeline = tokens_base + encoded_tokens(
        [{"input_ids": ids} for ids in truncated["input_ids"]])
    kept_ours = len({(row["document_index"], m) for row in all_windows for m in row["mention_index"]})
    total = sum(len(a.mentions) for a in articles)
    article_tokens = [a.num_words + 2 for a in articles]

    model = bench.multitask_model([narratives, roles])
    baseline = bench.single_task_model(roles)
    backbone = backbone_module(model)
    autocast = lambda: autocast_context(bench.device, bench.bf16)  # noqa: E731

    # Timed subset: of 50 seeded random draws, the one whose mentions per article is closest to the whole
    # corpus's (the quantity the per-mention baseline's cost scales with), so a small subset stays
    # representative of the density instead of happening to hold unusually few or many mentions.
    rng = np.random.default_rng(args.seed + 4)
    size = min(args.entity_timed_articles, len(articles))
    density = sum(len(a.mentions) for a in articles) / len(articles)
    draws = [rng.choice(len(articles), size=size, replace=False) for _ in range(50)]
    subset_ids = sorted(min(draws, key=lambda ids: abs(sum(len(articles[i].mentions) for i in ids) / size - density)))
    subset = [articles[i] for i in subset_ids]
    passes = {"batches": 0, "backbone_calls": 0}

    def ours():
        rows = windows_of(subset, with_mentions_only=True)
        with torch.inference_mode(), autocast(), count_calls(backbone) as calls:
            batches = 0
            for chunk in batches_by_length(rows, args.entity_batch_size):
                batch = collator(chunk)
                inputs = {k: batch[k].to(bench.device) for k in ("input_ids", "attention_mask", "token_type_ids",
                                                                "mention_spans") if k in batch}
                model(**inputs)
                batches += 1
        passes["batches"], passes["backbone_calls"] = batches, calls[0]

    def theirs():
        rows, _ = marked_rows(subset)
        with torch.inference_mode(), autocast():
            for chunk in batches_by_length(rows, args.entity_batch_size):
                baseline(**pad_batch(chunk, tokenizer.pad_token_id, bench.device))

    bench.log(f"entity: timing {len(subset)} of {len(articles)} articles "
             f"({sum(len(a.mentions) for a in subset)} mentions) x {args.repeats} repeats")
    timings = interleaved_timings({"ours": ours, "theirs": theirs}, args.repeats, bench.device)
    t_ours, t_theirs = median(timings["ours"]), median(timings["theirs"])
    bench.figures.append(Figure(
        "entity_token_ratio", "entity framing: encoded tokens, windows once vs 1 marked pass per mention",
        tokens_ours, tokens_base, "tokens", tokens_base / tokens_ours, "x fewer",
        {"articles": len(articles), "mentions": total, "median_article_tokens": int(np.median(article_tokens)),
         "windows_with_mentions": len(mention_windows), "windows_all": len(all_windows),
         "marked_passes": len(all_marked),
         "non_padding_tokens_ours": sum(r["length"] for r in mention_windows),
         "non_padding_tokens_baseline": sum(len(r["input_ids"]) for r in all_marked)},
    ))
    bench.figures.append(Figure(
        "entity_joint_token_ratio",
        "narratives + entities: 1 joint model, every window once vs narratives model + marked passes",
        tokens_joint, tokens_pipeline, "tokens", tokens_pipeline / tokens_joint, "x fewer", {},
    ))
    bench.figures.append(Figure(
        "entity_time_ratio", "entity framing: wall time (timed subset)", t_ours, t_theirs, "s",
        t_theirs / t_ours, "x less",
        {"timed_articles": len(subset), "timed_mentions": sum(len(a.mentions) for a in subset),
         "timings_s": timings},
    ))
    bench.figures.append(Figure(
        "entity_mentions_kept", "entity framing: mentions kept (baseline: 512-token truncation)",
        kept_ours / total, kept_marked / total, "fraction", kept_ours / total, "kept",
        {"lost_by_truncation": 1 - kept_marked / total},
    ))
    per_batch = passes["backbone_calls"] / max(1, passes["batches"])
    bench.figures.append(Figure(
        "entity_backbone_passes_per_batch",
        "joint model (narratives + entity heads): backbone passes per batch vs 1 model per task",
        per_batch, 2.0, "passes/batch", per_batch, "passes/batch",
        {"batches": passes["batches"], "backbone_calls": passes["backbone_calls"]},
    ))
    del model, baseline
    gc.collect()

# --- 4. export ----------------------------------------------------------------------------------------
