"""`MultiTaskModel`: one shared encoder, a dict of task heads (document-level and entity-span-level).

* Hard sharing (`sharing="hard"`): ONE backbone pass per batch serves every head. Document heads pool the
  sequence (CLS or masked mean); span heads pool the token states of each mention, all mentions of a batch at once.
* Adapters (`sharing="adapters"`): one PEFT adapter per task on a frozen shared backbone; each head reads the
  backbone with its own adapter active (one pass per task); all adapters train jointly.
* A single-task model is the same class with one task, so baselines share every line of code.

The model's parts live in sibling modules: `heads` (heads, pooling, masked losses), `backbone` (building,
adapters, freezing, the frozen prefix), `predict` (raw-text inference), `loading` (load checks). This file and
those are copied next to every saved checkpoint (`trust_remote_code` loading): they import each other relatively
and only third-party libraries otherwise, never anything else from this repository.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .backbone import BackboneMixin, backbone_init_kwargs
from .configuration_multitask import DOCUMENT, MULTI_LABEL, SINGLE_LABEL, SPAN, MultiTaskConfig
from .heads import (
    TaskHead,
    absent_task_loss,
    checked_spans,
    pool_document,
    pool_spans,
    task_loss_sum,
    with_span_context,
)
from .loading import allowed_new_heads, check_missing_weights, check_saved_labels, diagnose_checkpoint_folder
from .predict import PredictionMixin


@dataclass
class MultiTaskOutput(ModelOutput):
    """Output of `MultiTaskModel.forward`.

    Args:
        loss: equal-weight sum over tasks of each task's masked mean loss (present when `labels` are passed).
            A task without labels in the batch contributes exactly 0 while staying connected to the graph.
        logits: task name -> logits; document tasks `[batch, num_labels]`, span tasks `[num_mentions, num_labels]`.
        task_losses: task name -> scalar mean loss over the labelled examples/mentions (0 when none).
        task_loss_sums: task name -> scalar sum of per-example losses (for exact accumulation across steps/ranks).
        task_counts: task name -> scalar (float) number of labelled examples/mentions.
        last_hidden_state: backbone token states `[batch, length, hidden]` when `output_hidden_states=True` (hard
            sharing only; with adapters each task has its own states: use `model.encode(..., task=name)`).
    """

    loss: torch.Tensor | None = None
    logits: dict[str, torch.Tensor] | None = None
    task_losses: dict[str, torch.Tensor] | None = None
    task_loss_sums: dict[str, torch.Tensor] | None = None
    task_counts: dict[str, torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None



class MultiTaskModel(BackboneMixin, PredictionMixin, PreTrainedModel):
    """A shared encoder with one head per task; see `MultiTaskConfig` for the options.

    Build from a pretrained encoder with [`MultiTaskModel.from_backbone`], train with any `Trainer`/accelerate loop
    (batches from `MultiTaskCollator`), save with `save_pretrained`, load with `from_pretrained` /
    `AutoModel.from_pretrained`, and predict label names from raw texts with [`MultiTaskModel.predict`].

    With `num_frozen_layers > 0` the embeddings and the frozen layers always run in eval mode (no dropout), also
    while training; see `forward(prefix_hidden_states=...)` to skip them with cached states.
    """

    config_class = MultiTaskConfig
    config: MultiTaskConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The loss is a per-batch mean over each task's labelled examples: the Trainer must scale it for gradient
    # accumulation itself (exact accumulation uses `task_loss_sums` / `task_counts`).
    accepts_loss_kwargs = False

    def __init__(self, config: MultiTaskConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if not config.tasks:
            raise ValueError("MultiTaskConfig.tasks is empty: a MultiTaskModel needs at least one task")
        if backbone is None:
            backbone = AutoModel.from_config(config.backbone_config, **backbone_init_kwargs(config.backbone_config))
        else:
            config.backbone_config = backbone.config
        self.backbone = backbone
        hidden_size = config.backbone_config.hidden_size
        self.heads = nn.ModuleDict(
            {
                task["name"]: TaskHead(
                    hidden_size * (2 if task["level"] == SPAN and config.span_context else 1),
                    len(task["labels"]), config.head_dropout, config.head_hidden_size,
                )
                for task in config.tasks
            }
        )
        if backbone.dtype.is_floating_point and backbone.dtype != torch.float32:
            self.heads.to(dtype=backbone.dtype)  # a half-precision backbone (backbone_kwargs={"dtype": ...}) feeds them
        # Per-task loss options set by the trainer (`set_loss_options`); not saved with the model.
        self._loss_options: dict[str, dict[str, torch.Tensor | None]] = {}
        self._tuner_layers: list[nn.Module] = []
        if config.sharing == "adapters":
            self._add_task_adapters()
        self.post_init()
        self.apply_parameter_freezing()

    # ------------------------------------------------------------------ construction and loading
    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        tasks: Sequence[dict | Any],
        sharing: str = "hard",
        backbone_kwargs: dict[str, Any] | None = None,
        **config_options,
    ) -> "MultiTaskModel":
        """Build a multi-task model on a pretrained encoder: the backbone's weights are loaded, heads initialised.

        Args:
            name_or_path: Hub id or local folder of any `AutoModel` encoder (BERT, RoBERTa, DeBERTa-v2, ...).
            tasks: task dicts or `TaskSpec`s (see `MultiTaskConfig`).
            sharing: `"hard"` or `"adapters"`.
            backbone_kwargs: extra arguments for `AutoModel.from_pretrained` (e.g. `attn_implementation`, `dtype`).
            **config_options: other `MultiTaskConfig` fields (pooling, span_pooling, head_dropout,
                head_hidden_size, num_frozen_layers, adapter_config, max_length, stride).

        `model.name_or_path` points at the backbone so `predict` finds its tokenizer; after training, save the
        tokenizer next to the model (`tokenizer.save_pretrained(folder)`) so the saved folder is self-contained.
        """
        from transformers import AutoConfig

        backbone_config = AutoConfig.from_pretrained(name_or_path)
        config = MultiTaskConfig(backbone_config=backbone_config, tasks=list(tasks), sharing=sharing, **config_options)
        backbone = AutoModel.from_pretrained(
            name_or_path, **{**backbone_init_kwargs(backbone_config), **(backbone_kwargs or {})}
        )
        # Backbone weights are loaded: keep post_init from re-initialising them.
        for parameter in backbone.parameters():
            parameter._is_hf_initialized = True
        for module in backbone.modules():
            module._is_hf_initialized = True
        config.name_or_path = name_or_path
        model = cls(config, backbone=backbone)
        model.name_or_path = name_or_path
        return model

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, allow_new_heads: bool | str | Sequence[str] = False, **kwargs
    ):
        """`PreTrainedModel.from_pretrained`, with errors that name the folder and the faulty file, and that refuse
        weights which would silently start from random values.

        Args:
            allow_new_heads: the task(s) (a name, a list, or `True` for all) whose head may be absent from the
                weights file and start freshly initialised, e.g. after adding a task to a saved config. Otherwise
                a missing head, or a missing backbone weight, raises `MissingWeightsError` naming it.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except Exception as err:  # re-raised below with a diagnosis when the folder is local
            folder = os.fspath(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else ""
            if not folder or not os.path.isdir(folder):
                raise
            problem = diagnose_checkpoint_folder(folder)
            if problem is None:
                raise
            raise OSError(f"Cannot load a {cls.__name__} from folder {folder!r}: {problem} ({err})") from err
        if "config" in kwargs or "tasks" in kwargs:  # the caller's tasks replace the saved ones: same labels?
            check_saved_labels(cls.config_class, pretrained_model_name_or_path, model.config.tasks,
                               allowed_new_heads(allow_new_heads, model.config.task_names))
        task_names = model.config.task_names
        check_missing_weights(
            loading_info["missing_keys"],
            task_names,
            allowed_new_heads(allow_new_heads, task_names),
            f"Cannot load a {cls.__name__} from {os.fspath(pretrained_model_name_or_path)!r}",
        )
        # Weight loading replaces parameters, which resets `requires_grad`: restore frozen/trainable parts.
        model.apply_parameter_freezing()
        return (model, loading_info) if output_loading_info else model

    def _init_weights(self, module: nn.Module) -> None:
        """Heads: normal(0, backbone initializer_range) weights, zero biases (the backbone keeps its own init)."""
        std = getattr(self.config.backbone_config, "initializer_range", None) or 0.02
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def set_loss_options(
        self,
        task: str,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        pos_weight: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Set per-task loss options (not saved with the model).

        Args:
            class_weights: single-label tasks: one weight per class; each example's cross-entropy is multiplied
                by the weight of its gold class (the task mean still divides by the number of labelled examples).
            pos_weight: multi-label tasks: one BCE positive-class weight per label.
        """
        spec = self.config.get_task(task)
        num_labels = len(spec["labels"])
        options = {}
        for name, value, allowed in (
            ("class_weights", class_weights, SINGLE_LABEL),
            ("pos_weight", pos_weight, MULTI_LABEL),
        ):
            if value is None:
                options[name] = None
                continue
            if spec["problem_type"] != allowed:
                raise ValueError(f"set_loss_options({task!r}): {name} only applies to {allowed} tasks")
            tensor = torch.as_tensor(value, dtype=torch.float32).flatten()
            if tensor.numel() != num_labels:
                raise ValueError(
                    f"set_loss_options({task!r}): {name} needs {num_labels} values (one per label), got {tensor.numel()}"
                )
            options[name] = tensor
        self._loss_options[task] = options

    # ------------------------------------------------------------------ forward
    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task: str | None = None,
        prefix_hidden_states: torch.Tensor | None = None,
        **backbone_kwargs,
    ) -> torch.Tensor:
        """Backbone token states `[B, L, H]`; with `sharing="adapters"`, `task` selects the adapter to apply.

        `prefix_hidden_states` (`[B, L, H]`, from `frozen_prefix_states`): the output of the embeddings and the
        `num_frozen_layers` frozen layers for this batch; only the layers above them run.
        """
        if self.config.sharing == "adapters":
            if task is None:
                raise ValueError("encode(): with sharing='adapters', pass task=<name> to choose the adapter")
            if task not in self.heads:
                raise KeyError(f"unknown task {task!r}; this model's tasks are {self.config.task_names}")
            self._set_active_adapter(task)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **backbone_kwargs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if prefix_hidden_states is None:
            return self.backbone(**inputs, return_dict=True).last_hidden_state
        with self._backbone_from_prefix(prefix_hidden_states):
            return self.backbone(**inputs, return_dict=True).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mention_spans: torch.Tensor | None = None,
        labels: dict[str, torch.Tensor] | None = None,
        document_index: torch.Tensor | None = None,
        mention_index: torch.Tensor | None = None,
        example_index: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        prefix_hidden_states: torch.Tensor | None = None,
        **kwargs,
    ) -> MultiTaskOutput:
        """Logits for every task, and the masked multi-task loss when `labels` are given.

        Args:
            input_ids, attention_mask, token_type_ids: `[B, L]` backbone inputs (right padded).
            mention_spans: `[M, 3]` rows `(batch_row, start_token, end_token_exclusive)`; required by span tasks
                (`None` or `M = 0` gives `[0, C]` span logits).
            labels: `{task: tensor}`; see the batch format in `MultiTaskCollator`. Absent tasks contribute 0.
            document_index, mention_index, example_index: carried for evaluation; ignored here.
            output_hidden_states: also return the shared `last_hidden_state` (hard sharing); off by default so
                evaluation loops do not gather `[B, L, H]` tensors.
            prefix_hidden_states: `[B, L, H]` float, the output of the embeddings and the `num_frozen_layers`
                frozen layers for this batch (`frozen_prefix_states`, or cached by `modeling.frozen_cache`;
                values at padded positions are ignored). Only the layers above them run; the result equals a full
                pass because the frozen part always runs in eval mode. Needs `frozen_prefix_reason()` to be None.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("forward(): pass input_ids (or inputs_embeds)")
        reference = input_ids if input_ids is not None else inputs_embeds
        batch_size, length = reference.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, length, dtype=torch.long, device=reference.device)
        spans = checked_spans(mention_spans, batch_size, length, reference.device)
        labels = labels or {}
        unknown = sorted(set(labels) - set(self.config.task_names))
        if unknown:
            raise ValueError(f"labels: unknown task(s) {unknown}; this model's tasks are {self.config.task_names}")
        backbone_kwargs = {}
        if inputs_embeds is not None:
            backbone_kwargs["inputs_embeds"] = inputs_embeds
        if kwargs.get("position_ids") is not None:
            backbone_kwargs["position_ids"] = kwargs["position_ids"]
        if prefix_hidden_states is not None:
            expected = (batch_size, length, self.config.backbone_config.hidden_size)
            if tuple(prefix_hidden_states.shape) != expected:
                raise ValueError(
                    f"prefix_hidden_states: expected shape {list(expected)} (batch, length, hidden) matching "
                    f"input_ids, got {list(prefix_hidden_states.shape)}"
                )
            backbone_kwargs["prefix_hidden_states"] = prefix_hidden_states

        shared_hidden = None
        if self.config.sharing == "hard":  # one pass serves every head
            shared_hidden = self.encode(input_ids, attention_mask, token_type_ids, **backbone_kwargs)
        logits: dict[str, torch.Tensor] = {}
        document_pooled: torch.Tensor | None = None
        for task in self.config.tasks:
            name = task["name"]
            if shared_hidden is None:
                hidden = self.encode(input_ids, attention_mask, token_type_ids, task=name, **backbone_kwargs)
                task_document_pooled = None
            else:
                hidden = shared_hidden
                task_document_pooled = document_pooled
            if task["level"] == DOCUMENT:
                if task_document_pooled is None:
                    task_document_pooled = pool_document(hidden, attention_mask, self.config.pooling)
                    if shared_hidden is not None:
                        document_pooled = task_document_pooled
                pooled = task_document_pooled
            else:
                pooled = pool_spans(hidden, spans, self.config.span_pooling)
                if self.config.span_context:  # the mention's window (its context), mean-pooled, next to the mention
                    pooled = with_span_context(pooled, hidden, attention_mask, spans)
            logits[name] = self.heads[name](pooled)

        output = MultiTaskOutput(logits=logits, last_hidden_state=shared_hidden if output_hidden_states else None)
        if labels:
            self._add_losses(output, labels)
        return output

    def _add_losses(self, output: MultiTaskOutput, labels: dict[str, torch.Tensor]) -> None:
        task_losses, task_sums, task_counts = {}, {}, {}
        total = None
        for task in self.config.tasks:
            name = task["name"]
            logits = output.logits[name]
            target = labels.get(name)
            if target is None:
                loss_sum, count = absent_task_loss(logits)
            else:
                loss_sum, count = task_loss_sum(task, logits, target, self._loss_options.get(name))
            mean = loss_sum / count.clamp_min(1.0)
            task_losses[name], task_sums[name], task_counts[name] = mean, loss_sum, count
            total = mean if total is None else total + mean
        output.loss = total
        output.task_losses, output.task_loss_sums, output.task_counts = task_losses, task_sums, task_counts


MultiTaskConfig.register_for_auto_class()
MultiTaskModel.register_for_auto_class("AutoModel")

__all__ = ["MultiTaskModel", "MultiTaskOutput", "TaskHead", "pool_document", "pool_spans"]
