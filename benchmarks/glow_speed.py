"""Glow speed: the flow flowspec compiles from a spec vs a hand-written PyTorch Glow.

Both models have the same architecture (L levels of squeeze, K steps of
actnorm -> LU 1x1 conv -> affine coupling with sigmoid scale and a glow_cnn
conditioner, split with a learned conditional prior between levels, learned
Gaussian top prior) and run the same ops. Timings are interleaved (flowspec,
reference, flowspec, ...) and reported as medians; ratios > 1 mean flowspec is
slower. Also times sampling with the cached inverse 1x1 weights vs re-inverting
them on every call.

    python benchmarks/glow_speed.py --device cuda          # L=3, K=8, width 256, 3x32x32
    python benchmarks/glow_speed.py --device cpu --quick   # a tiny smoke run
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from timing import train_step  # noqa: E402

from flowspec.bijectors.conv1x1 import InvConv1x1
from flowspec.compile import Flow

LOG_2PI = math.log(2 * math.pi)

# ---------------------------------------------------------------------------------------
# flowspec side: the model as a spec
# ---------------------------------------------------------------------------------------

SPEC = """\
name: glow_speed
vars: {K: 8, L: 3, width: 256, C: 3, H: 32, W: 32}
blocks:
  glow_step:
    params: {width: 512}
    flow:
      - actnorm
      - inv_conv1x1: {lu: true}
      - affine_coupling: {mask: channel, scale: sigmoid, net: {glow_cnn: {width: "${width}"}}}
model:
  input: ["${C}", "${H}", "${W}"]
  prior: diag_gaussian
  flow:
    - repeat: "${L - 1}"
      body:
        - squeeze
        - repeat: "${K}"
          body: [{block: glow_step, args: {width: "${width}"}}]
        - factor_out: {prior: conditional_gaussian}
    - squeeze
    - repeat: "${K}"
      body: [{block: glow_step, args: {width: "${width}"}}]
"""


def flowspec_glow(shape: tuple[int, int, int], L: int, K: int, width: int) -> Flow:
    """Compile the Glow above from its spec, sizes set as variable overrides."""
    from flowspec.api import build_flow
    from flowspec.spec import load_spec

    c, h, w = shape
    overrides = {"vars.K": K, "vars.L": L, "vars.width": width,
                 "vars.C": c, "vars.H": h, "vars.W": w}
    return build_flow(load_spec(SPEC, overrides))


# ---------------------------------------------------------------------------------------
# reference side: a minimal plain-PyTorch Glow with the same ops
# ---------------------------------------------------------------------------------------


def squeeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class RefZeroConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(cout, 1, 1))

    def forward(self, x):
        return self.conv(x) * torch.exp(self.logs * 3.0)


class RefStep(nn.Module):
    """actnorm -> LU 1x1 conv -> affine coupling, data -> latent."""

    def __init__(self, c: int, hw: int, width: int):
        super().__init__()
        self.hw = hw
        self.an_bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.an_logs = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.inited = False
        q = torch.linalg.qr(torch.randn(c, c))[0]
        p, low, up = torch.linalg.lu(q)
        s = torch.diagonal(up)
        self.register_buffer("p", p)
        self.register_buffer("sign", torch.sign(s))
        self.register_buffer("lmask", torch.tril(torch.ones(c, c), -1))
        self.register_buffer("eye", torch.eye(c))
        self.low = nn.Parameter(torch.tril(low, -1))
        self.up = nn.Parameter(torch.triu(up, 1))
        self.logs = nn.Parameter(torch.log(s.abs()))
        half = c // 2
        self.net = nn.Sequential(
            nn.Conv2d(half, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 1), nn.ReLU(), RefZeroConv(width, 2 * (c - half)))
        self.half = half

    def _lu(self):
        low = self.low * self.lmask + self.eye
        up = self.up * self.lmask.T + torch.diag(self.sign * torch.exp(self.logs))
        return low, up

    def forward(self, x):
        if self.training and not self.inited:
            with torch.no_grad():
                mean = x.mean((0, 2, 3), keepdim=True)
                std = x.std((0, 2, 3), keepdim=True, unbiased=False)
                self.an_bias.copy_(-mean)
                self.an_logs.copy_(-torch.log(std))
            self.inited = True
        x = (x + self.an_bias) * torch.exp(self.an_logs)
        ld = self.an_logs.sum() * self.hw
        low, up = self._lu()
        x = F.conv2d(x, (self.p @ low @ up)[:, :, None, None])
        ld = ld + self.logs.sum() * self.hw
        xa, xb = x[:, :self.half], x[:, self.half:]
        h = self.net(xa)
        shift, raw = h.chunk(2, 1)
        scale = torch.sigmoid(raw + 2.0)
        xb = (xb + shift) * scale
        ld = ld + torch.log(scale).flatten(1).sum(1)
        return torch.cat([xa, xb], 1), ld

    def inverse(self, y):
        ya, yb = y[:, :self.half], y[:, self.half:]
        h = self.net(ya)
        shift, raw = h.chunk(2, 1)
        yb = yb / torch.sigmoid(raw + 2.0) - shift
        y = torch.cat([ya, yb], 1)
        low, up = self._lu()
        inv_up = torch.linalg.solve_triangular(up, self.eye, upper=True)
        inv_low = torch.linalg.solve_triangular(low, self.eye, upper=False, unitriangular=True)
        y = F.conv2d(y, (inv_up @ inv_low @ self.p.T)[:, :, None, None])
        return y * torch.exp(-self.an_logs) - self.an_bias


def _gauss_lp(z, mean, logs):
    e = (z - mean) * torch.exp(-logs)
    return (-0.5 * (e * e + LOG_2PI) - logs).flatten(1).sum(1)


class RefGlow(nn.Module):
    def __init__(self, shape: tuple[int, int, int], L: int, K: int, width: int):
        super().__init__()
        c, h, w = shape
        self.levels = nn.ModuleList()
        self.priors = nn.ModuleList()
        for level in range(L):
            c, h, w = c * 4, h // 2, w // 2
            self.levels.append(nn.ModuleList(RefStep(c, h * w, width) for _ in range(K)))
            if level < L - 1:
                self.priors.append(RefZeroConv(c // 2, 2 * (c - c // 2)))
                c = c // 2
        self.top_mean = nn.Parameter(torch.zeros(c, h, w))
        self.top_logs = nn.Parameter(torch.zeros(c, h, w))
        self.top_shape = (c, h, w)

    def log_prob(self, x):
        total = x.new_zeros(x.shape[0])
        for i, steps in enumerate(self.levels):
            x = squeeze(x)
            for step in steps:
                x, ld = step(x)
                total = total + ld
            if i < len(self.priors):
                keep, out = x.chunk(2, 1)
                mean, logs = self.priors[i](keep).chunk(2, 1)
                total = total + _gauss_lp(out, mean, logs)
                x = keep
        return total + _gauss_lp(x, self.top_mean, self.top_logs)

    def sample(self, n, temperature=1.0):
        x = self.top_mean + torch.exp(self.top_logs) * temperature * torch.randn(
            n, *self.top_shape, device=self.top_mean.device, dtype=self.top_mean.dtype)
        for i in reversed(range(len(self.levels))):
            if i < len(self.priors):
                mean, logs = self.priors[i](x).chunk(2, 1)
                x = torch.cat([x, mean + torch.exp(logs) * temperature * torch.randn_like(mean)], 1)
            for step in reversed(self.levels[i]):
                x = step.inverse(x)
            x = unsqueeze(x)
        return x


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def run(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    return run


def _interleaved(fns: dict[str, Callable[[], object]], timer, n: int, warmup: int):
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for k, fn in fns.items():
            times[k].append(timer(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def _set_cache(flow: Flow, on: bool) -> None:
    for m in flow.modules():
        if isinstance(m, InvConv1x1):
            m.cache_inverse = on


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a CPU smoke run")
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions (median)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        shape, L, K, width, batch, n, warm = (3, 8, 8), 2, 2, 16, 4, 3, 1
    else:
        shape, L, K, width, batch, n, warm = (3, 32, 32), 3, 8, 256, 16, 20, 3
    n = args.repeats or n
    torch.manual_seed(0)

    flow = flowspec_glow(shape, L, K, width).to(device)
    ref = RefGlow(shape, L, K, width).to(device)
    n_flow = sum(p.numel() for p in flow.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    print(f"Glow L={L} K={K} width={width} input={list(shape)} batch={batch} on {device}")
    print(f"parameters: flowspec {n_flow:,}  reference {n_ref:,}")

    x = torch.rand(batch, *shape, device=device) - 0.5
    flow.train()
    ref.train()
    with torch.no_grad():  # data-dependent actnorm init on both
        flow.log_prob(x)
        ref.log_prob(x)
    opt_f = torch.optim.Adam(flow.parameters(), lr=1e-4)
    opt_r = torch.optim.Adam(ref.parameters(), lr=1e-4)
    timer = _timer(device)
    train = _interleaved({"flowspec": train_step(flow.log_prob, opt_f, x),
                          "reference": train_step(ref.log_prob, opt_r, x)},
                         timer, n, warm)

    flow.eval()
    ref.eval()

    def sample_flow():
        with torch.no_grad():
            flow.sample(batch, temperature=0.7)

    def sample_ref():
        with torch.no_grad():
            ref.sample(batch, 0.7)

    sample = _interleaved({"flowspec": sample_flow, "reference": sample_ref}, timer, n, warm)

    def sample_uncached():
        _set_cache(flow, False)
        try:
            sample_flow()
        finally:
            _set_cache(flow, True)

    cache = _interleaved({"cached": sample_flow, "uncached": sample_uncached}, timer, n, warm)

    results = {
        "train_flowspec_s": train["flowspec"], "train_reference_s": train["reference"],
        "train_ratio": train["flowspec"] / train["reference"],
        "sample_flowspec_s": sample["flowspec"], "sample_reference_s": sample["reference"],
        "sample_ratio": sample["flowspec"] / sample["reference"],
        "sample_cached_s": cache["cached"], "sample_uncached_s": cache["uncached"],
        "uncached_over_cached": cache["uncached"] / cache["cached"],
    }
    print(f"train step   flowspec {train['flowspec'] * 1e3:8.2f} ms   reference "
          f"{train['reference'] * 1e3:8.2f} ms   ratio {results['train_ratio']:.3f}")
    print(f"sample       flowspec {sample['flowspec'] * 1e3:8.2f} ms   reference "
          f"{sample['reference'] * 1e3:8.2f} ms   ratio {results['sample_ratio']:.3f}")
    print(f"1x1 inverse  cached   {cache['cached'] * 1e3:8.2f} ms   re-inverted "
          f"{cache['uncached'] * 1e3:8.2f} ms   ratio {results['uncached_over_cached']:.3f}")
    return results


if __name__ == "__main__":
    main()
