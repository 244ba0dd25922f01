"""Label granularity: both tasks fine, fine/coarse, coarse/fine, both coarse.

What it changes: the label granularity of each task in a multi-task model (fine = subnarratives / 22 fine
roles, coarse = narratives / 3 main roles). Every task at every granularity also gets a single-task
baseline, so the report tests each combination against stl on the same task and granularity: does a coarse
auxiliary task help or hurt a fine primary task, and vice versa?

    accelerate launch recipes/label_granularity.py --seeds 0 1 2 3 4 5 6 7 8
"""

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared or busy CPU, spinning threads slow every step several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from itertools import product

from mtl_study.config import parse_recipe_args
from mtl_study.data import TASK_KINDS, task_name
from mtl_study.runner import RunSpec
from mtl_study.study import Study


def main(argv=None):
    args, training, model = parse_recipe_args("label_granularity", argv,
                            shipped_config=Path(__file__).with_name("configs") / "label_granularity.yaml")
    if len(args.tasks) != 2 or not set(args.tasks) <= set(TASK_KINDS):
        raise ValueError(f"--tasks: label_granularity needs exactly two task kinds {list(TASK_KINDS)}, got {args.tasks}")
    study = Study(args, training, model, "label_granularity", "Label granularity of the tasks in a multi-task model",
                  "Does the granularity of one task's labels change what multi-task training does for the other task?")
    first, second = args.tasks
    specs, arms = [], []
    for seed in args.seeds:
        for g1, g2 in product(("fine", "coarse"), repeat=2):
            arm = f"mtl_{first}-{g1}_{second}-{g2}"
            arms.append(arm)
            specs.append(RunSpec(arm, seed, [task_name(first, g1), task_name(second, g2)],
                                 condition={f"granularity_{first}": g1, f"granularity_{second}": g2}))
        for kind, granularity in product((first, second), ("fine", "coarse")):
            name = task_name(kind, granularity)
            specs.append(RunSpec("stl", seed, [name], sharing="stl", tag=name, condition={f"granularity_{kind}": granularity}))
    tasks = [task_name(k, g) for k in (first, second) for g in ("fine", "coarse")]
    rows = study.run(specs)
    return study.finish(rows, arm_order=["stl", *dict.fromkeys(arms)], tasks=tasks)


if __name__ == "__main__":
    main()
