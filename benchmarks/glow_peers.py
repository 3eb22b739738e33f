"""The benchmark's Glow built with the peer libraries, each in its own idiom.

Architecture (as ``glow_speed.SPEC``): L levels of squeeze, then K steps of
actnorm -> LU 1x1 conv -> affine coupling with Glow's sigmoid scale and a
conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero conv3x3 conditioner; a learned
conditional Gaussian split prior (zero conv3x3 from the kept half) between
levels; a learned diagonal Gaussian top prior.

* **normflows** (1.7.3): ``nf.MultiscaleFlow`` of ``nf.flows.GlowBlock``
  (``scale_map="sigmoid"``, ``use_lu=True``) and ``nf.flows.Squeeze``, the
  library's Glow recipe. normflows has no conditional split prior (its recipe
  gives each level an unconditional ``GlowBase``), so the split is a
  ``nf.flows.Merge`` subclass that standardises the factored-out half with the
  predicted mean/log-scale, followed by a fixed N(0, I) base: the same density.
  Its ``ConvNet2d`` conditioner has no Glow output log-scale (``logs``), so it
  has ``C`` fewer parameters per step; everything else matches.
* **FrEIA** (0.2): a ``GraphINN`` of ``IRevNetDownsampling`` (squeeze),
  ``ActNorm``, an LU 1x1 conv and ``AffineCouplingOneSided`` whose
  ``clamp_activation`` is Glow's ``log sigmoid(h + 2)`` (FrEIA's documented
  hook for the scale map). FrEIA has neither an LU 1x1 conv nor a split prior,
  so both are ``InvertibleModule`` subclasses here, written the plain way.
  The conditioner is the same glow net (FrEIA always takes a user subnet), so
  parameter counts equal flowspec's exactly.

Each builder returns a :class:`Peer` with ``module``, ``log_prob(x)``,
``sample(n, temperature)`` and ``params`` (the trainable parameters); a
missing library raises ``ImportError`` with the install line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from glow_reference import LOG_2PI, RefZeroConv
from torch import nn
from torch.nn import functional as F

INSTALL = "pip install -r benchmarks/requirements-glow.txt (in the benchmark venv)"


@dataclass
class Peer:
    module: nn.Module
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[int, float], torch.Tensor]

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]


def _require(name: str):
    try:
        return __import__(name)
    except ImportError as e:
        raise ImportError(f"{name} is not installed: {INSTALL}") from e


def _level_shapes(shape: tuple[int, int, int], L: int) -> list[tuple[int, int, int]]:
    """Shape each level's steps run at (after its squeeze), first level first."""
    c, h, w = shape
    out = []
    for level in range(L):
        c, h, w = c * 4, h // 2, w // 2
        out.append((c, h, w))
        if level < L - 1:
            c = c // 2
    return out


def glow_subnet(width: int) -> Callable[[int, int], nn.Module]:
    """Glow's coupling conditioner, as a FrEIA ``subnet_constructor(c_in, c_out)``."""

    def build(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(width, width, 1), nn.ReLU(), RefZeroConv(width, c_out))

    return build


def glow_log_scale(h: torch.Tensor) -> torch.Tensor:
    """Glow's coupling scale ``sigmoid(h + 2)`` as a log-scale (FrEIA clamp_activation)."""
    return F.logsigmoid(h + 2.0)


# ---------------------------------------------------------------------------------------
# normflows
# ---------------------------------------------------------------------------------------


def normflows_glow(shape: tuple[int, int, int], L: int, K: int, width: int) -> Peer:
    nf = _require("normflows")

    class SplitPrior(nf.flows.Merge):
        """``Merge`` + Glow's split prior: in the density direction the factored-out
        half is standardised by the mean/log-scale predicted from the kept half."""

        def __init__(self, kept_channels: int):
            super().__init__("channel")
            self.prior = RefZeroConv(kept_channels, 2 * kept_channels)

        def forward(self, z):  # latent -> data: [kept, eps] -> x
            kept, eps = z
            mean, logs = self.prior(kept).chunk(2, 1)
            x, _ = super().forward([kept, mean + torch.exp(logs) * eps])
            return x, logs.flatten(1).sum(1)

        def inverse(self, x):  # data -> latent
            (kept, out), _ = super().inverse(x)
            mean, logs = self.prior(kept).chunk(2, 1)
            return [kept, (out - mean) * torch.exp(-logs)], -logs.flatten(1).sum(1)

    levels = _level_shapes(shape, L)
    flows, merges, q0 = [], [], []
    for i in range(L):  # normflows orders levels from the top (coarsest) latent
        c, h, w = levels[L - 1 - i]
        flows.append([nf.flows.GlowBlock(c, width, scale=True, scale_map="sigmoid",
                                         split_mode="channel", use_lu=True)
                      for _ in range(K)] + [nf.flows.Squeeze()])
        if i == 0:
            q0.append(nf.distributions.DiagGaussian((c, h, w), trainable=True))
        else:
            merges.append(SplitPrior(c // 2))
            q0.append(nf.distributions.DiagGaussian((c - c // 2, h, w), trainable=False))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    return Peer(model, lambda x: model.log_prob(x, None),
                lambda n, t: model.sample(n, temperature=t)[0])


# ---------------------------------------------------------------------------------------
# FrEIA
# ---------------------------------------------------------------------------------------


def freia_glow(shape: tuple[int, int, int], L: int, K: int, width: int) -> Peer:
    _require("FrEIA")
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    class LUConv1x1(Fm.InvertibleModule):
        """Glow's LU-parameterised invertible 1x1 conv (FrEIA has none)."""

        def __init__(self, dims_in, dims_c=None):
            super().__init__(dims_in, dims_c)
            c, *spatial = dims_in[0]
            self.positions = math.prod(spatial)
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

        def forward(self, x, c=None, rev=False, jac=True):
            low = self.low * self.lmask + self.eye
            up = self.up * self.lmask.T + torch.diag(self.sign * torch.exp(self.logs))
            ld = (self.logs.sum() * self.positions).expand(x[0].shape[0])
            if rev:
                inv_up = torch.linalg.solve_triangular(up, self.eye, upper=True)
                inv_low = torch.linalg.solve_triangular(low, self.eye, upper=False,
                                                        unitriangular=True)
                w = inv_up @ inv_low @ self.p.T
                return (F.conv2d(x[0], w[:, :, None, None]),), -ld
            return (F.conv2d(x[0], (self.p @ low @ up)[:, :, None, None]),), ld

        def output_dims(self, input_dims):
            return input_dims

    class SplitPrior(Fm.InvertibleModule):
        """Split channels in half; the second half leaves standardised under Glow's
        conditional Gaussian (mean, log-scale predicted from the kept half)."""

        def __init__(self, dims_in, dims_c=None):
            super().__init__(dims_in, dims_c)
            c = dims_in[0][0]
            self.half = c // 2
            self.prior = RefZeroConv(self.half, 2 * (c - self.half))

        def forward(self, x, c=None, rev=False, jac=True):
            if rev:
                kept, eps = x
                mean, logs = self.prior(kept).chunk(2, 1)
                out = mean + torch.exp(logs) * eps
                return (torch.cat([kept, out], 1),), logs.flatten(1).sum(1)
            kept, out = x[0][:, :self.half], x[0][:, self.half:]
            mean, logs = self.prior(kept).chunk(2, 1)
            return (kept, (out - mean) * torch.exp(-logs)), -logs.flatten(1).sum(1)

        def output_dims(self, input_dims):
            c, h, w = input_dims[0]
            return [(self.half, h, w), (c - self.half, h, w)]

    subnet = glow_subnet(width)
    nodes: list = [Ff.InputNode(*shape, name="x")]
    outputs: list = []
    last = nodes[0]
    for level in range(L):
        last = Ff.Node(last, Fm.IRevNetDownsampling, {})
        nodes.append(last)
        for _ in range(K):
            for module, args in ((Fm.ActNorm, {}), (LUConv1x1, {}),
                                 (Fm.AffineCouplingOneSided,
                                  {"subnet_constructor": subnet, "clamp": 1.0,
                                   "clamp_activation": glow_log_scale})):
                last = Ff.Node(last, module, args)
                nodes.append(last)
        if level < L - 1:
            split = Ff.Node(last, SplitPrior, {})
            nodes.append(split)
            outputs.append(Ff.OutputNode(split.out1))
            last = split.out0
    outputs.append(Ff.OutputNode(last))
    top_shape = outputs[-1].input_dims[0]
    out_shapes = [o.input_dims[0] for o in outputs]

    class FrEIAGlow(nn.Module):
        """The INN plus the learned diagonal Gaussian top prior (FrEIA leaves the
        latent density to the user)."""

        def __init__(self):
            super().__init__()
            self.inn = Ff.GraphINN(nodes + outputs)
            self.top_mean = nn.Parameter(torch.zeros(top_shape))
            self.top_logs = nn.Parameter(torch.zeros(top_shape))

        def log_prob(self, x):
            zs, log_jac = self.inn(x)
            total = log_jac
            for z in zs[:-1]:
                total = total + (-0.5 * (z * z + LOG_2PI)).flatten(1).sum(1)
            e = (zs[-1] - self.top_mean) * torch.exp(-self.top_logs)
            return total + (-0.5 * (e * e + LOG_2PI) - self.top_logs).flatten(1).sum(1)

        def sample(self, n, temperature=1.0):
            ref = self.top_mean
            zs = [torch.randn(n, *s, device=ref.device, dtype=ref.dtype) * temperature
                  for s in out_shapes]
            zs[-1] = self.top_mean + torch.exp(self.top_logs) * zs[-1]
            return self.inn(zs, rev=True, jac=False)[0]

    model = FrEIAGlow()
    return Peer(model, model.log_prob, model.sample)
