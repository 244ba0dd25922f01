"""Cross-domain evaluation: models trained on each domain (and on both) are evaluated on every domain.

What it changes: the training domain. The report shows, per task and architecture, the train x test matrix
of scores as a heat map and its asymmetry (how much training on A loses on B versus B on A). Each run is also
validated on its training domain only. The domains differ in size (on the English release about 125 URW and 99 CC
training articles, 224 for both), which the asymmetry includes: the shift table's "documents" row gives the counts.

    accelerate launch recipes/cross_domain_evaluation.py --arms stl mtl --seeds 0 1 2 3 4 5 6 7 8
"""

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads slow every step several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from data_prep.ablations import per_domain_eval_sets
from mtl_study.config import parse_recipe_args
from mtl_study.stats import cross_domain_matrix
from mtl_study.study import Study

BOTH = "both"


def main(argv=None):
    args, training, model = parse_recipe_args("cross_domain_evaluation", argv,
                            shipped_config=Path(__file__).with_name("configs") / "cross_domain_evaluation.yaml")
    study = Study(args, training, model, "cross_domain_evaluation", "Cross-domain evaluation: the train x test domain matrix",
                  "How well does a model trained on one domain do on the other, and is the loss symmetric?")
    tasks = study.task_names()
    train_domains = [*study.data.domains(), BOTH]
    subsets = {d: study.data.train.filter(lambda row, d=d: row["domain"] == d) for d in study.data.domains()}
    subsets[BOTH] = study.data.train
    # A model "trained on URW" is also validated on URW only: the other domain's labels must not pick its checkpoint.
    validation_subsets = {d: study.data.validation.filter(lambda row, d=d: row["domain"] == d) for d in study.data.domains()}
    validation_subsets[BOTH] = study.data.validation
    empty = [d for d, subset in validation_subsets.items() if not len(subset)]
    if empty:
        raise ValueError(f"the validation set has no article of domain(s) {empty}: runs trained there would have "
                         "nothing to stop on (more data, or another --split_seed)")
    specs = []
    for domain in train_domains:
        specs += study.architecture_specs(tasks, condition={"train_domain": domain}, arm_suffix=f"@{domain}")

    def examples_for(spec):
        data = subsets[spec.condition["train_domain"]]
        if len(spec.tasks) == 1:
            from data_prep.ablations import single_task_examples

            return single_task_examples(data, spec.tasks[0], list(study.data.tasks))
        return data

    test_sets = dict(per_domain_eval_sets(study.data.test))
    rows = study.run(specs, examples_for=examples_for, eval_sets_for=lambda spec: test_sets,
                     validation_for=lambda spec: validation_subsets[spec.condition["train_domain"]])
    matrices = []
    for arm in args.arms:
        arm_rows = [r for r in rows if r["arm"].split("@")[0] == arm and r["eval_set"] != "validation"]
        for task in tasks:
            matrix = cross_domain_matrix([{**r, "arm": arm} for r in arm_rows], task=task, metric=args.primary_metric, arm=arm)
            matrix.task = f"{task} [{arm}]"
            matrices.append(matrix)
    # Every multi-task arm against the single-task models of its training domain (adapters too).
    comparisons = [(f"{arm}@{d}", f"stl@{d}") for d in train_domains for arm in args.arms
                   if arm != "stl" and "stl" in args.arms]
    arm_order = [f"{a}@{d}" for d in train_domains for a in args.arms]
    # Baselines per training domain, held against the arms trained there, on the same per-domain test sets.
    return study.finish(rows, arm_order=arm_order, extra_comparisons=comparisons, cross_domain=matrices, tasks=tasks,
                        baseline_eval_sets=test_sets, baseline_train_sets=subsets, baseline_validation_sets=validation_subsets)


if __name__ == "__main__":
    main()
