"""Data larger than memory: .npy memory-mapped and .safetensors sliced (`stream: true` forces a
small file onto that path), the streamed checks and their cache, the shard-wise order, and
image folders decoded per batch by DataLoader workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fakedata import write_image_folder

from flowspec.data import open_dataset
from flowspec.data.lazy import LazyRows, NpyReader, is_lazy
from flowspec.data.loader import step_loader
from flowspec.data.row_checks import PASSES
from flowspec.data.shards import ShardWindows
from flowspec.errors import DataError
from flowspec.spec import load_spec
from flowspec.train import resume, train
from flowspec.train.report import SilentReporter


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSPEC_CACHE", str(tmp_path / "cache"))


def _table(n=600, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[:, 1] = x[:, 1] * 2 + 5
    x[:, 2] = rng.integers(0, 4, n)  # a few-valued column: warned about / dequantized
    return x


def _spec(path, stream, *, extra=None, dequantize=False, context=None, steps=6,
          workers=0) -> str:
    params = {"path": str(path), "stream": stream, **(extra or {})}
    prep = "\n  preprocess: [dequantize]" if dequantize else ""
    ctx = f"\n  context: {{shape: [{context}]}}" if context else ""
    return f"""\
name: streamed
data:
  dataset: {{file: {json.dumps(params)}}}{prep}
  workers: {workers}
model:
  input: [3]{ctx}
  flow:
    - standardize
    - repeat: 2
      as: i
      body:
        - affine_coupling: {{mask: half, parity: "${{i}}", net: {{mlp: {{hidden: [8]}}}}}}
train: {{batch_size: 32, steps: {steps}, log_every: 3, sample_every: 0}}
"""


def _statistics(flow) -> dict[str, torch.Tensor]:
    return {k: v for k, v in flow.state_dict().items() if "standardize" in k}


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_a_streamed_file_trains_with_the_in_memory_statistics_and_checks(tmp_path, suffix):
    x = _table()
    path = tmp_path / f"t{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    else:
        from safetensors.numpy import save_file

        save_file({"x": x}, str(path))
    runs = {}
    for stream in (False, True):
        spec = load_spec(_spec(path, stream, dequantize=True))
        source, prep = open_dataset(spec.data)
        assert is_lazy(source.load("train").x) is stream
        runs[stream] = (train(spec, out=tmp_path / "runs", reporter=SilentReporter()),
                        prep.notes, prep.offsets,
                        {s: source.load(s).x[:] for s in ("train", "val", "test")})
    (mem, notes, offsets, splits), (lazy, lnotes, loffsets, lsplits) = runs[False], runs[True]
    for split in splits:  # the same rows in every split, in the same order
        assert torch.equal(splits[split], lsplits[split])
    assert notes == lnotes and torch.equal(offsets, loffsets)
    for key, value in _statistics(mem.flow).items():
        assert torch.allclose(value, _statistics(lazy.flow)[key], rtol=1e-6, atol=1e-6), key
    record = json.loads((lazy.run_dir / "run.json").read_text())["data"]
    in_memory = json.loads((mem.run_dir / "run.json").read_text())["data"]
    assert record["file"]["streamed"] is True and "streamed" not in in_memory["file"]
    assert record["n_train"] == in_memory["n_train"] and record["n_test"] == in_memory["n_test"]
    assert np.isfinite(lazy.metrics["nll_nats"])


def test_streamed_context_from_a_safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    x = _table()
    theta = np.random.default_rng(1).normal(size=600).astype(np.float32)  # 1-D: one feature
    path = tmp_path / "sim.safetensors"
    save_file({"x": x, "theta": theta}, str(path))
    spec = load_spec(_spec(path, True, extra={"array": "x", "context": "theta"}, context=1,
                           workers=1))
    result = train(spec, out=tmp_path / "runs", reporter=SilentReporter())
    assert np.isfinite(result.metrics["nll_nats"])
    source, _ = open_dataset(spec.data)
    test = source.load("test")
    assert test.context.shape == (120, 1) and torch.equal(
        test.context[:], open_dataset(load_spec(_spec(path, False, extra={
            "array": "x", "context": "theta"}, context=1)).data)[0].load("test").context)


def test_streamed_checks_find_the_nan_row_and_the_same_errors(tmp_path):
    def errors(name: str, x: np.ndarray, **extra) -> list[str]:
        """The error of loading ``x`` in memory and streamed."""
        np.save(tmp_path / name, x)
        out = []
        for stream in (False, True):
            spec = _spec(tmp_path / name, stream, **({"extra": extra} if extra else {}))
            with pytest.raises(DataError) as info:
                open_dataset(load_spec(spec).data)[0].load("train")
            out.append(str(info.value))
        return out

    x = _table(3000).astype(np.float64)
    x[2345, 1] = np.nan
    messages = errors("nan.npy", x)
    assert "row 2345" in messages[1] and messages[0] == messages[1]
    x = _table(3000)
    x[:, 0] = 1.5  # constant: no density
    got = errors("const.npy", x)
    assert "same value (1.5)" in got[1] and got[0] == got[1]
    got = errors("pos.npy", _table(3000), support={"1": [0, 9]})
    assert "outside its declared support" in got[1] and got[0] == got[1]


def test_a_resume_does_not_run_the_pass_again(tmp_path):
    np.save(tmp_path / "t.npy", _table())
    spec = load_spec(_spec(tmp_path / "t.npy", True, dequantize=True, steps=3))
    PASSES["count"] = 0
    first = train(spec, out=tmp_path / "runs", reporter=SilentReporter())
    ran = PASSES["count"]
    assert ran >= 2  # the file, then the training split
    resumed = resume(first.run_dir, ["train.steps=6"], reporter=SilentReporter())
    assert resumed.step == 6 and PASSES["count"] == ran  # every check came from the cache


def test_shard_windows_visit_every_row_once_per_epoch_in_local_stretches():
    n, batch = 10_000, 100
    wide = 1 << 16  # 64 KiB rows: shards of 16 rows, windows of 64 shards (64 MiB)
    order = ShardWindows(n, row_bytes=wide, batch_size=batch, local_batch=batch, rank=0, seed=3)
    assert order.shard == 16 and order.window == 64
    epoch = np.concatenate([order(s) for s in range(order.steps_per_epoch)])
    assert sorted(epoch.tolist()) == list(range(n))  # 100 steps x 100 rows: all, once
    again = ShardWindows(n, wide, batch, batch, 0, 3)
    assert np.array_equal(again(57), order(57))  # a pure function of (seed, step)
    first = order(0)
    # a batch draws from one window of shards, not from the whole file
    assert len(np.unique(first // order.shard)) <= order.window
    two = [ShardWindows(n, wide, batch, batch // 2, r, 3)(5) for r in (0, 1)]
    assert np.array_equal(np.concatenate(two), order(5))  # ranks split the global batch


def test_lazy_rows_gather_in_any_order(tmp_path):
    x = _table(1000)
    np.save(tmp_path / "t.npy", x)
    rows = LazyRows(NpyReader(tmp_path / "t.npy"))
    idx = np.array([900, 3, 3, 512, -1])
    assert torch.equal(rows[idx], torch.from_numpy(x[idx]))
    sub = rows.take_rows(np.array([5, 7, 900]))
    assert torch.equal(sub[1:], torch.from_numpy(x[[7, 900]]))
    rest = rows.without(np.array([0, 3, 500, 999])).without(np.array([1, 2]))
    keep = np.ones(1000, dtype=bool)
    keep[[0, 3, 500, 999, 2, 4]] = False  # positions 1, 2 of the rest: rows 2 and 4
    assert len(rest) == 994 and torch.equal(rest[:], torch.from_numpy(x[keep]))
    assert torch.equal(rest[np.array([993, 0, 497])], torch.from_numpy(x[keep][[993, 0, 497]]))
    picked = LazyRows(rows.reader, None, [2, 0])
    assert torch.equal(picked[4:6], torch.from_numpy(x[4:6][:, [2, 0]]))


def _image_spec(root, stream, workers=1) -> str:
    params = {"path": str(root), "size": 8, "stream": stream}
    return f"""\
name: folder
data:
  dataset: {{image_folder: {json.dumps(params)}}}
  preprocess: [{{n_bits: 5}}, dequantize]
  workers: {workers}
  val_fraction: 0
model:
  input: [3, 8, 8]
  flow:
    - squeeze
    - repeat: 2
      as: i
      body:
        - affine_coupling: {{mask: channel, parity: "${{i}}", net: {{glow_cnn: {{width: 8}}}}}}
train: {{batch_size: 8, steps: 4, log_every: 2, sample_every: 0, eval_batches: 1}}
"""


def test_image_folder_workers_give_the_cached_images_and_the_same_training(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n=40)
    results = {}
    for stream in (False, True):
        spec = load_spec(_image_spec(root, stream))
        source, _ = open_dataset(spec.data)
        split = source.load("train")
        assert is_lazy(split.x) is stream
        results[stream] = (split, train(spec, out=tmp_path / "runs", reporter=SilentReporter()))
    cached, streamed = results[False][0], results[True][0]
    assert torch.equal(cached.x, streamed.x[:])
    loader = step_loader(streamed, batch_size=8, local_batch=8, rank=0, seed=0, workers=2,
                         prefetch=2)
    perm = torch.randperm(len(cached), generator=torch.Generator().manual_seed(0))
    for step in range(3):  # the in-memory loop's order, decoded by two workers
        x, _, _ = loader.get(step)
        assert torch.equal(x, cached.x[perm[step * 8:(step + 1) * 8]])
    loader.close()
    a, b = results[False][1].flow.state_dict(), results[True][1].flow.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same batches, same noise: same weights


def test_the_lean_carve_is_the_old_split():
    from flowspec.data.splits import carve_indices, carve_part

    for n, fraction, seed in ((10, 0.2, 0), (1001, 0.1, 3), (50_000, 0.05, 7)):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(n * fraction))
        rest, part = carve_indices(n, fraction, seed)
        assert torch.equal(rest, perm[n_val:].sort().values)
        assert torch.equal(part, perm[:n_val].sort().values)
        assert torch.equal(carve_part(n, fraction, seed, torch.int32).long(), part)


def test_stream_true_refuses_what_cannot_stream(tmp_path):
    from fakedata import write_table as write

    write(tmp_path / "t.csv", _table(50), columns=["a", "b", "c"])
    with pytest.raises(DataError, match="stream: true reads .npy and .safetensors"):
        open_dataset(load_spec(_spec(tmp_path / "t.csv", True)).data)[0].load("train")
    np.save(tmp_path / "img.npy", np.zeros((4, 1, 2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match="8-bit images are loaded whole"):
        open_dataset({"dataset": {"file": {"path": str(tmp_path / "img.npy"),
                                           "stream": True}}})[0].load("train")
