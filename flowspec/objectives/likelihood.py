"""Maximum likelihood: ``-log p(x)`` on a dataset (loss in nats per dim)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flowspec.data.lazy import is_lazy
from flowspec.errors import DataError
from flowspec.objectives.base import OBJECTIVES, Metric, Objective, local_batch, reference_device
from flowspec.objectives.nll import (
    batch_context,
    check_context,
    evaluate_nll,
    solver_nodes,
    solver_stats,
)
from flowspec.registry import params_schema

if TYPE_CHECKING:  # pragma: no cover
    from flowspec.compile import Flow


#: said at the start of a run with model.dequantize (Flow++)
VARIATIONAL_NOTE = ("variational dequantization: nll and bits/dim are the variational bound "
                    "E_q[-log p(x + u) + log q(u | x)] on the discrete data's code length, "
                    "one draw of u ~ q per example")


#: said at the start of a run with noise augmentation (TarFlow)
NOISE_NOTE = ("noise augmentation: training batches get Gaussian noise of σ = {sigma:g} on "
              "the model's input scale, so the training nll is of noisy data (not a bound); "
              "val/test nll and bits/dim are of the clean data, as without it")


@OBJECTIVES.register(
    "maximum_likelihood", category="data",
    schema=params_schema(noise={
        "type": "number", "minimum": 0, "default": 0.0,
        "description": "TarFlow's noise augmentation: Gaussian noise of this σ added to every "
        "training batch on the model's input scale ([0, 1] for images); evaluation stays on "
        "the clean data. With sample.denoise, samples get one score step x + σ²∇log p(x)"}),
    examples=[{"params": {}}, {"params": {"noise": 0.025}}],
)
class MaximumLikelihood(Objective):
    """``-log p(x)`` on the spec's dataset (the default). ``best`` is chosen on the
    validation split; without one (``data.val_fraction: 0``) no checkpoint is chosen,
    never on test. ``noise: σ`` trains on ``x + σε`` (TarFlow); the density stays a
    density of the model's input, so held-out numbers keep their meaning."""

    key_metric = "nll_nats"
    #: what ``loss`` is measured in: -log p(x) divided by the number of dimensions
    loss_unit = "nats/dim"
    #: a picture's title: bits/dim for discrete data, else the NLL in nats
    title_metrics = ("bits_per_dim", "nll_nats")
    metrics = (
        Metric("nll_nats", "nats", "-log p(x) per example, on the model's input scale; with "
                                   "model.dequantize the variational bound "
                                   "E_q[-log p(x + u) + log q(u | x)] (one draw of u)",
               short="nll"),
        Metric("bits_per_dim", "bits/dim", "discrete data: the discretised NLL in bits per "
                                           "dimension, an upper bound (uniform or, with "
                                           "model.dequantize, variational bound)", short=""),
        Metric("nll_minus_entropy", "nats", "nll_nats minus the data's known entropy (0 is "
                                            "perfect)"),
        Metric("nats_per_dim", "nats/dim", "nll_nats divided by the number of dimensions",
               summary=False),
        Metric("nfe", "", "ODE function evaluations of the forward solve (cnf nodes, summed): "
                          "the logged training step's batch, or the mean per evaluation batch",
               short="nfe"),
        Metric("rnode_kinetic", "", "cnf RNODE kinetic energy K = ∫‖f‖² dt of the logged "
                                    "training batch (unweighted; only with kinetic > 0 or "
                                    "jacobian_norm > 0)"),
        Metric("rnode_jacobian", "", "cnf RNODE Jacobian Frobenius norm J = ∫‖εᵀ∂f/∂z‖² dt "
                                     "of the logged training batch (unweighted, one probe)"),
    )

    def __init__(self, spec: Any, flow: Flow, params: dict[str, Any], *, data_dir: Any = None,
                 device: torch.device = torch.device("cpu"), shard: tuple[int, int] = (0, 1)):
        from flowspec.data import open_spec_dataset

        cfg = spec.train
        self.source, self.prep = open_spec_dataset(spec, data_dir)
        self.device = device
        #: the global batch (train.batch_size) and this rank's slice of it
        self.batch_size = cfg["batch_size"]
        self.rank, self.world = shard
        self.local_batch = local_batch(self.batch_size, self.world)
        self.eval_batches = cfg["eval_batches"]
        self.train_split = self.source.load("train")
        self._splits: dict[str, Any] = {}
        #: nodes whose last call's numbers (a cnf's NFE, RNODE integrals) each row logs
        self.solvers = solver_nodes(flow)
        #: the split ``best`` is chosen on (None: nothing is chosen)
        self.selection_split = "val" if self.source.has_split("val") else None
        x = self.train_split.x
        probe = self.prep(x[:2])
        if tuple(probe.shape[1:]) != tuple(flow.input_shape):
            raise DataError(
                f"the dataset gives examples of shape {list(probe.shape[1:])} after "
                f"preprocessing, but model.input is {list(flow.input_shape)}",
                hint=getattr(self.source, "shape_hint", None)
                or "set model.input to the data's shape (or add a pad/reshape step)")
        check_context(flow, self.train_split)
        #: rows read on demand: batches built ahead by DataLoader workers (data/loader.py)
        self.lazy, self.loader = is_lazy(x), None
        self.loader_options = {"workers": spec.data.get("workers"),
                               "prefetch": spec.data.get("prefetch", 2)}
        # Small datasets live on the device: no loader, no copies per step.
        if not self.lazy and x.numel() * x.element_size() < 2 * 1024**3:
            for key in ("x", "y", "context"):
                t = getattr(self.train_split, key)
                if t is not None:
                    setattr(self.train_split, key, t.to(device))
        n = x.shape[0]
        #: what the run must say at its start about how it was set up
        self.setup_notes: list[str] = []
        if n < self.batch_size:  # a small table: one batch is the whole split
            capped = n - n % self.world
            if capped < self.world:
                raise DataError(f"the training split has {n} examples, fewer than one batch "
                                f"({self.batch_size})", hint="lower train.batch_size")
            self.setup_notes.append(
                f"train.batch_size {self.batch_size} is more than the training split's {n} "
                f"examples: batches of {capped} (one step per epoch; --set "
                "train.batch_size=N to choose)")
            self.batch_size = capped
            self.local_batch = local_batch(capped, self.world)
        self.steps_per_epoch = n // self.batch_size
        if not self.lazy and spec.data.get("workers"):
            self.setup_notes.append("data.workers prepares batches of data read on demand; "
                                    "this dataset is in memory, so it is not used")
        self._perm_epoch, self._perm = -1, None
        self.num_dims = flow.num_dims
        #: σ of the Gaussian noise on training batches (0: none)
        self.noise = float(params.get("noise", 0.0) or 0.0)

    def split(self, name: str):
        """A held-out split (``val`` or ``test``), loaded once."""
        if name == "train":
            return self.train_split
        if name not in self._splits:
            self._splits[name] = self.source.load(name)
        return self._splits[name]

    @property
    def test_split(self):
        return self.split("test")

    def _indices(self, step: int, seed: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.train_split.x.shape[0], generator=gen)
            self._perm_epoch = epoch
        start = i * self.batch_size + self.rank * self.local_batch  # this rank's slice
        return self._perm[start:start + self.local_batch]  # type: ignore[index]

    def batch(self, flow: Any, step: int, seed: int) -> tuple[torch.Tensor, Any]:
        """This rank's training batch of ``step``: ``(model input, context)``, preprocessed
        (dequantization noise from the global RNG, seeded by the trainer per step). An
        objective on the same data (e.g. flow matching) subclasses this one and reuses it."""
        split = self.train_split
        if self.lazy:
            xb, yb, cb = self._loader(seed).get(step)
        else:
            idx = self._indices(step, seed).to(split.x.device)
            xb, yb = split.x[idx], split.y[idx] if split.y is not None else None
            cb = split.context[idx] if split.context is not None else None
        xb = xb.to(self.device, non_blocking=True)
        yb = yb.to(self.device) if yb is not None else None
        cb = cb.to(self.device) if cb is not None else None
        return self.prep(xb), batch_context(flow, yb, cb)

    def _loader(self, seed: int):
        """The loader of a split read on demand, for this run's seed."""
        from flowspec.data.loader import step_loader

        if self.loader is None or self.loader.seed != seed:
            self.loader = step_loader(self.train_split, batch_size=self.batch_size,
                                      local_batch=self.local_batch, rank=self.rank, seed=seed,
                                      **self.loader_options)
        return self.loader

    def loss(self, flow: Any, step: int, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        x, context = self.batch(flow, step, seed)
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        nll = -flow.log_prob(x, context).mean()
        return nll / self.num_dims, {"nll_nats": nll, **solver_stats(self.solvers)}

    def train_batches(self, flow: Flow):
        """The whole training split as model-input batches of about 64 MiB (dequantization
        seeded), for fitting data-dependent statistics (:mod:`flowspec.data_statistics`)."""
        split = self.train_split
        per_example = max(1, split.x[0].numel())
        # rows read from disk: chunks of 4 MiB, not 64 (resident memory stays small)
        size = max(self.batch_size, (1 << (20 if self.lazy else 24)) // per_example)

        def gen():
            noise = torch.Generator(device=self.device).manual_seed(0)
            for start in range(0, split.x.shape[0], size):
                sl = slice(start, start + size)
                yb = split.y[sl].to(self.device) if split.y is not None else None
                cb = split.context[sl].to(self.device) if split.context is not None else None
                x = self.prep(split.x[sl].to(self.device), generator=noise)
                if getattr(flow, "dequantizer", None) is not None:  # what the nodes will see
                    with torch.no_grad():  # in training-size chunks: q has attention nets
                        x = torch.cat([flow.dequantizer(part)[0]
                                       for part in x.split(self.batch_size)])
                yield x, batch_context(flow, yb, cb)

        return gen

    def prepare_fresh_run(self, flow: Flow, spec: Any, say: Any = print) -> tuple[Any, dict]:
        """Before the first step of a fresh run: fit data-dependent statistics on the
        training split, pin the data files in the spec that the run stores, and describe
        the data for ``run.json``. Returns ``(spec to store, data record)``."""
        from flowspec.data.files import pin_spec
        from flowspec.data_statistics import fit_statistics

        fitted = fit_statistics(flow, self.train_batches(flow))
        if fitted:
            say(f"fitted data statistics of {', '.join(fitted)} on the training split "
                f"({len(self.train_split)} examples)")
        return pin_spec(spec, self.source), self.data_record()

    def data_record(self) -> dict:
        """Dataset, split sizes and seeds (and, for files, paths and sha256) for run.json."""
        src = self.source
        out: dict[str, Any] = {
            "dataset": getattr(getattr(src, "source", src), "registered_name", None),
            "n_train": len(self.train_split),
            "n_val": len(src.load("val")) if src.has_split("val") else 0,
            "n_test": len(src.load("test")),
            "val_fraction": getattr(src, "fraction", 0.0),
            "split_seed": getattr(src, "seed", None),
        }
        inner = getattr(src, "source", src)
        if hasattr(inner, "record"):
            out["file"] = inner.record()
        return out

    def start_warnings(self) -> list[str]:
        """The data's own notes (discrete or few-valued columns, ...), said at start."""
        return list(getattr(self.prep, "notes", ())) + self.setup_notes + self._bound_notes()

    def _bound_notes(self) -> list[str]:
        notes = [NOISE_NOTE.format(sigma=self.noise)] if self.noise else []
        if getattr(self.prep, "dequantize", None) == "variational":
            notes.append(VARIATIONAL_NOTE)
        return notes

    def train_metrics(self, row: dict[str, Any], flow: Flow) -> dict[str, Any]:
        """``bits_per_dim`` of the training NLL, for discrete data; the loader's throughput
        (``loader_examples_per_s``, ``data_wait``) for data read on demand."""
        out = self.loader.stats() if self.loader is not None else {}
        n_bits = getattr(self.prep, "n_bits", None)
        if "nll_nats" not in row or not n_bits:
            return out
        from flowspec.metrics import bits_per_dim

        out["bits_per_dim"] = float(bits_per_dim(row["nll_nats"], flow.num_dims, n_bits))
        return out

    def evaluate(self, flow: Flow, split: str = "test", max_batches: int | None = None) -> dict:
        return evaluate_nll(flow, self.split(split), self.prep,
                            batch_size=max(self.batch_size, 256),
                            device=self.device, max_batches=max_batches or self.eval_batches,
                            entropy=self.source.entropy, shard=(self.rank, self.world))

    def draw(self, flow: Flow, path: Path, n: int, temperature: float) -> Path:
        return draw_samples(flow, self.source, self.prep, path, n, temperature,
                            data=self.test_split)


    @classmethod
    def evaluate_trained(cls, flow: Flow, spec: Any, *, split: str = "test",
                         data_dir: Any = None, batch_size: int = 500) -> dict[str, Any]:
        """The NLL of ``split`` over the whole split (one fixed dequantization draw)."""
        from flowspec.data import open_spec_dataset

        source, prep = open_spec_dataset(spec, data_dir)
        out: dict[str, Any] = evaluate_nll(flow, source.load(split), prep,
                                           batch_size=batch_size,
                                           device=reference_device(flow),
                                           entropy=source.entropy)
        if getattr(flow, "dequantizer", None) is not None:
            out["bound"] = "variational: E_q[-log p(x+u) + log q(u|x)], one draw of u"
        return out

    @classmethod
    def reference_points(cls, flow: Flow, spec: Any, n: int, data_dir: Any = None
                         ) -> torch.Tensor:
        """The first ``n`` test points on the model's input scale (no noise)."""
        from flowspec.data import open_dataset

        source, prep = open_dataset(spec.data, data_dir)
        return prep.deterministic(source.load("test").x[:n])


@torch.no_grad()
def draw_samples(flow: Flow, source: Any, prep: Any, path: Path, n: int, temperature: float,
                 data: Any = None, context: Any = None) -> Path:
    """Images -> PNG grid; 2-D points -> scatter + density next to the data."""
    from flowspec.sampling import draw_samples as draw

    return draw(flow, source, prep, path, n, temperature, data=data, context=context)
