"""`import modeling` stays light: the model package must not pull in data preparation, statistics or plotting."""

import json
import subprocess
import sys

from conftest import REPO_ROOT

# `yaml` is loaded by huggingface_hub whenever transformers is imported: it is checked as "not added by modeling".
SCRIPT = """
import json, sys
heavy = ['data_prep', 'scipy.stats', 'matplotlib', 'yaml', 'mtl_study', 'datasets', 'pandas', 'peft']
import torch, transformers
from transformers import AutoModel, PreTrainedModel
before = {m for m in heavy if m in sys.modules}
import modeling
from modeling import MultiTaskModel, MultiTaskConfig
print(json.dumps({'before': sorted(before), 'added': [m for m in heavy if m in sys.modules and m not in before]}))
"""


def test_import_modeling_does_not_load_heavy_or_higher_layer_modules():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["added"] == []
    assert not {"data_prep", "scipy.stats", "matplotlib", "mtl_study"} & set(report["before"])
