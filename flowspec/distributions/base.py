"""Priors: the base densities of what leaves the graph at a latent node.

Constructed as ``Cls(shape, context_shape=None, cond_shape=None, **params)``.
``context`` is the flow's global condition (one-hot class or a tensor);
``cond`` is another port of the graph the latent is conditioned on (Glow's
split prior reads the kept half). ``needs_cond`` says whether a prior must be
given a ``cond:`` port in the spec.

``temperature`` scales the spread of samples (the standard deviation for
Gaussians, the scale for logistics), as in Glow's reduced-temperature sampling.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from flowspec.registry import Registry

PRIORS = Registry("prior", plugin_group="flowspec.priors", title="Priors")


class Prior(nn.Module):
    needs_cond: ClassVar[bool] = False
    needs_context: ClassVar[bool] = False

    def __init__(
        self,
        shape: tuple[int, ...],
        context_shape: tuple[int, ...] | None = None,
        cond_shape: tuple[int, ...] | None = None,
        **_: Any,
    ):
        super().__init__()
        self.shape = tuple(shape)
        self.context_shape = context_shape
        self.cond_shape = cond_shape

    def log_prob(
        self, z: torch.Tensor, context: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``log p(z)`` summed over all non-batch dimensions: shape ``[batch]``."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        context: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def _like(self) -> torch.Tensor:
        """A tensor carrying this prior's device and dtype (buffers always exist)."""
        return self._anchor

    def register_anchor(self) -> None:
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
