"""One training request: what to train (or resume), with which overrides, where and how.

``flowspec train``, ``--resume``, ``--sweep`` and :func:`flowspec.fit` all build a
:class:`TrainRequest` with :func:`make_request`, and the library functions of
:mod:`flowspec.train.session` run it. Every training option is a spec key, so a
request is only: the spec (resolved, with its ``--set`` overrides) or the run to
resume, plus where the run goes and runs (``out``, ``data_dir``, ``device``,
``nproc``). Command-line flags are sugar for ``--set`` (:func:`flag_overrides`):
``--seed N`` is ``train.seed=N``, ``--compile`` is ``train.compile=true``, ``--data
FILE`` is a ``data.dataset`` override that reads the file.

Adding a training option is one key in :data:`flowspec.train.config.TRAIN_SCHEMA`
and its use where the loop reads ``spec.train``; ``--set train.<key>=...`` reaches it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowspec.errors import FlowspecError

Overrides = Sequence[str] | dict[str, Any] | None


def override_strings(overrides: Overrides) -> list[str]:
    """``--set`` strings of overrides given as strings or as a ``{path: value}`` dict."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{path}={json.dumps(value)}" for path, value in overrides.items()]
    if isinstance(overrides, str):
        raise FlowspecError(f"overrides must be a list of PATH=VALUE strings or a dict, got "
                            f"the string '{overrides}'", hint=f"write ['{overrides}']")
    return [str(o) for o in overrides]


def run_name_for_data(path: str | os.PathLike) -> str:
    """The run name of a run on a data file: its stem, in the letters a spec name allows
    (``heart disease.csv`` -> ``heart_disease``), so a table's runs are not filed under
    the spec's own data set's name."""
    import re

    stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(path).stem) or "data"
    return stem if re.match(r"[A-Za-z0-9_]", stem) else f"_{stem}"


def flag_overrides(*, seed: int | None = None, torch_compile: bool = False,
                   name: str | None = None) -> list[str]:
    """Command-line flags as the ``--set`` they stand for."""
    out = [f"name={json.dumps(name)}"] if name is not None else []
    if seed is not None:
        out.append(f"train.seed={int(seed)}")
    if torch_compile:
        out.append("train.compile=true")
    return out


@dataclass(frozen=True)
class SpecSource:
    """Where a fresh run's spec comes from, so that a sweep can resolve it again with
    more overrides: a file, YAML text, a dict or a loaded spec; the spec's ``quick``
    overrides; and a data file that replaces its dataset (``--data``, :func:`flowspec.fit`)."""

    spec: Any
    quick: bool = False
    #: train on this file instead of the spec's dataset
    data: Path | None = None
    #: parameters of the ``file`` dataset for ``data`` (context, test_path, array) and
    #: whether the spec's own file selection (columns, array, context) is kept
    data_params: dict[str, Any] = field(default_factory=dict)
    keep_selection: bool = True

    def overrides_for(self, overrides: list[str]) -> list[str]:
        """``overrides`` preceded by the ``data.dataset`` override ``data`` stands for."""
        if self.data is None:
            return overrides
        from flowspec.data.files import file_dataset_for
        from flowspec.errors import SpecError

        try:
            current = self._load([]).data
        except SpecError:  # the spec needs the overrides to load: keep nothing
            current = None
        dataset = file_dataset_for(current, self.data, keep_selection=self.keep_selection,
                                   **self.data_params)
        return [f"data.dataset={json.dumps(dataset)}", *overrides]

    def load(self, overrides: list[str]) -> Any:
        """The resolved spec with ``overrides`` (as returned by :meth:`overrides_for`)."""
        return self._load(overrides)

    def _load(self, overrides: list[str]) -> Any:
        from flowspec.spec import Spec, load_spec, load_spec_text

        if isinstance(self.spec, Spec):
            if not overrides and not self.quick:
                return self.spec
            loaded = load_spec_text(self.spec.to_yaml(), overrides, quick=self.quick)
            return dataclasses.replace(loaded, source=self.spec.source)
        return load_spec(self.spec, overrides, quick=self.quick)


@dataclass(frozen=True)
class TrainRequest:
    """A fresh run of ``spec`` or the resume of the run directory ``resume``."""

    #: the resolved spec of a fresh run (None when resuming: the run holds its spec)
    spec: Any = None
    #: the run directory to continue
    resume: Path | None = None
    #: the ``--set`` strings the spec was resolved with (flags included); recorded in
    #: the run, and applied to a resumed run's spec (only what a resume may change)
    overrides: tuple[str, ...] = ()
    #: the root of run directories (``<out>/<spec name>/<time>-<hash>``)
    out: Path = Path("runs")
    data_dir: Path | None = None
    device: str = "auto"
    #: data-parallel processes on this machine
    nproc: int = 1
    #: how ``spec`` was made (for sweeps: the same source with more overrides)
    source: SpecSource | None = None
    #: why this run directory was chosen for a resume (``runs/<name>``: its newest
    #: unfinished run), for the caller to show
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.spec is None) == (self.resume is None):
            raise FlowspecError("a training request needs a spec to train or a run to "
                                "resume (not both)")

    @property
    def is_resume(self) -> bool:
        return self.resume is not None

    def with_overrides(self, extra: Sequence[str]) -> TrainRequest:
        """The same request with ``extra`` overrides after its own (a sweep's point)."""
        if self.source is None:
            raise FlowspecError("this request has no spec source to resolve again")
        sets = [*self.overrides, *extra]
        return dataclasses.replace(self, spec=self.source.load(sets), overrides=tuple(sets))

    def resolved_spec(self) -> Any:
        """The spec the run will train (a resume: the run's, with the resume overrides) --
        read exactly as the trainer reads it."""
        if self.resume is None:
            return self.spec
        from flowspec.run.state import open_resume

        return open_resume(self.resume, list(self.overrides)).spec

    def resolved_spec_yaml(self) -> str:
        """``--print-spec``: the resolved spec as YAML, with only the run length in
        effect (``train.steps``, or ``train.epochs`` when steps is null): printing both
        would suggest that both count. Loading the text gives the same run."""
        from flowspec.spec.source import dump_yaml

        return dump_yaml(length_in_effect(self.resolved_spec().document))


def length_in_effect(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` without the run-length key that does not count (``epochs`` when
    ``steps`` is set, else ``steps``)."""
    import copy

    doc = copy.deepcopy(document)
    train = doc.get("train")
    if isinstance(train, dict):
        train.pop("epochs" if train.get("steps") is not None else "steps", None)
    return doc


def make_request(
    spec: Any = None,
    *,
    overrides: Overrides = None,
    quick: bool = False,
    data: str | os.PathLike | None = None,
    data_params: dict[str, Any] | None = None,
    keep_selection: bool = True,
    seed: int | None = None,
    torch_compile: bool = False,
    name: str | None = None,
    resume: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs",
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    nproc: int = 1,
) -> TrainRequest:
    """The one way a training request is built (CLI, resume, sweep, :func:`flowspec.fit`).

    ``spec`` is a spec file, YAML text, a dict or a loaded spec (None with ``resume``: a
    run directory, or ``runs/<name>`` -- its newest unfinished run -- or a bare name
    under ``out``);
    ``overrides`` are ``--set`` strings or a dict; ``seed`` and ``torch_compile`` are the
    flags of the same names, turned into overrides; ``data`` trains on a file instead of
    the spec's dataset (``data_params``: its ``file`` dataset parameters); ``name`` names
    the run (``<out>/<name>/...``; ``--set name=`` too). The spec is resolved here, so
    every problem is reported before anything runs.
    """
    user = override_strings(overrides)
    if name is not None and any(s.partition("=")[0].strip() == "name" for s in user):
        raise FlowspecError("the run name is given twice (--name and --set name=)")
    sets = (flag_overrides(name=name) + user
            + flag_overrides(seed=seed, torch_compile=torch_compile))
    where = dict(out=Path(out), data_dir=Path(data_dir) if data_dir is not None else None,
                 device=device, nproc=int(nproc))
    if resume is not None:
        refused = [what for given, what in ((spec is not None, "a spec"), (quick, "quick"),
                                            (data is not None, "data"),
                                            (name is not None, "name"),
                                            (seed is not None, "seed")) if given]
        if refused:
            raise FlowspecError(
                f"a resumed run keeps its own spec, data and seed; {', '.join(refused)} "
                "cannot be given with it",
                hint="change what a resume may change with --set (train.steps, "
                     "train.optimizer.<name>.lr, train.grad_clip, cadences), or start a new "
                     "run from the spec")
        from flowspec.run.listing import resolve_resume

        path = Path(resume)
        if not path.exists() and (Path(out) / path).is_dir():  # a bare NAME under out
            path = Path(out) / path
        run_dir, notes = resolve_resume(path)  # refuses a run that is still running
        return TrainRequest(resume=run_dir, overrides=tuple(sets), notes=tuple(notes), **where)
    if spec is None:
        raise FlowspecError("give a spec to train, or --resume RUN_DIR (resume=)")
    source = SpecSource(spec, quick=quick, data=Path(data) if data is not None else None,
                        data_params=dict(data_params or {}), keep_selection=keep_selection)
    sets = source.overrides_for(sets)
    return TrainRequest(spec=source.load(sets), overrides=tuple(sets), source=source, **where)
