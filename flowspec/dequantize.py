"""Flow++ variational dequantization (Ho et al. 2019, section 3.1).

Uniform dequantization models ``y = (x + u) / L`` with ``u ~ U[0, 1)^D``, which bounds
the discrete likelihood but wastes the bound's slack on noise the model must learn to
spread flat over each bin. A learned noise distribution ``q(u | x)`` tightens it:

    -log P(x) <= E_{u ~ q(u|x)}[ -log p((x + u) / L) + log q(u | x) ] + D·log L

(Jensen on ``P(x) = ∫ p_int(x + u) du``). ``q`` is a conditional flow from Gaussian
noise ``ε`` to ``s``, then ``u = sigmoid(s)``; its nodes see the discrete image as
their context. :class:`VariationalDequantizer` returns the dequantized point and
``log q(u | x)`` in ``u``'s unit bins, so :meth:`Flow.log_prob` reports
``log p(y) - log q(u | x)`` and :func:`flowspec.metrics.bits_per_dim` adds the same
``D·log L`` as for uniform noise (whose ``log q`` is 0): the number is the variational
bound, estimated with one draw of ``u`` per example.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class VariationalDequantizer(nn.Module):
    """Bin centres ``(x + 1/2) / L`` -> ``((x + u) / L, log q(u | x))`` with ``u ~ q``.

    ``q`` is a compiled :class:`~flowspec.compile.Flow` of the data's shape whose
    context is the discrete image scaled to ``[-1, 1]``; ``levels`` is ``L = 2**n_bits``.
    """

    def __init__(self, q: nn.Module, levels: int):
        super().__init__()
        self.q = q
        self.levels = int(levels)

    def bins(self, y: torch.Tensor) -> torch.Tensor:
        """The integer bin of each value (the centres sit half a bin from any edge)."""
        return torch.floor(y * self.levels).clamp_(0, self.levels - 1)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.bins(y)
        context = (x + 0.5) * (2.0 / self.levels) - 1.0
        s, log_q_s = self.q.sample_and_log_prob(x.shape[0], context=context)
        u = torch.sigmoid(s)
        # log q(u) = log q(s) - log |du/ds|, du/ds = sigmoid(s)·sigmoid(-s)
        log_jac = (F.logsigmoid(s) + F.logsigmoid(-s)).flatten(1).sum(1)
        return (x + u) / self.levels, log_q_s - log_jac

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def build_dequantizer(graph: Any, flow_cls: type) -> VariationalDequantizer | None:
    """The module of ``model.dequantize`` (None without one)."""
    if graph.dequantizer is None:
        return None
    if graph.levels is None:
        from flowspec.errors import FlowspecError

        raise FlowspecError("model.dequantize needs the data's number of levels",
                            hint="load the spec with flowspec.load, which reads n_bits from "
                                 "data.preprocess")
    return VariationalDequantizer(flow_cls(graph.dequantizer), graph.levels)
