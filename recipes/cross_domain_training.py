"""Cross-domain training: the primary task is trained on one domain only; its auxiliary task comes either
from the same domain or from the other one.

What it changes: the domain of the auxiliary task's labels. The question: when the primary task has no
labels in domain B, does training the auxiliary task on domain B recover the primary task's performance
there (compared with a single-task model and with an auxiliary task from the primary's own domain)? Every run
sees the same restriction on validation (its checkpoint and thresholds are chosen without the primary task's
domain-B labels). Not held equal: the other-domain arm trains on more articles (the primary's domain for the
primary task plus domain B for the auxiliary) and, where domain B is smaller, on fewer auxiliary labels (the shift
table's "documents" row gives each domain's article count).

    accelerate launch recipes/cross_domain_training.py --primary_domain URW --seeds 0 1 2 3 4 5 6 7 8
"""

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads slow every step several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dataclasses import dataclass, field

from data_prep.ablations import cross_domain_examples, per_domain_eval_sets, single_task_examples
from mtl_study.config import TASK_KINDS, parse_recipe_args
from mtl_study.runner import RunSpec
from mtl_study.study import Study


@dataclass
class CrossDomainTrainingArguments:
    primary_task: str = field(default="entity_framing", metadata={"help": "Task kind whose labels come from --primary_domain only. Default entity_framing: its roles are shared by both domains, so an auxiliary task on the other domain can carry it over; the two domains' narrative labels barely overlap (most of CC's never occur in URW training), so no auxiliary task can recover narratives there."})
    primary_domain: str = field(default="URW", metadata={"help": "Domain of the primary task's training labels."})

    def __post_init__(self):
        if self.primary_task not in TASK_KINDS:
            raise ValueError(f"--primary_task: unknown task kind {self.primary_task!r}; choose among {list(TASK_KINDS)}")


def main(argv=None):
    args, training, model, recipe = parse_recipe_args("cross_domain_training", argv, extra=[CrossDomainTrainingArguments],
                                    shipped_config=Path(__file__).with_name("configs") / "cross_domain_training.yaml")
    study = Study(args, training, model, "cross_domain_training", "Cross-domain training: where should the auxiliary task's labels come from?",
                  f"With {recipe.primary_task} labelled only on {recipe.primary_domain}, does an auxiliary task trained on "
                  "the other domain carry the primary task over there?", extra=[recipe])
    tasks = study.task_names()
    primary = next((t for t in tasks if t.startswith(recipe.primary_task)), None)
    # Auxiliary tasks are of another kind: a coarser view of the primary task (entity_framing_coarse next to
    # entity_framing_fine) is a function of its labels, and trained on the other domain it would leak them there.
    auxiliary = [t for t in tasks if not t.startswith(recipe.primary_task)]
    if primary is None or not auxiliary:
        raise ValueError(f"--tasks {tasks}: cross-domain training needs a {recipe.primary_task!r} task (--primary_task) "
                         "and at least one task of another kind as its auxiliary")
    domains = study.data.domains()
    if recipe.primary_domain not in domains or len(domains) < 2:
        raise ValueError(f"--primary_domain {recipe.primary_domain!r}: the data's domains are {domains}; it needs to "
                         "be one of two or more")
    other = next(d for d in domains if d != recipe.primary_domain)

    def arm_data(examples):
        """Each arm's examples: what it may see of a split (its training set, and alike its validation set)."""
        in_primary_domain = examples.filter(lambda row: row["domain"] == recipe.primary_domain)
        return {
            "stl": single_task_examples(in_primary_domain, primary, list(study.data.tasks)),
            "mtl_aux_same_domain": cross_domain_examples(examples, {primary: recipe.primary_domain, **{a: recipe.primary_domain for a in auxiliary}}),
            "mtl_aux_other_domain": cross_domain_examples(examples, {primary: recipe.primary_domain, **{a: other for a in auxiliary}}),
        }, in_primary_domain

    mixtures, in_primary_domain = arm_data(study.data.train)
    # The primary task's labels of the other domain must not choose a checkpoint or a threshold either.
    validation_mixtures, validation_in_primary_domain = arm_data(study.data.validation)
    for arm, examples in validation_mixtures.items():
        if not any(labels is not None for labels in examples[primary]):
            raise ValueError(f"the validation set has no article of {recipe.primary_domain} labelled for {primary}: "
                             f"the {arm} runs would have nothing to stop on (more data, or another --split_seed)")
    specs = []
    for seed in args.seeds:
        specs.append(RunSpec("stl", seed, [primary], sharing="stl", condition={"train_domain": recipe.primary_domain}))
        for arm in ("mtl_aux_same_domain", "mtl_aux_other_domain"):
            aux_domain = recipe.primary_domain if arm == "mtl_aux_same_domain" else other
            specs.append(RunSpec(arm, seed, [primary, *auxiliary], condition={"train_domain": recipe.primary_domain, "aux_domain": aux_domain}))
    test_sets = dict(per_domain_eval_sets(study.data.test))
    rows = study.run(specs, examples_for=lambda spec: mixtures[spec.arm], eval_sets_for=lambda spec: test_sets,
                     validation_for=lambda spec: validation_mixtures[spec.arm])
    # Baselines see what every arm's primary task sees: labels from the primary domain only; scored per domain. The
    # auxiliary tasks get none: their labels come from a different domain in each mtl arm.
    return study.finish(rows, arm_order=list(mixtures), extra_comparisons=[("mtl_aux_other_domain", "mtl_aux_same_domain")],
                        tasks=[primary, *auxiliary],
                        data_mixture=f"{primary} labels from {recipe.primary_domain}; auxiliary labels from {recipe.primary_domain} or {other} (per arm)",
                        baseline_eval_sets=test_sets, baseline_train_sets={"": in_primary_domain},
                        baseline_validation_sets={"": validation_in_primary_domain}, baseline_tasks=[primary])


if __name__ == "__main__":
    main()
