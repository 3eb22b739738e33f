"""NICE (Dinh et al. 2014) written by hand in plain PyTorch: the reference that
flowspec's compiled ``specs/nice_mnist.yaml`` is measured against.

Same architecture as the spec: 4 additive couplings over even/odd pixel
indices (alternating which half is updated), each with a 5x1000 ReLU MLP,
then a diagonal scaling layer and a standard logistic prior.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(d_in: int, d_out: int, hidden: int = 1000, layers: int = 5) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class HandNICE(nn.Module):
    def __init__(self, dim: int = 784, couplings: int = 4, hidden: int = 1000, layers: int = 5):
        super().__init__()
        self.dim = dim
        self.idx = [torch.arange(0, dim, 2), torch.arange(1, dim, 2)]
        self.nets = nn.ModuleList()
        for i in range(couplings):
            keep, change = self.idx[i % 2], self.idx[1 - i % 2]
            self.nets.append(mlp(len(keep), len(change), hidden, layers))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for i, net in enumerate(self.nets):
            keep, change = self.idx[i % 2].to(h.device), self.idx[1 - i % 2].to(h.device)
            h = h.clone()
            h[:, change] = h[:, change] + net(h[:, keep])
        z = h * torch.exp(self.log_scale)
        log_prior = -(F.softplus(z) + F.softplus(-z)).sum(1)
        return log_prior + self.log_scale.sum()
