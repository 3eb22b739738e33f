"""Data larger than memory: resident memory of training on a 2 GB table, and whether image
workers keep up with the step.

(a) ``table``: writes a float32 ``[N, 16]`` ``.npy`` of ``--gb`` GB (correlated, skewed
    columns), trains a small MAF with ``standardize`` on it (the file streams: it is above
    1 GiB) for ``--steps`` steps, three times, each in a fresh process: the first run pays the
    file's passes (sha256, the per-row checks, the statistics fit), the second finds the
    checks and the sha256 in the cache (a resume or a second run), a third uses a
    DataLoader worker (``--workers``) instead of gathering in the training process.
    Reported: the peak resident memory of the process (VmHWM, torch's own ~0.3 GB
    included) against the file size, the set-up time before the first step, and the
    training rate.
(b) ``images``: writes ``--images`` PNGs (real MNIST digits, padded to 32x32 and made RGB)
    into a folder and trains a small RealNVP on it with ``image_folder: {stream: true}``
    and ``data.workers``; reported: loader examples/s against training examples/s and the
    share of time the step waited on data (from the run's metrics.jsonl).

    python benchmarks/large_data.py                    # both, files under /tmp, deleted after
    python benchmarks/large_data.py --part table --gb 2 --dir /scratch --steps 300
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MNIST = Path("/work/shared/data/mnist/train-images-idx3-ubyte.gz")


def _status_bytes(key: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def vm_hwm() -> int:
    """Peak resident memory of this process, bytes (psutil's has no peak on Linux)."""
    return _status_bytes("VmHWM")


def vm_rss() -> int:
    return _status_bytes("VmRSS")


# -- writing the data ---------------------------------------------------------------------
def write_table(path: Path, gb: float, d: int = 16, seed: int = 0) -> int:
    """A float32 [N, d] .npy of about ``gb`` GB, written in chunks (never whole in memory)."""
    n = int(gb * 1e9) // (4 * d)
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_2_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for start in range(0, n, 1 << 20):
            z = rng.standard_normal((min(1 << 20, n - start), d), dtype=np.float32)
            x = z @ mix
            x[:, ::2] = np.sinh(x[:, ::2])  # heavy-ish tails on half the columns
            fh.write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return n


def write_images(root: Path, n: int) -> None:
    """``n`` PNGs of MNIST digits, zero-padded to 32x32, grey copied to RGB."""
    from PIL import Image

    with gzip.open(MNIST) as fh:
        raw = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((32, 32, 3), dtype=np.uint8)
        img[2:30, 2:30] = raw[i % len(raw)][:, :, None]
        sub = root / f"{i // 1000:02d}"  # 1000 files a directory
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:05d}.png")


# -- the runs (each in a fresh process) -----------------------------------------------------
TABLE_SPEC = """\
name: large_table
data:
  dataset: {{file: {{path: {path}, stream: true}}}}  # (it would stream anyway above 1 GiB)
  val_fraction: 0.05
  workers: {workers}
model:
  input: [16]
  flow:
    - standardize
    - repeat: 4
      as: i
      body:
        - maf: {{hidden: [64, 64], parity: "${{i}}"}}
train: {{batch_size: 512, steps: {steps}, log_every: 50, sample_every: 0, eval_batches: 4,
        checkpoint_every: 0}}
"""

IMAGE_SPEC = """\
name: large_folder
data:
  dataset: {{image_folder: {{path: {path}, size: 32, stream: true}}}}
  preprocess: [dequantize]
  workers: {workers}
  val_fraction: 0
model:
  input: [3, 32, 32]
  flow:
    - squeeze
    - repeat: 4
      as: i
      body:
        - actnorm
        - affine_coupling: {{mask: channel, parity: "${{i}}", net: {{glow_cnn: {{width: 32}}}}}}
train: {{batch_size: 64, steps: {steps}, log_every: 10, sample_every: 0, eval_batches: 2,
        checkpoint_every: 0}}
"""


def child(kind: str, path: str, steps: int, workers: int, out: str) -> dict:
    """One training run; returns what it measured (printed as JSON by the child)."""
    import torch

    from flowspec.spec import load_spec
    from flowspec.train import train
    from flowspec.train.callbacks import Callback

    torch.set_num_threads(1)
    base = vm_rss()
    marks: dict[str, float] = {"t0": time.perf_counter()}

    class Clock(Callback):
        def start(self, t):
            marks["start"] = time.perf_counter()

    text = (TABLE_SPEC if kind == "table" else IMAGE_SPEC).format(
        path=json.dumps(path), steps=steps, workers=workers)
    result = train(load_spec(text), out=out, callbacks=[Clock()])
    end = time.perf_counter()
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text()
            .splitlines() if line.strip()]
    rows = [r for r in rows if "examples_per_s" in r]
    later = rows[1:] or rows  # the first window includes start-up

    def mean(key: str) -> float | None:
        got = [r[key] for r in later if key in r]
        return float(np.mean(got)) if got else None

    return {"setup_s": marks["start"] - marks["t0"], "train_s": end - marks["start"],
            "peak_rss": vm_hwm(), "rss_after_import": base,
            "examples_per_s": mean("examples_per_s"),
            "loader_examples_per_s": mean("loader_examples_per_s"),
            "data_wait": mean("data_wait"), "nll_nats": result.metrics.get("nll_nats")}


def run_child(kind: str, path: Path, steps: int, workers: int, out: Path, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--path", str(path), "--steps",
           str(steps), "--workers", str(workers), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{kind} run failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["table", "images", "both"], default="both")
    ap.add_argument("--dir", default="/tmp/flowspec-large-data")
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--image-steps", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the files written")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path, args.steps, args.workers, args.out)))
        return
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWSPEC_CACHE": str(work / "cache"),
           "PYTHONPATH": str(ROOT)}
    results: dict = {"machine": f"{os.cpu_count()} CPU cores"}
    try:
        if args.part in ("table", "both"):
            path = work / "table.npy"
            t0 = time.perf_counter()
            n = write_table(path, args.gb)
            size = path.stat().st_size
            print(f"wrote {path}: {n} rows x 16, {size / 1e9:.2f} GB in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            for label, workers in (("first run (passes), workers=0", 0),
                                   ("second run (cached), workers=0", 0),
                                   (f"third run (cached), workers={args.workers}",
                                    args.workers)):
                got = run_child("table", path, args.steps, workers, work / "runs", env)
                got["file_bytes"] = size
                results[f"table, {label}"] = got
                print(label, json.dumps(got), flush=True)
        if args.part in ("images", "both"):
            root = work / "pngs"
            t0 = time.perf_counter()
            write_images(root, args.images)
            print(f"wrote {args.images} PNGs in {time.perf_counter() - t0:.0f} s", flush=True)
            for workers in sorted({0, args.workers}):
                got = run_child("images", root, args.image_steps, workers, work / "runs", env)
                got["images"] = args.images
                results[f"images, workers={workers}"] = got
                print(f"workers={workers}", json.dumps(got), flush=True)
    finally:
        if not args.keep:
            for name in ("table.npy", "pngs", "runs", "cache"):
                p = work / name
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists():
                    p.unlink()
    print()
    print(table_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def table_markdown(results: dict) -> str:
    lines = ["| run | file | peak RSS | set-up s | train examples/s | loader examples/s | "
             "step waits on data |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        if not isinstance(r, dict):
            continue
        size = (f"{r['file_bytes'] / 1e9:.2f} GB .npy" if "file_bytes" in r else
                f"{r.get('images', 0)} PNGs")
        loader = r.get("loader_examples_per_s")
        wait = r.get("data_wait")
        lines.append(f"| {name} | {size} | {r['peak_rss'] / 1e9:.2f} GB | {r['setup_s']:.0f} | "
                     f"{r['examples_per_s']:.0f} | {'' if loader is None else f'{loader:.0f}'} | "
                     f"{'' if wait is None else f'{100 * wait:.0f}%'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
