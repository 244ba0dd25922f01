"""The shared encoder of a `MultiTaskModel`: building it, per-task adapters, freezing, and the frozen prefix.

`BackboneMixin` holds the model methods that deal with the backbone alone; `MultiTaskModel` inherits them.

Frozen prefix: with `num_frozen_layers = k > 0` the embeddings and the k lowest layers are frozen. They always run
in eval mode (no dropout; see `BackboneMixin.train`), so when they also hold no trainable parameter (hard sharing,
or adapters none of which sits in them) their output for a window never changes. `frozen_prefix_states` computes
that output once (e.g. for `modeling.frozen_cache`), and `encode(..., prefix_hidden_states=...)` runs only layers
k..N on it. Both rely on the encoder running its layer list in order (BERT, RoBERTa, ELECTRA, DistilBERT,
DeBERTa-v2 without its convolution layer); `frozen_prefix_reason` names what prevents it otherwise.

Part of the model code copied next to every saved checkpoint (``trust_remote_code`` loading): imports only
stdlib/torch/transformers (peft lazily) and sibling modules, relatively.
"""

import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

# Where the stack of transformer blocks lives in common encoder layouts (BERT/RoBERTa/DeBERTa-v2/ELECTRA use
# `encoder.layer`, DistilBERT `transformer.layer`, ModernBERT and newer models `layers`).
_LAYER_LIST_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer")
# Modules shared by every layer (DeBERTa-v2's relative position embeddings): frozen with the embeddings.
_SHARED_POSITION_MODULES = ("encoder.rel_embeddings", "encoder.LayerNorm")


def _get_submodule(module: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def backbone_class(backbone_config):
    """The `AutoModel` class of a backbone config."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(backbone_config)]
    except KeyError:
        raise ValueError(
            f"backbone_config: no AutoModel class is registered for model_type "
            f"{getattr(backbone_config, 'model_type', '?')!r}"
        ) from None


def backbone_init_kwargs(backbone_config) -> dict[str, Any]:
    """Drop the backbone's pooler when it has one: no head uses it, and unused parameters break DDP."""
    if "add_pooling_layer" in inspect.signature(backbone_class(backbone_config).__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


class _StopForward(Exception):
    """Raised by a forward hook to end a backbone pass once the frozen prefix is computed."""


class _GivenStates(nn.Module):
    """Stands in for the embeddings module: returns precomputed states whatever it is called with."""

    def __init__(self, states: torch.Tensor):
        super().__init__()
        self.states = states

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.states


class BackboneMixin:
    """Backbone methods of `MultiTaskModel` (expects `self.backbone`, `self.heads`, `self.config`, `self._tuner_layers`)."""

    # ------------------------------------------------------------------ adapters
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
        try:
            peft_config = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](**options)
        except TypeError as error:  # an option the PEFT type does not take
            raise ValueError(f"adapter_config: {error} (options of a {peft_type} adapter)") from error
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
        for _, parameter in self._adapter_named_parameters():
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

    def _set_active_adapter(self, task: str) -> None:
        # Set the attribute directly: PEFT's `set_adapter` would also flip `requires_grad` of the other adapters,
        # and every adapter must stay trainable for joint training.
        for layer in self._tuner_layers:
            layer._active_adapter = task

    # ------------------------------------------------------------------ freezing
    def _embeddings_module(self) -> nn.Module:
        embeddings = getattr(self.backbone, "embeddings", None)
        return embeddings if embeddings is not None else self.backbone.get_input_embeddings()

    def _layer_list_path(self) -> str:
        for path in _LAYER_LIST_PATHS:
            if isinstance(_get_submodule(self.backbone, path), nn.ModuleList):
                return path
        raise ValueError(
            f"num_frozen_layers: cannot find the list of layers of a {type(self.backbone).__name__} backbone "
            f"(looked for {', '.join(_LAYER_LIST_PATHS)})"
        )

    def _backbone_layers(self) -> nn.ModuleList:
        return _get_submodule(self.backbone, self._layer_list_path())

    def _frozen_modules(self) -> list[nn.Module]:
        """The embeddings, the shared position modules and the `num_frozen_layers` lowest layers ([] when 0)."""
        frozen = self.config.num_frozen_layers
        if frozen <= 0:
            return []
        layers = self._backbone_layers()
        if frozen > len(layers):
            raise ValueError(f"num_frozen_layers: {frozen} is out of range; the backbone has {len(layers)} layers")
        shared = [_get_submodule(self.backbone, path) for path in _SHARED_POSITION_MODULES]
        return [self._embeddings_module(), *(m for m in shared if isinstance(m, nn.Module)), *layers[:frozen]]

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
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)  # puts the frozen part in eval mode

    def train(self, mode: bool = True):
        """`nn.Module.train`, except that the embeddings and the `num_frozen_layers` frozen layers always stay in
        eval mode (no dropout): frozen, they gain nothing from dropout noise, and a deterministic frozen part is
        what lets `encode(prefix_hidden_states=...)` reuse cached states with the same result as a full pass."""
        super().train(mode)
        if mode and self.config.num_frozen_layers > 0:
            for module in (self._embeddings_module(), *self._backbone_layers()[: self.config.num_frozen_layers]):
                module.eval()
        return self

    # ------------------------------------------------------------------ frozen prefix
    def frozen_prefix_reason(self) -> str | None:
        """None when the frozen prefix (embeddings + `num_frozen_layers` layers) can be precomputed, else why not."""
        k = self.config.num_frozen_layers
        if k <= 0:
            return "num_frozen_layers is 0: nothing is frozen"
        if not isinstance(getattr(self.backbone, "embeddings", None), nn.Module):
            return f"the {type(self.backbone).__name__} backbone has no `embeddings` module to stand in for"
        if getattr(getattr(self.backbone, "encoder", None), "conv", None) is not None:
            return "the backbone's encoder applies a convolution after its first layer (DeBERTa-v2 conv_kernel_size)"
        modules = self._frozen_modules()
        trainable = [name for m in modules for name, p in m.named_parameters() if p.requires_grad]
        if trainable:
            return f"frozen-prefix parameters are trainable ({trainable[:3]}...); call apply_parameter_freezing()"
        inside = {id(sub) for m in modules for sub in m.modules()}
        if any(id(layer) in inside for layer in self._tuner_layers):
            return f"task adapters sit in the embeddings or the {k} frozen layers (each task sees different states)"
        return None

    @contextmanager
    def _prefix_in_eval_mode(self):
        modules = [self._embeddings_module(), *self._backbone_layers()[: self.config.num_frozen_layers]]
        modes = [m.training for m in modules]
        for module in modules:
            module.eval()
        try:
            yield
        finally:
            for module, mode in zip(modules, modes):
                module.train(mode)

    @torch.no_grad()
    def frozen_prefix_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Output `[B, L, H]` of the embeddings and the `num_frozen_layers` lowest layers (eval mode, no grad);
        the input of `forward(..., prefix_hidden_states=...)`. With adapters, no adapter may sit in that prefix."""
        reason = self.frozen_prefix_reason()
        if reason is not None:
            raise ValueError(f"frozen_prefix_states(): the frozen prefix cannot be precomputed: {reason}")
        captured = []

        def stop(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        handle = self._backbone_layers()[self.config.num_frozen_layers - 1].register_forward_hook(stop)
        try:
            with self._prefix_in_eval_mode():
                self.backbone(**inputs, return_dict=True)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured[0]

    @contextmanager
    def _backbone_from_prefix(self, prefix_hidden_states: torch.Tensor):
        """Within the block, a backbone pass skips the embeddings and the frozen layers and starts from the given
        states: the embeddings module is replaced by one returning them and the layer list by its upper part."""
        reason = self.frozen_prefix_reason()
        if reason is not None:
            raise ValueError(f"prefix_hidden_states: the frozen prefix cannot be precomputed: {reason}")
        path = self._layer_list_path()
        parent_path, _, attribute = path.rpartition(".")
        parent = _get_submodule(self.backbone, parent_path) if parent_path else self.backbone
        layers, embeddings = parent._modules[attribute], self.backbone._modules["embeddings"]
        dtype = self.backbone.get_input_embeddings().weight.dtype
        parent._modules[attribute] = nn.ModuleList(layers[self.config.num_frozen_layers :])
        self.backbone._modules["embeddings"] = _GivenStates(prefix_hidden_states.to(dtype))
        try:
            yield
        finally:
            parent._modules[attribute], self.backbone._modules["embeddings"] = layers, embeddings

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


__all__ = ["BackboneMixin", "backbone_class", "backbone_init_kwargs"]
