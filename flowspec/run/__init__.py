"""The run directory, owned by this package alone: what a training run writes and reads.

* :mod:`~flowspec.run.layout` -- the file names (the only place they are written);
* :mod:`~flowspec.run.create` -- a fresh run directory, its spec, overrides and ``run.json``;
* :mod:`~flowspec.run.status` -- ``status.json`` (running, finished, interrupted, ...);
* :mod:`~flowspec.run.metrics` and :mod:`~flowspec.run.sinks` -- metric rows
  (``metrics.jsonl``, CSV, TensorBoard);
* :mod:`~flowspec.run.state` -- checkpoints and the resume state (one consistent snapshot);
* :mod:`~flowspec.run.overrides` -- what a resume may change, and its record;
* :mod:`~flowspec.run.listing` -- the ``runs`` listing and which run or checkpoint a path means.

The training loop (:mod:`flowspec.train`) writes through these modules; the CLI and
``flowspec.load`` read through them. Listing and status never import torch.
"""

from flowspec.run.layout import WHICH, is_run_dir
from flowspec.run.listing import (
    Resolved,
    RunInfo,
    list_runs,
    resolve_resume,
    resolve_run,
    run_info,
)
from flowspec.run.status import read_status

__all__ = ["WHICH", "Resolved", "RunInfo", "is_run_dir", "list_runs", "read_status",
           "resolve_resume", "resolve_run", "run_info"]
