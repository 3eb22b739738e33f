"""Standardize: per-feature ``(x - mean) / std`` with statistics of the training split.

Tabular data come in any units (metres, dollars, kelvin); flows and their
conditioner nets train well on roughly unit-scale inputs. Rescaling the data
*outside* the flow would change the density without accounting for it, so this is
a node: its log-det ``-sum(log std)`` (times the positions per channel) is part of
``Flow.log_prob``, and the reported NLL stays in the units of the data.

The statistics are data-dependent, fitted through the generic ``fit_data`` hook
(:mod:`flowspec.datafit`): a fresh training run feeds the whole training
split (never val or test) to every node with such a hook before the first step;
a resumed run and a loaded checkpoint keep the saved statistics (buffers, with
a ``fitted`` flag). Outside the trainer, a node that was never fitted estimates
them from its first train-mode batch (as ``actnorm`` does), and in eval mode it
is the identity and warns: an unfitted standardize where a fitted one was meant
(an untrained spec evaluated) is never silent.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.errors import ShapeError
from flowspec.registry import params_schema


class RunningMoments:
    """Per-channel count, mean and sum of squared deviations, merged chunk by chunk
    (Chan et al.'s parallel update: exact, and stable when the mean is large)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """``x``: ``[batch, C, ...]``; statistics over batch and positions, per channel."""
        xt = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
        n_b = xt.shape[1]
        if n_b == 0:
            return
        mean_b = xt.mean(1)
        m2_b = ((xt - mean_b[:, None]) ** 2).sum(1)
        if self.mean is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (self.n * n_b / n)
        self.n = n

    def std(self) -> torch.Tensor:
        assert self.m2 is not None
        return (self.m2 / self.n).sqrt()


@NODES.register(
    "standardize",
    schema=params_schema(),
    category="preprocessing",
    examples=[{"in_shape": [3]}, {"in_shape": [2, 3, 3]}],
    warmup=True,
)
class Standardize(Bijector):
    """Per-feature ``(x - mean) / std`` with the mean and std of the training split, fitted
    before the first step; its log-det keeps the NLL in the data's own units.

    Features are dim 0 of the per-example shape (channels of images). A feature with
    zero spread keeps unit scale. Fitted statistics are buffers, saved in checkpoints.
    """

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None):
        super().__init__(tuple(in_shape), context_shape)
        self.out_shape(in_shape)
        view = (in_shape[0],) + (1,) * (len(in_shape) - 1)
        self.register_buffer("mean", torch.zeros(view))
        self.register_buffer("log_std", torch.zeros(view))
        self.register_buffer("fitted", torch.tensor(False))
        self.positions = math.prod(in_shape[1:])
        # Python-side mirror of `fitted`: no device sync per step.
        self._checked = False

    @classmethod
    def out_shape(cls, in_shape, **params):
        if not in_shape or not all(isinstance(d, int) for d in in_shape):
            raise ShapeError("standardize takes one tensor with at least one dimension")
        return tuple(in_shape)

    @property
    def needs_data_fit(self) -> bool:
        """True until statistics were fitted (or loaded from a checkpoint)."""
        return not bool(self.fitted)

    @torch.no_grad()
    def fit_data(self, batches: Iterable[torch.Tensor]) -> None:
        """Fit mean and std to every example ``batches`` yields (this node's inputs),
        streamed, so the data need not fit in one batch."""
        moments = RunningMoments()
        for x in batches:
            moments.update(x)
        if moments.mean is None:
            raise ValueError("standardize: no data to fit the statistics on")
        std = moments.std()
        log_std = torch.where(std > 0, torch.log(std.clamp_min(1e-300)), torch.zeros_like(std))
        self.mean.copy_(moments.mean.reshape(self.mean.shape).to(self.mean.dtype))
        self.log_std.copy_(log_std.reshape(self.log_std.shape).to(self.log_std.dtype))
        self.fitted.fill_(True)
        self._checked = True

    def _load_from_state_dict(self, *args, **kwargs):
        self._checked = False
        super()._load_from_state_dict(*args, **kwargs)

    def _check(self, x: torch.Tensor | None) -> None:
        """Once: fitted already, or fit on a first train-mode batch, or warn."""
        if bool(self.fitted):
            self._checked = True
        elif self.training and x is not None:
            self.fit_data([x])  # first train-mode batch, like actnorm
        else:
            warnings.warn("standardize has no fitted statistics and acts as the identity: "
                          "this flow was not trained (train it with `flowspec train` or "
                          "flowspec.fit, or load a checkpoint)", UserWarning, stacklevel=4)
            self._checked = True

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (-self.log_std.sum() * self.positions).expand(x.shape[0])

    def forward(self, x, context=None):
        if not self._checked:
            self._check(x)
        return (x - self.mean) * torch.exp(-self.log_std), self._logdet(x)

    def inverse(self, y, context=None):
        if not self._checked:
            self._check(None)  # latents cannot fit data statistics
        return y * torch.exp(self.log_std) + self.mean, -self._logdet(y)
