"""Starting from trained weights: ``model.pretrained``, ``model.freeze`` and the backbone's learning rate.

``model.pretrained`` is ``true`` (the model provider's default weights, e.g. timm's, read from the
Hugging Face cache), a ``.safetensors`` file, or a folder holding ``model.safetensors`` (a zoo run
folder, or one of its checkpoints). Tensors are matched by name and shape: those that fit are
loaded, the model's tensors that find no fit keep their fresh initialisation (a classifier for
another class count), and the file's tensors the model lacks are ignored. The run prints the
counts and writes the full lists to ``pretrained.json`` in its folder.

``model.freeze`` stops gradients to parameters chosen by ``fnmatch`` patterns over their names;
a pattern starting with ``!`` takes parameters back out, and ``backbone`` means every parameter
but the classifier's. A BatchNorm layer whose parameters are all frozen keeps its running
statistics as well. ``trainer.backbone_lr_scale`` multiplies the learning rate of every
parameter but the classifier's, so a pretrained body moves slower than its new head.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.model_file import WEIGHTS_FILE

BACKBONE = "backbone"
PRETRAINED_RECORD = "pretrained.json"


@dataclass
class LoadReport:
    """What loading pretrained weights did, tensor by tensor."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)  # name -> why (missing, or both shapes)
    ignored: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one line a run prints: counts, then the names that were not loaded."""
        total = len(self.loaded) + len(self.reinitialised)
        text = f"pretrained weights from {self.source}: loaded {len(self.loaded)} of the model's {total} tensors"
        if self.reinitialised:
            text += f"; re-initialised {len(self.reinitialised)}: " + ", ".join(
                f"{name} ({why})" for name, why in list(self.reinitialised.items())[:6])
            text += ", ..." if len(self.reinitialised) > 6 else ""
        if self.ignored:
            text += f"; ignored {len(self.ignored)} not in the model: " + ", ".join(self.ignored[:6])
            text += ", ..." if len(self.ignored) > 6 else ""
        return text

    def write(self, output_dir: Path) -> None:
        """``pretrained.json``: every tensor name, loaded, re-initialised or ignored."""
        (Path(output_dir) / PRETRAINED_RECORD).write_text(json.dumps(asdict(self), indent=1) + "\n")


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(str(d) for d in tensor.shape) or "scalar"


def read_weights(source: bool | str, model_name: str, data_config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The state dict ``model.pretrained`` points at, and how to name where it came from."""
    from zoo import providers

    if source is True:
        weights = providers.pretrained_weights(model_name, data_config)
        if weights is None:
            raise ZooError(f"model.pretrained=true: model '{model_name}' has no default pretrained weights; "
                           "set model.pretrained to a .safetensors file or a run folder")
        return weights, f"{model_name}'s default weights"
    path = Path(str(source))
    if path.is_dir():
        path = path / WEIGHTS_FILE  # a run folder's final weights, or a checkpoint's (the same name)
        if not path.is_file():
            raise ZooError(f"model.pretrained='{source}' is a folder without model.safetensors; "
                           "point it at a finished run folder, a checkpoint folder or a .safetensors file")
    elif not path.is_file():
        raise ZooError(f"model.pretrained='{source}': no such file or folder")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path)), str(path)
    except (SafetensorError, OSError) as exc:
        raise ZooError(f"model.pretrained='{source}' is not a readable safetensors file ({exc}); "
                       "give a .safetensors file or a run folder") from None


def load_matching(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Copy every tensor of ``weights`` whose name and shape fit ``model``; report the rest."""
    report = LoadReport(source)
    own = model.state_dict()
    fitting = {}
    for name, tensor in own.items():
        if name not in weights:
            report.reinitialised[name] = "not in the weights"
        elif weights[name].shape != tensor.shape:
            report.reinitialised[name] = f"{_shape(weights[name])} there, {_shape(tensor)} here"
        else:
            fitting[name] = weights[name]
            report.loaded.append(name)
    report.ignored = [name for name in weights if name not in own]
    if not fitting:
        raise ZooError(f"model.pretrained: none of the {len(weights)} tensors in {source} fits this model "
                       "(names and shapes differ); is it a run of another architecture?")
    model.load_state_dict(fitting, strict=False)
    return report


def classifier_parameters(model: nn.Module) -> set[str]:
    """Names of the classifier's parameters: ``get_classifier()`` where the model has it (timm),
    otherwise the last ``nn.Linear``."""
    head: nn.Module | None = None
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        found = get_classifier()
        head = found if isinstance(found, nn.Module) else None
    if head is None or not any(True for _ in head.parameters()):
        linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
        head = linears[-1] if linears else None
    if head is None:
        return set()
    ids = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def freeze(model: nn.Module, patterns: str | list[str]) -> list[str]:
    """Stop gradients to the parameters ``patterns`` choose; returns their names.

    ``"backbone"`` is every parameter but the classifier's; otherwise ``fnmatch`` patterns over
    parameter names, applied in order, ``!pattern`` taking matches back out.
    """
    names = [name for name, _ in model.named_parameters()]
    if patterns == BACKBONE or patterns == [BACKBONE]:
        head = classifier_parameters(model)
        if not head:
            raise ZooError("model.freeze=backbone: this model has no classifier layer to keep training; "
                           "list parameter name patterns instead")
        chosen = [name for name in names if name not in head]
    else:
        selected: set[str] = set()
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            keep_out = pattern.startswith("!")
            hits = set(fnmatch.filter(names, pattern.lstrip("!")))
            if not hits:
                raise ZooError(f"model.freeze pattern '{pattern}' matches no parameter; names look like "
                               f"{', '.join(names[:3])}, ..., {names[-1]}")
            selected = selected - hits if keep_out else selected | hits
        chosen = [name for name in names if name in selected]
    if len(chosen) == len(names):
        raise ZooError("model.freeze freezes every parameter, which leaves nothing to train; "
                       "keep the head out, e.g. model.freeze=backbone")
    parameters = dict(model.named_parameters())
    for name in chosen:
        parameters[name].requires_grad_(False)
    # A frozen BatchNorm keeps its running statistics too (as timm's FrozenBatchNorm2d does):
    # it normalizes as in evaluation even while the rest trains, so frozen really means unchanged.
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and own and not any(p.requires_grad for p in own):
            module.register_forward_pre_hook(_normalize_as_in_evaluation)
    return chosen


def _normalize_as_in_evaluation(module: nn.Module, args: Any) -> None:
    module.training = False


def parameter_groups(model: nn.Module, lr: float, backbone_lr_scale: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: trainable parameters only, the classifier first at ``lr``
    and, when ``backbone_lr_scale`` is not 1, the rest at ``lr * backbone_lr_scale``."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if backbone_lr_scale == 1:
        return [{"params": [p for _, p in trainable], "lr": lr}]
    head = classifier_parameters(model)
    if not head:
        raise ZooError("trainer.backbone_lr_scale needs a classifier layer to tell the head from the backbone; "
                       "this model has none, so leave trainer.backbone_lr_scale at 1")
    groups = [{"params": [p for n, p in trainable if n in head], "lr": lr},
              {"params": [p for n, p in trainable if n not in head], "lr": lr * backbone_lr_scale}]
    return [group for group in groups if group["params"]]


def prepare_model(
    model: nn.Module, model_name: str, data_config: dict[str, Any], pretrained: bool | str, patterns: str | list[str],
) -> tuple[LoadReport | None, list[str]]:
    """Load ``pretrained`` weights (if any) into ``model``, then freeze ``patterns``; returns what each did."""
    report = None
    if pretrained is not False:
        weights, source = read_weights(pretrained, model_name, data_config)
        report = load_matching(model, weights, source)
    frozen = freeze(model, patterns) if patterns else []
    return report, frozen
