"""Which nodes and priors export, read from what they declare at registration.

A node's ``exports`` class attribute says which of its directions trace to a static
graph (default: its closed-form ones; a numerically solved direction loops a
data-dependent number of times). ``log_prob`` runs every node forward, ``sample``
every node inverse and every prior's :meth:`~flowspec.distributions.base.Prior.from_noise`,
so a program exports when all of those do; otherwise the blockers are named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowspec.compile import Flow

#: the node direction each program runs
DIRECTION = {"log_prob": "forward", "sample": "inverse"}


def node_directions(cls: Any) -> set[str]:
    """The directions of a node (class, or instance: a conditioner with a numerically
    inverted transformer declares that on the instance) that export."""
    declared = getattr(cls, "exports", None) or getattr(cls, "analytic", "both")
    return {"forward", "inverse"} if declared == "both" else (
        set() if declared == "none" else {declared})


def node_note(cls: Any, direction: str) -> str:
    """Why ``direction`` of a node class does not export."""
    note = getattr(cls, "export_note", "")
    if note:
        return note
    if getattr(cls, "analytic", "both") not in ("both", direction):
        return (f"its {direction} is solved numerically (an iteration count that depends on "
                "the data has no static graph)")
    return f"its {direction} does not export"


@dataclass
class Blocker:
    """One reason a program cannot export: a node or prior and why."""

    program: str
    where: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.program}: {self.kind} '{self.where}' -- {self.reason}"


def blockers(flow: Flow, program: str) -> list[Blocker]:
    """Everything in ``flow`` that keeps ``program`` ("log_prob"/"sample") from exporting."""
    direction = DIRECTION[program]
    out = []
    for nid, node in flow.node_items():
        cls = type(node)
        kind = getattr(cls, "registered_name", cls.__name__)
        if direction not in node_directions(node):
            out.append(Blocker(program, nid, kind, node_note(node, direction)))
            continue
        problem = getattr(node, "export_problem", lambda _: None)(direction)
        if problem:  # this instance's size, not its kind (e.g. D unrolled passes)
            out.append(Blocker(program, nid, kind, problem))
    if program == "sample":
        for lid, prior in zip(flow.latent_names, flow.priors.values()):
            if prior.noise is None:
                out.append(Blocker(program, lid, getattr(prior, "registered_name", "prior"),
                                   "its sampling is no deterministic map of standard noise "
                                   "(a random component choice)"))
    return out


def catalogue_rows() -> list[dict[str, Any]]:
    """One row per registered node: whether log_prob and sample export, and why not."""
    from flowspec.bijectors import NODES

    rows = []
    for entry in NODES:
        dirs = node_directions(entry.obj)
        notes = [node_note(entry.obj, d) for d in ("forward", "inverse") if d not in dirs]
        slow = getattr(entry.obj, "slow_direction", None)
        if slow:  # autoregressive: the D sequential passes are unrolled
            from flowspec.bijectors.autoregressive import MAX_EXPORT_PASSES

            program = "log_prob" if slow == "forward" else "sample"
            notes.append(f"{program} for D <= {MAX_EXPORT_PASSES} (its {slow} unrolls D "
                         "sequential passes)")
        if "transformer" in entry.schema.get("properties", {}):
            notes.append("with a numerically inverted transformer (sos, bernstein, umnn, dsf, "
                         "...) that transformer's inverse direction does not export")
        rows.append({"node": entry.name, "log_prob": "forward" in dirs,
                     "sample": "inverse" in dirs, "note": "; ".join(dict.fromkeys(notes))})
    return rows


def catalogue_markdown() -> str:
    """The README's table of which nodes export (generated from the registry)."""
    lines = ["| node | `log_prob` exports | `sample` exports | why not |",
             "|---|---|---|---|"]
    for r in catalogue_rows():
        lines.append(f"| `{r['node']}` | {'yes' if r['log_prob'] else 'no'} | "
                     f"{'yes' if r['sample'] else 'no'} | {r['note']} |")
    return "\n".join(lines)
