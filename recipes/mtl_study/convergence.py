"""Did the runs converge? A per-arm table from the runs' summaries, for the report.

Scores of runs stopped by a step or epoch cap while their validation score still improved compare training
budgets, not architectures; the section says so and names those runs. Each summary is a run's
``run_summary.json`` (``run_id``, ``arm``, ``seed``, ``extra``); the keys read from ``extra`` are
:data:`CONVERGENCE_KEYS`. Runs of an older version lack them and show as "unknown".
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

#: ``extra`` keys of a run summary that describe how its training ended.
CONVERGENCE_KEYS = ("stopped_by", "steps", "best_step", "primary_metric", "best_validation", "final_validation",
                    "evaluations", "still_improving")
EARLY_STOPPING = "early_stopping"
CAPS = ("max_steps", "epochs")
NOT_CONVERGED = "not converged: these scores compare budgets, not architectures"
UNKNOWN = "unknown"


def read_run_summaries(output_dir: str | Path, run_ids: Iterable[str]) -> list[dict]:
    """The ``runs/<run_id>/run_summary.json`` of the given runs (those that have one)."""
    paths = [Path(output_dir) / "runs" / run_id / "run_summary.json" for run_id in run_ids]
    return [json.loads(path.read_text()) for path in paths if path.is_file()]


def _median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.4g}" if values else UNKNOWN


def convergence_rows(summaries: Sequence[Mapping], arm_order: Sequence[str] | None = None) -> list[dict]:
    """Per arm: runs, how many stopped early / at a cap / unknown, median steps and best validation score,
    and the ids of the runs that ended still improving."""
    by_arm: dict[str, list[Mapping]] = defaultdict(list)
    for summary in summaries:
        by_arm[str(summary.get("arm"))].append(summary)
    arms = [a for a in (arm_order or []) if a in by_arm] + sorted(set(by_arm) - set(arm_order or []))
    out = []
    for arm in arms:
        runs = by_arm[arm]
        extras = [dict(run.get("extra") or {}) for run in runs]
        known = [e for e in extras if "stopped_by" in e]
        out.append({
            "arm": arm, "runs": len(runs),
            "early_stopping": sum(e["stopped_by"] == EARLY_STOPPING for e in known),
            "cap": sum(e["stopped_by"] in CAPS for e in known),
            "unknown": len(runs) - len(known),
            "median_steps": _median([float(e["steps"]) for e in extras if isinstance(e.get("steps"), (int, float))]),
            "median_best_validation": _median([float(e["best_validation"]) for e in extras
                                               if isinstance(e.get("best_validation"), (int, float))]),
            "metrics": sorted({str(e["primary_metric"]) for e in extras if e.get("primary_metric")}),
            "still_improving": sorted(str(run.get("run_id")) for run, e in zip(runs, extras) if e.get("still_improving") is True),
            # a run that never evaluated on validation cannot say whether it was still improving
            "improving_unknown": sum(e.get("still_improving") is None for e in known),
        })
    return out


def convergence_section(summaries: Sequence[Mapping], arm_order: Sequence[str] | None = None) -> str | None:
    """Markdown for the report's convergence section; None without summaries."""
    from .report import markdown_table

    if not summaries:
        return None
    rows = convergence_rows(summaries, arm_order)
    body = []
    for r in rows:
        stopped = (f"{r['early_stopping']} / {r['cap']}" if r["unknown"] < r["runs"] else UNKNOWN)
        if 0 < r["unknown"] < r["runs"]:
            stopped += f" ({r['unknown']} unknown)"
        metric = ", ".join(r["metrics"]) or UNKNOWN
        improving = str(len(r["still_improving"])) if r["unknown"] < r["runs"] else UNKNOWN
        if r["unknown"] < r["runs"] and r["improving_unknown"]:
            improving = (UNKNOWN if r["improving_unknown"] == r["runs"] - r["unknown"] else
                         f"{improving} ({r['improving_unknown']} unknown: no validation)")
        body.append([r["arm"], r["runs"], stopped, r["median_steps"], f"{r['median_best_validation']} ({metric})", improving])
    lines = [markdown_table(["Arm", "Runs", "Stopped by early stopping / by a cap", "Median steps",
                             "Median best validation", "Ended still improving"], body)]
    improving = [run for r in rows for run in r["still_improving"]]
    if improving:
        lines.append(f"**{NOT_CONVERGED.capitalize()}.** {len(improving)} run(s) ended at their step or epoch cap while "
                     f"the validation score (the mean over tasks, or one task's) was still improving: {', '.join(improving)}. Train longer (or with early "
                     f"stopping) before reading the differences between arms as differences between architectures.")
    elif any(r["improving_unknown"] for r in rows):
        lines.append("Runs without a validation evaluation cannot tell whether they were still improving: their "
                     "convergence is unknown (train against a validation set and stop on it).")
    elif all(r["unknown"] == r["runs"] for r in rows):
        lines.append("The run summaries do not say how training ended (results of an older version): convergence unknown.")
    return "\n\n".join(lines)
