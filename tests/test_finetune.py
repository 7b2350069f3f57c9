"""Pretrained weights, frozen parameters and the backbone's learning rate, on the built-in MLP.

The weights come from real files (safetensors written here, and a run folder a real training run
leaves); the last test trains for real: a fine-tuning run continued from one of its checkpoints
ends bit-identical to the run that never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zoo.errors import ZooError
from zoo.finetune import classifier_parameters, freeze, load_matching, parameter_groups, prepare_model, read_weights
from zoo.fit import build_optimizer, build_scheduler
from zoo.recipe import TrainerSection, load_recipe
from zoo.registry import create_model

DIGITS = {"input_dims": (1, 28, 28), "mapping": [str(d) for d in range(10)]}
FIVE = {"input_dims": (1, 28, 28), "mapping": [str(d) for d in range(5)]}


def _mlp(config: dict = DIGITS, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp", config, fc1=32, fc2=16)


def test_weights_load_by_name_and_shape_and_the_rest_is_reported(tmp_path: Path) -> None:
    source = _mlp(seed=1).state_dict()
    source["extra.weight"] = torch.ones(3)
    save_file(source, str(tmp_path / "w.safetensors"))
    model = _mlp(FIVE, seed=2)  # five classes: the classifier cannot take the ten-class one
    fresh_head = model.fc3.weight.detach().clone()
    report, frozen = prepare_model(model, "mlp", FIVE, str(tmp_path / "w.safetensors"), [])
    assert frozen == []
    assert report.loaded == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert report.reinitialised == {"fc3.weight": "10x16 there, 5x16 here", "fc3.bias": "10 there, 5 here"}
    assert report.ignored == ["extra.weight"]
    assert torch.equal(model.fc1.weight, source["fc1.weight"])
    assert torch.equal(model.fc3.weight, fresh_head)  # kept its fresh initialisation
    line = report.line()
    assert line.startswith(f"pretrained weights from {tmp_path / 'w.safetensors'}: loaded 4 of the model's 6 tensors; "
                           "re-initialised 2: fc3.weight (10x16 there, 5x16 here)")
    assert line.endswith("; ignored 1 not in the model: extra.weight")
    report.write(tmp_path)
    assert json.loads((tmp_path / "pretrained.json").read_text())["ignored"] == ["extra.weight"]


def test_a_folder_means_its_model_safetensors_and_bad_sources_are_one_line(tmp_path: Path) -> None:
    save_file(_mlp().state_dict(), str(tmp_path / "model.safetensors"))
    weights, where = read_weights(str(tmp_path), "mlp", DIGITS)
    assert where == str(tmp_path / "model.safetensors") and "fc1.weight" in weights
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    cases = {
        str(tmp_path / "empty"): "is a folder without model.safetensors",
        str(tmp_path / "missing"): "no such file or folder",
        str(tmp_path / "junk.safetensors"): "is not a readable safetensors file",
    }
    for source, message in cases.items():
        with pytest.raises(ZooError, match=message):
            read_weights(source, "mlp", DIGITS)
    with pytest.raises(ZooError, match="model 'mlp' has no default pretrained weights"):
        read_weights(True, "mlp", DIGITS)
    with pytest.raises(ZooError, match="none of the 1 tensors in x fits this model"):
        load_matching(_mlp(), {"conv.weight": torch.ones(2)}, "x")


def test_freeze_backbone_patterns_and_exclusions() -> None:
    model = _mlp()
    assert classifier_parameters(model) == {"fc3.weight", "fc3.bias"}
    assert freeze(model, "backbone") == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc3.weight", "fc3.bias"]
    model = _mlp()
    assert freeze(model, ["fc*", "!fc3.*", "!fc2.bias"]) == ["fc1.weight", "fc1.bias", "fc2.weight"]
    with pytest.raises(ZooError, match=r"model.freeze pattern 'conv\*' matches no parameter; names look like fc1"):
        freeze(_mlp(), ["conv*"])
    with pytest.raises(ZooError, match="freezes every parameter"):
        freeze(_mlp(), ["*"])


def test_backbone_learning_rate_is_scaled_through_the_schedule() -> None:
    model = _mlp()
    freeze(model, ["fc1.*"])
    groups = parameter_groups(model, 1e-2, 0.1)
    assert [len(g["params"]) for g in groups] == [2, 2]  # head first; frozen fc1 left out
    assert [g["lr"] for g in groups] == [1e-2, 1e-3]
    trainer = TrainerSection(lr=1e-2, backbone_lr_scale=0.1, schedule="onecycle")
    optimizer = build_optimizer(groups, trainer)
    scheduler = build_scheduler(optimizer, trainer, total_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    head_lr, backbone_lr = (g["lr"] for g in optimizer.param_groups)
    assert backbone_lr == pytest.approx(head_lr * 0.1)
    assert len(parameter_groups(_mlp(), 1e-2, 1.0)) == 1


def test_recipe_keys_are_checked_and_kept_apart_from_hyperparameters(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: mlp, fc1: 64, pretrained: runs/a, freeze: backbone}\n")
    loaded = load_recipe(recipe, ["trainer.backbone_lr_scale=0.1"])
    assert loaded.model.hparams == {"fc1": 64}
    assert (loaded.model.finetune.pretrained, loaded.model.finetune.freeze) == ("runs/a", "backbone")
    assert loaded.trainer.backbone_lr_scale == 0.1
    with pytest.raises(ZooError, match=r"override 'model.pretrained=3': key 'model.pretrained': input should be"):
        load_recipe(recipe, ["model.pretrained=3"])
    with pytest.raises(ZooError, match=r"key 'trainer\.backbone_lr_scale': input should be greater than 0"):
        load_recipe(recipe, ["trainer.backbone_lr_scale=0"])


def test_fine_tuning_resumes_exactly(launch_training, tmp_path: Path) -> None:
    """A frozen, scaled fine-tuning run continued from a mid-run checkpoint ends bit-identical."""
    (tmp_path / "source").mkdir()  # a run folder as far as model.pretrained is concerned
    save_file(create_model("mlp", DIGITS, fc1=64, fc2=32).state_dict(), str(tmp_path / "source" / "model.safetensors"))
    base = ["tracking.wandb=false", "model.fc1=64", "model.fc2=32", "trainer.schedule=onecycle"]
    tune = [*base, f"model.pretrained={tmp_path / 'source'}", "model.freeze=[fc1.*]",
            "trainer.backbone_lr_scale=0.1", "trainer.epochs=2", "checkpoint.every_steps=40", "checkpoint.keep=10"]
    full = launch_training("recipes/mlp.yaml", f"output_dir={tmp_path / 'full'}", *tune)
    source_file = tmp_path / "source" / "model.safetensors"
    assert f"pretrained weights from {source_file}: loaded 6 of the model's 6 tensors" in full.stdout
    assert "model.freeze: 2 parameter tensors frozen (50,240 parameters); training 4: fc2.weight" in full.stdout
    source = load_file(str(tmp_path / "source" / "model.safetensors"))
    tuned = load_file(str(tmp_path / "full" / "model.safetensors"))
    assert torch.equal(tuned["fc1.weight"], source["fc1.weight"])  # frozen: never moved
    assert not torch.equal(tuned["fc2.weight"], source["fc2.weight"])

    middle = tmp_path / "full" / "checkpoints" / "step-00000080"  # inside the second epoch
    resumed = launch_training("recipes/mlp.yaml", f"output_dir={tmp_path / 'resumed'}", *tune,
                              f"trainer.resume={middle}")
    assert "resuming from" in resumed.stdout
    again = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for key in tuned:
        assert torch.equal(tuned[key], again[key]), f"{key} differs after resume"
