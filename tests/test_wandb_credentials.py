"""W&B start-up decisions that need no W&B server: which credentials count (zoo.wandb_run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.wandb_run import has_wandb_credentials


def test_a_self_hosted_server_is_looked_up_in_netrc_under_its_own_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `wandb login --host http://wandb.internal:8080` leaves behind: an entry for that host only.
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine wandb.internal\n  login user\n  password {'0' * 40}\n")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.internal:8080")
    assert has_wandb_credentials()  # a self-hosted user is not sent offline
    monkeypatch.delenv("WANDB_BASE_URL")
    assert not has_wandb_credentials()  # W&B's cloud (api.wandb.ai) has no entry in this file
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'0' * 40}\n")
    assert has_wandb_credentials()
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.internal:8080")
    assert not has_wandb_credentials()  # the cloud's key is no key for the self-hosted server
