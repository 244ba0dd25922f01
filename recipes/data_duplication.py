"""Data-duplication control: is a multi-task gain just "more tokens seen"?

What it changes: the amount of training data of the single-task models. Besides plain stl and mtl, the arm
``stl_duplicated`` repeats each single-task training set until it has as many tokens per epoch as the
multi-task training set (exact counts in the report), so stl_duplicated vs mtl isolates the effect of the
other task's labels from the effect of more tokens per epoch. Every run still ends by early stopping on validation,
so the tokens a run actually trains on are set by when it stops (its steps are in the convergence table): the
control equalises the data each epoch offers, as the study did, not the optimisation budget. A task labelled on
every training text already has mtl's tokens: its stl_duplicated arm is plain stl, and the report says so.

    accelerate launch recipes/data_duplication.py --seeds 0 1 2 3 4 5 6 7
"""

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads slow every step several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from data_prep.ablations import duplication_control, token_count
from mtl_study.config import parse_recipe_args
from mtl_study.report import markdown_table
from mtl_study.runner import RunSpec
from mtl_study.study import Study


def main(argv=None):
    args, training, model = parse_recipe_args("data_duplication", argv,
                            shipped_config=Path(__file__).with_name("configs") / "data_duplication.yaml")
    study = Study(args, training, model, "data_duplication", "Data-duplication control: stl with mtl's token count vs mtl",
                  "Does multi-task training still win when the single-task models see as many tokens as the multi-task model?")
    tasks = study.task_names()
    specs = study.architecture_specs(tasks, arms=["stl", "mtl"])
    specs += [RunSpec("stl_duplicated", s, [t], sharing="stl", tag=t) for s in args.seeds for t in tasks]
    target_tokens = token_count(study.encode(study.data.train, tasks))
    reports = {}

    def encoded_train_for(spec):
        encoded = study.encode(study.default_examples(spec), spec.tasks)
        if spec.arm != "stl_duplicated":
            return encoded
        control, report = duplication_control(encoded, target_tokens, seed=spec.seed)
        reports[(spec.tasks[0], spec.seed)] = report
        return control

    rows = study.run(specs, encoded_train_for=encoded_train_for)
    for task in tasks:  # also for runs skipped on relaunch: the counts are deterministic for a seed
        for seed in args.seeds:
            if (task, seed) not in reports:
                encoded_train_for(RunSpec("stl_duplicated", seed, [task], sharing="stl", tag=task))
    body, same = [], []
    for task in tasks:
        of_task = [reports[(task, seed)] for seed in args.seeds]
        first = of_task[0]
        extra = sorted({r.extra_rows for r in of_task})
        gaps = sorted({r.token_gap for r in of_task})
        body.append([task, first.target_tokens, first.source_tokens, first.full_copies,
                     f"{extra[0]}–{extra[-1]}" if len(extra) > 1 else extra[0],
                     f"{gaps[0]}–{gaps[-1]}" if len(gaps) > 1 else gaps[0]])
        if first.source_tokens >= first.target_tokens:
            same.append(task)
    table = markdown_table(["Task", "mtl tokens (target)", "stl tokens", "copies", "extra rows (over seeds)",
                            "gap to the target (over seeds)"], body)
    if same:
        table += (f"\n\nFor {', '.join(same)} the single-task data already has the multi-task token count: "
                  "stl_duplicated is plain stl there, and its comparisons test nothing but the seed.")
    return study.finish(rows, arm_order=["stl", "stl_duplicated", "mtl"], extra_comparisons=[("mtl", "stl_duplicated")], tasks=tasks,
                        extra_sections=[("Token counts of the duplication control (one epoch)", table)])


if __name__ == "__main__":
    main()
