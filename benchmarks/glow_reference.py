"""Glow written by hand in plain PyTorch: the reference ``benchmarks/glow_speed.py``
measures flowspec's compiled Glow against ("no more than the same model by hand").

Same architecture as the benchmark's spec: L levels of squeeze, K steps of
actnorm -> LU 1x1 conv -> affine coupling (sigmoid scale, Glow's conv3x3 ->
conv1x1 -> zero conv3x3 conditioner), a learned conditional Gaussian split prior
between levels and a learned diagonal Gaussian top prior.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)


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
