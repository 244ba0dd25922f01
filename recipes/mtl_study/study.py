"""The pipeline every recipe shares: load the data, train a grid of runs, write the report, the model cards
and a console summary. A recipe only says what it varies (its grid, and optionally the training data or the
evaluation sets of each run) — see ``recipes/*.py``.

One run = one model: build a :class:`~modeling.MultiTaskModel` on the backbone with the run's tasks, train
it with :class:`~modeling.MultiTaskTrainer` (seeded, resumable checkpoints under the run folder), evaluating the
validation set during training (early stopping and the best checkpoint on the primary metric, see
:mod:`.training`), tune the multi-label thresholds on validation, evaluate on the run's evaluation sets (test),
and return one results
row per task x evaluation set x metric (each row also carries the run's trainable / total parameter counts).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import datasets

from data_prep.narrative_decoding import PARENT_THRESHOLD_ATTRIBUTE
from modeling.sampling import has_label
from modeling.vocabulary import SPAN

from .config import REPORTED_METRICS, SHARED_PARAMETER_WEIGHTINGS, ExperimentArguments, ModelArguments, StudyTrainingArguments
from .data import TASK_KINDS, ExperimentData, load_experiment_data, task_name
from .official import official_classes, official_rows, tune_parent_first
from .settings_guard import check_study_settings, study_settings
from .report import markdown_table
from .results import atomic_write_text
from .runner import ExperimentRunner, RunOutcome, RunSpec, distributed_state, run_model_dir, wants_cpu
from .training import (
    VALIDATION, CompactProgress, count_parameters, filter_expected_noise, refit, run_callbacks, selection_metric,
    training_summary,
)

logger = logging.getLogger(__name__)

SHARING_OF_ARM = {"stl": "stl", "mtl": "hard", "mtl_adapters": "adapters"}

ExamplesFor = Callable[[RunSpec], datasets.Dataset]
EncodedFor = Callable[[RunSpec], datasets.Dataset]
EvalSetsFor = Callable[[RunSpec], Mapping[str, datasets.Dataset]]


def check_eval_tasks(eval_set: str, requested: Sequence[str], model_tasks: Sequence[str]) -> None:
    """An evaluation set may only name tasks the model has: anything else is a configuration error."""
    missing = [t for t in requested if t not in model_tasks]
    if missing:
        raise ValueError(f"evaluation set {eval_set!r} names task(s) {missing} that the model lacks; "
                         f"the model's tasks are {list(model_tasks)}")


def metrics_of_task(task: Mapping) -> list[str]:
    """The :data:`REPORTED_METRICS` a task reports (coarse metrics need a label hierarchy; the main-role accuracy
    is a mention's, so a span task's with a hierarchy)."""
    def reports(metric: str) -> bool:
        if metric == "coarse_macro_f1":
            return bool(task.get("parents"))
        if metric == "main_role_accuracy":
            return bool(task.get("parents")) and task.get("level") == SPAN
        return True

    return [m for m in REPORTED_METRICS if reports(m)]


def setup_logging(log_level: int) -> None:
    """Our loggers and transformers' at ``--log_level`` (the trainer's process log level); no global silencing.

    Only the progress bars of weight loading and ``datasets.map`` are turned off: the runner prints one line
    per run and per logging step instead.
    """
    import transformers

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in ("mtl_study", "modeling", "data_prep"):
        logging.getLogger(name).setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    filter_expected_noise()


MISSING_LABELS_HINT = ("its annotations are missing (for SemEval: subtask-1-annotations.txt holds entity framing, "
                       "subtask-2-annotations.txt narratives), or the split is too small")


class Study:
    """Shared machinery of a recipe.

    Args:
        experiment / training / model: the parsed arguments (see :func:`mtl_study.config.parse_recipe_args`);
            ``training.output_dir`` is the experiment folder, every run derives its own training arguments.
        recipe: the recipe's name (``architecture_comparison``...), for the report and the cards.
        title / question: the report's heading and the question the recipe answers.
        data: pre-loaded data (default: :func:`load_experiment_data` from ``experiment``).
    """

    def __init__(self, experiment: ExperimentArguments, training: StudyTrainingArguments, model: ModelArguments,
                 recipe: str, title: str, question: str, data: ExperimentData | None = None, extra: Sequence = ()):
        from transformers import AutoTokenizer

        setup_logging(training.get_process_log_level())
        self.args, self.training, self.model_args = experiment, training, model
        self.recipe, self.title, self.question = recipe, title, question
        # First fixes the process group (CPU/gloo when asked or without accelerator), before anything else does.
        state = distributed_state(training.use_cpu)
        if experiment.launcher == "sequential" and wants_cpu(training.use_cpu):
            use_cpu_threads(experiment.cpu_threads, state.num_processes)
        self.output_dir = Path(training.output_dir)
        self.started = time.time()
        print(f"[{recipe}] output folder: {self.output_dir.resolve()}", flush=True)
        # Runs found by name are skipped or resumed: only when the folder's runs were made with these settings.
        check_study_settings(self.output_dir, study_settings(recipe, [experiment, training, model, *extra]),
                             record=state.is_main_process)
        # The main process generates the synthetic corpus; the others then read it (no concurrent writes).
        with state.main_process_first():
            self.data = data or load_experiment_data(
                experiment.data_dir, self.output_dir, language=experiment.language, eval_fraction=experiment.eval_fraction,
                split_seed=experiment.split_seed,
                synthetic_options={"num_documents": experiment.synthetic_num_documents,
                                   "min_words": experiment.synthetic_min_words, "max_words": experiment.synthetic_max_words},
            )
        print(f"[{recipe}] data: {self.data.source}; {len(self.data.train)} train / {len(self.data.validation)} "
              f"validation / {len(self.data.test)} test documents", flush=True)
        self.tokenizer = AutoTokenizer.from_pretrained(model.model_name_or_path)
        self._encoded: dict = {}
        self.runner: ExperimentRunner | None = None
        self._official_classes = official_classes(self.data.data_dir) if experiment.official_metrics else None
        self.specs: list[RunSpec] = []
        self.last_rows: list[dict] = []  # what run() returned last: a list with .failed (runs that failed)

    # ------------------------------------------------------------------ tasks and grids
    def task_names(self, granularity: str | None = None) -> list[str]:
        """``--tasks`` as task names: a kind at ``granularity`` (default ``--granularity``), a full name as given."""
        names = [kind if kind not in TASK_KINDS else task_name(kind, granularity or self.args.granularity)
                 for kind in self.args.tasks]
        return list(dict.fromkeys(names))

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
                                                        max_length=self.model_args.max_length, stride=self.model_args.stride)
        return self._encoded[cache_key]

    def default_eval_sets(self, spec: RunSpec) -> dict[str, datasets.Dataset]:
        return {"test": self.data.test}

    # ------------------------------------------------------------------ one run
    def training_arguments(self, spec: RunSpec, run_dir: Path) -> StudyTrainingArguments:
        """The parsed training arguments with this run's own values (nothing else is set here).

        Seeded by the run; checkpoints under the run folder; selection on the primary metric on validation; a
        single-task run combines no losses (static weighting, plain sampling); the runs never push to the Hub
        (the best model of each arm is pushed with its card at the end).
        """
        multi = len(spec.tasks) > 1
        t = self.training
        return dataclasses.replace(
            t, output_dir=str(run_dir / "checkpoints"), run_name=spec.run_id, seed=spec.seed, data_seed=spec.seed,
            metric_for_best_model=selection_metric(self.args.primary_metric), greater_is_better=True,
            loss_weighting=t.loss_weighting if multi else "static", task_sampling=t.task_sampling if multi else "none",
            push_to_hub=False, hub_model_id=None,
            use_cpu=wants_cpu(t.use_cpu),  # else a CPU-only multi-process launch trains in N separate processes
            # A resumed run keeps its early-stopping patience and per-task bests (the callbacks' exported state):
            # otherwise an interrupted run, or a Ray retry, would train longer than an uninterrupted one.
            restore_callback_states_from_checkpoint=True,
        )

    def check_runs(self, specs: Sequence[RunSpec]) -> None:
        """Configuration errors that concern the runs, raised before the first one starts."""
        weighting = self.training.loss_weighting
        if weighting in SHARED_PARAMETER_WEIGHTINGS:
            arms = sorted({s.arm for s in specs if s.sharing == "adapters"})
            if arms:
                raise ValueError(f"--loss_weighting {weighting} cannot apply to arm(s) {arms}: it acts on the trainable "
                                 "shared parameters, and per-task adapters share none (the backbone is frozen); "
                                 "use static, uncertainty or dwa, or drop those arms with --arms")
        metric = self.args.primary_metric
        for name in dict.fromkeys(t for s in specs for t in s.tasks):
            valid = metrics_of_task(self.data.specs([name])[0])
            if metric not in valid:
                raise ValueError(f"--primary_metric {metric}: task {name!r} does not report it; "
                                 f"metrics every task reports: {valid}")
            # else a run fails mid-study, or an mtl arm silently drops the task
            if not any(has_label(example.get(name)) for example in self.data.train):
                raise ValueError(f"task {name!r} has no labelled example in the training split of {self.data.source}: "
                                 f"{MISSING_LABELS_HINT}")
        validated = {name for name in dict.fromkeys(t for s in specs for t in s.tasks)
                     if any(has_label(example.get(name)) for example in self.data.validation)}
        for spec in specs:  # a run stops on, and picks its checkpoint by, the tasks labelled in validation
            if not validated & set(spec.tasks):
                raise ValueError(f"run {spec.run_id}: none of its tasks {list(spec.tasks)} has a labelled example in "
                                 f"the validation split of {self.data.source}: {MISSING_LABELS_HINT}")
        import torch
        from transformers import AutoConfig

        from modeling import MultiTaskConfig, MultiTaskModel

        # Every arm's model settings against the backbone (a config: no weights), e.g. --num_frozen_layers beyond its
        # layers, before the data is encoded; adapters get a dry build on the meta device (shapes, no memory, any
        # backbone size): bad target modules or layers fail now, not after other arms.
        backbone = AutoConfig.from_pretrained(self.model_args.model_name_or_path)
        for sharing in dict.fromkeys(s.sharing for s in specs):
            tasks = self.data.specs(next(s for s in specs if s.sharing == sharing).tasks)
            config = MultiTaskConfig(backbone_config=backbone, tasks=tasks, sharing="adapters" if sharing == "adapters" else "hard",
                                     **self.model_args.model_options(sharing))
            if sharing == "adapters":
                layers, depth = self.model_args.adapter_layers(), getattr(backbone, "num_hidden_layers", None)
                if layers and depth and not all(0 <= layer < depth for layer in layers):  # PEFT: "target modules not found"
                    raise ValueError(f"--lora_layers {layers}: the backbone has {depth} layers, numbered 0 to {depth - 1}")
                with torch.device("meta"):
                    MultiTaskModel(config)

    def make_run_function(self, examples_for: ExamplesFor | None = None, encoded_train_for: EncodedFor | None = None,
                          eval_sets_for: EvalSetsFor | None = None, eval_tasks_for: Callable[[RunSpec, str], Sequence[str]] | None = None,
                          validation_for: ExamplesFor | None = None):
        """A run function for :class:`ExperimentRunner` (see the module docstring).

        ``examples_for`` / ``encoded_train_for`` override a run's training data (multi-task examples /
        already encoded rows); ``eval_sets_for`` its evaluation sets (name -> multi-task examples);
        ``eval_tasks_for(spec, set_name)`` restricts the tasks scored on a set (default: all of the run's);
        ``validation_for`` the validation examples that stop it, pick its checkpoint and tune its thresholds (and
        that a refit trains on): a run restricted to some labels in training must be restricted alike here, or
        the labels it must not see choose its model (default: the study's whole validation set).
        """
        from transformers import set_seed
        from transformers.integrations import TensorBoardCallback
        from transformers.trainer_callback import PrinterCallback

        from modeling import MultiTaskModel, MultiTaskTrainer

        examples_for = examples_for or self.default_examples
        eval_sets_for = eval_sets_for or self.default_eval_sets
        metric = self.args.primary_metric

        def data_of(spec: RunSpec):
            """The run's encoded training, validation and evaluation sets (memoised: see `encode`), and the tasks
            scored on each evaluation set."""
            train = encoded_train_for(spec) if encoded_train_for else self.encode(examples_for(spec), spec.tasks)
            validation_examples = validation_for(spec) if validation_for else self.data.validation
            validation = self.encode(validation_examples, spec.tasks, key=VALIDATION if validation_for is None
                                     else f"{VALIDATION}::{validation_examples._fingerprint}")
            eval_sets = dict(eval_sets_for(spec))
            scored = {name: list(eval_tasks_for(spec, name)) if eval_tasks_for else list(spec.tasks) for name in eval_sets}
            for name, tasks in scored.items():
                check_eval_tasks(name, tasks, spec.tasks)
            encoded_eval = {name: self.encode(ds, spec.tasks, key=f"eval::{name}::{ds._fingerprint}") for name, ds in eval_sets.items()}
            return train, validation, encoded_eval, scored, eval_sets, validation_examples

        def new_model(spec: RunSpec):
            set_seed(spec.seed)  # the heads are initialised here: the seed must cover them, not only the trainer
            return MultiTaskModel.from_backbone(self.model_args.model_name_or_path, self.data.specs(spec.tasks),
                                                sharing="adapters" if spec.sharing == "adapters" else "hard",
                                                **self.model_args.model_options(spec.sharing))

        def prepare(specs: Sequence[RunSpec]) -> None:
            """In the driver, before any run starts: encode every run's sets and build every frozen-prefix cache
            once. A sequential launch only does this work earlier; a parallel one ships the encoded sets to its
            workers with the run function and finds the caches on disk, instead of every worker redoing both at
            once at its first run."""
            built: set = set()
            for spec in specs:
                train, validation, encoded_eval, _, _, _ = data_of(spec)
                key = (id(train), id(validation), tuple(id(ds) for ds in encoded_eval.values()), spec.sharing)
                if self.args.cache_frozen_layers and key not in built:
                    built.add(key)
                    self._with_frozen_prefix(new_model(spec), train, validation, encoded_eval)

        def run(spec: RunSpec, run_dir: Path, resume: str | None) -> RunOutcome:
            train, validation, encoded_eval, scored, eval_sets, validation_examples = data_of(spec)
            args = self.training_arguments(spec, run_dir)
            if self._is_main():  # what this run was trained with, readable (the checkpoints' copy is deleted)
                atomic_write_text(run_dir / "training_args.json", args.to_json_string())
            model = new_model(spec)
            if self.args.cache_frozen_layers:
                train, validation, encoded_eval = self._with_frozen_prefix(model, train, validation, encoded_eval)
            evaluates = args.eval_strategy != "no"
            trainer = MultiTaskTrainer(model=model, args=args, train_dataset=train, eval_dataset={VALIDATION: validation},
                                       processing_class=self.tokenizer,
                                       callbacks=run_callbacks(metric, spec.tasks, self.args.early_stopping_patience,
                                                               self.args.early_stopping_threshold, evaluates))
            for callback in trainer.callback_handler.callbacks:
                if isinstance(callback, TensorBoardCallback):  # out of checkpoints/, which is deleted after the run
                    callback.logging_dir = str(run_dir / "tensorboard")
            if args.disable_tqdm:  # one compact line per logging step instead of every metric dict
                trainer.remove_callback(PrinterCallback)
                trainer.add_callback(CompactProgress(metric))
            # once per run; carried by every row as metadata, not as a metric (with the number of tasks trained: a
            # run evaluated on fewer, e.g. a control's primary task only, is still a multi-task model)
            parameters = {**count_parameters(model), "trained_tasks": len(spec.tasks)}
            trainer.train(resume_from_checkpoint=resume)
            summary = training_summary(trainer, metric, spec.tasks)  # before the evaluations below add to the log
            trainer.tune_thresholds(validation)  # decision thresholds come from validation, never from test
            final, final_rows = trainer, len(train)
            if self.args.refit_on_validation:  # the validation rows below stay the selection model's
                steps = summary["best_step"] or trainer.state.global_step
                start = time.time()
                final = refit(trainer, new_model(spec), args, train, validation, steps,
                              [c for c in trainer.callback_handler.callbacks if isinstance(c, CompactProgress)])
                final_rows = len(train) + len(validation)
                summary.update(refit_steps=steps, refit_seconds=round(time.time() - start, 1))
            if final is trainer:
                metrics = trainer.evaluate({VALIDATION: validation, **encoded_eval})
            else:  # validation scores the selection model (the refit trained on validation); the other sets the refit
                metrics = trainer.evaluate({VALIDATION: validation})
                if encoded_eval:
                    metrics.update(final.evaluate(encoded_eval))
            rows = []
            for set_name in [VALIDATION, *encoded_eval]:
                source = trainer if set_name == VALIDATION else final
                for task in (scored.get(set_name) or spec.tasks):
                    for name in REPORTED_METRICS:
                        key = f"eval_{set_name}_{task}_{name}"
                        if key in metrics:
                            rows.append({"task": task, "eval_set": set_name, "metric": name, "value": float(metrics[key]),
                                         "train_examples": len(train) if source is trainer else final_rows,
                                         "train_steps": source.state.global_step, **parameters})
            if self.args.official_metrics and self.args.parent_first_narratives:
                # chosen with the selection model on validation (a refit has trained on validation), kept by the saved model
                threshold = tune_parent_first(trainer.accelerator.unwrap_model(trainer.model), self.tokenizer,
                                              validation_examples, self._official_classes)
                if threshold is not None:
                    setattr(final.accelerator.unwrap_model(final.model).config, PARENT_THRESHOLD_ATTRIBUTE, threshold)
                    summary["narrative_parent_threshold"] = threshold
            if self.args.official_metrics and eval_sets:  # the leaderboard's measures, through predict (not validation)
                rows += official_rows(final.accelerator.unwrap_model(final.model), self.tokenizer, eval_sets, scored,
                                      self._official_classes, train_examples=final_rows,
                                      train_steps=final.state.global_step, **parameters)

            model_dir = None
            if self.args.save_best_model:  # the driver moves it to best/<arm> if this run is its arm's best
                model_dir = run_model_dir(run_dir)
                final.save_model(str(model_dir))
                if final.is_world_process_zero():
                    self.tokenizer.save_pretrained(str(model_dir))
            return RunOutcome(rows=rows, log_history=list(trainer.state.log_history), model_dir=model_dir,
                              extra={"train_rows": len(train), **summary, **parameters})

        run.prepare = prepare  # the runner calls it on the pending runs before launching them
        return run

    def _with_frozen_prefix(self, model, train, validation, encoded_eval):
        """The sets with the frozen layers' output attached (computed once per window, kept in <output_dir>/cache
        and re-used by every epoch, seed and arm that shares backbone, frozen layers and tokenization), when the
        model's frozen prefix holds no trainable parameter; the sets unchanged otherwise."""
        from modeling.frozen_cache import attach_frozen_prefix, frozen_prefix_reason

        reason = frozen_prefix_reason(model)
        if reason is not None:
            logger.info("frozen-prefix cache not used: %s", reason)
            return train, validation, encoded_eval
        cache_dir = self.output_dir / "cache"
        with distributed_state(self.training.use_cpu).main_process_first():  # one process writes, the others read
            attach = lambda dataset: attach_frozen_prefix(model, dataset, cache_dir,
                                                          batch_size=self.training.per_device_eval_batch_size)
            return attach(train), attach(validation), {name: attach(ds) for name, ds in encoded_eval.items()}

    def run(self, specs: Sequence[RunSpec], **run_function_options) -> list[dict]:
        """Train every unfinished run of ``specs`` and return all their results rows."""
        self.check_runs(specs)
        self.runner = ExperimentRunner(self.output_dir, self.make_run_function(**run_function_options),
                                       primary_metric=self.args.primary_metric, selection_eval_set=VALIDATION,
                                       save_best=self.args.save_best_model, launcher_args=self.args)
        self.specs = list(specs)
        self.last_rows = self.runner.run(self.specs)  # a list, with .failed (runs that failed after their retries)
        return self.last_rows

    # ------------------------------------------------------------------ shift statistics
    def shift_statistics(self, tasks: Sequence[str]) -> str:
        """Domain shift inside the training data and train -> test shift, as a markdown table."""
        from transformers import AutoModel

        from data_prep.shift import domain_shift, shift_between

        backbone = AutoModel.from_pretrained(self.model_args.model_name_or_path)
        backbone.eval()
        reports = []
        try:
            if self.data.domain_column not in self.data.train.column_names:
                raise ValueError(f"no {self.data.domain_column!r} column")
            reports.append(domain_shift(self.data.train, self.tokenizer, tasks, model=backbone, max_length=self.model_args.max_length))
        except ValueError as error:  # not two domains, or an empty one
            logger.info("no domain shift: %s", error)
        reports.append(shift_between(self.data.train, self.data.test, self.tokenizer, tasks, model=backbone,
                                     max_length=self.model_args.max_length, names=("train", "test")))
        # The plug-in token JSD is far from 0 between two samples of ONE corpus, and grows as they shrink: two
        # random halves of the training data give the floor a difference must clear to mean a shift.
        if len(self.data.train) >= 4:
            halves = self.data.train.train_test_split(test_size=0.5, seed=0)
            reports.append(shift_between(halves["train"], halves["test"], self.tokenizer, tasks, model=None,
                                         max_length=self.model_args.max_length, names=("train half", "half (floor)")))
        header = ["Statistic", *[f"{r.name_a} vs {r.name_b}" for r in reports]]
        body = [["documents", *[f"{r.documents_a} vs {r.documents_b}" for r in reports]],
                ["token JSD (base 2)", *[f"{r.token_jsd:.4f}" for r in reports]],
                ["embedding cosine distance", *[f"{r.embedding_cosine_distance:.4f}" if r.embedding_cosine_distance is not None else "n/a" for r in reports]]]
        for task in tasks:
            per = [next((t for t in r.tasks if t.task == task), None) for r in reports]
            body.append([f"{task}: label-set overlap (Jaccard)", *[f"{t.label_set_overlap:.3f}" if t else "n/a" for t in per]])
            body.append([f"{task}: label-prior JSD", *[f"{t.label_prior_jsd:.3f}" if t else "n/a" for t in per]])
        note = ("Token JSD over word pieces of the backbone tokenizer; cosine distance between mean L2-normalised "
                f"mean-pooled backbone embeddings (first {self.model_args.max_length} tokens); see `data_prep.shift`. "
                "The last column compares two random halves of the training data: sampling alone gives about that "
                "much between corpora of that size (the plug-in JSD grows as corpora shrink, so smaller ones have a "
                "higher floor); a shift means a clear excess over it.")
        return markdown_table(header, body) + "\n\n" + note

    # ------------------------------------------------------------------ report, cards, summary
    def finish(self, rows: Sequence[Mapping], **options) -> Path:
        """Write ``report.md`` (+ figures), a card for every saved best model, push if asked, print a summary
        (see :func:`mtl_study.finishing.finish_study` for the options)."""
        from .finishing import finish_study

        return finish_study(self, rows, **options)

    def _is_main(self) -> bool:
        return distributed_state(self.training.use_cpu).is_main_process


def use_cpu_threads(requested: int | None, num_processes: int) -> int:
    """Set this process's torch threads for CPU training: ``requested``, or the CPU cores available to this
    process divided among the processes of the launch. ``accelerate launch`` exports ``OMP_NUM_THREADS=1`` when
    nothing sets it, which would leave all but one core idle in a single-process study."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = requested or max(1, cores // max(1, num_processes))
    if torch.get_num_threads() != threads:
        logger.info("CPU training: %d torch threads per process (%d cores, %d processes)", threads, cores, num_processes)
        torch.set_num_threads(threads)
    return threads
