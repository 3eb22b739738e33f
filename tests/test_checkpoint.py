"""Checkpoint files: self-describing, atomic, and clear about corruption."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from flowspec.checkpoint import (
    read_checkpoint,
    read_state,
    save_checkpoint,
    save_state,
)
from flowspec.errors import CheckpointError


def test_round_trip_with_spec_and_ema(tmp_path):
    state = {"a.weight": torch.randn(3, 2), "b": torch.arange(4)}
    ema = {"a.weight": torch.zeros(3, 2), "b": torch.arange(4)}
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, state, "name: x\n", ema_state=ema, info={"step": 7})
    ckpt = read_checkpoint(path)
    assert ckpt["spec"] == "name: x\n"
    assert ckpt["info"] == {"step": 7}
    assert torch.equal(ckpt["state"]["a.weight"], state["a.weight"])
    assert torch.equal(ckpt["ema"]["a.weight"], ema["a.weight"])
    assert not list(tmp_path.glob(".*tmp")), "temporary files must not be left behind"


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"w": torch.randn(100)}, "name: x\n")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(path)


def test_foreign_safetensors_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a flowspec checkpoint"):
        read_checkpoint(path)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, "name: old\n")

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("flowspec.checkpoint.save_file", boom)
    with pytest.raises(CheckpointError, match="disk is full") as info:
        save_checkpoint(path, {"w": torch.zeros(2)}, "name: new\n")
    assert str(path) in str(info.value)
    assert read_checkpoint(path)["spec"] == "name: old\n"
    assert not list(tmp_path.glob(".*tmp"))


def test_state_file_and_resolution(tmp_path):
    run = tmp_path / "runs" / "toy" / "20260101-000000-abcd"
    save_state(run / "last.state.safetensors", {"optim/0/exp_avg": torch.ones(2)}, {"step": 3})
    tensors, info = read_state(run / "last.state.safetensors")
    assert info == {"step": 3} and torch.equal(tensors["optim/0/exp_avg"], torch.ones(2))
    save_checkpoint(run / "last.safetensors", {"w": torch.ones(1)}, "name: toy\n")
    from flowspec.run import resolve_run

    assert resolve_run(run).checkpoint == run / "last.safetensors"
    assert resolve_run(tmp_path / "runs" / "toy").checkpoint == run / "last.safetensors"
    with pytest.raises(CheckpointError, match="no such"):
        resolve_run(tmp_path / "missing")
