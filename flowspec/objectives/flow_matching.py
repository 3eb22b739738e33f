"""Conditional flow matching: train a ``cnf`` by regression, without solving the ODE.

Lipman et al. 2023 ("Flow Matching for Generative Modeling"), Tong et al. 2024
("Improving and generalizing flow-based generative models with minibatch optimal
transport"). With flowspec's direction (data at ``t = 0``, latent at ``t = T``,
``s = t/T``), a data point ``x`` and a prior draw ``z`` are joined by a path whose
velocity the cnf's field regresses on:

* ``ot`` (Lipman's optimal-transport path): ``ψ_s = (1 - s) x + (σ_min + (1 - σ_min) s) z``,
  velocity ``((1 - σ_min) z - x) / T``;
* ``straight`` (I-CFM): ``ψ_s = (1 - s) x + s z + σ_min ε``, velocity ``(z - x) / T``.

``coupling: minibatch_ot`` pairs the batch's data and prior draws by an exact
optimal assignment (squared distance) before building the paths, which straightens
the learned flow. The loss is the mean squared velocity error per dimension.
Path times follow ``time_prior_exponent`` α: density ``∝ (1 - s)^α`` (uniform at 0;
FMPE's power-law time prior, Dax et al. 2023), which trains the field more where it
must resolve the data's finest structure (the data end) without changing what the
regression converges to.
Evaluation is the exact likelihood through the ODE (``flow.log_prob``: the cnf's
exact trace where its D allows), drawing integrates the ODE -- both inherited from
maximum likelihood, so ``nll_nats`` chooses ``best``. With ``model.context`` the
field sees the context: flow-matching posterior estimation as in sbi's FMPE.

Which flows: one ``cnf`` whose output is the flow's only latent, with a prior without
trainable parameters; nodes before the cnf (e.g. ``standardize``) must have none
either -- flow matching would not train them. Anything else is refused when the run
starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from flowspec.bijectors.cnf import CNF
from flowspec.errors import FlowspecError
from flowspec.objectives.base import OBJECTIVES, Metric
from flowspec.objectives.likelihood import MaximumLikelihood
from flowspec.registry import params_schema

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.compile import Flow


def _trainable(module: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def minibatch_ot_pairs(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The permutation of ``z`` that minimises ``Σ‖x_i - z_π(i)‖²`` (exact assignment)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x.reshape(len(x), -1).double(), z.reshape(len(z), -1).double()) ** 2
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    perm = torch.empty(len(x), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm.to(z.device)


@OBJECTIVES.register(
    "flow_matching",
    schema=params_schema(
        path={"enum": ["ot", "straight"], "default": "ot",
              "description": "ot: Lipman's optimal-transport path (σ_min shrinks the data end); "
                             "straight: I-CFM, straight lines with σ_min Gaussian blur"},
        sigma_min={"type": "number", "minimum": 0, "default": 1.0e-4,
                   "description": "width of the conditional paths (σ_min)"},
        coupling={"enum": ["independent", "minibatch_ot"], "default": "independent",
                  "description": "pair data and prior draws independently or by minibatch "
                                 "optimal transport (exact assignment)"},
        time_prior_exponent={"type": "number", "minimum": 0, "default": 0.0,
                             "description": "α of the path-time density ∝ (1 - s)^α, s = t/T "
                                            "(0: uniform; α > 0 trains more near the data "
                                            "end, as FMPE's power-law time prior, Dax et al. "
                                            "2023, who use α = 4)"},
    ),
    category="data",
)
class FlowMatching(MaximumLikelihood):
    """Conditional flow matching for a ``cnf`` flow: regression on path velocities, no ODE
    solve in training; evaluated by the exact likelihood through the ODE, sampled by
    integrating it. Conditional with ``model.context`` (flow-matching posterior estimation)."""

    key_metric = "nll_nats"
    loss_unit = "squared velocity error per dim"
    metrics = (
        Metric("fm_loss", "", "flow-matching regression loss (mean squared velocity error)"),
        *MaximumLikelihood.metrics,
    )

    def __init__(self, spec: Any, flow: Flow, params: dict[str, Any], *, data_dir: Any = None,
                 device: torch.device = torch.device("cpu"), shard: tuple[int, int] = (0, 1)):
        super().__init__(spec, flow, params, data_dir=data_dir, device=device, shard=shard)
        self.path, self.sigma_min = params["path"], float(params["sigma_min"])
        self.coupling, self.alpha = params["coupling"], float(params["time_prior_exponent"])
        self.cnf, self.pre, self.prior = self._parts(flow)
        if shard[1] > 1:
            raise FlowspecError("flow_matching trains the cnf's field directly, outside the "
                                "data-parallel wrapper", hint="train it in one process")
        if self.coupling == "minibatch_ot" and flow.context_shape is not None:
            # Pairing by distance would make the prior draw depend on the context: the
            # flow's latent given the context would no longer follow the prior.
            raise FlowspecError("coupling: minibatch_ot is for unconditional flows: with a "
                                "context it biases p(x | context)",
                                hint="use coupling: independent with model.context")
        if self.coupling == "minibatch_ot":
            try:
                import scipy.optimize  # noqa: F401
            except ImportError:
                raise FlowspecError("coupling: minibatch_ot needs scipy",
                                    hint="pip install scipy") from None

    @staticmethod
    def _parts(flow: Any):
        """The cnf, the fixed nodes before it, and the prior; refuse other flows."""
        items = list(flow.node_items())
        cnfs = [i for i, (_, node) in enumerate(items) if isinstance(node, CNF)]
        hint = "flow matching trains a flow of [fixed nodes ..., cnf] into one parameter-free prior"
        if len(cnfs) != 1 or cnfs[0] != len(items) - 1 or len(flow._lat) != 1:
            raise FlowspecError("train.objective flow_matching needs exactly one cnf node, last "
                                "in the flow, feeding the only latent", hint=hint)
        (_, prior, port, cond), = flow._lat
        if cond is not None or _trainable(prior) or port != flow._fwd[-1][3][0]:
            raise FlowspecError("flow_matching needs the cnf's output to go straight to a prior "
                                "without parameters or condition", hint=hint)
        pre = [node for _, node in items[:-1]]
        trained = [nid for nid, node in items[:-1] if _trainable(node)]
        if trained:
            raise FlowspecError(f"flow_matching would not train node(s) {', '.join(trained)} "
                                "before the cnf", hint=hint)
        return items[-1][1], pre, prior

    def path_times(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """``n`` path times with density ``(1 + α)(1 - s)^α``: ``s = 1 - u^(1/(1+α))`` in
        ``(0, 1]`` for ``u ~ U[0, 1)`` (``s = u`` at α = 0). Every density with full
        support has the same minimiser (the regression is pointwise in s); α moves the
        net's effort toward the data end, where the field must resolve the data's finest
        structure."""
        u = torch.rand(n, device=like.device, dtype=like.dtype)
        return 1 - u.pow(1 / (1 + self.alpha)) if self.alpha else u

    def loss(self, flow: Any, step: int, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        x, context = self.batch(flow, step, seed)
        ctx = flow.prepare_context(context, x.shape[0])
        with torch.no_grad():
            for node in self.pre:
                x = node(x, ctx)[0]
            z = self.prior.sample(x.shape[0], 1.0, ctx, None).to(x.dtype)
        if self.coupling == "minibatch_ot":
            z = z[minibatch_ot_pairs(x, z)]
        s = self.path_times(x.shape[0], x)
        sv = s.reshape(-1, *[1] * (x.dim() - 1))
        if self.path == "ot":
            xt = (1 - sv) * x + (self.sigma_min + (1 - self.sigma_min) * sv) * z
            target = ((1 - self.sigma_min) * z - x) / self.cnf.T
        else:
            xt = (1 - sv) * x + sv * z + self.sigma_min * torch.randn_like(x)
            target = (z - x) / self.cnf.T
        v = self.cnf.func.net(xt, ctx, s * self.cnf.T)
        fm = (v - target).pow(2).mean()
        return fm, {"fm_loss": fm}
