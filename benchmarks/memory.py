"""Peak memory and time of one Glow train step under ``train.memory`` none/checkpoint/invertible.

Glow as in ``specs/glow_cifar10.yaml`` (3x32x32, L=3, width 256 by default) for several
depths K; every (K, mode) runs in a fresh process. The measured step is the second one
(the first allocates Adam's state), with gradients freed before it, so the memory it
adds is gradients + whatever backward keeps of the forward pass:

* CPU: the process's resident set is sampled every millisecond during the step
  (``ru_maxrss`` is a lifetime high-water mark and cannot be reset between steps),
  with glibc's mmap threshold fixed so freed activations leave the resident set;
* CUDA: the caching allocator's peak above what was allocated before the step.

Step time: wall clock on CUDA; on CPU the process's CPU time (other jobs on the
machine do not count), so run it with ``--threads 1`` for comparable numbers.

"activations" is that peak minus the gradients' size (= the parameters' size). The
goal of ``invertible``: flat in K (at K=32 at most 1.2x its K=4 value).

    python benchmarks/memory.py                       # K = 4 8 16 32, batch 16, CPU
    python benchmarks/memory.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MODES = ("none", "checkpoint", "invertible")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """Highest resident set size seen while the block runs (sampled every ms)."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def child(k: int, mode: str, batch: int, width: int, levels: int, device: str) -> dict:
    from flowspec.api import build_flow
    from flowspec.spec import load_spec

    torch.manual_seed(0)
    dev = torch.device(device)
    spec = load_spec(ROOT / "specs" / "glow_cifar10.yaml",
                     [f"vars.K={k}", f"vars.L={levels}", f"vars.width={width}"])
    flow = build_flow(spec).to(dev).train()
    flow.memory = mode
    opt = torch.optim.Adam(flow.parameters(), lr=1e-5)
    x = torch.rand(batch, *flow.input_shape, device=dev) - 0.5

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = -flow.log_prob(x).mean()
        loss.backward()
        opt.step()

    with torch.no_grad():
        flow.log_prob(x)  # actnorm's data-dependent init
    step()  # Adam's state
    opt.zero_grad(set_to_none=True)
    param_bytes = sum(p.numel() * p.element_size() for p in flow.parameters())
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(dev) - before
    else:
        with RssPeak() as m:
            # this process's CPU time: robust to other jobs on a shared machine (with
            # --threads 1 it is the step's compute; the sampling thread sleeps)
            t0 = time.process_time()
            step()
            seconds = time.process_time() - t0
        peak = m.peak - m.base
    return {"K": k, "mode": mode, "seconds": seconds, "step_peak": peak,
            "params": param_bytes, "activations": peak - param_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", default="4,8,16,32")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.k, args.mode, args.batch, args.width, args.levels,
                               args.device)))
        return
    mib = 2.0 ** 20
    clock = "wall" if args.device.startswith("cuda") else "CPU"
    print(f"Glow 3x32x32, L={args.levels}, width {args.width}, batch {args.batch}, "
          f"{args.device}; one train step (the second), each in a fresh process; "
          f"{clock} time")
    print("| K | train.memory | step peak (MiB) | of which activations (MiB) | step (s) | "
          "vs none |")
    print("|---|---|---|---|---|---|")
    rows = []
    for k in [int(v) for v in args.depths.split(",")]:
        base_time = None
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--child", "--k", str(k), "--mode", mode,
                   "--batch", str(args.batch), "--width", str(args.width),
                   "--levels", str(args.levels), "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            # A fixed mmap threshold: glibc then returns every large freed block to the OS,
            # so the first step's freed activations do not hide in the second's baseline.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if proc.returncode != 0:
                raise SystemExit(proc.stdout + proc.stderr)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            base_time = r["seconds"] if mode == "none" else base_time
            ratio = f"{r['seconds'] / base_time:.2f}x" if base_time else ""
            print(f"| {k} | {mode} | {r['step_peak'] / mib:.0f} | {r['activations'] / mib:.0f} "
                  f"| {r['seconds']:.2f} | {ratio} |", flush=True)
    inv = {r["K"]: r["activations"] for r in rows if r["mode"] == "invertible"}
    if len(inv) > 1:
        lo, hi = min(inv), max(inv)
        print(f"invertible activations at K={hi} / K={lo}: {inv[hi] / inv[lo]:.2f}x")


if __name__ == "__main__":
    main()
