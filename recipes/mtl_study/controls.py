"""Known-answer controls for the study pipeline (``recipes/transfer_controls.py``).

Two synthetic corpora (:mod:`data_prep.synthetic_controls`) with the same texts and the same scarce primary
labels, whose answer is known: on the *positive* control the auxiliary task shares the latent factor the primary
task needs, so multi-task training must beat the single-task model on the primary task; on the *negative*
control the auxiliary labels are random, independent of the text, so no significant difference may appear, in
either direction. :func:`control_verdicts` checks both with the same paired Wilcoxon tests (adjusted over the two
primary-task tests) that every report uses.

stl and mtl differ only through the auxiliary task: same texts, same primary labels, same seeds, same backbone
and frozen layers, same step cap; both select their checkpoint and stop early on the primary task's validation
score (the auxiliary task is unlabelled on validation), so neither arm is judged at an arbitrary point of its
training. A significant loss on the negative control therefore means the pipeline gives one arm an unequal
chance (a budget, a selection or a sampling artefact), which it must not.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import datasets

from data_prep.synthetic_controls import CONTROLS, ControlsConfig, auxiliary_task_name, control_tasks, controls_datasets, primary_task_name

from .data import ExperimentData
from .report import markdown_table
from .runner import RunSpec
from .stats import adjust_comparisons, compare_arms, format_p, min_adjusted_p_value, significance_requirement

SINGLE_TASK, MULTI_TASK = "stl", "mtl"


def control_experiment_data(config: ControlsConfig | None = None) -> ExperimentData:
    """Both control corpora as one :class:`ExperimentData` (rows carry a ``control`` column)."""
    config = config or ControlsConfig()
    splits = controls_datasets(config)
    tasks = {t["name"]: t for control in CONTROLS for t in control_tasks(control, config)}
    labelled = sum(value is not None for c in CONTROLS for value in splits["train"][primary_task_name(c)])
    source = (f"SYNTHETIC known-answer controls (seed {config.seed}; {config.train_documents} training texts per "
              f"control, {config.primary_label_rate:.0%} of them with a primary label)")
    return ExperimentData(tasks=tasks, train=splits["train"], validation=splits["validation"], test=splits["test"],
                          source=source, dataset_id="synthetic-transfer-controls", data_dir="", synthetic=True,
                          load_summary=f"{labelled} primary labels in training (both controls)")


def control_specs(seeds: Sequence[int], controls: Sequence[str] = CONTROLS) -> list[RunSpec]:
    """Per control and seed: a single-task model of the primary task and a multi-task model of both tasks."""
    specs = []
    for seed in seeds:
        for control in controls:
            primary, auxiliary = primary_task_name(control), auxiliary_task_name(control)
            condition = {"control": control, "primary_task": primary}
            specs.append(RunSpec(SINGLE_TASK, seed, [primary], sharing="stl", condition=condition, tag=control))
            specs.append(RunSpec(MULTI_TASK, seed, [primary, auxiliary], sharing="hard", condition=condition, tag=control))
    return specs


def _of_control(examples: datasets.Dataset, control: str) -> datasets.Dataset:
    return examples.filter(lambda row: row["control"] == control, desc=f"keeping the {control} control")


def control_examples_for(data: ExperimentData):
    """``examples_for`` of :meth:`Study.make_run_function`: the run's control only; single-task runs keep only
    the texts labelled for their task (the scarce primary labels)."""
    from data_prep.ablations import single_task_examples

    def examples_for(spec: RunSpec) -> datasets.Dataset:
        train = _of_control(data.train, spec.condition["control"])
        if len(spec.tasks) == 1:
            return single_task_examples(train, spec.tasks[0], list(spec.tasks))
        return train

    return examples_for


def control_eval_sets_for(data: ExperimentData):
    """``eval_sets_for`` of :meth:`Study.make_run_function`: the test texts of the run's control."""
    def eval_sets_for(spec: RunSpec) -> dict[str, datasets.Dataset]:
        return {"test": _of_control(data.test, spec.condition["control"])}

    return eval_sets_for


def control_verdicts(rows: Sequence[Mapping], metric: str = "macro_f1", eval_set: str = "test", alpha: float = 0.05,
                     p_adjust: str = "holm") -> list[dict]:
    """Did each control behave? mtl vs stl on its primary task, paired by seed, adjusted over the controls.

    Returns one dict per control: ``control, task, mean_difference, n_pairs, p_value, adjusted_p_value, expected,
    behaved`` (positive: mtl better with adjusted p < alpha; negative: no significant difference either way; None
    when too few seeds make adjusted p < alpha unreachable, so neither verdict means anything).
    """
    comparisons = []
    for control in CONTROLS:
        of_control = [r for r in rows if r.get("control") == control]
        comparisons += [c for c in compare_arms(of_control, MULTI_TASK, SINGLE_TASK, metric, eval_set=eval_set, alpha=alpha)
                        if c.task == primary_task_name(control)]
    comparisons = adjust_comparisons(comparisons, p_adjust)
    verdicts = []
    for c in comparisons:
        control = c.task.removeprefix("primary_")
        if control == "positive":
            expected = f"mtl > stl, adjusted p < {alpha}"
            # The test ranks differences, so its direction is the rank-biserial's sign; a mean pulled up by one
            # outlier seed while most seeds favour stl is not mtl winning.
            behaved = c.significant and c.mean_difference > 0 and (c.effect_size or 0.0) > 0
        else:
            expected = f"no significant difference (adjusted p ≥ {alpha})"
            behaved = not c.significant
        if min_adjusted_p_value(c.testable_pairs, len(comparisons), p_adjust) >= alpha:
            behaved = None  # no seed count this small can reach significance: neither verdict means anything
        verdicts.append({"control": control, "task": c.task, "mean_difference": c.mean_difference, "n_pairs": c.n_pairs,
                         "p_value": c.p_value, "adjusted_p_value": c.adjusted_p_value, "expected": expected,
                         "behaved": behaved, "comparison": c})
    return verdicts


def control_section(rows: Sequence[Mapping], metric: str = "macro_f1", eval_set: str = "test", alpha: float = 0.05,
                    p_adjust: str = "holm") -> str:
    """Markdown: the verdict of each control and what a failure means."""
    verdicts = control_verdicts(rows, metric, eval_set, alpha, p_adjust)
    if not verdicts:
        return "No control has both an stl and an mtl run: nothing to check."
    shown = {True: "yes", False: "**NO**", None: "untestable (too few seeds)"}
    body = [[v["control"], v["task"], f"{v['mean_difference']:+.3f}", v["n_pairs"], format_p(v["p_value"]),
             format_p(v["adjusted_p_value"]), v["expected"], shown[v["behaved"]]] for v in verdicts]
    table = markdown_table(["Control", "Primary task", f"Δ mtl − stl ({metric}, {eval_set})", "Pairs", "p (Wilcoxon)",
                            f"adjusted p ({p_adjust})", "Expected", "Behaved"], body)
    failed = [v["control"] for v in verdicts if v["behaved"] is False]
    verdict = ("**Too few seeds to check the controls.**" if any(v["behaved"] is None for v in verdicts) and not failed else
               "**Both controls behaved: the pipeline detects the planted transfer and no difference where none can exist.**"
               if not failed else
               f"**Control(s) {', '.join(failed)} did NOT behave: do not trust this pipeline's verdicts on real data "
               f"until that is explained** (runs not converged, an arm given an unequal budget or selection, a bug, or a too "
               f"weak planted relation).")
    requirement = significance_requirement([v["comparison"] for v in verdicts], alpha, p_adjust)
    return "\n\n".join([table, requirement, verdict])
