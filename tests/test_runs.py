"""Run status, discovery and resolution (flowspec.runs), the trainer's status file,
resume overrides, early stopping and the reverse-KL annealing plan."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from flowspec.errors import CheckpointError, FlowspecError
from flowspec.runs import (
    FINISHED,
    INTERRUPTED,
    STOPPED,
    checkpoint_info,
    list_runs,
    read_status,
    resolve_resume,
    resolve_run,
    run_info,
    write_status,
)
from flowspec.spec import load_spec
from flowspec.train.loop import Trainer, TrainingDiverged, train
from flowspec.train.report import SilentReporter

FAST = ["train.sample_every=0"]


def _train(spec_path, root, *sets, **kw):
    spec = load_spec(spec_path, FAST + list(sets))
    return train(spec, out_root=root, reporter=SilentReporter(), device="cpu", **kw)


def _interrupted(spec_path, root, at, *sets):
    def stop(step):
        if step == at:
            raise KeyboardInterrupt

    spec = load_spec(spec_path, FAST + list(sets))
    trainer = Trainer(spec, out_root=root, reporter=SilentReporter(), device="cpu",
                      on_step=stop)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    return trainer.run_dir


def test_status_of_a_finished_run(tiny_spec_path, tmp_path):
    run = _train(tiny_spec_path, tmp_path).run_dir
    st = read_status(run)
    assert st["status"] == FINISHED and st["step"] == st["total"] == 12
    assert st["best"]["metric"] == "nll_nats" and st["best"]["split"] == "val"
    assert st["best"]["step"] == checkpoint_info(run / "best.safetensors")["step"]
    assert st["pid"] == os.getpid() and st["elapsed_s"] > 0
    info = run_info(run)
    assert info.status == FINISHED and info.progress() == "12/12" and info.has_best


def test_interrupted_run_records_its_checkpoint_step(tiny_spec_path, tmp_path):
    run = _interrupted(tiny_spec_path, tmp_path, 6)  # checkpoint_every 4: last saved at 4
    st = read_status(run)
    assert st["status"] == INTERRUPTED and st["step"] == 4
    assert run_info(run).describe() == "interrupted at step 4/12"


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_diverged_run(tiny_spec_path, tmp_path):
    spec = load_spec(tiny_spec_path, FAST + ["train.max_bad_steps=2"])
    trainer = Trainer(spec, out_root=tmp_path, reporter=SilentReporter(), device="cpu")
    real = trainer.objective.loss  # fine until the first checkpoint (step 4), then NaN

    def loss(flow, step, seed):
        return real(flow, step, seed) if step < 5 else (torch.tensor(math.nan), {})

    trainer.objective.loss = loss
    with pytest.raises(TrainingDiverged) as err:
        trainer.run()
    assert "--resume" in str(err.value) and "train.optimizer.adam.lr=" in str(err.value)
    st = read_status(trainer.run_dir)
    assert st["status"] == "diverged" and st["step"] == 4 and "diverged" in st["message"]


def test_killed_run_reads_as_stopped(tmp_path):
    run = tmp_path / "x" / "r1"
    run.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    write_status(run, status="running", step=3, total=10)
    data = json.loads((run / "status.json").read_text())
    data["pid"] = proc.pid  # a process that has exited
    (run / "status.json").write_text(json.dumps(data))
    assert run_info(run).status == STOPPED


def test_status_file_is_written_atomically(tmp_path):
    write_status(tmp_path, status="running", step=1)
    write_status(tmp_path, step=2)
    assert read_status(tmp_path)["status"] == "running" and read_status(tmp_path)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp files left


def test_resolve_prefers_newest_finished_and_names_newer_unfinished(tiny_spec_path, tmp_path):
    done = _train(tiny_spec_path, tmp_path).run_dir
    time.sleep(1.1)  # run directories are named by the second
    broken = _interrupted(tiny_spec_path, tmp_path, 6)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [done.name, broken.name]
    r = resolve_run(tmp_path / "tiny")
    assert r.run_dir == done and r.which == "best"
    text = "\n".join(r.notes)
    assert "newest finished run of 2" in text and broken.name in text and "interrupted" in text
    # --resume on the name continues the interrupted one
    run_dir, notes = resolve_resume(tmp_path / "tiny")
    assert run_dir == broken and "did not finish" in notes[0]
    assert [r.status for r in list_runs(tmp_path)] == [FINISHED, INTERRUPTED]
    import flowspec  # the Python API resolves the same way, and says so

    with pytest.warns(UserWarning, match="not using the newer run"):
        flow = flowspec.load(tmp_path / "tiny")
    assert flow.checkpoint_info["step"] == 12
    assert [r.status for r in list_runs(tmp_path, "tiny")] == [FINISHED, INTERRUPTED]


def test_resolve_which_and_files(tiny_spec_path, tmp_path):
    run = _train(tiny_spec_path, tmp_path).run_dir
    assert resolve_run(run, "last").checkpoint == run / "last.safetensors"
    r = resolve_run(run / "last.safetensors")
    assert r.which == "last" and r.run_dir == run and r.step == 12
    with pytest.raises(CheckpointError, match="--which best"):
        resolve_run(run / "last.safetensors", "best")
    novel = _train(tiny_spec_path, tmp_path / "b", "data.val_fraction=0").run_dir
    r = resolve_run(novel)
    assert r.which == "last" and "no best.safetensors" in r.notes[0]
    with pytest.raises(CheckpointError, match="use --which last"):
        resolve_run(novel, "best")


def test_no_finished_run_is_refused(tiny_spec_path, tmp_path):
    _interrupted(tiny_spec_path, tmp_path, 6)
    with pytest.raises(CheckpointError, match="no finished run") as err:
        resolve_run(tmp_path / "tiny")
    assert "interrupted" in str(err.value)


def test_resume_refuses_a_running_run(tiny_spec_path, tmp_path):
    run = _train(tiny_spec_path, tmp_path).run_dir
    write_status(run, status="running")  # this process: alive
    with pytest.raises(CheckpointError, match="still running"):
        resolve_resume(run)


# -- resume overrides ---------------------------------------------------------------------
def test_resume_lr_override_reaches_the_optimizer(tiny_spec_path, tmp_path):
    run = _interrupted(tiny_spec_path, tmp_path, 6, "train.schedule=cosine",
                       "train.warmup_steps=2")
    trainer = Trainer(None, resume=run, reporter=SilentReporter(), device="cpu",
                      overrides=["train.optimizer.adam.lr=0.001", "train.steps=20"])
    assert trainer.total == 20 and trainer.start_step == 4
    from flowspec.train.optim import lr_factor

    factor = lr_factor(4, 2, 20, "cosine")
    for group in trainer.opt.param_groups:
        assert group["lr"] == pytest.approx(0.001 * factor)
    assert trainer.sched.base_lrs == [0.001]
    assert trainer.spec.train["optimizer"] == {"adam": {"lr": 0.001}}
    trainer.run()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["split"] == "train"][-1]
    assert last["step"] == 20 and last["lr"] == pytest.approx(0.001 * lr_factor(20, 2, 20,
                                                                                 "cosine"))
    (record,) = [json.loads(x) for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert record["step"] == 4 and record["changes"]["train.optimizer.adam.lr"] == [0.01, 0.001]
    # the new settings travel with the run: spec.yaml follows them (the state file's spec
    # digest is checked against it), the first spec is kept, and resuming again keeps them
    assert "lr: 0.001" in (run / "spec.yaml").read_text()
    assert "lr: 0.01" in (run / "spec.initial.yaml").read_text()
    assert "lr: 0.001" in Trainer._read_resume(run)["spec_yaml"]
    again = Trainer(None, resume=run, reporter=SilentReporter(), device="cpu",
                    overrides=["train.steps=22"])
    assert again.opt.param_groups[0]["initial_lr"] == pytest.approx(0.001)
    again.run()
    assert read_status(run)["step"] == 22


def test_resume_refuses_what_would_change_the_run(tiny_spec_path, tmp_path):
    run = _interrupted(tiny_spec_path, tmp_path, 6)
    with pytest.raises(FlowspecError) as err:
        Trainer(None, resume=run, reporter=SilentReporter(), device="cpu",
                overrides=["train.batch_size=32", "model.flow.0.repeat=3",
                           "train.grad_clip=1", "train.seed=3"])
    text = str(err.value)
    assert "train.batch_size=32" in text and "model.flow.0.repeat=3" in text
    assert "train.seed=3" in text and "grad_clip" not in text.split("Resumable")[0]
    with pytest.raises(FlowspecError, match="counts steps"):
        Trainer(None, resume=run, reporter=SilentReporter(), overrides=["train.epochs=5"])
    with pytest.raises(FlowspecError, match="before the run's current step"):
        Trainer(None, resume=run, reporter=SilentReporter(), overrides=["train.steps=2"])


# -- early stopping -------------------------------------------------------------------------
def test_early_stopping_on_validation(tiny_spec_path, tmp_path):
    # min_delta larger than any improvement: stops after `patience` evaluations
    result = _train(tiny_spec_path, tmp_path, "train.steps=200",
                    "train.early_stopping.patience=2", "train.early_stopping.min_delta=100")
    assert result.stop_reason is not None and "early stopping" in result.stop_reason
    st = read_status(result.run_dir)
    assert st["status"] == FINISHED and st["step"] == 3 * 7 and "early stopping" in st["message"]
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "val"] == [7, 14, 21]
    assert [r["step"] for r in rows if r["split"] == "test"] == [21]  # reported once, at the end


def test_early_stopping_needs_a_validation_split(tiny_spec_path, tmp_path):
    with pytest.raises(FlowspecError, match="needs a validation split"):
        _train(tiny_spec_path, tmp_path, "data.val_fraction=0", "train.early_stopping.patience=2")
    assert not (tmp_path / "tiny").exists()  # refused before a run directory is made


# -- reverse-KL annealing -------------------------------------------------------------------
def test_anneal_plan():
    from flowspec.objectives.reverse_kl import anneal_plan

    assert anneal_plan({"beta0": 0.01, "steps": 5000, "fraction": None}, 10000) == (0.01, 5000,
                                                                                    [])
    beta0, steps, warnings = anneal_plan({"beta0": 0.01, "steps": 5000, "fraction": None}, 500)
    assert steps == 5000 and len(warnings) == 1
    assert "β ends at 0.11" in warnings[0] and "train.anneal.steps=250" in warnings[0]
    assert anneal_plan({"beta0": 0.1, "steps": 0, "fraction": 0.5}, 500) == (0.1, 250, [])
    with pytest.raises(FlowspecError, match="not both"):
        anneal_plan({"beta0": 0.1, "steps": 10, "fraction": 0.5}, 500)


def test_short_reverse_kl_run_warns(tmp_path):
    from pathlib import Path

    messages = []

    class Collect(SilentReporter):
        def warning(self, text):
            messages.append(text)

    spec = load_spec(Path(__file__).parent.parent / "specs" / "planar_u1.yaml",
                     ["train.steps=6", "train.steps_per_epoch=3", "vars.K=2",
                      "train.sample_every=0"])
    train(spec, out_root=tmp_path, reporter=Collect(), device="cpu")
    assert len(messages) == 1 and "longer than the run (6 steps)" in messages[0]
