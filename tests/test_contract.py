"""The contract every registered node, prior and net satisfies, tested from the registry.

One parametrised test per property runs over every entry and every example of
its registration, so a node added later (in this package or by a plugin) is
tested with no new test code. Test ids read ``name[example_index]``.

What a registration provides (``@NODES.register(..., examples=[...], **extra)``):

* ``examples``: ``{"in_shape": [...], "params": {...}, "context_shape": [...]}``;
  ``params`` and ``context_shape`` are optional; a multi-input node gives
  ``in_shape`` as a list of shapes. Keep shapes small (the Jacobian is dense).
* ``domain=`` (extra): where inputs are drawn. ``"real"`` (default): standard
  normal; ``"unit_interval"``: uniform in (0.05, 0.95) (``logit``);
  ``"positive"``: log-normal.
* ``warmup=True`` (extra): the node has data-dependent initialisation or batch
  statistics (``actnorm``, ``batch_norm``). One train-mode forward on a batch
  runs first; the exact checks then run in eval mode.

Priors: ``examples`` of ``{"shape", "context_shape", "cond_shape", "params"}``
(default ``[{"shape": [4]}]``); extra ``location_scale=False`` opts out of the
temperature checks (temperature 0 gives the mode, spread scales linearly).
Nets: ``examples`` of ``{"in_shape", "out_shape", "context_shape", "params"}``.

Every floating parameter is jittered (seeded) before testing, so zero-initialised
nodes (couplings, diag_scale) are not tested at the identity.
"""

from __future__ import annotations

import contextlib
import inspect
import math

import jsonschema
import pytest
import torch

from flowspec.bijectors import NODES
from flowspec.bijectors.transformers import TRANSFORMERS
from flowspec.check import jacobian_logdet, jitter_parameters
from flowspec.distributions import PRIORS
from flowspec.nets import NETS, build_net

BATCH = 3
WARMUP_BATCH = 16


# -- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _tuple(shape) -> tuple[int, ...] | None:
    return tuple(int(d) for d in shape) if shape is not None else None


def _in_shape(entry, example):
    if entry.obj.n_in > 1:
        return tuple(_tuple(s) for s in example["in_shape"])
    return _tuple(example["in_shape"])


def _ports(t) -> tuple[torch.Tensor, ...]:
    return (t,) if torch.is_tensor(t) else tuple(t)


def _shapes(t):
    shapes = tuple(tuple(p.shape[1:]) for p in _ports(t))
    return shapes[0] if torch.is_tensor(t) else shapes


def _flat(t) -> torch.Tensor:
    return torch.cat([p.reshape(p.shape[0], -1) for p in _ports(t)], 1)


def _maxabs(t: torch.Tensor) -> float:
    return float(t.detach().abs().max())


def _draw(domain: str, batch: int, shape, gen: torch.Generator, dtype) -> torch.Tensor:
    if domain == "unit_interval":
        t = 0.05 + 0.9 * torch.rand(batch, *shape, generator=gen, dtype=torch.float64)
    elif domain == "positive":
        t = torch.exp(torch.randn(batch, *shape, generator=gen, dtype=torch.float64))
    elif domain == "real":
        t = torch.randn(batch, *shape, generator=gen, dtype=torch.float64)
    else:
        raise AssertionError(f"unknown domain '{domain}' in a node registration")
    return t.to(dtype)


class Case:
    """A node built from one registration example (an index, or an example itself), with
    inputs, ready to check."""

    def __init__(self, entry, index, dtype=torch.float64, device="cpu", seed: int = 0):
        example = entry.examples[index] if isinstance(index, int) else index
        self.entry, self.cls = entry, entry.obj
        self.in_shape = _in_shape(entry, example)
        self.context_shape = _tuple(example.get("context_shape"))
        self.params = entry.with_defaults(example.get("params"))
        self.domain = entry.extra.get("domain", "real")
        self.warmup = bool(entry.extra.get("warmup", False))
        torch.manual_seed(seed)
        with default_dtype(dtype):
            self.node = NODES.build({entry.name: example.get("params") or {}}, self.in_shape,
                                    context_shape=self.context_shape)
        self.node.to(device=device, dtype=dtype)
        jitter_parameters(self.node, seed)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.dtype, self.device = dtype, device
        if self.warmup:
            self.node.train()
            with torch.no_grad():
                self.node(self.inputs(WARMUP_BATCH), self.context(WARMUP_BATCH))
            self.node.eval()
        self.x = self.inputs(BATCH)
        self.ctx = self.context(BATCH)

    def inputs(self, batch: int):
        shapes = self.in_shape if self.cls.n_in > 1 else (self.in_shape,)
        xs = tuple(_draw(self.domain, batch, s, self.gen, self.dtype).to(self.device)
                   for s in shapes)
        return xs if self.cls.n_in > 1 else xs[0]

    def context(self, batch: int) -> torch.Tensor | None:
        if self.context_shape is None:
            return None
        return torch.randn(batch, *self.context_shape, generator=self.gen,
                           dtype=torch.float64).to(self.dtype).to(self.device)

    @property
    def tolerance(self) -> float:
        """The built node's own tolerance: a conditioner's depends on its transformer."""
        return float(getattr(self.node, "tolerance", 0.0) or 0.0)

    @property
    def analytic(self) -> str:
        return str(getattr(self.node, "analytic", "both"))


def _transformer_cases():
    """Every transformer in every conditioner node (a node whose schema has a
    ``transformer`` parameter), on that node's first example, so a new transformer
    or conditioner is covered with no new test code."""
    out = []
    for node in NODES:
        if "transformer" not in node.schema.get("properties", {}):
            continue
        example = node.examples[0]
        for t in TRANSFORMERS:
            params = {**(example.get("params") or {}), "transformer": t.name}
            out.append(pytest.param(node, {**example, "params": params},
                                    id=f"{node.name}[{t.name}]"))
    return out


def _node_cases():
    return [pytest.param(e, i, id=f"{e.name}[{i}]") for e in NODES
            for i in range(len(e.examples))] + _transformer_cases()


def _entries(reg):
    return [pytest.param(e, id=e.name) for e in reg]


def _norm(value):
    """Tuples as lists, so a constructor's ``(256, 256)`` equals the schema's ``[256, 256]``."""
    if isinstance(value, (tuple, list)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _check_defaults(entry, structural: tuple[str, ...]) -> None:
    sig = inspect.signature(entry.obj.__init__ if inspect.isclass(entry.obj) else entry.obj)
    ctor = {n: p for n, p in sig.parameters.items()
            if n not in ("self", *structural)
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    props = entry.schema.get("properties", {})
    assert set(ctor) == set(props), (
        f"constructor parameters {sorted(ctor)} != schema properties {sorted(props)}")
    for name, sch in props.items():
        got = ctor[name].default
        if "default" in sch:
            assert got is not inspect.Parameter.empty, f"'{name}' has no constructor default"
            assert _norm(got) == _norm(sch["default"]), (
                f"'{name}': constructor default {got!r} != schema default {sch['default']!r}")
        else:
            assert got is inspect.Parameter.empty, f"'{name}' is required by the schema"


def _check_schema(entry, examples_params) -> None:
    jsonschema.Draft7Validator.check_schema(entry.schema)
    # Shared definitions ($ref: "#/definitions/net" ...) accept anything here.
    wrapped = {**entry.schema,
               "definitions": {"net": {}, "prior": {}, "energy": {}, "transformer": {}}}
    validator = jsonschema.Draft7Validator(wrapped)
    for params in examples_params:
        errors = [e.message for e in validator.iter_errors(params or {})]
        assert not errors, f"example params {params} do not match the schema: {errors}"


# -- nodes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", _entries(NODES))
def test_node_registration(entry):
    """(6) schema defaults == constructor defaults, (7) valid draft-07, (8) a doc, examples."""
    assert entry.doc.strip(), f"node '{entry.name}' has no doc (class docstring)"
    assert entry.examples, f"node '{entry.name}' registers no examples for the contract test"
    assert entry.obj.analytic in ("both", "forward", "inverse")
    if entry.obj.analytic != "both":
        assert entry.obj.tolerance > 0, "a numerically inverted node states its tolerance"
    _check_defaults(entry, ("in_shape", "context_shape"))
    _check_schema(entry, [ex.get("params") for ex in entry.examples])


@pytest.mark.parametrize("entry", _entries(TRANSFORMERS))
def test_transformer_registration(entry):
    """Doc, schema defaults == constructor defaults, a stated tolerance when solved, and
    ``count`` agrees with what the transformer reads; zero parameters are the identity
    (or, where declared otherwise, an increasing map)."""
    assert entry.doc.strip(), f"transformer '{entry.name}' has no doc"
    _check_defaults(entry, ("shape",))
    _check_schema(entry, [])
    if not entry.obj.analytic_inverse:
        assert entry.obj.tolerance > 0, "a numerically inverted transformer states its tolerance"
    params = entry.defaults()
    with default_dtype(torch.float64):
        t = entry.obj((3,), **params)
    x = torch.linspace(-2.5, 2.5, 12, dtype=torch.float64).reshape(4, 3)
    theta = torch.zeros(4, 3, entry.obj.count(**params), dtype=torch.float64)
    y, ld = t(x, theta)
    if entry.obj.identity_at_zero:
        assert torch.allclose(y, x, atol=1e-9)
        assert torch.allclose(ld, torch.zeros_like(x), atol=1e-9)
    else:
        flat = y.reshape(-1)
        assert (flat[1:] > flat[:-1]).all() and torch.isfinite(ld).all()


@pytest.mark.parametrize("entry,index", _node_cases())
def test_node_float64(entry, index):
    """Shapes, round trip to 1e-10, log-det vs autograd, cancellation, no_grad."""
    c = Case(entry, index)
    node, x, ctx = c.node, c.x, c.ctx
    expected = c.cls.out_shape(c.in_shape, **c.params)
    expected = tuple(tuple(s) for s in expected) if c.cls.n_out > 1 else tuple(expected)

    y, ld = node(x, ctx)
    assert _shapes(y) == expected, f"output shape {_shapes(y)} != out_shape {expected}"
    assert ld.shape == (BATCH,) and ld.dtype == torch.float64
    xr, ld_inv = node.inverse(y, ctx)
    assert _shapes(xr) == (c.in_shape if c.cls.n_in > 1 else tuple(c.in_shape))
    assert ld_inv.shape == (BATCH,)

    tol = max(1e-10, c.tolerance)
    assert _maxabs(_flat(xr) - _flat(x)) <= tol, "inverse(forward(x)) != x"
    assert _maxabs(ld + ld_inv) <= max(1e-9, c.tolerance), (
        "forward and inverse log-dets do not cancel")

    if c.analytic == "inverse":
        ref, got = jacobian_logdet(node.inverse, y, ctx), ld_inv
    else:
        ref, got = jacobian_logdet(node, x, ctx), ld
    ld_tol = max(1e-8, c.tolerance)  # ODE-solved log-dets hold to the solver's tolerance
    assert torch.allclose(got.detach(), ref, rtol=ld_tol, atol=ld_tol), (
        f"log-det {got.tolist()} != autograd log|det J| {ref.tolist()}")

    with torch.no_grad():
        y2, ld2 = node(x, ctx)
        xr2, ld_inv2 = node.inverse(y2, ctx)
    assert torch.allclose(_flat(y2), _flat(y).detach(), rtol=0, atol=1e-12)
    assert torch.allclose(ld2, ld.detach(), rtol=0, atol=1e-12)
    assert torch.allclose(_flat(xr2), _flat(x), rtol=0, atol=tol)
    assert torch.allclose(ld_inv2, ld_inv.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("entry,index", _node_cases())
def test_node_float32(entry, index):
    """Round trip to 1e-5 in float32 (plus the node's stated tolerance)."""
    c = Case(entry, index, dtype=torch.float32)
    y, ld = c.node(c.x, c.ctx)
    assert all(p.dtype == torch.float32 for p in _ports(y)) and ld.dtype == torch.float32
    xr, ld_inv = c.node.inverse(y, c.ctx)
    tol = max(1e-5, c.tolerance)
    err = (_flat(xr) - _flat(c.x)).abs() - 1e-5 * _flat(c.x).abs()
    assert float(err.detach().max()) <= tol, "float32 inverse(forward(x)) != x"
    assert _maxabs(ld + ld_inv) <= max(1e-4, c.tolerance) * max(1.0, _maxabs(ld))


@pytest.mark.parametrize("entry,index", _node_cases())
def test_node_modes_and_gradients(entry, index):
    """Runs in train and eval mode (round trip in both unless the node has batch statistics);
    gradients reach the parameters and are finite."""
    c = Case(entry, index)
    for train in (True, False):
        c.node.train(train)
        y, ld = c.node(c.x, c.ctx)
        xr, ld_inv = c.node.inverse(y, c.ctx)
        assert all(torch.isfinite(p).all() for p in _ports(y)) and torch.isfinite(ld).all()
        assert torch.isfinite(_flat(xr)).all() and torch.isfinite(ld_inv).all()
        if not c.warmup or not train:
            tol = max(1e-10, c.tolerance)
            assert _maxabs(_flat(xr) - _flat(c.x)) <= tol, f"train={train}"
    c.node.train(not c.warmup)
    params = [p for p in c.node.parameters() if p.requires_grad]
    xs = tuple(p.detach().requires_grad_(True) for p in _ports(c.x))
    y, ld = c.node(xs if c.cls.n_in > 1 else xs[0], c.ctx)
    (_flat(y).pow(2).sum() + ld.sum()).backward()
    grads = [p.grad for p in params if p.grad is not None]
    if params:
        assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in xs)


@pytest.mark.parametrize("entry,index", _node_cases())
def test_node_out_shape_is_static(entry, index):
    """``out_shape`` needs only shapes and parameters, and matches a batch of 1."""
    c = Case(entry, index)
    out = c.cls.out_shape(c.in_shape, **c.params)
    x1 = tuple(p[:1] for p in _ports(c.x))
    y1, ld1 = c.node(x1 if c.cls.n_in > 1 else x1[0],
                     c.ctx[:1] if c.ctx is not None else None)
    out = tuple(tuple(s) for s in out) if c.cls.n_out > 1 else tuple(out)
    assert _shapes(y1) == out and ld1.shape == (1,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("entry,index", _node_cases())
def test_node_cuda(entry, index):
    """The same node on CUDA: same results as on CPU (float64), round trip in float32."""
    cpu = Case(entry, index)
    gpu = Case(entry, index, device="cuda")
    y_cpu, ld_cpu = cpu.node(cpu.x, cpu.ctx)
    y_gpu, ld_gpu = gpu.node(gpu.x, gpu.ctx)
    assert torch.allclose(_flat(y_gpu).cpu(), _flat(y_cpu), rtol=1e-7, atol=1e-7)
    assert torch.allclose(ld_gpu.cpu(), ld_cpu, rtol=1e-7, atol=1e-7)
    c = Case(entry, index, dtype=torch.float32, device="cuda")
    y, ld = c.node(c.x, c.ctx)
    xr, ld_inv = c.node.inverse(y, c.ctx)
    err = (_flat(xr) - _flat(c.x)).abs() - 1e-5 * _flat(c.x).abs()
    assert float(err.detach().max()) <= max(1e-5, c.tolerance)


# -- priors ----------------------------------------------------------------------------------
def _prior_cases():
    out = []
    for e in PRIORS:
        for i, ex in enumerate(e.examples or [{"shape": [4]}]):
            out.append(pytest.param(e, ex, id=f"{e.name}[{i}]"))
    return out


class PriorCase:
    def __init__(self, entry, example, n: int = 5, seed: int = 0):
        self.shape = _tuple(example["shape"])
        self.context_shape = _tuple(example.get("context_shape"))
        self.cond_shape = _tuple(example.get("cond_shape"))
        torch.manual_seed(seed)
        with default_dtype(torch.float64):
            self.prior = PRIORS.build({entry.name: example.get("params") or {}}, self.shape,
                                      context_shape=self.context_shape,
                                      cond_shape=self.cond_shape).double()
        jitter_parameters(self.prior, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        self.n = n
        self.ctx = (torch.randn(n, *self.context_shape, generator=gen, dtype=torch.float64)
                    if self.context_shape else None)
        self.cond = (torch.randn(n, *self.cond_shape, generator=gen, dtype=torch.float64)
                     if self.cond_shape else None)

    def sample(self, temperature: float, seed: int = 0) -> torch.Tensor:
        torch.manual_seed(seed)
        return self.prior.sample(self.n, temperature, self.ctx, self.cond)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z, self.ctx, self.cond)


@pytest.mark.parametrize("entry", _entries(PRIORS))
def test_prior_registration(entry):
    assert entry.doc.strip(), f"prior '{entry.name}' has no doc"
    _check_defaults(entry, ("shape", "context_shape", "cond_shape"))
    _check_schema(entry, [ex.get("params") for ex in entry.examples])


@pytest.mark.parametrize("entry,example", _prior_cases())
def test_prior_sample_and_log_prob(entry, example):
    c = PriorCase(entry, example)
    z = c.sample(1.0)
    assert z.shape == (c.n, *c.shape) and z.dtype == torch.float64
    lp = c.log_prob(z)
    assert lp.shape == (c.n,) and torch.isfinite(lp).all()
    with torch.no_grad():
        assert torch.isfinite(c.log_prob(c.sample(0.7, seed=1))).all()
    if not entry.extra.get("location_scale", True):
        return
    # Temperature 0 is the mode; the spread around it scales linearly with temperature.
    mode = c.sample(0.0, seed=2)
    assert torch.equal(mode, c.sample(0.0, seed=3)), "temperature 0 is not deterministic"
    lp_mode = c.log_prob(mode)
    for k in range(4):
        bumped = mode + 0.05 * torch.randn(mode.shape, generator=torch.Generator().manual_seed(k),
                                           dtype=mode.dtype)
        assert (c.log_prob(bumped) <= lp_mode + 1e-12).all(), "temperature-0 sample is not a mode"
    z1, z_half = c.sample(1.0, seed=4), c.sample(0.5, seed=4)
    assert torch.allclose(z_half - mode, 0.5 * (z1 - mode), atol=1e-10)


def _grid_integral(prior, lim: float = 40.0, n: int = 40001) -> float:
    t = torch.linspace(-lim, lim, n, dtype=torch.float64)
    dens = torch.exp(prior.log_prob(t[:, None]))
    return float(torch.trapezoid(dens.detach(), t))


@pytest.mark.parametrize("name", ["standard_normal", "logistic", "diag_gaussian"])
def test_prior_density_is_normalised(name):
    with default_dtype(torch.float64):
        prior = PRIORS.build(name, (1,)).double()
    jitter_parameters(prior, amount=0.5)
    assert _grid_integral(prior) == pytest.approx(1.0, abs=1e-8)


def test_priors_match_torch_distributions():
    d = torch.distributions
    gen = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(7, 2, 3, generator=gen, dtype=torch.float64)
    with default_dtype(torch.float64):
        normal = PRIORS.build("standard_normal", (2, 3))
        logistic = PRIORS.build("logistic", (2, 3))
        diag = PRIORS.build("diag_gaussian", (2, 3)).double()
    jitter_parameters(diag, amount=0.5)
    ref = d.Normal(0.0, 1.0).log_prob(z).sum((1, 2))
    assert torch.allclose(normal.log_prob(z), ref, atol=1e-12)
    std_logistic = d.TransformedDistribution(
        d.Uniform(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
        [d.SigmoidTransform().inv])
    assert torch.allclose(logistic.log_prob(z), std_logistic.log_prob(z).sum((1, 2)), atol=1e-10)
    ref = d.Normal(diag.mean, torch.exp(diag.log_scale)).log_prob(z).sum((1, 2))
    assert torch.allclose(diag.log_prob(z), ref.detach(), atol=1e-12)


def test_prior_samples_have_the_right_spread():
    torch.manual_seed(0)
    n = 20000
    z = PRIORS.build("standard_normal", (2,)).sample(n, temperature=0.5)
    assert float(z.std()) == pytest.approx(0.5, rel=0.03)
    z = PRIORS.build("logistic", (2,)).sample(n)
    assert float(z.var()) == pytest.approx(math.pi ** 2 / 3, rel=0.05)


# -- nets ------------------------------------------------------------------------------------
def _net_cases():
    return [pytest.param(e, ex, id=f"{e.name}[{i}]") for e in NETS
            for i, ex in enumerate(e.examples)]


@pytest.mark.parametrize("entry", _entries(NETS))
def test_net_registration(entry):
    assert entry.doc.strip(), f"net '{entry.name}' has no doc"
    assert entry.examples, f"net '{entry.name}' registers no examples"
    _check_defaults(entry, ("in_shape", "out_shape", "context_shape"))
    _check_schema(entry, [ex.get("params") for ex in entry.examples])


@pytest.mark.parametrize("entry,example", _net_cases())
def test_net_shapes_and_zero_init(entry, example):
    in_shape, out_shape = _tuple(example["in_shape"]), _tuple(example["out_shape"])
    ctx_shape = _tuple(example.get("context_shape"))
    params = dict(example.get("params") or {})
    torch.manual_seed(0)
    net = build_net({entry.name: params}, in_shape, out_shape, ctx_shape)
    x = torch.randn(2, *in_shape)
    ctx = torch.randn(2, *ctx_shape) if ctx_shape else None
    h = net(x, ctx)
    assert h.shape == (2, *out_shape) and torch.isfinite(h).all()
    if "zero_init" in entry.schema.get("properties", {}):
        zero = build_net({entry.name: {**params, "zero_init": True}}, in_shape, out_shape,
                         ctx_shape)
        assert torch.equal(zero(x, ctx), torch.zeros_like(h)), "zero_init output is not zero"
        live = build_net({entry.name: {**params, "zero_init": False}}, in_shape, out_shape,
                         ctx_shape)
        assert float(live(x, ctx).detach().abs().max()) > 0
    if ctx is not None:  # the context is used
        jitter_parameters(net, amount=0.5)
        assert not torch.allclose(net(x, ctx), net(x, ctx + 1.0))
