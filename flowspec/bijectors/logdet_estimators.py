"""Log-determinants of ``I + J_g`` for residual maps, exact and estimated.

* :func:`exact_logdet`: the full Jacobian by ``D`` vector-Jacobian products, then
  ``slogdet`` (small D).
* :func:`series_logdet`: the i-ResNet power series ``Σ_{k≤n} (-1)^{k+1} tr(J^k)/k``
  with a Hutchinson probe, truncated (biased by the tail, ``≤ D·L^{n+1}/(n+1)``),
  differentiated by backprop through the ``n`` products.
* :func:`roulette_logdet`: the Residual Flows estimator (Chen et al. 2019): the
  series truncated at a random ``n_exact + N`` terms, ``N ~ Geometric(p)``, each
  term beyond ``n_exact`` reweighted by ``1/P(N ≥ k - n_exact)`` -- unbiased. Its
  gradient is the Neumann-series estimator of ``tr((I+J)^{-1} ∂J)`` (one extra
  vector-Jacobian product with a graph), not backprop through the terms, so
  memory does not grow with the number of terms. Value and gradient are combined
  as ``value.detach() + (surrogate - surrogate.detach())``.

Every function takes ``x`` (requiring grad) and ``gx = g(x)`` computed from it, and
returns a ``[batch]`` log-det; ``create_graph`` keeps the graph for training.
"""

from __future__ import annotations

import math

import torch


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def exact_logdet(x: torch.Tensor, gx: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """``log|det(I + ∂g/∂x)|`` from the full Jacobian (``D`` batched vector-Jacobian products)."""
    b, d = x.shape[0], x[0].numel()
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    probes = eye[:, None, :].expand(d, b, d).reshape(d, *gx.shape)
    rows = torch.autograd.grad(gx, x, probes, create_graph=create_graph, retain_graph=True,
                               is_grads_batched=True)[0]
    jac = rows.reshape(d, b, d).transpose(0, 1)  # [B, D(out), D(in)]
    return torch.linalg.slogdet(eye + jac)[1]


def probe(like: torch.Tensor, kind: str = "gaussian") -> torch.Tensor:
    """A Hutchinson probe with ``E[v vᵀ] = I``: standard normal or Rademacher (±1)."""
    if kind == "rademacher":
        return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1
    return torch.randn_like(like)


def series_logdet(x: torch.Tensor, gx: torch.Tensor, terms: int, create_graph: bool,
                  probe_kind: str = "gaussian") -> torch.Tensor:
    """i-ResNet's truncated series ``Σ_{k=1}^{n} (-1)^{k+1} vᵀJ^k v / k`` (one probe)."""
    v = probe(x, probe_kind)
    w, total = v, x.new_zeros(x.shape[0])
    for k in range(1, terms + 1):
        w = torch.autograd.grad(gx, x, w, create_graph=create_graph, retain_graph=True)[0]
        total = total + (-1) ** (k + 1) / k * (_flat(w) * _flat(v)).sum(1)
    return total


def roulette_weights(n_exact: int, p: float, generator: torch.Generator | None = None
                     ) -> list[float]:
    """``1 / P(reach term k)`` for the terms ``k = 1..n_exact + N`` of one draw (``N ≥ 1``)."""
    n = _geometric(p, generator)
    return [1.0] * n_exact + [(1.0 - p) ** -(j - 1) for j in range(1, n + 1)]


def _geometric(p: float, generator: torch.Generator | None) -> int:
    """``N ≥ 1`` with ``P(N ≥ j) = (1 - p)^(j - 1)``."""
    u = float(torch.rand((), generator=generator))
    return 1 + int(math.floor(math.log1p(-u) / math.log1p(-p)))


def roulette_logdet(x: torch.Tensor, gx: torch.Tensor, n_exact: int, p: float,
                    create_graph: bool, probe_kind: str = "gaussian", probes: int = 1,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Unbiased Russian-roulette estimate of ``log det(I + J)``, Neumann-series gradient.

    ``probes`` independent Hutchinson vectors are averaged (one roulette draw each).
    """
    total = x.new_zeros(x.shape[0])
    surrogate = x.new_zeros(x.shape[0])
    need_grad = create_graph and torch.is_grad_enabled()
    for _ in range(probes):
        v = probe(x, probe_kind)
        weights = roulette_weights(n_exact, p, generator)
        w, neumann = v, v
        with torch.no_grad():
            for k, c in enumerate(weights, start=1):
                w = torch.autograd.grad(gx, x, w, retain_graph=True)[0]
                total = total + (-1) ** (k + 1) / k * c * (_flat(w) * _flat(v)).sum(1)
                if need_grad and k < len(weights):
                    # Neumann series (I+J)^{-1} = Σ_k (-J)^k, reweighted like the terms.
                    neumann = neumann + (-1) ** k * weights[k] * w
        if need_grad:
            vjp = torch.autograd.grad(gx, x, neumann, create_graph=True, retain_graph=True)[0]
            surrogate = surrogate + (_flat(vjp) * _flat(v)).sum(1)
    total, surrogate = total / probes, surrogate / probes
    return total + (surrogate - surrogate.detach())
