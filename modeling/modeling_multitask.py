"""`MultiTaskModel`: one shared encoder, a dict of task heads (document-level and entity-span-level).

* Hard sharing (`sharing="hard"`): ONE backbone pass per batch serves every head. Document heads pool the
  sequence (CLS or masked mean); span heads pool the token states of each mention, all mentions of a batch at once.
* Adapters (`sharing="adapters"`): one PEFT adapter per task on a frozen shared backbone; each head reads the
  backbone with its own adapter active (one pass per task); all adapters train jointly.
* A single-task model is the same class with one task, so baselines share every line of code.

This file is copied next to every saved checkpoint (`trust_remote_code` loading): it only imports its two sibling
files (relatively) and third-party libraries, never anything else from this repository.
"""

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_multitask import DOCUMENT, MULTI_LABEL, SINGLE_LABEL, SPAN, MultiTaskConfig
from .losses import masked_task_loss_sum
from .windowing import aggregate_document_scores, window_text
from .vocabulary import probabilities_from_logits

# Where the stack of transformer blocks lives in common encoder layouts (BERT/RoBERTa/DeBERTa-v2/ELECTRA use
# `encoder.layer`, DistilBERT `transformer.layer`, ModernBERT and newer models `layers`).
_LAYER_LIST_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer")
# Modules shared by every layer (DeBERTa-v2's relative position embeddings): frozen with the embeddings.
_SHARED_POSITION_MODULES = ("encoder.rel_embeddings", "encoder.LayerNorm")


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


class TaskHead(nn.Module):
    """Dropout -> (optional Linear + GELU + dropout) -> Linear to the task's labels."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, inner_size: int | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if inner_size:
            self.dense = nn.Linear(hidden_size, inner_size)
            self.activation = nn.GELU()
            hidden_size = inner_size
        else:
            self.dense = None
            self.activation = None
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(pooled)
        if self.dense is not None:
            hidden = self.dropout(self.activation(self.dense(hidden)))
        return self.classifier(hidden)


def pool_document(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """`[B, L, H]` token states -> `[B, H]`: the first token (`"cls"`) or the mean over unpadded tokens (`"mean"`)."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def pool_spans(hidden: torch.Tensor, mention_spans: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool the token states of each mention, all mentions at once (no python loop over mentions).

    Args:
        hidden: `[B, L, H]` token states.
        mention_spans: `[M, 3]` rows `(batch_row, start_token, end_token_exclusive)`.
        mode: `"mean"` or `"max"` over each mention's tokens.

    Returns:
        `[M, H]`; `[0, H]` (still attached to `hidden`'s graph) when there are no mentions.
    """
    if mention_spans.shape[0] == 0:
        return hidden[:0, 0]
    rows, starts, ends = mention_spans.unbind(dim=-1)
    lengths = ends - starts
    # Gather a [M, longest mention, H] block; positions past a mention's end are masked out.
    offsets = torch.arange(int(lengths.max()), device=hidden.device)
    positions = (starts.unsqueeze(1) + offsets.unsqueeze(0)).clamp(max=hidden.shape[1] - 1)
    inside = offsets.unsqueeze(0) < lengths.unsqueeze(1)
    tokens = hidden[rows.unsqueeze(1), positions]
    if mode == "max":
        return tokens.masked_fill(~inside.unsqueeze(-1), torch.finfo(tokens.dtype).min).amax(dim=1)
    weights = inside.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / lengths.to(tokens.dtype).unsqueeze(1)


def _get_submodule(module: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _backbone_class(backbone_config):
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(backbone_config)]
    except KeyError:
        raise ValueError(
            f"backbone_config: no AutoModel class is registered for model_type "
            f"{getattr(backbone_config, 'model_type', '?')!r}"
        ) from None


def _backbone_init_kwargs(backbone_config) -> dict[str, Any]:
    """Drop the backbone's pooler when it has one: no head uses it, and unused parameters break DDP."""
    import inspect

    model_class = _backbone_class(backbone_config)
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


class MultiTaskModel(PreTrainedModel):
    """A shared encoder with one head per task; see `MultiTaskConfig` for the options.

    Build from a pretrained encoder with [`MultiTaskModel.from_backbone`], train with any `Trainer`/accelerate loop
    (batches from `MultiTaskCollator`), save with `save_pretrained`, load with `from_pretrained` /
    `AutoModel.from_pretrained`, and predict label names from raw texts with [`MultiTaskModel.predict`].
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
            backbone = AutoModel.from_config(config.backbone_config, **_backbone_init_kwargs(config.backbone_config))
        else:
            config.backbone_config = backbone.config
        self.backbone = backbone
        hidden_size = config.backbone_config.hidden_size
        self.heads = nn.ModuleDict(
            {
                task["name"]: TaskHead(hidden_size, len(task["labels"]), config.head_dropout, config.head_hidden_size)
                for task in config.tasks
            }
        )
        # Per-task loss options set by the trainer (`set_loss_options`); not saved with the model.
        self._loss_options: dict[str, dict[str, torch.Tensor | None]] = {}
        self._tuner_layers: list[nn.Module] = []
        if config.sharing == "adapters":
            self._add_task_adapters()
        self.post_init()
        self.apply_parameter_freezing()

    # ------------------------------------------------------------------ construction
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
            name_or_path, **{**_backbone_init_kwargs(backbone_config), **(backbone_kwargs or {})}
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
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with errors that name the folder and the faulty file."""
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except Exception as err:  # re-raised below with a diagnosis when the folder is local
            folder = os.fspath(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else ""
            if not folder or not os.path.isdir(folder):
                raise
            problem = _diagnose_checkpoint_folder(folder)
            if problem is None:
                raise
            raise OSError(f"Cannot load a {cls.__name__} from folder {folder!r}: {problem} ({err})") from err
        # Weight loading replaces parameters, which resets `requires_grad`: restore frozen/trainable parts.
        model.apply_parameter_freezing()
        return model

    def _add_task_adapters(self) -> None:
        """Inject one PEFT adapter per task into the backbone (base weights frozen, every adapter trainable)."""
        try:
            from peft import inject_adapter_in_model
            from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
            from peft.tuners.tuners_utils import BaseTunerLayer
        except ImportError as err:
            raise ImportError("sharing='adapters' needs the `peft` package: pip install peft") from err

        options = dict(self.config.adapter_config)
        peft_type = str(options.pop("peft_type")).upper()
        if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
            raise ValueError(f"adapter_config.peft_type: unknown PEFT type {peft_type!r}")
        if options.get("target_modules") is None and peft_type == "LORA":
            from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

            model_type = self.config.backbone_config.model_type
            options["target_modules"] = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
            if options["target_modules"] is None:
                raise ValueError(
                    f"adapter_config.target_modules: no default LoRA target modules are known for backbone "
                    f"model_type {model_type!r}; set them explicitly (e.g. the attention query/value Linear names)"
                )
        options.pop("task_type", None)  # the adapters wrap a bare encoder, not a PEFT task model
        peft_config = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](**options)
        with warnings.catch_warnings():
            # PEFT warns that a second adapter joins the first one: several adapters are the point here.
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            for task_name in self.config.task_names:
                inject_adapter_in_model(peft_config, self.backbone, adapter_name=task_name)
        self._tuner_layers = [module for module in self.backbone.modules() if isinstance(module, BaseTunerLayer)]
        if not self._tuner_layers:
            raise ValueError(
                f"adapter_config.target_modules={options.get('target_modules')!r} matched no module of the "
                f"{type(self.backbone).__name__} backbone"
            )
        # PEFT already initialised the adapters (e.g. LoRA B = 0): keep post_init from overwriting them.
        for name, parameter in self._adapter_named_parameters():
            parameter._is_hf_initialized = True

    def _adapter_named_parameters(self, task: str | None = None) -> Iterator[tuple[str, nn.Parameter]]:
        """Adapter parameters (of one task, or of all tasks) as `(name within backbone, parameter)`."""
        tuner_ids = {id(layer) for layer in self._tuner_layers}
        for module_name, module in self.backbone.named_modules():
            if id(module) not in tuner_ids:
                continue
            for layer_name in module.adapter_layer_names:
                container = getattr(module, layer_name, None)
                if not isinstance(container, (nn.ModuleDict, nn.ParameterDict)):
                    continue
                for adapter_name in container.keys():
                    if task is not None and adapter_name != task:
                        continue
                    entry = container[adapter_name]
                    if isinstance(entry, nn.Parameter):
                        yield f"{module_name}.{layer_name}.{adapter_name}", entry
                    else:
                        for name, parameter in entry.named_parameters():
                            yield f"{module_name}.{layer_name}.{adapter_name}.{name}", parameter

    def apply_parameter_freezing(self) -> None:
        """(Re)apply which parameters train: heads always; with adapters, every task adapter but no base weight;
        then the embeddings and the `num_frozen_layers` lowest layers are frozen (adapters in them included).

        Called at construction and after `from_pretrained`; call it again after changing `num_frozen_layers`.
        """
        if self.config.sharing == "adapters":
            self.backbone.requires_grad_(False)
            for _, parameter in self._adapter_named_parameters():
                parameter.requires_grad_(True)
        else:
            self.backbone.requires_grad_(True)
        self.heads.requires_grad_(True)
        frozen = self.config.num_frozen_layers
        if frozen <= 0:
            return
        embeddings = getattr(self.backbone, "embeddings", None)
        if embeddings is None:
            embeddings = self.backbone.get_input_embeddings()
        embeddings.requires_grad_(False)
        for path in _SHARED_POSITION_MODULES:
            module = _get_submodule(self.backbone, path)
            if isinstance(module, nn.Module):
                module.requires_grad_(False)
        layers = self._backbone_layers()
        if frozen > len(layers):
            raise ValueError(f"num_frozen_layers: {frozen} is out of range; the backbone has {len(layers)} layers")
        for layer in layers[:frozen]:
            layer.requires_grad_(False)

    def _backbone_layers(self) -> nn.ModuleList:
        for path in _LAYER_LIST_PATHS:
            module = _get_submodule(self.backbone, path)
            if isinstance(module, nn.ModuleList):
                return module
        raise ValueError(
            f"num_frozen_layers: cannot find the list of layers of a {type(self.backbone).__name__} backbone "
            f"(looked for {', '.join(_LAYER_LIST_PATHS)})"
        )

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

    # ------------------------------------------------------------------ parameter groups
    def shared_parameters(self, trainable_only: bool = True) -> list[nn.Parameter]:
        """Backbone parameters shared by all tasks (adapter parameters excluded: they belong to one task).

        With `trainable_only` (default) only parameters with `requires_grad`; for PCGrad/GradNorm-style methods.
        """
        adapter_ids = {id(parameter) for _, parameter in self._adapter_named_parameters()}
        return [
            parameter
            for parameter in self.backbone.parameters()
            if id(parameter) not in adapter_ids and (parameter.requires_grad or not trainable_only)
        ]

    def head_parameters(self, task: str, include_adapter: bool = True) -> list[nn.Parameter]:
        """Parameters used by one task only: its head, plus its adapter when `sharing="adapters"`."""
        if task not in self.heads:
            raise KeyError(f"unknown task {task!r}; this model's tasks are {self.config.task_names}")
        parameters = list(self.heads[task].parameters())
        if include_adapter:
            parameters += [parameter for _, parameter in self._adapter_named_parameters(task)]
        return parameters

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
    def _set_active_adapter(self, task: str) -> None:
        # Set the attribute directly: PEFT's `set_adapter` would also flip `requires_grad` of the other adapters,
        # and every adapter must stay trainable for joint training.
        for layer in self._tuner_layers:
            layer._active_adapter = task

    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task: str | None = None,
        **backbone_kwargs,
    ) -> torch.Tensor:
        """Backbone token states `[B, L, H]`; with `sharing="adapters"`, `task` selects the adapter to apply."""
        if self.config.sharing == "adapters":
            if task is None:
                raise ValueError("encode(): with sharing='adapters', pass task=<name> to choose the adapter")
            if task not in self.heads:
                raise KeyError(f"unknown task {task!r}; this model's tasks are {self.config.task_names}")
            self._set_active_adapter(task)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **backbone_kwargs}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
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
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("forward(): pass input_ids (or inputs_embeds)")
        reference = input_ids if input_ids is not None else inputs_embeds
        batch_size, length = reference.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, length, dtype=torch.long, device=reference.device)
        spans = self._checked_spans(mention_spans, batch_size, length, reference.device)
        labels = labels or {}
        unknown = sorted(set(labels) - set(self.config.task_names))
        if unknown:
            raise ValueError(f"labels: unknown task(s) {unknown}; this model's tasks are {self.config.task_names}")
        backbone_kwargs = {}
        if inputs_embeds is not None:
            backbone_kwargs["inputs_embeds"] = inputs_embeds
        for name in ("position_ids",):
            if kwargs.get(name) is not None:
                backbone_kwargs[name] = kwargs[name]

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
            logits[name] = self.heads[name](pooled)

        output = MultiTaskOutput(logits=logits, last_hidden_state=shared_hidden if output_hidden_states else None)
        if labels:
            self._add_losses(output, labels)
        return output

    def _checked_spans(self, mention_spans, batch_size: int, length: int, device) -> torch.Tensor:
        if mention_spans is None:
            return torch.zeros(0, 3, dtype=torch.long, device=device)
        spans = torch.as_tensor(mention_spans, device=device).long()
        if spans.numel() == 0:
            return spans.reshape(0, 3)
        if spans.dim() != 2 or spans.shape[1] != 3:
            raise ValueError(
                f"mention_spans: expected shape [M, 3] (batch_row, start_token, end_token_exclusive), got {tuple(spans.shape)}"
            )
        rows, starts, ends = spans.unbind(dim=-1)
        bad = (rows < 0) | (rows >= batch_size) | (starts < 0) | (ends <= starts) | (ends > length)
        if bool(bad.any()):
            first = spans[bad.nonzero()[0, 0]].tolist()
            raise ValueError(
                f"mention_spans: row {first} is invalid for a batch of {batch_size} x {length} tokens "
                "(need 0 <= batch_row < B and 0 <= start < end <= L)"
            )
        return spans

    def _add_losses(self, output: MultiTaskOutput, labels: dict[str, torch.Tensor]) -> None:
        task_losses, task_sums, task_counts = {}, {}, {}
        total = None
        for task in self.config.tasks:
            name = task["name"]
            logits = output.logits[name]
            target = labels.get(name)
            if target is None:
                # Absent task: exactly 0, but connected to the graph so DDP sees every head used.
                loss_sum = logits.new_zeros((), dtype=torch.float32) + logits.sum() * 0.0
                count = torch.zeros((), dtype=torch.float32, device=logits.device)
            else:
                loss_sum, count = self._task_loss_sum(task, logits, target)
            mean = loss_sum / count.clamp_min(1.0)
            task_losses[name], task_sums[name], task_counts[name] = mean, loss_sum, count
            total = mean if total is None else total + mean
        output.loss = total
        output.task_losses, output.task_loss_sums, output.task_counts = task_losses, task_sums, task_counts

    def _task_loss_sum(self, task: dict, logits: torch.Tensor, target: torch.Tensor):
        """Sum of per-example losses over labelled examples, and their count (`losses.masked_task_loss_sum`)."""
        return masked_task_loss_sum(task, logits, target, **self._loss_options.get(task["name"], {}))

    # ------------------------------------------------------------------ inference
    def _resolve_tokenizer(self, tokenizer):
        if tokenizer is not None:
            return tokenizer
        cached = getattr(self, "_default_tokenizer", None)
        if cached is not None and cached[0] == self.name_or_path:
            return cached[1]
        # Loaded as remote code (package absent), the folder's config needs its auto_map to resolve: trusting it
        # runs no code beyond the modeling files already executing.
        trust_remote_code = type(self).__module__.startswith("transformers_modules")
        try:
            loaded = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=trust_remote_code)
        except Exception as err:
            raise OSError(
                f"predict(): no tokenizer was passed and none could be loaded from {self.name_or_path!r} ({err}). "
                "Pass tokenizer=..., or save the tokenizer next to the model (tokenizer.save_pretrained(folder))."
            ) from err
        self._default_tokenizer = (self.name_or_path, loaded)
        return loaded

    @torch.inference_mode()
    def predict(
        self,
        texts: str | Sequence[str],
        mentions: Sequence[Sequence[tuple[int, int]]] | None = None,
        tokenizer=None,
        batch_size: int = 16,
        return_scores: bool = False,
    ) -> list[dict[str, Any]]:
        """Label names per task for raw texts; long texts are windowed (`config.max_length`/`stride`), never truncated.

        Args:
            texts: list of texts (a single string is accepted and treated as a list of one).
            mentions: per text, a list of character `(start, end)` pairs (end exclusive); required when the model
                has a span task.
            tokenizer: defaults to `AutoTokenizer.from_pretrained(self.name_or_path)` (a fast tokenizer).
            batch_size: windows per forward pass.
            return_scores: also return probabilities.

        Returns:
            One dict per text. Document task -> label name (single-label) or list of names (multi-label, labels
            whose probability >= the stored threshold, 0.5 by default); span task -> list with one such prediction
            per mention, in input order. With `return_scores=True` every prediction becomes
            `{"prediction": <as above>, "scores": {label: probability}}`. Document probabilities combine windows
            with `aggregate_document_scores` (multi-label: max; single-label: mean).
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        has_span_task = any(task["level"] == SPAN for task in self.config.tasks)
        if mentions is None:
            if has_span_task:
                span_names = [task["name"] for task in self.config.tasks if task["level"] == SPAN]
                raise ValueError(
                    f"predict(): mentions are required: span task(s) {span_names} classify entity mentions; pass "
                    "mentions=[[(start, end), ...] per text]"
                )
            mentions = [[] for _ in texts]
        mentions = list(mentions)
        if len(mentions) != len(texts):
            raise ValueError(f"predict(): got {len(texts)} texts but {len(mentions)} mention lists")
        if batch_size < 1:
            raise ValueError(f"predict(): batch_size must be >= 1, got {batch_size}")
        tokenizer = self._resolve_tokenizer(tokenizer)

        windows = []  # (text index, window dict)
        for index, (text, text_mentions) in enumerate(zip(texts, mentions)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"predict(): text {index} is empty")
            try:
                text_windows = window_text(
                    tokenizer, text, text_mentions, max_length=self.config.max_length, stride=self.config.stride
                )
            except ValueError as err:
                raise ValueError(f"predict(): text {index}: {err}") from err
            windows.extend((index, window) for window in text_windows)

        was_training = self.training
        self.eval()
        document_logits = {task["name"]: [[] for _ in texts] for task in self.config.tasks if task["level"] == DOCUMENT}
        span_logits = {
            task["name"]: [[None] * len(text_mentions) for text_mentions in mentions]
            for task in self.config.tasks
            if task["level"] == SPAN
        }
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        try:
            for begin in range(0, len(windows), batch_size):
                chunk = windows[begin : begin + batch_size]
                batch, owners = self._pad_windows([window for _, window in chunk], pad_id)
                output = self(**batch)
                for name, per_text in document_logits.items():
                    values = output.logits[name].float().cpu()
                    for row, (text_index, _) in enumerate(chunk):
                        per_text[text_index].append(values[row])
                for name, per_text in span_logits.items():
                    values = output.logits[name].float().cpu()
                    for position, (row, mention_id) in enumerate(owners):
                        per_text[chunk[row][0]][mention_id] = values[position]
        finally:
            self.train(was_training)

        results = []
        for text_index in range(len(texts)):
            result = {}
            for task in self.config.tasks:
                name = task["name"]
                if task["level"] == DOCUMENT:
                    probabilities = aggregate_document_scores(
                        torch.stack(document_logits[name][text_index]), task["problem_type"]
                    )
                    result[name] = self._decide(task, probabilities.tolist(), return_scores)
                else:
                    result[name] = [
                        self._decide(task, self._probabilities(task, values), return_scores)
                        for values in span_logits[name][text_index]
                    ]
            results.append(result)
        return results

    def _pad_windows(self, windows: list[dict], pad_id: int):
        """Right-pad windows into model inputs; returns the batch and, per mention row, (window row, mention id)."""
        length = max(len(window["input_ids"]) for window in windows)
        device = self.device

        def padded(key, value):
            return torch.tensor(
                [window[key] + [value] * (length - len(window[key])) for window in windows], dtype=torch.long, device=device
            )

        batch = {"input_ids": padded("input_ids", pad_id), "attention_mask": padded("attention_mask", 0)}
        if all("token_type_ids" in window for window in windows):
            batch["token_type_ids"] = padded("token_type_ids", 0)
        spans, owners = [], []
        for row, window in enumerate(windows):
            for (start, end), mention_id in zip(window["mention_spans"], window["mention_ids"]):
                spans.append([row, start, end])
                owners.append((row, mention_id))
        batch["mention_spans"] = torch.tensor(spans, dtype=torch.long, device=device).reshape(-1, 3)
        return batch, owners

    @staticmethod
    def _probabilities(task: dict, logits: torch.Tensor) -> list[float]:
        return probabilities_from_logits(logits, task["problem_type"]).tolist()

    def _decide(self, task: dict, probabilities: list[float], return_scores: bool):
        labels = task["labels"]
        if task["problem_type"] == MULTI_LABEL:
            thresholds = self.config.thresholds_of(task["name"])
            prediction = [label for label, p, t in zip(labels, probabilities, thresholds) if p >= t]
        else:
            prediction = labels[max(range(len(labels)), key=probabilities.__getitem__)]
        if not return_scores:
            return prediction
        return {"prediction": prediction, "scores": dict(zip(labels, (float(p) for p in probabilities)))}


def _diagnose_checkpoint_folder(folder: str) -> str | None:
    """Name the missing or corrupt file of a local checkpoint folder, or None when the files look fine."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        return f"{config_path} is missing (save the model with save_pretrained)"
    try:
        with open(config_path, encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError) as err:
        return f"{config_path} is not valid JSON ({err})"
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as err:
            return f"{index} is not a valid safetensors index ({err})"
        files = [os.path.join(folder, shard) for shard in shards]
    elif os.path.isfile(single):
        files = [single]
    elif os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        return None
    else:
        return f"no weights file in {folder!r} (expected model.safetensors)"
    for path in files:
        if not os.path.isfile(path):
            return f"weights shard {path} is missing"
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:
                list(handle.keys())
        except Exception as err:
            return f"weights file {path} is corrupt or truncated ({err})"
    return None


MultiTaskConfig.register_for_auto_class()
MultiTaskModel.register_for_auto_class("AutoModel")

__all__ = ["MultiTaskModel", "MultiTaskOutput", "TaskHead", "pool_document", "pool_spans"]
