"""Known-answer controls for the study pipeline (``recipes/transfer_controls.py``).

Two synthetic corpora (:mod:`data_prep.synthetic_controls`) with the same texts and the same scarce primary
labels, whose answer is known: on the *positive* control the auxiliary task shares the latent factor the primary
task needs, so multi-task training must beat the single-task model on the primary task; on the *negative*
control the auxiliary labels are random, independent of the text, so the pipeline must not find a gain.
:func:`control_verdicts` checks both with the same paired Wilcoxon tests (adjusted over the two primary-task tests)
that every report uses.

stl and mtl differ only through the auxiliary task: same texts, same primary labels, same seeds, same backbone
and frozen layers, same step cap; both select their checkpoint and stop early on the primary task's validation
score (the auxiliary task is unlabelled on validation), so neither arm is judged at an arbitrary point of its
training. The negative control is null for transfer, not for cost: its mtl model spends shared capacity and half of
its batches on random labels, so a significant LOSS there is real negative transfer, reported as such; only a
significant GAIN means the pipeline invents transfer (an arm given an unequal budget, selection or sampling).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import datasets

from data_prep.synthetic_controls import CONTROLS, ControlsConfig, auxiliary_task_name, control_tasks, controls_datasets, primary_task_name

from .data import ExperimentData
from .report import markdown_table
from .runner import RunSpec
from .stats import (adjust_comparisons, compare_arms, decision_p_heading, decision_p_name, family_floors, format_p,
                    significance_requirement)

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

    Returns one dict per control of :data:`CONTROLS`: ``control, task, mean_difference, n_pairs, p_value,
    adjusted_p_value, effect_size, expected, behaved, note``. ``behaved``: positive, mtl better with adjusted
    p < alpha (in the direction of the ranks too); negative, no significant gain. A significant result always
    decides; otherwise ``None`` when this family's seeds cannot reach adjusted p < alpha, so neither verdict means
    anything, and ``None`` with the note "missing" for a control without an stl and an mtl run (failed runs).
    """
    comparisons = []
    for control in CONTROLS:
        of_control = [r for r in rows if r.get("control") == control]
        comparisons += [c for c in compare_arms(of_control, MULTI_TASK, SINGLE_TASK, metric, eval_set=eval_set, alpha=alpha)
                        if c.task == primary_task_name(control)]
    comparisons = adjust_comparisons(comparisons, p_adjust)
    floors = family_floors(comparisons, p_adjust)
    by_control = {c.task.removeprefix("primary_"): c for c in comparisons}
    verdicts = []
    for control in CONTROLS:
        c = by_control.get(control)
        if c is None:
            verdicts.append({"control": control, "task": primary_task_name(control), "mean_difference": None,
                             "n_pairs": 0, "p_value": None, "adjusted_p_value": None, "effect_size": None,
                             "expected": "", "behaved": None, "note": "missing: no stl and mtl run to compare",
                             "comparison": None})
            continue
        # The test ranks differences, so its direction is the rank-biserial's sign; a mean pulled up by one outlier
        # seed while most seeds favour the other arm is not a win.
        gain = c.significant and c.direction == "higher" and c.mean_difference > 0
        loss = c.significant and c.direction == "lower" and c.mean_difference < 0
        note = ""
        if control == "positive":
            expected = f"mtl > stl, {decision_p_name(p_adjust)} < {alpha}"
            behaved = gain
        else:
            expected = f"no significant gain of mtl ({decision_p_name(p_adjust)} ≥ {alpha} or mtl lower)"
            behaved = not gain
            if loss:
                note = ("mtl significantly lower: real negative transfer (its shared layer also fits random labels), "
                        "not an invented gain")
        if not c.significant and floors.get(id(c), 1.0) >= alpha:
            behaved, note = None, f"untestable: these seeds cannot reach {decision_p_name(p_adjust)} < α"
        verdicts.append({"control": control, "task": c.task, "mean_difference": c.mean_difference, "n_pairs": c.n_pairs,
                         "p_value": c.p_value, "adjusted_p_value": c.adjusted_p_value, "effect_size": c.effect_size,
                         "expected": expected, "behaved": behaved, "note": note, "comparison": c})
    return verdicts


def control_section(rows: Sequence[Mapping], metric: str = "macro_f1", eval_set: str = "test", alpha: float = 0.05,
                    p_adjust: str = "holm", not_converged: Sequence[str] = ()) -> str:
    """Markdown: the verdict of each control and what a failure means. ``not_converged``: ids of control runs that
    ended at their step cap still improving (their verdicts are then provisional)."""
    verdicts = control_verdicts(rows, metric, eval_set, alpha, p_adjust)
    shown = {True: "yes", False: "**NO**", None: "untestable (too few seeds)"}

    def cell(value, form):
        return "—" if value is None else form(value)

    body = [[v["control"], v["task"], cell(v["mean_difference"], lambda d: f"{d:+.3f}"), v["n_pairs"],
             format_p(v["p_value"]), format_p(v["adjusted_p_value"]), cell(v["effect_size"], lambda r: f"{r:+.2f}"),
             v["expected"], "missing" if v["note"].startswith("missing") else shown[v["behaved"]], v["note"]]
            for v in verdicts]
    table = markdown_table(["Control", "Primary task", f"Δ mtl − stl ({metric}, {eval_set})", "Pairs", "p (Wilcoxon)",
                            decision_p_heading(p_adjust), "Rank-biserial r", "Expected", "Behaved", "Note"], body)
    missing = [v["control"] for v in verdicts if v["note"].startswith("missing")]
    failed = [v["control"] for v in verdicts if v["behaved"] is False]
    if failed:
        verdict = (f"**Control(s) {', '.join(failed)} did NOT behave: do not trust this pipeline's verdicts on real data "
                   f"until that is explained** (runs not converged, an arm given an unequal budget or selection, a bug, or "
                   f"a too weak planted relation).")
    elif missing:
        verdict = (f"**Control(s) {', '.join(missing)} missing (their runs failed or were not run): the pipeline is not "
                   f"checked.** Relaunch to run them.")
    elif any(v["behaved"] is None for v in verdicts):
        verdict = "**Too few seeds to check the controls.**"
    else:
        negative = next(v for v in verdicts if v["control"] == "negative")
        verdict = ("**Both controls behaved: the pipeline detects the planted transfer and invents no gain where none "
                   "exists.**")
        if negative["comparison"] is not None and not negative["comparison"].significant:
            verdict += (f" Not significant is not equivalent: on the negative control mtl − stl is "
                        f"{negative['mean_difference']:+.3f} (rank-biserial r "
                        f"{cell(negative['effect_size'], lambda r: f'{r:+.2f}')}); with {negative['n_pairs']} seeds a "
                        "bias is detected only when it favours one arm on nearly every seed.")
        else:
            verdict += f" On the negative control mtl is significantly lower: {negative['note']}."
    if not_converged:
        verdict += (f" **Provisional:** {len(not_converged)} control run(s) ended at their step cap still improving "
                    f"({', '.join(sorted(not_converged)[:6])}{' ...' if len(not_converged) > 6 else ''}).")
    requirement = significance_requirement([v["comparison"] for v in verdicts if v["comparison"] is not None], alpha,
                                           p_adjust)
    return "\n\n".join([table, requirement, verdict])
