"""Model cards for the saved arms of an experiment, from the template shipped in the package
(``mtl_study/templates/multitask_model_card.md``, installed as package data).

The card's metadata carries a ``model-index`` (one entry per task x evaluation set x metric of the saved
checkpoint, with the Hub's metric types: ``f1`` with its averaging in ``args``, ``exact_match``, ``accuracy``)
so that the Hub and :func:`huggingface_hub.metadata_load` can read the results; the body documents tasks,
architecture, training mixture, per-task results with their seed spread and the raw and adjusted p-values
against the single-task baseline, the shift statistics of the data, limitations and how to load exactly what
was pushed. A card never carries a path of the machine that trained it: local paths become placeholders.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling.vocabulary import SPAN

from .report import format_count, run_parameter_counts
from .results import atomic_write_text
from .stats import PairedComparison, format_p, summarize

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "multitask_model_card.md"

#: Our metric names -> the Hub's model-index convention: (type, args, readable name).
HUB_METRICS = {
    "macro_f1": ("f1", {"average": "macro"}, "macro F1"),
    "micro_f1": ("f1", {"average": "micro"}, "micro F1"),
    "samples_f1": ("f1", {"average": "samples"}, "samples F1"),
    "coarse_macro_f1": ("f1", {"average": "macro", "level": "coarse"}, "coarse macro F1"),
    "exact_match": ("exact_match", None, "exact match"),
    "accuracy": ("accuracy", None, "accuracy"),
    "main_role_accuracy": ("accuracy", {"of": "main role"}, "main-role accuracy"),
    # the SemEval-2025 Task 10 scorer's measures (`mtl_study.official`)
    "official_narratives_samples_f1": ("f1", {"average": "samples", "of": "narratives", "official": True},
                                       "official narratives samples F1"),
    "official_subnarratives_samples_f1": ("f1", {"average": "samples", "of": "subnarratives", "official": True},
                                          "official subnarratives samples F1"),
    "official_fine_role_exact_match": ("exact_match", {"of": "fine roles", "official": True},
                                       "official fine-role exact match"),
    "official_main_role_accuracy": ("accuracy", {"of": "main role", "official": True}, "official main-role accuracy"),
}

# An absolute POSIX or Windows path (not a URL, not "a/b" inside a word): what a card must never show.
_LOCAL_PATH = re.compile(r"(?<![\w.:/~\\])(?:~/|/|[A-Za-z]:[\\/])[^\s/\\`'\"()|,;]+(?:[/\\][^\s/\\`'\"()|,;]*)*")


def scrub_local_paths(text: str, placeholder: str = "<local path>", known_paths: Sequence[str | Path] = ()) -> str:
    """``text`` with every absolute local path replaced by ``placeholder``, and every relative path that exists on
    this machine (``../shared/data/t.csv``) by its last part (``t.csv``). ``known_paths`` that exist here (the
    data folder, the output folder, ...) are replaced by their last part first, whole: a path with spaces
    (``/home/me/My Data``) is more than the pattern can see."""
    if not text:
        return text
    existing = [p for p in known_paths if p and Path(p).exists()]  # not a Hub id such as org/model
    spelled = {str(p) for p in existing} | {str(Path(p).resolve()) for p in existing}
    # a path with a name ("/" has none) and a separator, replaced whole: not inside a longer path or a URL
    for path in sorted((p for p in spelled if Path(p).name and ("/" in p or "\\" in p)), key=len, reverse=True):
        name = Path(path).name
        text = re.sub(rf"(?<![\w./\\:-]){re.escape(path)}(?![\w.-])", lambda _: name, text)

    def relative(match: re.Match) -> str:
        token = match.group(0)
        return Path(token).name if ("/" in token or "\\" in token) and Path(token).exists() else token

    return re.sub(r"(?<![\w:/])\.{0,2}[\w.-]+(?:[/\\][\w.-]+)+", relative, _LOCAL_PATH.sub(placeholder, text))


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a folder on this machine."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not Path(name).exists()


def hub_metric(metric: str) -> tuple[str, dict | None, str]:
    """``(type, args, name)`` of one of our metric names under the Hub's convention (unknown: kept as is)."""
    return HUB_METRICS.get(metric, (metric, None, metric.replace("_", " ")))

SHARING_DESCRIPTIONS = {
    "stl": "none: a single-task model (one encoder, one head)",
    "hard": "hard parameter sharing: every task's head reads the same encoder",
    "adapters": "a shared frozen-where-configured encoder with one LoRA adapter per task (PEFT)",
}

DEFAULT_LIMITATIONS = (
    "- Trained and evaluated on the data named above only; scores do not transfer to other domains, "
    "languages or annotation guidelines without evaluation there (see the shift statistics).\n"
    "- Seeds vary data order and head initialisation only; the spread reported here does not cover "
    "other hyper-parameters.\n"
    "- A p-value above the significance level means the experiment could not tell the arms apart, not "
    "that they are equal.\n"
    "- Predictions on news about contested topics can encode the annotators' and the sources' biases; "
    "do not use them to make decisions about people."
)


def _label_preview(labels: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(str(label) for label in labels[:limit])
    return shown + (f", … (+{len(labels) - limit})" if len(labels) > limit else "")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if isinstance(value, float) and value < 0 else f"{value:.{digits}f}"


def eval_results_for(
    run_rows: Sequence[Mapping], dataset_id: str, dataset_name: str, task_type: str = "text-classification"
) -> list[EvalResult]:
    """One :class:`EvalResult` per task x evaluation set x metric of one run (the saved checkpoint)."""
    results = []
    for row in sorted(run_rows, key=lambda r: (r["task"], r["eval_set"], r["metric"])):
        metric_type, metric_args, readable = hub_metric(row["metric"])
        results.append(EvalResult(
            task_type=task_type,
            task_name=f"{row['task']} ({row['eval_set']})",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            # model-index groups metrics by (task type, dataset, config, split): the config keeps tasks apart
            dataset_config=row["task"],
            dataset_split=row["eval_set"],
            metric_type=metric_type,
            metric_args=metric_args,
            metric_name=f"{row['task']} {readable} ({row['eval_set']})",
            metric_value=float(row["value"]),
        ))
    return results


#: the embedded backbone's license, and the synthetic corpora's (generated by this project)
DEFAULT_LICENSE = "apache-2.0"
#: ``license_name`` of a card whose ``license`` is ``other``: the training data's terms
DATA_TERMS_LICENSE_NAME = "training-data-terms"


def card_license(requested: str | None, synthetic: bool, dataset_name: str) -> tuple[str, str]:
    """``(license, note)`` of a card: `requested` (``--card_license``) when given; else apache-2.0 on synthetic data
    and ``other`` on data the user loaded, whose terms the model inherits. The note (empty for a license the user
    chose or the synthetic default) becomes a line of the card's limitations."""
    if requested:
        return requested, ""
    if synthetic:
        return DEFAULT_LICENSE, ""
    return "other", (f"- License: the model is trained on {dataset_name}, and that data's terms apply to it "
                     "(which this project cannot know; the SemEval-2025 Task 10 release, for one, is for research use only). The "
                     "card says `license: other`: give `--card_license` the license your data allows before sharing "
                     "the model.")


def build_model_card(
    *,
    arm: str,
    seed: int,
    tasks: Sequence[Mapping],
    run_rows: Sequence[Mapping],
    all_rows: Sequence[Mapping],
    comparisons: Sequence[PairedComparison] = (),
    base_model: str,
    model_name: str,
    recipe: str,
    sharing: str,
    model_options: Mapping | None = None,
    training: Mapping | None = None,
    dataset_id: str = "synthetic",
    dataset_name: str = "synthetic multi-task corpus",
    data_mixture: str = "",
    shift_statistics: str = "",
    primary_metric: str = "macro_f1",
    load_path: str | None = None,
    revision: str | None = None,
    folder_key: str | None = None,
    local_paths: Sequence[str | Path] = (),
    p_adjust: str | None = None,
    limitations: str = DEFAULT_LIMITATIONS,
    template_path: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    license_note: str = "",
    parameters: Mapping | None = None,
) -> ModelCard:
    """Render the card of one saved checkpoint.

    Args:
        arm: the arm's name (``stl``, ``mtl``, ...); ``seed`` the seed of the saved run.
        tasks: task dicts (``name``, ``level``, ``problem_type``, ``labels``) of the saved model.
        run_rows: results rows of the saved run (become the ``model-index``).
        all_rows: results rows of every run of the experiment (mean ± std over seeds).
        comparisons: paired tests of this arm against ``stl`` (Δ, p-value, effect size per row), adjusted over the
            report's whole family (``stats.comparison_family``): the card shows raw and adjusted p-values and calls
            a difference significant on the adjusted one.
        base_model: the backbone (Hub id or path); ``sharing``: ``stl`` | ``hard`` | ``adapters``.
        load_path: the Hub repo the model was pushed to; a local folder (or None) becomes the placeholder
            ``path/to/best/<folder_key>`` (default: the arm; ``stl/<task>`` for a single-task model).
            ``revision``: the branch it was pushed to (added to the load snippet).
        local_paths: folders of this machine the texts may name (data, outputs): shown by their last part only.
        p_adjust: the report's p-value adjustment (default: that of ``comparisons``), for the card's wording.
        license: the card's license id (``other``: the training data's terms, named ``training-data-terms``);
            license_note: a line added to the limitations (:func:`card_license`).
        parameters: ``{"trainable_parameters", "total_parameters"}`` of the saved model (default: read from
            ``run_rows``, which carry them; the architecture section omits the line when neither has them).
    """
    template_path = Path(template_path or TEMPLATE_PATH)
    if not template_path.is_file():
        raise FileNotFoundError(f"model card template {template_path} not found (shipped as mtl_study/templates/)")
    model_options = dict(model_options or {})
    training = dict(training or {})
    run_rows = list(run_rows)
    task_names = [t["name"] for t in tasks]
    base_is_hub_id = is_hub_id(base_model)
    # Nothing of the training machine goes into a card: local paths become names or placeholders.
    shown_base_model = base_model if base_is_hub_id else f"{Path(base_model).name} (a local backbone)"
    load_path = load_path if load_path and is_hub_id(load_path) else f"path/to/best/{folder_key or arm}"
    dataset_name, data_mixture = (scrub_local_paths(dataset_name, known_paths=local_paths),
                                  scrub_local_paths(data_mixture, known_paths=local_paths))
    shift_statistics = scrub_local_paths(shift_statistics, known_paths=local_paths)
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model if base_is_hub_id else None,
        datasets=[dataset_id] if is_hub_id(dataset_id) else None,
        library_name="transformers",
        license=license,
        license_name=DATA_TERMS_LICENSE_NAME if license == "other" else None,
        pipeline_tag="text-classification",
        tags=["multi-task-learning", "text-classification", f"arm-{arm}", *task_names],
        metrics=sorted({hub_metric(r["metric"])[0] for r in run_rows}),  # the Hub's metric ids (f1, accuracy, ...)
        eval_results=eval_results_for(run_rows, dataset_id, dataset_name),
    )

    arm_summaries = {(s.task, s.eval_set, s.metric): s for s in summarize(r for r in all_rows if r["arm"] == arm)}
    by_key = {(c.task, c.eval_set, c.metric): c for c in comparisons}
    results, notes = [], []
    for row in sorted(run_rows, key=lambda r: (r["task"], r["eval_set"], r["metric"])):
        key = (row["task"], row["eval_set"], row["metric"])
        summary = arm_summaries.get(key)
        comparison = by_key.get(key)
        results.append({
            "task": row["task"], "eval_set": row["eval_set"], "metric": row["metric"],
            "value": f"{float(row['value']):.3f}",
            "mean_std": summary.formatted() if summary else "n/a",
            "delta": f"{comparison.mean_difference:+.3f}" if comparison else "—",
            "p_value": format_p(comparison.p_value) if comparison else "—",
            "adjusted_p": (f"{format_p(comparison.adjusted_p_value)} ({comparison.p_adjust})"
                           if comparison and comparison.p_adjust != "none" else "not adjusted" if comparison else "—"),
            "significant": ("yes" if comparison.significant else "no") if comparison else "—",
            "effect": (f"{comparison.effect_size:+.2f}" if comparison and comparison.effect_size is not None else "—"),
        })
        if comparison and comparison.note and comparison.note not in notes:
            notes.append(comparison.note)

    if parameters is None:
        counted = list(run_parameter_counts(run_rows).values())
        parameters = counted[0] if counted else {}
    trainable, total = parameters.get("trainable_parameters"), parameters.get("total_parameters")
    parameter_summary = ""
    if trainable is not None and total:
        parameter_summary = (f"{format_count(trainable)} trainable of {format_count(total)} "
                             f"({trainable / total:.1%}; {int(trainable):,} of {int(total):,})")

    hyperparameters = scrub_local_paths(", ".join(f"{k}={v}" for k, v in training.items()
                                                  if k not in ("loss_weighting", "task_sampling")), known_paths=local_paths)
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        summary=(f"A {'single' if len(tasks) == 1 else 'multi'}-task text classifier for "
                 f"{', '.join(task_names)}."),
        model_name=model_name,  # ModelCardData moves its own model_name into model-index: the title needs it here
        arm=arm, seed=seed, recipe=recipe, num_seeds=len({r['seed'] for r in all_rows if r['arm'] == arm}),
        base_model=shown_base_model, primary_metric=primary_metric,
        tasks=[{"name": t["name"], "level": t.get("level", "document"), "problem_type": t.get("problem_type", ""),
                "num_labels": len(t.get("labels", [])), "label_preview": _label_preview(t.get("labels", []))}
               for t in tasks],
        num_frozen_layers=model_options.get("num_frozen_layers", 0),
        sharing_description=SHARING_DESCRIPTIONS.get(sharing, sharing), parameter_summary=parameter_summary,
        pooling=model_options.get("pooling", "cls"), span_pooling=model_options.get("span_pooling", "mean"),
        max_length=model_options.get("max_length", "n/a"), stride=model_options.get("stride", "n/a"),
        window_aggregation=model_options.get("window_aggregation", "mean"),
        loss_weighting=training.get("loss_weighting", "equal") if len(tasks) > 1 else "n/a (one task)",
        task_sampling=training.get("task_sampling", "proportional") if len(tasks) > 1 else "n/a (one task)",
        data_mixture=data_mixture or dataset_name,
        seeds=sorted({r["seed"] for r in all_rows if r["arm"] == arm}),
        hyperparameters=hyperparameters or "defaults",
        eval_sets=", ".join(sorted({r["eval_set"] for r in run_rows})),
        results=results, notes=notes,
        shift_statistics=shift_statistics or "Not computed for this run.",
        limitations=limitations + ("\n" + license_note if license_note else ""), load_path=load_path, revision=revision,
        has_span_task=any(t.get("level") == SPAN for t in tasks),
        p_values_adjusted=(p_adjust or (comparisons[0].p_adjust if comparisons else "holm")) != "none",
    )
    return card


#: Files of a saved model folder that must not be shared: `Trainer.save_model` pickles the whole training
#: arguments (Hub token and local paths included) into training_args.bin; the run folder keeps them as JSON.
PRIVATE_FILES = ("training_args.bin",)


def make_shareable(folder: str | Path, base_model: str) -> None:
    """Make a saved best-model folder fit to share: drop :data:`PRIVATE_FILES`, and write `base_model` where
    config.json names the backbone by a local folder of the training machine (nothing when `base_model` is not a Hub
    id itself)."""
    folder = Path(folder)
    for name in PRIVATE_FILES:
        (folder / name).unlink(missing_ok=True)
    config_path = folder / "config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    changed = False
    for holder in (config, config.get("backbone_config") or {}):
        value = holder.get("_name_or_path")
        if isinstance(value, str) and value and (Path(value).is_absolute() or Path(value).exists()):
            holder["_name_or_path"] = base_model if is_hub_id(base_model) else ""
            changed = True
    if changed:
        atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def push_to_hub(folder: str | Path, repo_id: str, revision: str | None = None, private: bool = True,
                commit_message: str | None = None, token: str | None = None) -> str:
    """Upload a saved checkpoint folder (weights, tokenizer, README.md card) to ``repo_id``.

    Each arm goes to its own ``revision`` (a branch named after the arm) so that one repo holds every arm
    of an experiment; returns the commit URL.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                             commit_message=commit_message or f"Upload {Path(folder).name}",
                             ignore_patterns=list(PRIVATE_FILES))
    logger.info("pushed %s to %s (revision %s)", folder, repo_id, revision or "main")
    return str(info)
