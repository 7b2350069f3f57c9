"""Every registered model, parametrized over ``list_models()`` itself: a new model is tested the
moment it is registered (built-in or plugin), with nothing to add here.

Two data shapes are used, MNIST's and a small 3x8x8 set with 5 classes, so a model that
hard-codes 784 inputs or 10 classes fails.
"""

from __future__ import annotations

import pytest
import torch

from zoo import create_model, list_models, model_info

SHAPES = {
    "mnist": {"input_dims": (1, 28, 28), "mapping": [str(i) for i in range(10)]},
    "rgb8x8": {"input_dims": (3, 8, 8), "mapping": ["a", "b", "c", "d", "e"]},
}
BATCH = 6  # > 1, so BatchNorm can train; not a multiple of anything a model might assume


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("name", list_models())
def test_forward_backward_every_parameter_gets_a_gradient(name: str, shape: str) -> None:
    data_config = SHAPES[shape]
    torch.manual_seed(0)
    model = create_model(name, data_config)
    model.train()
    images = torch.randn(BATCH, *data_config["input_dims"])
    labels = torch.arange(BATCH) % len(data_config["mapping"])

    logits = model(images)
    assert logits.shape == (BATCH, len(data_config["mapping"]))
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, labels).backward()

    params = dict(model.named_parameters())
    assert params, f"{name} has no parameters"
    for pname, param in params.items():
        assert param.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: parameter {pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in params.values()), f"{name}: every gradient is zero"

    model.eval()
    with torch.no_grad():
        single = model(images[:1])  # eval mode must accept a batch of one (BatchNorm uses running stats)
    assert single.shape == (1, len(data_config["mapping"]))


@pytest.mark.parametrize("name", list_models())
def test_model_info_describes_every_hyperparameter(name: str) -> None:
    info = model_info(name)
    assert info["name"] == name
    assert info["source"]
    assert info["doc"], f"{name} needs a docstring: `zoo models` shows its first line"
    for hname, spec in info["hyperparameters"].items():
        assert spec["type"], f"{name}.{hname} has no type"


@pytest.mark.parametrize(
    ("name", "hparams"),
    [("mlp", {"fc1": 16, "fc2": 8, "dropout": 0.0}), ("bn_mlp", {"widths": [16, 8, 4]}),
     ("skip_mlp", {"widths": [12], "dropout": 0.1})],
)
def test_hyperparameters_shape_the_model(name: str, hparams: dict) -> None:
    """Hyperparameters reach the layers (a list from YAML works where a tuple is declared)."""
    model = create_model(name, SHAPES["rgb8x8"], **hparams)
    widths = hparams.get("widths") or [hparams["fc1"], hparams["fc2"]]
    linear_outs = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for width in widths:
        assert width in linear_outs
    assert 5 in linear_outs  # the output layer comes from the mapping


def test_skip_mlp_is_a_linear_model_plus_the_deep_net() -> None:
    """The skip layer is applied to the flattened inputs and added to the last layer's output."""
    model = create_model("skip_mlp", SHAPES["rgb8x8"], widths=(8,), dropout=0.0).eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        expected = model.head(model.body(x)) + model.skip(x.flatten(1))
        assert torch.allclose(model(x), expected)
        assert model.skip.in_features == 3 * 8 * 8
