"""train.compile: a compiled run trains like an eager one; where compilation fails the run
continues eagerly and says so."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from flowspec.spec import load_spec
from flowspec.train import train
from flowspec.train.report import PlainReporter

# As small as a flow gets while still having actnorm's data-dependent init and
# couplings: inductor compiles it (forward and backward) in seconds.
SPEC = """
name: tiny_compile
data: {dataset: {moons: {n_train: 256, n_test: 64}}}
model:
  input: [2]
  flow:
    - actnorm
    - affine_coupling: {net: {mlp: {hidden: [8]}}}
    - affine_coupling: {parity: 1, net: {mlp: {hidden: [8]}}}
train: {batch_size: 32, steps: 8, log_every: 1, eval_every: 0, sample_every: 0,
        optimizer: {adam: {lr: 0.01}}}
"""


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return torch.tensor([r["loss"] for r in rows if r["split"] == "train"])


def _run(tmp_path, name, **kwargs):
    said: list[str] = []
    result = train(load_spec(SPEC), out=tmp_path / name, device="cpu",
                   reporter=PlainReporter(said.append), **kwargs)
    return _losses(result.run_dir), said


def _compile_works() -> bool:
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return False
    try:
        return bool(torch.compile(lambda t: t * 2 + 1)(torch.ones(3)).sum() == 9)
    except Exception:  # noqa: BLE001
        return False


def test_compiled_run_trains_like_eager(tmp_path):
    if not _compile_works():
        pytest.skip("torch.compile (inductor, C++ compiler) is unavailable on this platform")
    eager, _ = _run(tmp_path, "eager")
    compiled, said = _run(tmp_path, "compiled", torch_compile=True)
    assert not any("unavailable" in line for line in said), said
    assert len(eager) == len(compiled) == 8
    # fused kernels reorder float arithmetic; the trajectories agree to float tolerance
    assert torch.allclose(eager, compiled, rtol=1e-4, atol=1e-5), (eager, compiled)


def test_compile_failure_falls_back_to_eager_with_one_message(tmp_path, monkeypatch):
    from flowspec.train import torch_compile

    def no_compiler(gm, example_inputs):
        raise RuntimeError("no C++ compiler found (simulated)")

    real = torch_compile.CompiledOrEager.__init__

    def with_failing_backend(self, module, say, backend="inductor"):
        real(self, module, say, backend=no_compiler)

    monkeypatch.setattr(torch_compile.CompiledOrEager, "__init__", with_failing_backend)
    eager, _ = _run(tmp_path, "eager")
    fell_back, said = _run(tmp_path, "fallback", torch_compile=True)
    notes = [line for line in said if "train.compile" in line and "compiling" not in line]
    assert len(notes) == 1 and "continues eagerly" in notes[0] and "simulated" in notes[0]
    assert sum("compiling the training step" in line for line in said) == 1
    assert torch.equal(eager, fell_back)  # the eager path is the eager run, bit for bit


def test_cli_compile_flag_reaches_the_run(tmp_path, monkeypatch):
    """`flowspec train --compile` sets train.compile in the run's spec and compiles (here:
    a simulated compiler failure, so the message shows that it tried)."""
    from typer.testing import CliRunner

    from flowspec.train import torch_compile
    from flowspec_cli.main import app

    def broken(self, module, say, backend="inductor"):
        self.module, self.say, self.compiled, self._flags = module, say, None, []
        say("train.compile: torch.compile is unavailable here (simulated)")

    monkeypatch.setattr(torch_compile.CompiledOrEager, "__init__", broken)
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    r = CliRunner().invoke(app, ["train", str(spec), "--compile", "--device", "cpu", "--out",
                                 str(tmp_path / "runs"), "--set", "train.steps=2"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "train.compile: torch.compile is unavailable here (simulated)" in r.output
    (run,) = (tmp_path / "runs" / "tiny_compile").iterdir()
    assert load_spec(run / "spec.yaml").train["compile"] is True
