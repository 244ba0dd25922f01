"""Reliability (issue 6), fast: bad input reaching a recipe fails with an error naming the file and line before
anything is trained, and a failing launch loses or half-writes nothing that earlier launches wrote (results
rows, the saved best model).

The per-loader cases (malformed lines, offsets, mention mismatches, taxonomy, empty/missing articles, duplicate
ids, mixed label columns, invalid configs, corrupt checkpoints, non-finite losses) are tested next to their
code; these tests check the same guarantees through a whole recipe launch.
"""

import json
from pathlib import Path

import pytest

from conftest import load_recipe


def tiny_args(backbone, output_dir, data_dir, *extra):
    return ["--model_name_or_path", str(backbone), "--output_dir", str(output_dir), "--data_dir", str(data_dir),
            "--seeds", "0", "--arms", "mtl", "--max_steps", "2", "--max_length", "64", "--num_frozen_layers", "1",
            "--save_steps", "1", "--logging_steps", "1", "--per_device_eval_batch_size", "64", *extra]


@pytest.fixture
def corpus(tmp_path):
    """A small SemEval-layout release (synthetic) the test may damage."""
    from data_prep.synthetic import SyntheticConfig, generate_synthetic_corpus

    return Path(generate_synthetic_corpus(SyntheticConfig(out=str(tmp_path / "corpus"), train_articles=24,
                                                          dev_articles=20, min_tokens=25, max_tokens=50)))


def damage_line(path: Path, line_no: int, edit) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line_no - 1] = edit(lines[line_no - 1].split("\t"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines[line_no - 1]


@pytest.mark.parametrize("edit, message", [
    # offsets shifted by one: the mention no longer matches its span
    (lambda f: "\t".join([f[0], f[1], str(int(f[2]) + 1), str(int(f[3]) + 1), *f[4:]]), r"line 2, field 'mention'"),
    # a role outside the taxonomy
    (lambda f: "\t".join([*f[:4], "Villain", *f[5:]]), r"line 2.*main role 'Villain' is not one of"),
    # a truncated line
    (lambda f: "\t".join(f[:3]), r"subtask-1-annotations.txt, line 2: expected at least 6"),
], ids=["mention-mismatch", "label-outside-taxonomy", "malformed-line"])
def test_recipe_refuses_bad_annotations_naming_file_and_line_and_keeps_earlier_results(
        tiny_backbone_dir, tmp_path, corpus, edit, message):
    out = tmp_path / "experiment"
    load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, corpus))
    results = (out / "results.jsonl").read_bytes()
    best = (out / "best" / "mtl" / "model.safetensors").read_bytes()
    assert results

    annotations = corpus / "EN" / "subtask-1-annotations.txt"
    damage_line(annotations, 2, edit)
    from data_prep import SemEvalFormatError

    with pytest.raises(SemEvalFormatError, match=message) as error:
        load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, out, corpus, "--seeds", "0", "1"))
    assert str(annotations) in str(error.value) or "subtask-1-annotations.txt" in str(error.value)
    # nothing of the earlier launch was lost or rewritten, nothing new was half-written
    assert (out / "results.jsonl").read_bytes() == results
    assert (out / "best" / "mtl" / "model.safetensors").read_bytes() == best
    assert not (out / "runs" / "mtl__seed1").exists()


@pytest.mark.parametrize("name", ["subtask-1-annotations.txt", "subtask-2-annotations.txt"])
def test_recipe_refuses_an_emptied_annotation_file_before_training(tiny_backbone_dir, tmp_path, corpus, name):
    """A task whose annotation file was emptied (a failed copy, say) must not silently drop out of the study."""
    from data_prep import SemEvalFormatError

    (corpus / "EN" / name).write_bytes(b"")
    with pytest.raises(SemEvalFormatError, match=f"{name}: annotation file is empty"):
        load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, tmp_path / "x", corpus))
    assert not (tmp_path / "x" / "results.jsonl").exists()


def test_missing_data_dir_names_the_folder_and_the_expected_layout(tiny_backbone_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--data_dir .*nowhere: no EN/ folder"):
        load_recipe("architecture_comparison").main(tiny_args(tiny_backbone_dir, tmp_path / "x", tmp_path / "nowhere"))
    assert not (tmp_path / "x" / "results.jsonl").exists()


def test_crash_while_saving_a_new_best_model_keeps_the_previous_best_and_records_nothing(tmp_path):
    """A run that fails while its model is being saved as the arm's best: the previous best stays whole, the
    run is not recorded, and the relaunch redoes it and swaps the new best in."""
    from mtl_study.results import ResultsStore
    from mtl_study.runner import ExperimentRunner, RunOutcome, RunSpec, best_models, run_model_dir

    class DiskFull(OSError):
        pass

    def run_function(fail_saving):
        def run(spec, run_dir, resume):
            folder = run_model_dir(run_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "weights.bin").write_text(f"weights of {spec.run_id}")
            if fail_saving and spec.seed == 1:
                (folder / "tokenizer.json").write_text("{half")
                raise DiskFull("No space left on device")
            (folder / "tokenizer.json").write_text("{}")
            rows = [{"task": "a", "eval_set": "validation", "metric": "macro_f1", "value": 0.5 + 0.1 * spec.seed}]
            return RunOutcome(rows=rows, model_dir=folder)

        return run

    specs = [RunSpec("mtl", 0, ["a"]), RunSpec("mtl", 1, ["a"])]
    with pytest.raises(DiskFull):
        ExperimentRunner(tmp_path, run_function(fail_saving=True), selection_eval_set="validation").run(specs)
    assert ResultsStore(tmp_path / "results.jsonl").finished_runs() == {"mtl__seed0"}
    ((folder, info),) = best_models(tmp_path)
    assert info["run_id"] == "mtl__seed0" and (folder / "weights.bin").read_text() == "weights of mtl__seed0"
    assert json.loads((folder / "tokenizer.json").read_text()) == {}

    ExperimentRunner(tmp_path, run_function(fail_saving=False), selection_eval_set="validation").run(specs)
    assert ResultsStore(tmp_path / "results.jsonl").finished_runs() == {"mtl__seed0", "mtl__seed1"}
    ((folder, info),) = best_models(tmp_path)
    assert info["run_id"] == "mtl__seed1" and (folder / "weights.bin").read_text() == "weights of mtl__seed1"
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["mtl"]  # no staging / old folder left
