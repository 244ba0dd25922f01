"""Two-process training and evaluation (`accelerate launch --num_processes 2 --cpu`), slow.

Trains a three-task model where many batches lack a task (and some have no mentions at all), with gradient
accumulation, under DDP with `find_unused_parameters=False` (static weighting) and with the manual gradient
averaging of PCGrad; checks that no unused-parameter error or hang happens, that the replicas stay identical,
and that evaluation gathered over two processes equals evaluation on one.

Run as a script (`python tests/test_trainer_distributed.py --worker OUT BACKBONE STRATEGY`) it is the worker.
"""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rows():
    from test_trainer_helpers import make_rows

    # 'topic' everywhere, 'tags' on one source only, 'roles' mentions only on some rows: many micro-batches
    # of 3 lack 'tags' or 'roles'.
    return make_rows(18, seed=1, labelled=("topic", "roles")) + make_rows(6, seed=2, labelled=("topic", "tags"), start=50)


def _eval_rows():
    from test_trainer_helpers import make_rows

    return make_rows(13, seed=9, start=1000, windows_per_document=2)  # 13 rows: uneven over 2 processes x 4


def worker(output_dir: str, backbone: str, strategy: str) -> None:
    import torch
    from datasets import Dataset
    from test_trainer_helpers import make_args, make_model

    from modeling import MultiTaskTrainer

    model = make_model(backbone, seed=0)
    args = make_args(output_dir, loss_weighting=strategy, per_device_train_batch_size=3, per_device_eval_batch_size=4,
                     gradient_accumulation_steps=2, num_train_epochs=2, logging_steps=1, tune_thresholds=False,
                     ddp_timeout=120)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=Dataset.from_list(_rows()))
    assert trainer.accelerator.num_processes == 2, "run me with accelerate launch --num_processes 2"
    trainer.train()
    metrics = trainer.evaluate(Dataset.from_list(_eval_rows()))
    # the replicas must hold identical weights after training
    checksum = torch.stack([p.detach().double().sum() for p in trainer.model.parameters()])
    gathered = trainer.accelerator.gather(checksum.unsqueeze(0))
    if trainer.is_world_process_zero():
        trainer.save_model(os.path.join(output_dir, "model"))
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        report = {"metrics": metrics, "replicas_equal": bool(torch.equal(gathered[0], gathered[1])), "logs": logs}
        with open(os.path.join(output_dir, "report.json"), "w", encoding="utf-8") as handle:
            json.dump(report, handle)
    # Leave together, and as a study does (mtl_study.runner.leave_process_group): the trainer's reference cycles
    # hold DDP and the process group; left to interpreter exit, gloo's threads may abort the process.
    trainer.accelerator.wait_for_everyone()
    del trainer, model
    gc.collect()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["static", "pcgrad"])
def test_two_process_training_and_evaluation(tiny_backbone_dir, tmp_path, strategy):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # accelerate 1.15: `--cpu --num_processes 2` starts ONE process unless MPI is installed; `--multi_gpu` uses
    # torchrun, and the worker's `use_cpu=True` makes accelerate pick the gloo backend (MULTI_CPU).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()),
               str(Path(__file__)), "--worker", str(tmp_path), tiny_backbone_dir, strategy]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"2-process run failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["replicas_equal"]
    assert report["logs"] and all(entry["loss"] == entry["loss"] for entry in report["logs"])  # no NaN

    from datasets import Dataset
    from test_trainer_helpers import make_args

    from modeling import MultiTaskModel, MultiTaskTrainer

    model = MultiTaskModel.from_pretrained(str(tmp_path / "model"))
    single = MultiTaskTrainer(model=model, args=make_args(tmp_path / "single", per_device_eval_batch_size=4))
    metrics = single.evaluate(Dataset.from_list(_eval_rows()))
    timing = ("runtime", "per_second")
    two = {k: v for k, v in report["metrics"].items() if not k.endswith(timing) and k != "epoch"}
    one = {k: v for k, v in metrics.items() if not k.endswith(timing) and k != "epoch"}
    assert two.keys() == one.keys()
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert one["eval_topic_num_examples"] == 7  # 13 windows of 7 documents, duplicates from padding removed


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    worker(sys.argv[2], sys.argv[3], sys.argv[4])
