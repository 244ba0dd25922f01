"""Known-answer controls: does the pipeline find multi-task transfer where it was planted, and none where there is none?

What it changes: the auxiliary task, nothing else. Two SYNTHETIC corpora (``data_prep.synthetic_controls``) with
the same texts share a scarce document-level primary task (10% of training texts labelled); the auxiliary task,
labelled on every training text, is the primary task's hidden latent class under other names (positive control)
or a random label independent of the text (negative control). stl (primary task only) and mtl (both tasks) run
on each control for every seed; every run stops early on the primary task's validation macro-F1 and is tested
with its best checkpoint (a step cap alone would judge mtl, whose steps are shared between two tasks, at an
earlier point of its primary training than stl). The report's "Known-answer controls" section says whether mtl
beats stl on the positive control (adjusted p < alpha) and shows no significant gain on the negative one (a
significant loss there is real negative transfer: the shared layer also fits random labels).

    accelerate launch recipes/transfer_controls.py --config recipes/configs/transfer_controls.yaml
"""

import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads slow every step several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from data_prep.synthetic_controls import CONTROLS, ControlsConfig, primary_task_name
from mtl_study.config import parse_recipe_args
from mtl_study.convergence import read_run_summaries
from mtl_study.controls import control_eval_sets_for, control_examples_for, control_experiment_data, control_section, control_specs
from mtl_study.study import Study

#: The recipe's defaults: used when no --config is given, so that the YAML is what the recipe runs.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "transfer_controls.yaml"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    args, training, model = parse_recipe_args("transfer_controls", argv,
                            shipped_config=Path(__file__).with_name("configs") / "transfer_controls.yaml")
    if sorted(args.arms) != ["mtl", "stl"]:
        raise ValueError(f"--arms {args.arms}: the controls always compare stl and mtl (leave --arms out)")
    data = control_experiment_data(ControlsConfig())
    study = Study(args, training, model, "transfer_controls", "Known-answer controls: planted transfer vs none",
                  "Does the pipeline find mtl > stl where the auxiliary task carries the primary task's cue, "
                  "and no difference where the auxiliary labels are random, independent of the text?", data=data)
    rows = study.run(control_specs(args.seeds), examples_for=control_examples_for(data),
                     eval_sets_for=control_eval_sets_for(data))
    summaries = read_run_summaries(study.output_dir, sorted({row["run_id"] for row in rows}))
    not_converged = [str(s["run_id"]) for s in summaries if (s.get("extra") or {}).get("still_improving") is True]
    section = control_section(rows, metric=args.primary_metric, alpha=args.alpha, p_adjust=args.p_adjust,
                              not_converged=not_converged)
    # The report's tasks (shift statistics, baselines) are the primary ones: the auxiliary tasks have no test labels.
    return study.finish(rows, arm_order=["stl", "mtl"], tasks=[primary_task_name(c) for c in CONTROLS],
                        extra_sections=[("Known-answer controls", section)])


if __name__ == "__main__":
    main()
