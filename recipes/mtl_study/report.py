"""``report.md`` and PNG figures for an experiment's results.

The report answers the study's question for the recipe that ran: per-arm mean ± std over seeds, the
paired Wilcoxon tests against the single-task baseline (with effect sizes and a plain statement when
there are too few seeds), the negative-transfer table, optional cross-domain matrices, the shift
statistics of the data, recipe-specific sections and the figures (per-seed scores per arm, cross-domain
heat maps, per-task learning curves from the trainer's log history). When the rows carry the runs' parameter
counts (:data:`PARAMETER_FIELDS`), the setup shows the trainable and total parameters of each arm's model.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .convergence import convergence_section  # noqa: E402
from .results import atomic_write_text  # noqa: E402
from .stats import (  # noqa: E402
    P_ADJUST_METHODS,
    CrossDomainMatrix,
    comparison_family,
    decision_p_heading,
    decision_p_name,
    format_p,
    is_baseline_arm,
    family_floors,
    negative_transfer,
    significance_requirement,
    summarize,
)


def _save(fig, path: Path) -> Path:
    """Save a figure atomically (temporary file + rename) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def direction_label(comparison) -> str:
    """The negative-transfer table's reading of one multi-task-minus-baseline comparison."""
    if comparison.direction == "lower":
        return "negative transfer"
    if comparison.direction == "mixed":
        mean = "lower" if comparison.mean_difference < 0 else "higher"
        seeds = "higher" if (comparison.effect_size or 0.0) > 0 else "lower"
        return f"mixed (mean {mean}, most seeds {seeds})"
    return "no loss"


def markdown_table(header: Sequence[str], body: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- figures
# One colour per arm in every figure, so "mtl" is the same colour in the scores and the learning curves.
_KNOWN_ARM_COLOURS = {"stl": "C0", "mtl": "C1", "mtl_adapters": "C2"}


def arm_colours(arms: Sequence[str]) -> dict[str, str]:
    """Matplotlib colour of each arm: fixed for the three architectures, the next free cycle colour for others."""
    free = (f"C{i}" for i in range(3, 10_000))
    return {arm: _KNOWN_ARM_COLOURS.get(arm) or next(free) for arm in arms}


def plot_per_seed_scores(rows: Sequence[Mapping], metric: str, path: Path, eval_set: str | None = None,
                         arm_order: Sequence[str] | None = None) -> Path | None:
    """One panel per task (x eval set): every seed's score as a dot per arm, the mean as a bar."""
    selected = [r for r in rows if r["metric"] == metric and (eval_set is None or r["eval_set"] == eval_set)]
    if not selected:
        return None
    panels = sorted({(r["task"], r["eval_set"]) for r in selected})
    arms = list(arm_order or sorted({r["arm"] for r in selected}))
    arms = [a for a in arms if any(r["arm"] == a for r in selected)]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    rng = np.random.default_rng(0)  # jitter only, for readability
    colours = arm_colours(sorted(arms))
    for ax, (task, es) in zip(axes.flat, panels):
        for i, arm in enumerate(arms):
            vals = [float(r["value"]) for r in selected if r["arm"] == arm and r["task"] == task and r["eval_set"] == es]
            if not vals:
                continue
            ax.bar(i, np.mean(vals), color=colours[arm], alpha=0.35, width=0.6)
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(vals)), vals, color=colours[arm], edgecolor="black", zorder=3, s=22)
        ax.set_xticks(range(len(arms)), arms, rotation=20)
        ax.set_title(f"{task} — {es}", fontsize=10)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Per-seed {metric} by arm (dots: seeds, bars: mean)")
    return _save(fig, path)


def plot_cross_domain_matrix(matrix: CrossDomainMatrix, path: Path, title: str | None = None) -> Path:
    """Heat map of a train x test matrix with the mean (± std) in every cell."""
    values = np.array(matrix.values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(matrix.test_domains), 1.2 + 1.0 * len(matrix.train_domains)))
    image = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values) if np.isfinite(values).any() else 0)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}\n±{matrix.stds[i][j]:.2f}", ha="center", va="center",
                        color="white" if values[i, j] < np.nanmean(values) else "black", fontsize=8)
    ax.set_xticks(range(len(matrix.test_domains)), matrix.test_domains)
    ax.set_yticks(range(len(matrix.train_domains)), matrix.train_domains)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained on")
    ax.set_title(title or f"{matrix.task}: {matrix.metric}")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)


def learning_curve_series(log_history: Sequence[Mapping], task: str) -> dict[str, tuple[list, list]]:
    """Series ``name -> (steps, values)`` for one task from a trainer log history.

    Picks the task's own training loss (any key naming the task and ``loss``), falling back to the total
    ``loss``, and the task's evaluation metrics (``eval_{task}_...``) when evaluated more than once.
    """
    series: dict[str, tuple[list, list]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or key in ("step", "epoch"):
                continue
            is_task_loss = task in key and "loss" in key and not key.startswith("eval_")
            is_task_eval = key.startswith(f"eval_{task}_")
            if is_task_loss or is_task_eval or key == "loss":
                steps, vals = series.setdefault(key, ([], []))
                steps.append(step)
                vals.append(float(value))
    task_losses = [k for k in series if task in k and "loss" in k and not k.startswith("eval_")]
    if task_losses:
        series.pop("loss", None)
    elif any(k.startswith("loss_") for entry in log_history for k in entry):
        return {}  # the run logs per-task losses but not this task's: it did not train this task
    return {k: v for k, v in series.items() if len(v[0]) > 1 or not k.startswith("eval_")}


def plot_learning_curves(histories: Mapping[str, tuple[str, Sequence[Mapping]]], tasks: Sequence[str],
                         path: Path) -> Path | None:
    """One panel per task; one line per run (``histories``: run_id -> (arm, log history)) coloured by arm."""
    if not histories or not tasks:
        return None
    colours = arm_colours(sorted({arm for arm, _ in histories.values()}))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.4), squeeze=False)
    drawn = False
    for ax, task in zip(axes.flat, tasks):
        labelled = set()
        for run_id, (arm, history) in sorted(histories.items()):
            for key, (steps, vals) in learning_curve_series(history, task).items():
                if key.startswith("eval_"):
                    continue
                label = arm if arm not in labelled else None
                labelled.add(arm)
                ax.plot(steps, vals, color=colours[arm], alpha=0.55, linewidth=1, label=label)
                drawn = True
        ax.set_title(f"{task}: training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return None
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------- sections
#: Row metadata (not metrics) giving the size of a run's model; counted once per run by the study.
PARAMETER_FIELDS = ("trainable_parameters", "total_parameters")

LOSS_CURVES_NOTE = ("The logged total `loss` is the (weighted) sum of the per-task mean losses, so it grows with the "
                    "number of tasks a run trains: compare the per-task `loss_<task>` curves across arms, not the total.")


def format_count(count: int | float) -> str:
    """A parameter count for humans: ``1.78M``, ``28.4k``, ``950``."""
    count = float(count)
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= threshold:
            value = count / threshold
            return f"{value:.3g}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return f"{count:.0f}"


def run_parameter_counts(rows: Sequence[Mapping]) -> dict[str, dict]:
    """``run_id -> {arm, seed, tasks (evaluated), trained_tasks, trainable_parameters, total_parameters}`` for runs
    whose rows carry the counts."""
    runs: dict[str, dict] = {}
    for r in rows:
        if not all(isinstance(r.get(f), (int, float)) for f in PARAMETER_FIELDS):
            continue
        run_id = r.get("run_id") or f"{r['arm']}__seed{r['seed']}"
        run = runs.setdefault(run_id, {"arm": r["arm"], "seed": r["seed"], "tasks": set(),
                                       **{f: int(r[f]) for f in PARAMETER_FIELDS}})
        run["tasks"].add(r["task"])
        if isinstance(r.get("trained_tasks"), int):  # results of older versions: the tasks evaluated stand in
            run["trained_tasks"] = r["trained_tasks"]
    for run in runs.values():
        run.setdefault("trained_tasks", len(run["tasks"]))
    return runs


def parameter_table(rows: Sequence[Mapping], arm_order: Sequence[str] | None = None, baseline: str | None = "stl") -> str | None:
    """Trainable and total parameters of each arm's model(s) (a range where the runs of an arm differ, e.g. the
    heads of single-task models) and, when ``baseline`` has counts, the mean trainable count relative to its own;
    None when no row carries the counts (results of an older version)."""
    runs = run_parameter_counts(rows)
    if not runs:
        return None
    arms = list(arm_order or sorted({run["arm"] for run in runs.values()}))
    arms = [a for a in arms if any(run["arm"] == a for run in runs.values())]
    arms += sorted({run["arm"] for run in runs.values()} - set(arms))

    def span(values):
        low, high = min(values), max(values)
        return format_count(low) if format_count(low) == format_count(high) else f"{format_count(low)}–{format_count(high)}"

    def mean_trainable(arm):
        values = [run["trainable_parameters"] for run in runs.values() if run["arm"] == arm]
        return sum(values) / len(values) if values else None

    reference = mean_trainable(baseline) if baseline else None
    body = []
    for arm in arms:
        of_arm = [run for run in runs.values() if run["arm"] == arm]
        tasks = sorted(set().union(*(run["tasks"] for run in of_arm)))
        trained = max(run["trained_tasks"] for run in of_arm)
        single = all(run["trained_tasks"] == 1 for run in of_arm) and len(tasks) > 1
        model = "one model per task" if single else f"one model for {trained} task{'s' * (trained != 1)}"
        trainable = [run["trainable_parameters"] for run in of_arm]
        total = [run["total_parameters"] for run in of_arm]
        shares = [run["trainable_parameters"] / run["total_parameters"] for run in of_arm if run["total_parameters"]]
        share = (f"{min(shares):.1%}" if f"{min(shares):.1%}" == f"{max(shares):.1%}" else f"{min(shares):.1%}–{max(shares):.1%}") if shares else "n/a"
        row = [arm, model, span(trainable), span(total), share]
        if reference:
            row.append(f"{mean_trainable(arm) / reference:.1%}")
        body.append(row)
    header = ["Arm", "Model", "Trainable parameters (per model)", "Total parameters (per model)", "Trainable share"]
    return markdown_table(header + ([f"Trainable vs {baseline}"] if reference else []), body)


def arm_table(rows: Sequence[Mapping], metric: str, arm_order: Sequence[str] | None = None,
              baseline_rows: Sequence[Mapping] = ()) -> str:
    """One row per arm (mean ± std over seeds per task x eval set), then one per reference baseline; a model
    arm's cell says "does not beat <baseline>" when its mean is not above that baseline's score."""
    from .baselines import beaten_baselines

    summaries = summarize(rows, metric=metric)
    arms = list(arm_order or sorted({s.arm for s in summaries}))
    arms = [a for a in arms if any(s.arm == a for s in summaries)]
    arms += sorted({s.arm for s in summaries} - set(arms))
    baselines = [r for r in baseline_rows if r["metric"] == metric]
    keys = sorted({(s.task, s.eval_set) for s in summaries})
    index = {(s.arm, s.task, s.eval_set): s for s in summaries}
    failures = beaten_baselines([*rows, *baselines], metric) if baselines else {}
    body = []
    for arm in arms:
        cells = []
        for task, es in keys:
            s = index.get((arm, task, es))
            cell = f"{s.formatted()} (n={s.n})" if s else "—"
            failed = failures.get((arm, task, es))
            if s and failed:
                cell += " — **does not beat " + ", ".join(b for b, _ in failed) + "**"
            cells.append(cell)
        body.append([arm, *cells])
    for baseline in sorted({b["arm"] for b in baselines}):
        values = {(b["task"], b["eval_set"]): float(b["value"]) for b in baselines if b["arm"] == baseline}
        body.append([f"*{baseline}*", *[f"{values[k]:.3f}" if k in values else "—" for k in keys]])
    return markdown_table(["Arm", *[f"{task} ({es})" for task, es in keys]], body)


def comparison_table(comparisons) -> str:
    """Raw and adjusted p-values; "significant" is decided on the adjusted one."""
    family = [c for c in comparisons if c.p_value is not None]
    method = comparisons[0].p_adjust if comparisons else "none"
    floors = family_floors(family, method)
    body = []
    for c in comparisons:
        floor = floors.get(id(c), 1.0)
        verdict = "yes" if c.significant else ("untestable" if floor >= c.alpha or c.p_value is None else "no")
        effect = f"{c.effect_size:+.2f}" if c.effect_size is not None else "—"
        body.append([f"{c.arm_a} − {c.arm_b}", c.task, c.eval_set, f"{c.mean_difference:+.3f}", c.n_pairs,
                     format_p(c.p_value), format_p(c.decision_p_value), effect, verdict])
    return markdown_table(["Comparison", "Task", "Eval set", "Mean Δ", "Pairs", "p (Wilcoxon)", decision_p_heading(method),
                           "Rank-biserial r", f"{decision_p_name(method)} < α"], body)


def shift_statistics_markdown(shift) -> str:
    """Render shift statistics given as markdown, a mapping, or a list of row dicts."""
    if shift is None:
        return "Not computed."
    if isinstance(shift, str):
        return shift
    if hasattr(shift, "to_markdown"):
        try:
            return shift.to_markdown()
        except ImportError:  # pandas needs `tabulate` for to_markdown
            shift = shift.to_dict(orient="records")
    if isinstance(shift, Mapping):
        flat = []
        for key, value in shift.items():
            if isinstance(value, Mapping):
                flat.extend([f"{key}.{k}", _short(v)] for k, v in value.items())
            else:
                flat.append([key, _short(value)])
        return markdown_table(["Statistic", "Value"], flat)
    if isinstance(shift, Sequence) and shift and isinstance(shift[0], Mapping):
        header = list(shift[0])
        return markdown_table(header, [[_short(r.get(h)) for h in header] for r in shift])
    return str(shift)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return ", ".join(_short(v) for v in value[:8]) + ", …"
    if isinstance(value, Mapping):
        items = list(value.items())
        text = ", ".join(f"{k}: {_short(v)}" for k, v in items[:8])
        return text + (", …" if len(items) > 8 else "")
    return str(value)


@dataclass
class ReportInputs:
    """Everything a report needs besides the results rows."""

    title: str
    question: str
    primary_metric: str = "macro_f1"
    baseline: str = "stl"
    arm_order: list[str] | None = None
    extra_comparisons: list[tuple[str, str]] = field(default_factory=list)  # (arm_a, arm_b) pairs to test too
    alpha: float = 0.05
    setup: Mapping | None = None
    shift_statistics: object = None
    cross_domain: list[CrossDomainMatrix] = field(default_factory=list)
    learning_curves: Mapping[str, tuple[str, Sequence[Mapping]]] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    extra_sections: list[tuple[str, str]] = field(default_factory=list)
    outputs: Mapping[str, str] = field(default_factory=dict)
    p_adjust: str = "holm"  # multiple-comparison adjustment over ALL the report's tests: holm | bh | none
    run_summaries: list[Mapping] = field(default_factory=list)  # the runs' run_summary.json (convergence table)
    baseline_rows: list[Mapping] = field(default_factory=list)  # rows of mtl_study.baselines.baseline_rows


def write_report(output_dir: str | Path, rows: Sequence[Mapping], inputs: ReportInputs) -> Path:
    """Write ``<output_dir>/report.md`` and ``<output_dir>/figures/*.png``; returns the report's path."""
    output_dir = Path(output_dir)
    figures_dir = output_dir / "figures"
    metric, baseline = inputs.primary_metric, inputs.baseline
    # Reference baselines are shown beside the arms but never enter the per-seed statistics.
    baselines = [*inputs.baseline_rows, *(r for r in rows if is_baseline_arm(r["arm"]))]
    rows = [r for r in rows if not is_baseline_arm(r["arm"])]
    arms_present = sorted({r["arm"] for r in rows})
    seeds_present = sorted({r["seed"] for r in rows})
    lines = [f"# {inputs.title}", "", f"**Question.** {inputs.question}", ""]
    if inputs.setup:
        lines += ["## Setup", "", markdown_table(["Option", "Value"], [[k, _short(v)] for k, v in inputs.setup.items()]), ""]
    seeds_of = {arm: sorted({r["seed"] for r in rows if r["arm"] == arm}) for arm in arms_present}
    if len({tuple(seeds) for seeds in seeds_of.values()}) <= 1:
        seeds_text = f"seeds: {seeds_present} ({len(seeds_present)} per arm)"
    else:  # some runs missing (failed, or not launched): the paired tests use the seeds both arms have
        seeds_text = "seeds per arm: " + "; ".join(f"{arm} {seeds} ({len(seeds)})" for arm, seeds in seeds_of.items())
    lines += [f"Arms: {', '.join(arms_present)}; {seeds_text}; {len(rows)} results rows.", ""]
    parameters = parameter_table(rows, inputs.arm_order, baseline)
    if parameters:
        lines += ["### Trainable parameters per arm", "", parameters, "",
                  "Counted once per run on the model as trained. Frozen weights do not train: the embeddings and the "
                  "lowest frozen layers in every arm and, under adapters, every base weight (adapters inside frozen "
                  "layers included). Read the scores below next to these capacities.", ""]

    lines += [f"## Results ({metric}, mean ± std over seeds)", "", arm_table(rows, metric, inputs.arm_order, baselines), ""]
    if baselines:
        from .baselines import baseline_verdicts

        lines += ["Rows in italics are reference baselines fitted on the same training data (training + validation when "
                  "the models are refitted on it) and scored with the same "
                  "metrics and decision rule (majority class, label priors, TF-IDF + logistic regression; see "
                  "`mtl_study.baselines`); a baseline named `…@<condition>` was fitted on that condition's training "
                  "data and is held against that condition's arms only.", "",
                  *[f"- {line}" for line in baseline_verdicts([*rows, *baselines], metric)], ""]
    other_metrics = sorted({r["metric"] for r in rows} - {metric})
    for other in other_metrics:
        lines += [f"<details><summary>{other}</summary>", "", arm_table(rows, other, inputs.arm_order, baselines), "",
                  "</details>", ""]

    convergence = convergence_section(inputs.run_summaries, inputs.arm_order)
    if convergence:
        lines += ["## Convergence", "", convergence, ""]

    comparisons = comparison_family(rows, baseline=baseline, metric=metric, arm_order=inputs.arm_order,
                                    extra_comparisons=inputs.extra_comparisons, alpha=inputs.alpha, p_adjust=inputs.p_adjust)
    lines += ["## Paired tests", "",
              f"Two-sided Wilcoxon signed-rank tests (`scipy.stats.wilcoxon`) pairing runs by seed; effect size: "
              f"matched-pairs rank-biserial correlation r (positive: first arm better); α = {inputs.alpha}. "
              + (f"The p-values of ALL the tests below are adjusted together ({P_ADJUST_METHODS[inputs.p_adjust]}); a "
                 "difference is called significant only on its adjusted p-value." if inputs.p_adjust != "none" else
                 f"**The p-values below are NOT adjusted for the {len(comparisons)} tests of this report** (`--p_adjust "
                 f"none`): 'significant' means raw p < α, and about {len(comparisons)} × α of the tests come out "
                 "significant by chance alone."), ""]
    if comparisons:
        lines += [comparison_table(comparisons), "", f"> {significance_requirement(comparisons, inputs.alpha, inputs.p_adjust)}"]
        notes = sorted({c.note for c in comparisons if c.note})
        lines += [f"> {note}" for note in notes] + [""]
    else:
        lines += ["No pair of arms shares tasks and seeds: nothing to test.", ""]

    if any(arm.partition("@")[0] == baseline for arm in arms_present) and len(arms_present) > 1:
        nt = negative_transfer(rows, baseline=baseline, metric=metric, alpha=inputs.alpha, family=comparisons)
        floors = family_floors(comparisons, inputs.p_adjust)  # nt.comparisons are the family's own objects
        body = [[c.task, c.eval_set, c.arm_a, f"{c.mean_difference:+.3f}", format_p(c.p_value), format_p(c.decision_p_value),
                 "significant" if c.significant else (
                     "not significant" if floors.get(id(c), 1.0) < c.alpha else "too few seeds"),
                 direction_label(c)]
                for c in nt.comparisons]
        lines += [f"## Negative transfer (multi-task − {baseline}, {metric})", "",
                  markdown_table(["Task", "Eval set", "Arm", "Δ", "p", decision_p_heading(inputs.p_adjust), "Significance",
                                  "Direction"], body), "",
                  f"**{nt.summary_sentence()}**", ""]

    for i, matrix in enumerate(inputs.cross_domain):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", matrix.task).strip("_")
        figure = plot_cross_domain_matrix(matrix, figures_dir / f"cross_domain_{slug}_{i}.png")
        header = ["trained on \\ evaluated on", *matrix.test_domains]
        body = [[tr, *[f"{matrix.values[a][b]:.3f} ± {matrix.stds[a][b]:.3f}" for b in range(len(matrix.test_domains))]]
                for a, tr in enumerate(matrix.train_domains)]
        lines += [f"## Cross-domain matrix: {matrix.task} ({matrix.metric})", "", markdown_table(header, body), "",
                  f"![cross-domain matrix]({figure.relative_to(output_dir)})", ""]
        asym = matrix.asymmetry()
        if asym:
            lines += ["Asymmetry (a→b minus b→a) and the drop from in-domain training:", "",
                      markdown_table(["Pair", "a→b", "b→a", "Asymmetry", "Drop on b", "Drop on a"],
                                     [[x["pair"], f"{x['a_to_b']:.3f}", f"{x['b_to_a']:.3f}", f"{x['asymmetry']:+.3f}",
                                       f"{x['drop_on_b']:+.3f}", f"{x['drop_on_a']:+.3f}"] for x in asym]), ""]

    for title, body in inputs.extra_sections:
        lines += [f"## {title}", "", body, ""]

    lines += ["## Shift statistics of the data used", "", shift_statistics_markdown(inputs.shift_statistics), ""]

    lines += ["## Figures", ""]
    per_seed = plot_per_seed_scores(rows, metric, figures_dir / "per_seed_scores.png", arm_order=inputs.arm_order)
    if per_seed:
        lines += [f"![per-seed scores]({per_seed.relative_to(output_dir)})", ""]
    tasks = inputs.tasks or sorted({r["task"] for r in rows})
    curves = plot_learning_curves(inputs.learning_curves, tasks, figures_dir / "learning_curves.png")
    if curves:
        lines += [f"![learning curves]({curves.relative_to(output_dir)})", "", f"*{LOSS_CURVES_NOTE}*", ""]

    if inputs.outputs:
        lines += ["## Outputs", "", *[f"- {name}: `{where}`" for name, where in inputs.outputs.items()], ""]
    path = output_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
