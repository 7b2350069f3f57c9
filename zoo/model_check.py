"""The model contract, checked: what ``zoo models check`` runs for every registered model.

A model honours the contract when it builds from ``data_config`` alone (default hyperparameters),
gives finite logits of shape (batch, classes) for those shapes, sends a finite gradient to every
trainable parameter, and classifies a single example in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.errors import ZooError
from zoo.registry import create_model, get_entry, list_models, plugin_errors

# The shapes that parameter counts refer to: one MNIST digit and its ten classes.
MNIST_CONFIG: dict[str, Any] = {"input_dims": (1, 28, 28), "mapping": [str(d) for d in range(10)]}
# The check also builds every model for colour images of another size and class count, which
# catches a model that hard-codes 784 inputs or 10 classes instead of reading data_config.
CHECK_CONFIGS: tuple[dict[str, Any], ...] = (
    MNIST_CONFIG,
    {"input_dims": (3, 32, 32), "mapping": [f"class{i}" for i in range(5)]},
)


def count_parameters(name: str, data_config: dict[str, Any] = MNIST_CONFIG) -> int:
    """Parameters of model ``name`` with its default hyperparameters, built for ``data_config``."""
    return sum(p.numel() for p in create_model(name, data_config).parameters())


def check_model(name: str, data_config: dict[str, Any]) -> str | None:
    """Why model ``name`` fails a forward and backward pass for ``data_config``; None if it passes.

    Builds it with default hyperparameters, runs a training-mode forward on a batch of 4, checks
    the logits' shape and that they are finite, backpropagates a cross-entropy loss and checks
    that every trainable parameter got a finite gradient, then runs an eval-mode forward on a
    single example (what ``zoo predict`` does).
    """
    dims, classes = tuple(data_config["input_dims"]), len(data_config["mapping"])
    shape = "x".join(str(d) for d in dims)
    try:
        problem = _forward_backward(create_model(name, data_config), dims, classes)
    except ZooError as exc:
        return str(exc)
    except Exception as exc:  # the point of the check: report, never crash
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"input {shape}: {type(exc).__name__}: {message}"
    return f"input {shape}: {problem}" if problem else None


def _forward_backward(model: torch.nn.Module, dims: tuple[int, ...], classes: int) -> str | None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, *dims, generator=generator)
    y = torch.randint(0, classes, (4,), generator=generator)
    model.train()
    logits = model(x)
    if tuple(logits.shape) != (4, classes):
        return f"logits of shape {tuple(logits.shape)}, expected (4, {classes})"
    if not torch.isfinite(logits).all():
        return "non-finite logits"
    torch.nn.functional.cross_entropy(logits, y).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    if missing:
        return f"no gradient for {', '.join(missing[:5])}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    if bad:
        return f"non-finite gradient for {', '.join(bad[:5])}"
    model.eval()
    with torch.no_grad():
        single = model(x[:1])
    if tuple(single.shape) != (1, classes):
        return f"eval logits of shape {tuple(single.shape)} for one example, expected (1, {classes})"
    return None


def check_models(pattern: str = "*") -> list[tuple[str, str, str | None]]:
    """``(name, source, why it fails or None)`` for every model matching ``pattern``.

    Plugins that failed to load are included as failures, named by their package.
    """
    import fnmatch

    from zoo.providers import checked

    results: list[tuple[str, str, str | None]] = []
    # A few of each provider's models too, when the pattern does not name the provider.
    for name in list_models(pattern) + checked(pattern):
        reason = next((r for r in (check_model(name, c) for c in CHECK_CONFIGS) if r), None)
        results.append((name, get_entry(name).source, reason))
    failed = [e for e in plugin_errors() if fnmatch.fnmatchcase(e.entry_point, pattern)]
    return results + [(e.entry_point, e.package, e.error) for e in failed]
