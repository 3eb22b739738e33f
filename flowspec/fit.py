"""``flowspec.fit``: train a spec on your own array, tensor or file from Python.

It is the CLI's training run, not a second loop: the same request
(:func:`flowspec.train.make_request`), :func:`flowspec.train.train`, run directory,
checkpoints, ``run.json`` and progress lines. Arrays are first written
to a ``.safetensors`` file (``x`` and ``context``) that the run's ``file`` dataset
reads, so the run is reproducible and ``flowspec eval RUN`` / ``flowspec sample RUN``
work on it afterwards like on any other run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowspec.compile import Flow
from flowspec.errors import DataError, FlowspecError

ArrayLike = Any  # numpy array, torch tensor, or anything numpy.asarray takes


def _as_tensor(value: ArrayLike, what: str) -> torch.Tensor:
    """A 2-D+ float32 tensor, with messages that say how to fix the input."""
    from flowspec.data.tables import to_float32

    if torch.is_tensor(value):
        t = value
    else:
        try:
            t = np.asarray(value)
        except Exception as err:  # ragged lists and the like
            raise DataError(f"{what}: cannot be read as an array ({err})",
                            hint="pass a numpy array or torch tensor [N, D]") from None
    out = to_float32(t, what, f"<{what}>")
    if out.dim() == 0:
        raise DataError(f"{what} is a single number; expected an array with one row per "
                        "example, [N, D]")
    if out.dim() == 1 and what == "data":
        raise DataError(f"data is 1-D (shape [{out.shape[0]}]); a flow needs one row per "
                        "example, [N, D]",
                        hint="for N examples of one feature pass data.reshape(-1, 1); for one "
                             "example of D features, data.reshape(1, -1)")
    if out.dim() == 1:  # a context of one number per example
        out = out[:, None]
    if out.shape[0] == 0:
        raise DataError(f"{what} is empty (0 rows)")
    return out


def _write_arrays(folder: Path, x: torch.Tensor, context: torch.Tensor | None,
                  files: dict[Path, tuple[str, bool]] | None = None, what: str = "data"
                  ) -> Path:
    """``x`` (and ``context``) as ``<folder>/<sha256 of the contents>.safetensors``: the
    same data is written once, and a changed array never overwrites a run's file.
    ``files[path] = (what, written now)`` (a file written now is removed again if the
    fit fails; errors name ``what`` instead of the path)."""
    from safetensors.torch import save_file

    tensors = {"x": x.contiguous()}
    if context is not None:
        tensors["context"] = context.contiguous()
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(f"{name}{list(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    path = folder / f"{h.hexdigest()[:16]}.safetensors"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".data-", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, path)
            written = True
        finally:
            Path(tmp).unlink(missing_ok=True)
    else:
        written = False
    if files is not None:
        files[path] = (what, written)
    return path


def _check_shapes(spec: Any, x: torch.Tensor, context: torch.Tensor | None, what: str) -> None:
    want = tuple(spec.graph.input_shape)
    if tuple(x.shape[1:]) != want:
        got = list(x.shape[1:])
        raise DataError(f"{what} has examples of shape {got}, but the spec's model.input is "
                        f"{list(want)}",
                        hint=f"set model.input to {got} in the spec, e.g. "
                             f"overrides={{'model.input': {got}}}")
    ctx = spec.graph.context
    if context is not None and ctx is None:
        raise DataError(f"a context of shape {list(context.shape[1:])} was given, but the spec "
                        "is not conditional", hint=f"add model.context: {{shape: "
                                                   f"{list(context.shape[1:])}}}")
    if context is not None and context.shape[0] != x.shape[0]:
        raise DataError(f"the context has {context.shape[0]} rows but {what} has "
                        f"{x.shape[0]}", hint="one context row per example, in the same order")


def fit(
    spec: str | os.PathLike | dict,
    data: ArrayLike | str | os.PathLike,
    *,
    context: ArrayLike | str | list[str] | None = None,
    test_data: ArrayLike | None = None,
    test_context: ArrayLike | None = None,
    overrides: list[str] | dict | None = None,
    out: str | os.PathLike | None = None,
    quick: bool = False,
    device: str = "auto",
    seed: int | None = None,
    data_dir: str | os.PathLike | None = None,
    verbose: bool = True,
) -> Flow:
    """Train ``spec`` on ``data``; return the trained flow in eval mode -- the ``best``
    checkpoint (chosen on validation, as ``flowspec eval`` uses) when there is one, else
    the last weights (EMA weights if the run keeps them). ``flow.checkpoint`` says which
    (``"best"``/``"last"``), ``flow.best`` the best evaluation (metric, value, step,
    split), ``flow.run_dir`` the run directory and ``flow.metrics`` the last evaluation.

    * ``spec``: a spec file, YAML text or a dict; its ``data`` section is replaced.
    * ``data``: an array/tensor ``[N, D]`` (``[N, ...]`` matching ``model.input``), or a
      path to a .csv/.npy/.npz/.safetensors file (as ``flowspec train --data``).
    * ``context``: for conditional specs (``model.context: {shape: [K]}``), an array
      ``[N, K]`` with ``data``'s rows; with a file path, the context columns/array name.
    * ``test_data`` (+ ``test_context``): a separate test set; else the spec's
      ``test_fraction`` (default 0.2) of the rows, seeded. ``data.val_fraction`` of the
      rest is the validation split that chooses ``best``, as for every run.
    * ``overrides``: ``--set`` strings or a dict, e.g. ``{"train.steps": 2000}``.
    * ``out``: root of run directories (``runs`` as the CLI). ``None``: a new temporary
      directory (``tempfile.mkdtemp``), kept, not deleted, so ``flowspec eval`` works
      on the run afterwards; ``flow.run_dir`` says where.
    * ``verbose``: print the trainer's progress lines (``False``: silent).
    """
    temporary = out is None
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="flowspec-fit-"))
    files: dict[Path, tuple[str, bool]] = {}
    runs_before = _runs(root)
    try:
        return _fit(spec, data, root, files, context=context, test_data=test_data,
                    test_context=test_context, overrides=overrides, quick=quick,
                    device=device, seed=seed, data_dir=data_dir, verbose=verbose)
    except BaseException as err:
        # a failed fit leaves nothing behind -- not its temporary folder, not its data
        # copies -- unless a run directory was made (its status says how it ended)
        if _runs(root) == runs_before:
            if temporary:
                shutil.rmtree(root, ignore_errors=True)
            for path, (_, written) in files.items():
                if written:
                    path.unlink(missing_ok=True)
                    try:
                        path.parent.rmdir()  # the data folder, if now empty
                    except OSError:
                        pass
        if isinstance(err, FlowspecError) and files:
            raise _without_paths(err, files) from None
        raise


def _runs(root: Path) -> set[Path]:
    from flowspec.run.listing import list_runs

    return {r.path for r in list_runs(root)}


def _without_paths(err: FlowspecError, files: dict[Path, tuple[str, bool]]) -> FlowspecError:
    """``err`` with the internal file names of the arrays replaced by what the user
    passed (``data``, ``test_data``): a temporary path means nothing to them."""
    names = {}
    for path, (what, _) in files.items():
        names[str(path)] = names[str(path.resolve())] = f"the {what} array"

    def clean(text: str | None) -> str | None:
        if text is None:
            return None
        for path, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, name)
        return text

    def located(p: Any) -> Any:
        where = names.get(str(p.loc.file)) if p.loc is not None and p.loc.file else None
        if where is None:
            return dataclasses.replace(p, message=clean(p.message) or "",
                                       path=clean(p.path) or "", hint=clean(p.hint))
        line = f" row {p.loc.line}" if p.loc.line else ""
        return dataclasses.replace(p, loc=None, path=f"{where}{line}",
                                   message=clean(p.message) or "", hint=clean(p.hint))

    return type(err)([located(p) for p in err.problems])


def _fit(spec: Any, data: Any, root: Path, files: dict[Path, tuple[str, bool]], *, context: Any,
         test_data: Any, test_context: Any, overrides: Any, quick: bool, device: str,
         seed: int | None, data_dir: Any, verbose: bool) -> Flow:
    from flowspec.train import make_request, train
    from flowspec.train.report import PlainReporter, SilentReporter

    options: dict[str, Any] = dict(overrides=overrides, quick=quick, seed=seed, out=root,
                                   data_dir=data_dir, device=device)
    if isinstance(data, (str, os.PathLike)):
        if test_data is not None or test_context is not None:
            raise DataError("test_data goes with array data; for files name the test file",
                            hint="overrides={'data.dataset.file.test_path': 'test.csv'}")
        if context is not None and not isinstance(context, (str, list)):
            raise DataError("with a file, context names its columns (csv) or array "
                            "(npz/safetensors)", hint="e.g. context=['theta1', 'theta2']")
        request = make_request(spec, data=data, data_params={"context": context}, **options)
    else:
        # the spec as it will run, with a placeholder file: its name and shapes
        base = make_request(spec, data=root / "data.npz", keep_selection=False,
                            **options).spec
        x = _as_tensor(data, "data")
        ctx = _as_tensor(context, "context") if context is not None else None
        _check_shapes(base, x, ctx, "data")
        folder = root / base.name / "data"
        params: dict[str, Any] = {"array": "x", "context": "context" if ctx is not None
                                  else None}
        if test_data is not None:
            tx = _as_tensor(test_data, "test_data")
            tc = _as_tensor(test_context, "test_context") if test_context is not None else None
            _check_shapes(base, tx, tc, "test_data")
            if (tc is None) != (ctx is None):
                raise DataError("give test_context exactly when context is given")
            params["test_path"] = str(_write_arrays(folder, tx, tc, files, "test_data").resolve())
        elif test_context is not None:
            raise DataError("test_context was given without test_data")
        request = make_request(spec, data=_write_arrays(folder, x, ctx, files),
                               data_params=params,
                               keep_selection=False, **options)
    result = train(request, reporter=PlainReporter() if verbose else SilentReporter())
    return _chosen_flow(result)


def _chosen_flow(result: Any) -> Flow:
    """The flow ``flowspec eval``/``sample`` would use: the ``best`` checkpoint when a
    validation split chose one, else the last weights -- so the model in hand is the one
    the reported numbers describe, never an overfit last step."""
    import flowspec
    from flowspec.run.layout import checkpoint_path

    flow, which = result.flow, "last"
    best_path = checkpoint_path(result.run_dir, "best")
    if result.best is not None and best_path.is_file():
        device = result.flow.reference_tensor().device
        flow, which = flowspec.load(best_path).to(device).eval(), "best"
    flow.run_dir = result.run_dir
    flow.metrics = result.metrics
    flow.checkpoint = which
    flow.best = result.best
    return flow
