"""The zoo-timm plugin: timm's architectures through one provider entry point, and timm's weights.

    pip install -e examples/zoo-timm && pytest examples/zoo-timm/tests
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from zoo import create_model, list_models, model_info
from zoo.cli import main as zoo
from zoo.errors import ZooError
from zoo.finetune import prepare_model
from zoo.providers import checked
from zoo.recipe import load_recipe

DIGITS = {"input_dims": (1, 28, 28), "mapping": [str(d) for d in range(10)]}
COLOUR = {"input_dims": (3, 32, 32), "mapping": [f"class{i}" for i in range(5)]}
SOURCE = f"zoo-timm=={metadata.version('zoo-timm')}"


def test_patterns_with_the_prefix_list_timm_and_a_bare_star_does_not() -> None:
    assert list_models("timm/resnet1*") == sorted(f"timm/{n}" for n in timm.list_models("resnet1*"))
    assert len(list_models("timm/*")) == len(timm.list_models()) > 1000
    assert not any(name.startswith("timm/") for name in list_models("*"))
    info = model_info("timm/resnet18")
    assert info["source"] == SOURCE and info["builder"] == "timm.create_model('resnet18')"
    assert set(info["hyperparameters"]) == {"drop_rate", "drop_path_rate", "global_pool"}


def test_zoo_imports_timm_only_for_timm_names() -> None:
    code = ("import sys; from zoo import create_model, list_models; list_models('*'); list_models('mlp*'); "
            "print('timm' in sys.modules); create_model('timm/resnet18', {'input_dims': (1, 8, 8), 'mapping': 'ab'}); "
            "print('timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout.split()
    assert out == ["False", "True"]


def test_models_are_built_for_the_data() -> None:
    model = create_model("timm/resnet18", DIGITS, drop_rate=0.25)
    assert (model.conv1.in_channels, model.fc.out_features, model.drop_rate) == (1, 10, 0.25)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    vit = create_model("timm/vit_tiny_patch16_224", COLOUR)  # a fixed input size: built for 32x32
    assert vit.patch_embed.img_size == (32, 32)
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_hyperparameters_are_checked_like_built_ins(tmp_path: Path) -> None:
    with pytest.raises(ZooError, match=r"^model 'timm/resnet18' has no hyperparameter 'drop_rat' "
                                       r"\(did you mean 'drop_rate'\?\); valid: drop_rate: float \| None, "):
        create_model("timm/resnet18", DIGITS, drop_rat=0.1)
    with pytest.raises(ZooError, match=r"^model 'timm/resnet18' hyperparameter 'drop_rate' expects float \| None, "
                                       r"got 'lots'"):
        create_model("timm/resnet18", DIGITS, drop_rate="lots")
    with pytest.raises(ZooError, match=r"^unknown model 'timm/resnet181' \(did you mean 'timm/resnet18'\?\); "
                                       r"run `zoo models 'timm/\*'`"):
        create_model("timm/resnet181", DIGITS)
    with pytest.raises(ZooError, match=r"^model 'timm/vgg11' does not take hyperparameter 'drop_path_rate'"):
        create_model("timm/vgg11", DIGITS, drop_path_rate=0.1)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: timm/resnet18}\n")
    with pytest.raises(ZooError, match=r"override 'model.drop_rate=x': model 'timm/resnet18' hyperparameter"):
        load_recipe(recipe, ["model.drop_rate=x"])


def test_zoo_models_lists_shows_and_checks_the_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("timm/*"))
    assert SOURCE in row and f"{len(timm.list_models()):,} models from timm" in row
    assert zoo(["models", "timm/resnet18*"]) == 0
    out = capsys.readouterr().out
    assert "timm/resnet18d" in out and "11,175,370" in out  # parameters for MNIST's shapes
    assert zoo(["models", "show", "timm/resnet18"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"timm/resnet18  ({SOURCE}; timm.create_model('resnet18'))")
    assert "drop_path_rate  float | None  None     stochastic depth rate" in out
    # `zoo models check` covers the plugin through a few architectures, without naming it.
    assert checked("*") == ["timm/resnet18", "timm/vit_tiny_patch16_224"]
    assert zoo(["models", "check", "timm/mobilenetv3_small_050"]) == 0
    assert capsys.readouterr().out.startswith(f"PASS  timm/mobilenetv3_small_050  {SOURCE}")


def _cache_weights(hub_cache: Path, repo: str, weights: dict[str, torch.Tensor]) -> None:
    """What a download leaves in the Hugging Face cache: a snapshot and the ref pointing at it."""
    folder = hub_cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(weights, str(snapshot / "model.safetensors"))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)


def test_pretrained_true_reads_timms_weights_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # the Hub is never asked
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ZooError, match=r"timm's weights for 'resnet18' \(timm/resnet18.a1_in1k\) are not in the "
                                       "Hugging Face cache"):
        prepare_model(create_model("timm/resnet18", DIGITS), "timm/resnet18", DIGITS, True, [])

    torch.manual_seed(7)
    imagenet = timm.create_model("resnet18").state_dict()  # the shapes of timm's ImageNet checkpoint
    _cache_weights(tmp_path, "timm/resnet18.a1_in1k", imagenet)
    model = create_model("timm/resnet18", DIGITS)
    report, _ = prepare_model(model, "timm/resnet18", DIGITS, True, "backbone")
    assert report.reinitialised == {"fc.weight": "1000x512 there, 10x512 here", "fc.bias": "1000 there, 10 here"}
    assert len(report.loaded) == len(imagenet) - 2 and report.ignored == []
    assert torch.equal(model.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])
    # timm adapts the RGB stem to one channel by summing its three input channels.
    assert torch.allclose(model.conv1.weight, imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
