"""Training objectives: what one step minimises, how a run is evaluated, what it draws.

* :class:`MaximumLikelihood` -- ``-log p(x)`` on a dataset (loss in nats per dim).
* :class:`ReverseKL` -- ``E_q[log q(x) + β U(x)]`` on a target energy, sampling
  through the flow's inverse (noise -> data), with β annealed from ``beta0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowspec.compile import Flow
from flowspec.errors import DataError
from flowspec.train.distributed import local_batch
from flowspec.train.evaluate import batch_context, check_context, evaluate_nll


class MaximumLikelihood:
    """``-log p(x)`` on a dataset. Model selection (``best``) uses the validation split;
    without one (``data.val_fraction: 0``) no checkpoint is chosen, never on test."""

    key_metric = "nll_nats"
    #: what ``loss`` is measured in: -log p(x) divided by the number of dimensions
    loss_unit = "nats/dim"

    def __init__(self, spec: Any, flow: Flow, data_dir: Any, device: torch.device,
                 shard: tuple[int, int] = (0, 1)):
        from flowspec.data import open_spec_dataset

        cfg = spec.train
        self.source, self.prep = open_spec_dataset(spec, data_dir)
        self.warnings = list(getattr(self.prep, "notes", ()))  # said at start (data columns)
        self.device = device
        #: the global batch (train.batch_size) and this rank's slice of it
        self.batch_size = cfg["batch_size"]
        self.rank, self.world = shard
        self.local_batch = local_batch(self.batch_size, self.world)
        self.eval_batches = cfg["eval_batches"]
        self.train_split = self.source.load("train")
        self._splits: dict[str, Any] = {}
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
        # Small datasets live on the device: no loader, no copies per step.
        if x.numel() * x.element_size() < 2 * 1024**3:
            for key in ("x", "y", "context"):
                t = getattr(self.train_split, key)
                if t is not None:
                    setattr(self.train_split, key, t.to(device))
        n = x.shape[0]
        if n < self.batch_size:
            raise DataError(f"the training split has {n} examples, fewer than one batch "
                            f"({self.batch_size})", hint="lower train.batch_size")
        self.steps_per_epoch = n // self.batch_size
        self._perm_epoch, self._perm = -1, None
        self.num_dims = flow.num_dims

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

    def loss(self, flow: Flow, step: int, seed: int) -> tuple[torch.Tensor, dict[str, float]]:
        split = self.train_split
        idx = self._indices(step, seed).to(split.x.device)
        xb = split.x[idx].to(self.device, non_blocking=True)
        yb = split.y[idx].to(self.device) if split.y is not None else None
        cb = split.context[idx].to(self.device) if split.context is not None else None
        x = self.prep(xb)
        nll = -flow.log_prob(x, batch_context(flow, yb, cb)).mean()
        return nll / self.num_dims, {"nll_nats": nll}

    def train_batches(self, flow: Flow):
        """The whole training split as model-input batches of about 64 MiB (dequantization
        seeded), for fitting data-dependent statistics (:mod:`flowspec.train.datafit`)."""
        split = self.train_split
        per_example = max(1, split.x[0].numel())
        size = max(self.batch_size, (1 << 24) // per_example)

        def gen():
            noise = torch.Generator(device=self.device).manual_seed(0)
            for start in range(0, split.x.shape[0], size):
                sl = slice(start, start + size)
                yb = split.y[sl].to(self.device) if split.y is not None else None
                cb = split.context[sl].to(self.device) if split.context is not None else None
                x = self.prep(split.x[sl].to(self.device), generator=noise)
                yield x, batch_context(flow, yb, cb)

        return gen

    def prepare_fresh_run(self, flow: Flow, spec: Any, say: Any = print) -> tuple[Any, dict]:
        """Before the first step of a fresh run: fit data-dependent statistics on the
        training split, pin the data files in the spec that the run stores, and describe
        the data for ``run.json``. Returns ``(spec to store, data record)``."""
        from flowspec.data.files import pin_spec
        from flowspec.train.datafit import fit_statistics

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

    def evaluate(self, flow: Flow, split: str = "test", max_batches: int | None = None) -> dict:
        return evaluate_nll(flow, self.split(split), self.prep,
                            batch_size=max(self.batch_size, 256),
                            device=self.device, max_batches=max_batches or self.eval_batches,
                            entropy=self.source.entropy, shard=(self.rank, self.world))

    def draw(self, flow: Flow, path: Path, n: int, temperature: float) -> Path:
        return draw_samples(flow, self.source, self.prep, path, n, temperature,
                            data=self.test_split)


class ReverseKL:
    """``E_q[log q + β U]`` on an energy; evaluated on fresh samples of the flow, so the
    evaluation itself is a fair basis for choosing ``best``."""

    key_metric = "kl_nats"
    selection_split = "samples"
    #: ``loss`` is E_q[log q + β U] per sample (not per dim)
    loss_unit = "nats"

    def __init__(self, spec: Any, flow: Flow, data_dir: Any, device: torch.device,
                 shard: tuple[int, int] = (0, 1)):
        from flowspec.energies import build_energy

        cfg = spec.train
        if cfg.get("target") is None:
            from flowspec.errors import SpecError

            raise SpecError("train.objective is reverse_kl but train.target is not set",
                            hint="e.g. target: U1")
        self.energy = build_energy(cfg["target"])
        self.batch_size = cfg["batch_size"]
        self.local_batch = local_batch(self.batch_size, shard[1])  # samples per rank
        self.steps_per_epoch = cfg["steps_per_epoch"] or 1000
        self.device = device
        total = cfg["steps"] or cfg["epochs"] * self.steps_per_epoch
        self.beta0, self.anneal_steps, self.warnings = anneal_plan(cfg.get("anneal"), total)

    def beta(self, step: int) -> float:
        from flowspec.train.reverse_kl import beta_schedule

        return beta_schedule(step, self.beta0, self.anneal_steps)

    def loss(self, flow: Flow, step: int, seed: int) -> tuple[torch.Tensor, dict[str, float]]:
        from flowspec.train.reverse_kl import reverse_kl_loss

        beta = self.beta(step)
        loss, stats = reverse_kl_loss(flow, self.energy, self.local_batch, beta)
        return loss, {**stats, "beta": beta}

    def evaluate(self, flow: Flow, split: str = "test", max_batches: int | None = None) -> dict:
        from flowspec.train.reverse_kl import evaluate_reverse_kl

        return evaluate_reverse_kl(flow, self.energy)

    def draw(self, flow: Flow, path: Path, n: int, temperature: float) -> Path:
        from flowspec.viz.energy import plot_energy_comparison
        from flowspec.viz.notes import run_title

        return plot_energy_comparison(flow, self.energy, path, n_samples=n,
                                      temperatures=[temperature], title=run_title(flow))


def anneal_plan(anneal: dict | None, total: int) -> tuple[float, int, list[str]]:
    """``(beta0, anneal steps, warnings)`` of a ``train.anneal`` section for a run of
    ``total`` steps. ``fraction`` follows the run's length; a fixed ``steps`` longer
    than the run leaves β below 1 at the end, which fits the wrong target: warned."""
    if not anneal:
        return 1.0, 0, []
    beta0, steps, fraction = anneal["beta0"], anneal.get("steps", 0), anneal.get("fraction")
    if fraction is not None:
        if steps:
            from flowspec.errors import SpecError

            raise SpecError("train.anneal: give steps or fraction, not both",
                            hint="fraction: 0.5 anneals over the first half of the run")
        return beta0, max(1, round(fraction * total)), []
    warnings = []
    if steps > total:
        from flowspec.train.reverse_kl import beta_schedule

        end = beta_schedule(total, beta0, steps)
        warnings.append(
            f"train.anneal.steps ({steps}) is longer than the run ({total} steps): β ends at "
            f"{end:.2f}, not 1, so the flow fits a flattened target. Use --set "
            f"train.anneal.steps={total // 2}, or write anneal: {{fraction: 0.5}} in the spec "
            f"(annealing over half the run, whatever its length)")
    return beta0, steps, warnings


def build_objective(spec: Any, flow: Flow, data_dir: Any, device: torch.device,
                    shard: tuple[int, int] = (0, 1)):
    """The spec's objective; ``shard = (rank, world)`` for a data-parallel rank."""
    kind = spec.train["objective"]
    cls = ReverseKL if kind == "reverse_kl" else MaximumLikelihood
    return cls(spec, flow, data_dir, device, shard)


@torch.no_grad()
def draw_samples(flow: Flow, source: Any, prep: Any, path: Path, n: int, temperature: float,
                 data: Any = None, context: Any = None) -> Path:
    """Images -> PNG grid; 2-D points -> scatter + density next to the data."""
    from flowspec.sampling import draw_samples as draw

    return draw(flow, source, prep, path, n, temperature, data=data, context=context)
