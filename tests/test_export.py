"""ONNX export: one graph with every head, dynamic batch / sequence / mention axes, outputs equal to PyTorch's."""

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from modeling import MultiTaskModel  # noqa: E402
from modeling.export import (  # noqa: E402
    OnnxVerificationError,
    export_onnx,
    main,
    make_example_inputs,
    output_name,
    pool_spans_traceable,
)
from modeling.heads import pool_spans  # noqa: E402

TASKS = [
    {"name": "category", "level": "document", "problem_type": "single_label_classification", "labels": ["a", "b", "c"]},
    {"name": "tags", "level": "document", "problem_type": "multi_label_classification", "labels": ["x", "y"],
     "thresholds": [0.3, 0.6]},
    {"name": "roles", "level": "span", "problem_type": "multi_label_classification", "labels": ["p", "q", "r", "s"]},
]


@pytest.fixture(scope="module")
def exported(tiny_backbone_dir, tmp_path_factory):
    """A 3-head model (2 document heads + 1 span head) saved and exported once for the module."""
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS).eval()
    folder = tmp_path_factory.mktemp("mt_model")
    model.save_pretrained(folder)
    result = export_onnx(folder, folder / "model.onnx", tokenizer=tiny_backbone_dir)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    return model, result, session


def _run_both(model, session, inputs):
    names = [node.name for node in session.get_inputs()]
    outputs = session.run(None, {name: inputs[name].numpy() for name in names})
    with torch.inference_mode():
        reference = model(**{name: inputs[name] for name in names})
    return outputs, reference


@pytest.mark.parametrize(
    "batch_size, seq_len, num_mentions",
    [(1, 5, 0), (1, 200, 1), (4, 23, 0), (6, 71, 11), (2, 16, 3)],  # includes the traced shape and M = 0
)
def test_onnxruntime_matches_pytorch_on_untraced_shapes(exported, batch_size, seq_len, num_mentions):
    model, result, session = exported
    generator = torch.Generator().manual_seed(batch_size * 1000 + seq_len)
    inputs = make_example_inputs(batch_size, seq_len, num_mentions, model.config.backbone_config.vocab_size,
                                 result.input_names, generator=generator)
    outputs, reference = _run_both(model, session, inputs)
    for task, got in zip(model.config.task_names, outputs):
        expected = reference.logits[task].numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert outputs[2].shape == (num_mentions, 4)  # span head: one row per mention, whatever M is


def test_graph_has_all_heads_and_dynamic_axes(exported):
    _, result, session = exported
    assert result.input_names == ["input_ids", "attention_mask", "token_type_ids", "mention_spans"]
    assert [node.name for node in session.get_outputs()] == [output_name(t["name"]) for t in TASKS]
    for node in session.get_inputs():
        # every axis symbolic (a str name) except the 3 columns of mention_spans
        dims = node.shape if node.name != "mention_spans" else node.shape[:1]
        assert all(isinstance(dim, str) for dim in dims), (node.name, node.shape)
    assert session.get_inputs()[3].shape[1] == 3
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert {shape["mentions"] for shape in result.checked_shapes} >= {0, 1, 5}


def test_metadata_describes_tasks(exported):
    _, result, _ = exported
    proto = onnx.load(str(result.path), load_external_data=False)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    tasks = json.loads(metadata["multi_task.tasks"])
    assert [t["name"] for t in tasks] == [t["name"] for t in TASKS]
    assert tasks[1]["thresholds"] == [0.3, 0.6]
    assert json.loads(metadata["multi_task.outputs"]) == result.output_names
    assert int(metadata["multi_task.max_length"]) == 512
    assert metadata["multi_task.window_aggregation"] == "mean" and float(metadata["multi_task.relative_threshold"]) == 0.0
    assert json.loads(metadata["multi_task.top1_fallback"]) is True  # a server decodes empty rows as predict does


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_traceable_span_pooling_equals_model_pooling(mode):
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 12, 5, generator=generator)
    spans = torch.tensor([[0, 0, 1], [2, 3, 9], [1, 11, 12], [2, 4, 5], [0, 2, 12]])
    torch.testing.assert_close(pool_spans_traceable(hidden, spans, mode), pool_spans(hidden, spans, mode))
    empty = pool_spans_traceable(hidden, spans[:0], mode)
    assert empty.shape == (0, 5)


@pytest.mark.slow  # one more export (~10 s on 2 cores)
def test_max_pooling_document_only_model_exports_without_span_input(tiny_backbone_dir, tmp_path):
    torch.manual_seed(1)
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS[:2], pooling="mean").eval()
    result = export_onnx(model, tmp_path / "doc.onnx")
    assert "mention_spans" not in result.input_names
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    inputs = make_example_inputs(3, 40, 0, model.config.backbone_config.vocab_size, result.input_names)
    outputs, reference = _run_both(model, session, inputs)
    np.testing.assert_allclose(outputs[0], reference.logits["category"].numpy(), atol=1e-4, rtol=0)
    # The graph is exported in float32; a bf16 model is handed back in bf16, not silently converted.
    # Verified against a float32 copy (the bf16 model itself differs from the graph by its rounding, ~1e-3).
    model = model.to(torch.bfloat16)
    assert export_onnx(model, tmp_path / "doc_bf16.onnx").max_abs_diff < 1e-4
    assert next(model.parameters()).dtype == torch.bfloat16
    # Short windows (max_length below the traced 16 tokens) export too
    short = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS, max_length=12, stride=2).eval()
    assert export_onnx(short, tmp_path / "short.onnx").max_abs_diff < 1e-4


@pytest.mark.slow  # one more export per case (~10 s on 2 cores)
@pytest.mark.parametrize("options", [{"span_pooling": "max"}, {"span_context": True}], ids=["max", "span_context"])
def test_span_max_pooling_model_matches(tiny_backbone_dir, tmp_path, options):
    # span_context: span heads read the mention's window too (twice as wide an input); the graph must do the same
    torch.manual_seed(2)
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS[2:], **options).eval()
    result = export_onnx(model, tmp_path / "span.onnx")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    inputs = make_example_inputs(2, 30, 7, model.config.backbone_config.vocab_size, result.input_names)
    outputs, reference = _run_both(model, session, inputs)
    np.testing.assert_allclose(outputs[0], reference.logits["roles"].numpy(), atol=1e-4, rtol=0)


def test_adapter_models_are_refused(tiny_backbone_dir, tmp_path):
    pytest.importorskip("peft")
    model = MultiTaskModel.from_backbone(tiny_backbone_dir, TASKS[:1], sharing="adapters")
    with pytest.raises(ValueError, match="sharing='adapters'"):
        export_onnx(model, tmp_path / "adapters.onnx")


@pytest.mark.slow  # one more export (~10 s on 2 cores)
def test_verification_failure_is_reported(exported, tmp_path, monkeypatch):
    """A graph that no longer matches PyTorch (here: a head changed after export) fails the export."""
    import modeling.export as export_module

    model, _, _ = exported
    real_verify = export_module.verify_onnx

    def verify_against_changed_model(model, path, batches):
        parameters = model.head_parameters("category")
        with torch.no_grad():
            for parameter in parameters:
                parameter.add_(0.5)
        try:
            return real_verify(model, path, batches)
        finally:
            with torch.no_grad():
                for parameter in parameters:
                    parameter.sub_(0.5)

    monkeypatch.setattr(export_module, "verify_onnx", verify_against_changed_model)
    with pytest.raises(OnnxVerificationError, match="logits.category"):
        export_onnx(model, tmp_path / "tampered.onnx")
    # a NaN in the reference must fail the check, not vanish from max(|difference|)
    monkeypatch.setattr(export_module, "verify_onnx", real_verify)
    bias = model.heads["category"].classifier.bias
    original = bias.detach().clone()
    with torch.no_grad():
        bias[0] = float("nan")
    try:
        with pytest.raises(OnnxVerificationError, match="logits.category: non-finite values"):
            export_onnx(model, tmp_path / "nan.onnx")
    finally:
        with torch.no_grad():
            bias.copy_(original)


@pytest.mark.slow  # one more export (~10 s on 2 cores)
def test_command_line(exported, tmp_path, capsys, tiny_backbone_dir):
    model, _, _ = exported
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    out = tmp_path / "cli" / "model.onnx"
    assert main(["--model", str(folder), "--out", str(out), "--tokenizer", tiny_backbone_dir]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.rindex("\n{") + 1 :] if not printed.startswith("{") else printed)
    assert summary["output_names"] == [output_name(t["name"]) for t in TASKS]
    assert summary["max_abs_diff"] <= 1e-4
    assert out.exists()
    assert main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "no such checkpoint folder" in capsys.readouterr().err
