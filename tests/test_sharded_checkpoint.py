"""The sharded part of an fsdp checkpoint: written, read back, and refused when incomplete."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo.sharded_checkpoint import SHARDED, check_sharded, load_sharded, save_sharded


def test_shards_load_back_and_incomplete_ones_are_refused(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    save_sharded(tmp_path, model, optimizer)
    check_sharded(tmp_path)
    other = torch.nn.Linear(3, 2)
    other_optimizer = torch.optim.Adam(other.parameters())
    load_sharded(tmp_path, other, other_optimizer)
    assert torch.equal(other.weight, model.weight)
    assert other_optimizer.state_dict()["state"][0]["step"] == 1

    shard = next((tmp_path / SHARDED).glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:10])  # a shard cut short by a killed save
    with pytest.raises(ValueError, match="cut short"):
        check_sharded(tmp_path)
    (tmp_path / SHARDED / ".metadata").unlink()  # killed before the coordinator wrote the metadata
    with pytest.raises(ValueError, match="metadata is missing"):
        check_sharded(tmp_path)
