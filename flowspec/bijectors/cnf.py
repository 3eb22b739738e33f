"""Continuous normalizing flow (Chen et al. 2018 "Neural ODEs"; Grathwohl et al. 2019
"FFJORD"), solved with torchdiffeq.

Data -> latent integrates ``dz/dt = f(z, t[, context])`` from ``t = 0`` (data) to
``t = T`` (latent); latent -> data integrates back from ``T`` to ``0``. By the
instantaneous change of variables the forward log-det is ``∫_0^T tr(∂f/∂z) dt``,
integrated alongside ``z`` by the same solver, so ``forward`` and ``inverse``
log-dets cancel to the solver's tolerance.

Trace: ``exact`` sums ``D`` vector-Jacobian products (small D; the default up to
``exact_dims``); ``hutchinson`` uses ``εᵀ(∂f/∂z)ε`` with one probe per solve
(Gaussian or Rademacher), unbiased. Evaluation (eval mode or no gradients) uses
the exact trace when ``D ≤ exact_dims`` and the Hutchinson estimate otherwise;
:attr:`CNF.eval_logdet` says which.

Regularisation (RNODE, Finlay et al. 2020): the kinetic energy ``∫‖f‖² dt`` and the
Jacobian Frobenius norm ``∫‖εᵀ∂f/∂z‖² dt`` are integrated as extra states in
training when their coefficients are positive. They enter the *gradient* of the
node's log-det as ``-(λ·R - stop_gradient(λ·R))``: its value -- and so every
logged and evaluated likelihood -- is unchanged, while maximum likelihood then
minimises ``NLL + λ_K K + λ_J J`` (per example, before the objective's division by
D) with no change to the training loop. :attr:`CNF.last_regularizer` holds the
last value and :attr:`CNF.nfe` the function evaluations of the last solve;
:meth:`CNF.solver_stats` hands both to the objective, which logs them in the
metric rows (``nfe``, ``rnode_kinetic``, ``rnode_jacobian``) of training and
evaluation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from flowspec.bijectors.base import NODES, Bijector, Shape
from flowspec.bijectors.logdet_estimators import probe as draw_probe
from flowspec.errors import ShapeError
from flowspec.nets import build_net
from flowspec.nets.base import require_net
from flowspec.registry import params_schema, ref

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "adaptive_heun")
FIXED = ("rk4", "midpoint", "euler")
VECTOR_NET: dict[str, Any] = {"time_mlp": {"hidden": [64, 64, 64]}}
IMAGE_NET: dict[str, Any] = {"time_cnn": {"width": 64, "layers": 3}}


def _default_net(in_shape: Shape) -> dict[str, Any]:
    return IMAGE_NET if len(in_shape) == 3 else VECTOR_NET


def _check_time_net(net: Any, in_shape: Shape) -> None:
    """Refuse a net that does not take time (at the spec's line)."""
    require_net(net if net is not None else _default_net(in_shape), in_shape,
                lambda cls: getattr(cls, "takes_time", False),
                lambda name, timed: f"cnf needs a net that takes time ({', '.join(timed)}); "
                                    f"'{name}' is called without t")


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


class _Dynamics(nn.Module):
    """The augmented ODE: ``(z, ∫tr, [∫‖f‖², ∫‖εᵀJ‖²])``; counts its evaluations."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.nfe = 0
        self.context: torch.Tensor | None = None
        self.eps: torch.Tensor | None = None  # Hutchinson probe; None: exact trace
        self.reg_eps: torch.Tensor | None = None  # probe of the Frobenius regulariser
        self.regularize = False

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]):
        self.nfe += 1
        graph = torch.is_grad_enabled()
        z = state[0]
        with torch.enable_grad():
            if not (graph and z.requires_grad):
                z = z.detach().requires_grad_(True)
            dz = self.net(z, self.context, t)
            fz = _flat(dz)
            if self.eps is not None or self.regularize:
                eps = self.eps if self.eps is not None else self.reg_eps
                e_j = torch.autograd.grad(dz, z, eps, create_graph=True)[0]
            if self.eps is not None:
                div = (_flat(e_j) * _flat(eps)).sum(1)
            else:
                div = z.new_zeros(z.shape[0])
                for i in range(fz.shape[1]):
                    row = torch.autograd.grad(fz[:, i].sum(), z, create_graph=True)[0]
                    div = div + _flat(row)[:, i]
        out = [dz, div]
        if self.regularize:
            out += [fz.pow(2).sum(1), _flat(e_j).pow(2).sum(1)]
        if not graph:
            out = [o.detach() for o in out]
        return tuple(out)


@NODES.register(
    "cnf",
    schema=params_schema(
        net={"anyOf": [ref("net"), {"type": "null"}], "default": None,
             "description": "the vector field f(z, t[, context]), a net that takes time (null: "
                            "{time_mlp: {hidden: [64, 64, 64]}} on vectors, "
                            "{time_cnn: {width: 64, layers: 3}} on images)"},
        T={"type": "number", "exclusiveMinimum": 0, "default": 1.0,
           "description": "integration time: data at t = 0, latent at t = T"},
        method={"enum": [*ADAPTIVE, *FIXED], "default": "dopri5",
                "description": "torchdiffeq solver (adaptive ones honour rtol/atol)"},
        rtol={"type": "number", "exclusiveMinimum": 0, "default": 1.0e-5,
              "description": "relative tolerance of adaptive solvers"},
        atol={"type": "number", "exclusiveMinimum": 0, "default": 1.0e-5,
              "description": "absolute tolerance of adaptive solvers"},
        steps={"type": "integer", "minimum": 1, "default": 20,
               "description": "steps of fixed-step solvers (rk4, midpoint, euler)"},
        adjoint={"type": "boolean", "default": False,
                 "description": "gradients by the adjoint ODE (memory O(1) in the steps) "
                                "instead of backprop through the solver"},
        trace={"enum": ["auto", "exact", "hutchinson"], "default": "auto",
               "description": "training divergence: exact (D vector-Jacobian products) or "
                              "Hutchinson (auto: exact when D ≤ exact_dims)"},
        probe={"enum": ["gaussian", "rademacher"], "default": "rademacher",
               "description": "Hutchinson probe distribution"},
        exact_dims={"type": "integer", "minimum": 0, "default": 16,
                    "description": "largest D whose trace is exact (training on auto, and eval)"},
        kinetic={"type": "number", "minimum": 0, "default": 0.0,
                 "description": "RNODE kinetic-energy coefficient λ_K (∫‖f‖² dt)"},
        jacobian_norm={"type": "number", "minimum": 0, "default": 0.0,
                       "description": "RNODE Jacobian Frobenius coefficient λ_J (∫‖∂f/∂z‖²_F dt)"},
    ),
    category="continuous",
    examples=[
        {"in_shape": [2], "params": {"net": {"time_mlp": {"hidden": [8]}},
                                     "rtol": 1.0e-9, "atol": 1.0e-9}},
        {"in_shape": [3], "context_shape": [2],
         "params": {"net": {"time_mlp": {"hidden": [6], "time": "concat"}},
                    "rtol": 1.0e-9, "atol": 1.0e-9, "T": 0.5, "kinetic": 0.1,
                    "jacobian_norm": 0.1}},
        {"in_shape": [1, 2, 2], "params": {"net": {"time_cnn": {"width": 3, "layers": 1}},
                                           "rtol": 1.0e-9, "atol": 1.0e-9,
                                           "adjoint": True}},
    ],
)
class CNF(Bijector):
    """Continuous normalizing flow dz/dt = f(z, t[, context]) (FFJORD), free-form Jacobian.

    Both directions are ODE solves (torchdiffeq): the round trip and the log-det hold to
    the solver's tolerance -- the node's contract tolerance is ``100·max(rtol, atol)``
    for adaptive solvers (1e-3 at the defaults) and 1e-2 for fixed-step ones. The
    trace is exact up to ``exact_dims`` dimensions and a Hutchinson estimate beyond
    (``eval_logdet`` says which evaluation uses). RNODE regularisers (``kinetic``,
    ``jacobian_norm``) shape the training gradient without changing reported
    likelihoods; ``nfe`` counts the function evaluations of the last solve.
    """

    analytic = "forward"
    tolerance = 1e-3
    exports = "none"
    export_note = ("an ODE solve whose step count depends on the data (adaptive solver) and a "
                   "log-det by autograd trace: no static graph")
    inverse_doc = ("both directions are ODE solves; round trip and log-det hold to "
                   "100·max(rtol, atol) with adaptive solvers (tol 0.001 at the defaults), "
                   "0.01 with fixed-step ones")

    def __init__(self, in_shape: Shape, context_shape: Shape | None = None, *,
                 net: Any = None, T: float = 1.0, method: str = "dopri5",
                 rtol: float = 1.0e-5, atol: float = 1.0e-5, steps: int = 20,
                 adjoint: bool = False, trace: str = "auto", probe: str = "rademacher",
                 exact_dims: int = 16, kinetic: float = 0.0, jacobian_norm: float = 0.0):
        super().__init__(in_shape, context_shape)
        _check_time_net(net, tuple(in_shape))
        self.func = _Dynamics(build_net(net if net is not None else _default_net(tuple(in_shape)),
                                        tuple(in_shape), tuple(in_shape), context_shape))
        self.T, self.method, self.rtol, self.atol, self.steps = float(T), method, rtol, atol, steps
        self.adjoint, self.trace, self.probe = adjoint, trace, probe
        self.exact_dims, self.dims = exact_dims, math.prod(in_shape)
        self.kinetic, self.jacobian_norm = float(kinetic), float(jacobian_norm)
        self.tolerance = 100 * max(rtol, atol) if method in ADAPTIVE else 1e-2
        #: function evaluations of the last solve (forward pass only)
        self.nfe = 0
        #: last value of λ_K·K + λ_J·J (batch mean), 0 when not regularising
        self.last_regularizer = 0.0
        #: unweighted K = ∫‖f‖² dt and J = ∫‖εᵀ∂f/∂z‖² dt (batch means) of the last
        #: regularised solve; None when the last solve did not integrate them
        self.last_rnode: tuple[float, float] | None = None

    @classmethod
    def out_shape(cls, in_shape, net=None, **params):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"cnf takes vectors [D] or images [C, H, W], got {list(in_shape)}")
        _check_time_net(net, tuple(in_shape))
        return tuple(in_shape)

    @property
    def eval_logdet(self) -> str:
        """The trace used in evaluation, in words (for reports)."""
        if self.dims <= self.exact_dims:
            return "exact trace"
        return f"Hutchinson trace estimate ({self.probe}, one probe per solve; unbiased)"

    def solver_stats(self) -> dict[str, float]:
        """Numbers of the last solve for the metric rows: its function evaluations, and
        the RNODE integrals K and J (unweighted) when that solve integrated them."""
        stats = {"nfe": float(self.nfe)}
        if self.last_rnode is not None:
            stats["rnode_kinetic"], stats["rnode_jacobian"] = self.last_rnode
        return stats

    def _exact(self) -> bool:
        if self.training and torch.is_grad_enabled() and self.trace != "auto":
            return self.trace == "exact"
        return self.dims <= self.exact_dims

    def _solve(self, z: torch.Tensor, context: torch.Tensor | None, t0: float, t1: float):
        from torchdiffeq import odeint, odeint_adjoint

        f = self.func
        f.context = context
        f.eps = None if self._exact() else draw_probe(z, self.probe)
        f.regularize = (self.training and torch.is_grad_enabled() and t1 > t0
                        and (self.kinetic > 0 or self.jacobian_norm > 0))
        f.nfe = 0
        zero = z.new_zeros(z.shape[0])
        state = (z, zero) + ((zero, zero) if f.regularize else ())
        times = torch.tensor([t0, t1], dtype=z.dtype, device=z.device)
        options = {"step_size": abs(t1 - t0) / self.steps} if self.method in FIXED else None
        rtol, atol = self.rtol, self.atol
        if f.regularize:
            # The regularisers' integrals never steer the step size (the mixed norm is a
            # max over states): the solve, and so the log-likelihood, is the same as
            # without them.
            f.reg_eps = draw_probe(z)
            rtol, atol = (rtol, rtol, 0.0, 0.0), (atol, atol, 1e30, 1e30)
        kwargs = dict(rtol=rtol, atol=atol, method=self.method, options=options)
        if self.adjoint and torch.is_grad_enabled():
            params = tuple(p for p in f.parameters() if p.requires_grad)
            if context is not None and context.requires_grad:
                params += (context,)
            out = odeint_adjoint(f, state, times, adjoint_params=params, adjoint_rtol=self.rtol,
                                 adjoint_atol=self.atol, **kwargs)
        else:
            out = odeint(f, state, times, **kwargs)
        final = tuple(o[-1] for o in out)
        self.nfe = f.nfe
        f.context = f.eps = f.reg_eps = None
        return final

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Data -> latent: integrate from 0 to T; log-det ``∫ tr(∂f/∂z) dt``."""
        z, ld, *reg = self._solve(x, context, 0.0, self.T)
        self.last_rnode = None
        if reg:
            penalty = self.kinetic * reg[0] + self.jacobian_norm * reg[1]
            self.last_regularizer = float(penalty.detach().mean())
            self.last_rnode = (float(reg[0].detach().mean()), float(reg[1].detach().mean()))
            ld = ld - (penalty - penalty.detach())
        return z, ld

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        """Latent -> data: integrate from T back to 0."""
        x, ld, *_ = self._solve(z, context, self.T, 0.0)
        self.last_rnode = None
        return x, ld
