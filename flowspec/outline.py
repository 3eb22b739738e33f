"""The structure of a compiled flow as the spec wrote it: nested groups, repeats folded.

The Graph IR is flat (a Glow is hundreds of nodes), but its ids keep the nesting
the spec was written with: ``flow.0.0.1.3.2.affine_coupling`` is item 2 of
iteration 3 of a repeat inside iteration 0 of ``model.flow[0]``. This module
rebuilds that nesting as a tree of :class:`Group` (one per id prefix) over
:class:`Item` leaves (nodes and latents), and folds runs of siblings with the same
structure into one :class:`Fold` (``flow.0.0.1.0..7  glow_step ×8``), so that
``flowspec show`` prints a Glow in a screenful. Node paths (where each node is
written in the YAML) tell repeats (one written body, many iterations) and blocks
(``blocks.NAME...``) apart from hand-written lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]


@dataclass
class Item:
    """One node or latent of the graph."""

    id: str
    type: str  # node type, or the prior of a latent
    latent: bool
    params: dict[str, Any]
    inputs: list[Shape]
    outputs: list[Shape]
    n_params: int
    path: str
    cond: str | None = None
    in_ports: list[str] = field(default_factory=list)
    out_ports: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.id.rsplit(".", 1)[-1]

    def items(self) -> Iterator[Item]:
        yield self


@dataclass
class Group:
    """Everything under one id prefix, in forward order."""

    key: str
    children: list[Group | Item] = field(default_factory=list)
    label: str = ""

    def items(self) -> Iterator[Item]:
        for c in self.children:
            yield from c.items()

    @property
    def n_params(self) -> int:
        return sum(i.n_params for i in self.items())


@dataclass
class Fold:
    """``count`` consecutive siblings with the same structure, shown once."""

    members: list[Group | Item]
    key: str  # "flow.0.0.1.0..7"
    label: str  # "glow_step ×8"

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def n_params(self) -> int:
        return sum(m.n_params for m in self.members)

    def items(self) -> Iterator[Item]:
        for m in self.members:
            yield from m.items()


Entry = Group | Item | Fold


def _shape(s: Any) -> Shape:
    return tuple(int(d) for d in s)


def build_outline(graph: Any, shapes: dict[str, Any], node_params: dict[str, int],
                  latent_params: dict[str, int], order: list[str] | None = None) -> Group:
    """The nested outline of a Graph IR. ``shapes``: port -> shape; ``node_params`` /
    ``latent_params``: id -> parameter count; ``order``: node ids in forward order."""
    by_id = {n.id: n for n in graph.nodes}
    items: list[Item] = []
    for nid in order or [n.id for n in graph.nodes]:
        n = by_id[nid]
        items.append(Item(nid, n.type, False, dict(n.params),
                          [_shape(shapes[p]) for p in n.inputs],
                          [_shape(shapes[p]) for p in n.outputs],
                          node_params.get(nid, 0), n.path,
                          in_ports=list(n.inputs), out_ports=list(n.outputs)))
    producer_pos = {p: k for k, it in enumerate(items) for p in it.out_ports}
    for lat in graph.latents:  # right after the node that produces its input
        item = Item(lat.id, lat.prior, True, dict(lat.params), [_shape(shapes[lat.input])], [],
                    latent_params.get(lat.id, 0), lat.path, cond=lat.cond,
                    in_ports=[lat.input])
        pos = producer_pos.get(lat.input, len(items) - 1)
        items.insert(pos + 1, item)
        producer_pos = {p: k for k, it in enumerate(items) for p in it.out_ports}
    root = Group("")
    for item in items:
        _insert(root, item)
    _label(root)
    return root


def _insert(root: Group, item: Item) -> None:
    parts = item.id.split(".")
    group = root
    for k in range(1, len(parts)):
        key = ".".join(parts[:k])
        last = group.children[-1] if group.children else None
        if isinstance(last, Group) and last.key == key:
            group = last
            continue
        # a prefix seen before but not last: ids of explicit graphs may interleave
        found = next((c for c in group.children if isinstance(c, Group) and c.key == key), None)
        if found is None:
            found = Group(key)
            group.children.append(found)
        group = found
    group.children.append(item)


def _block_of(item: Item) -> str | None:
    return item.path.split(".")[1] if item.path.startswith("blocks.") else None


def _common_block(entry: Group | Item | Fold) -> str | None:
    blocks = {_block_of(i) for i in entry.items()}
    return blocks.pop() if len(blocks) == 1 else None


def _is_repeat(group: Group) -> bool:
    """Children are iterations of one written body: the same node paths, in the same order."""
    kids = group.children
    if len(kids) < 2 or not all(isinstance(c, Group) for c in kids):
        return False
    paths = [tuple(i.path for i in c.items()) for c in kids]
    return all(p == paths[0] for p in paths) and bool(paths[0])


def _label(group: Group, parent_block: str | None = None) -> None:
    block = _common_block(group) if group.key else None
    words = []
    if any(isinstance(c, Item) and c.latent and c.id == f"{group.key}.factor_out"
           for c in group.children):
        words.append("factor_out")
    if block and block != parent_block:
        words.append(block)
    if _is_repeat(group):
        words.append(f"repeat ×{len(group.children)}")
    group.label = " ".join(words)
    for c in group.children:
        if isinstance(c, Group):
            _label(c, block)


def _rel(item: Item, prefix: str) -> str:
    return item.id[len(prefix) + 1:] if prefix and item.id.startswith(prefix + ".") else item.id


def structure(entry: Group | Item) -> tuple:
    """What must agree for siblings to fold: relative ids, types, parameter names, shapes
    (parameter *values* may differ; :func:`settings_summary` shows how)."""
    prefix = entry.key if isinstance(entry, Group) else entry.id.rsplit(".", 1)[0]
    return tuple((_rel(i, prefix), i.type, i.latent, tuple(sorted(i.params)),
                  tuple(i.inputs), tuple(i.outputs), i.path) for i in entry.items())


def _fold_key(members: list[Group | Item]) -> str:
    first, last = members[0], members[-1]
    a = first.key if isinstance(first, Group) else first.id
    b = last.key if isinstance(last, Group) else last.id
    head, _, ia = a.rpartition(".")
    return f"{head}.{ia}..{b.rpartition('.')[2]}" if head else f"{ia}..{b}"


def fold_label(members: list[Group | Item]) -> str:
    first = members[0]
    block = _common_block(Fold(members, "", ""))
    items = list(first.items())
    if block:
        name = block
    elif len(items) == 1:
        name = items[0].type
    else:
        name = "(" + " → ".join(i.type for i in items[:4]) + (" → …)" if len(items) > 4 else ")")
    return f"{name} ×{len(members)}"


def runs(group: Group, expand: bool = False, min_run: int = 2) -> list[Entry]:
    """The group's children, each run of ``min_run`` or more consecutive siblings of equal
    :func:`structure` folded into one :class:`Fold` (nothing is folded when ``expand``)."""
    out: list[Entry] = []
    kids = group.children
    k = 0
    while k < len(kids):
        j = k + 1
        if not expand and isinstance(kids[k], Group):
            sig = structure(kids[k])
            while j < len(kids) and isinstance(kids[j], Group) and structure(kids[j]) == sig:
                j += 1
        if j - k >= min_run:
            members = kids[k:j]
            out.append(Fold(members, _fold_key(members), fold_label(members)))
        else:
            out.append(kids[k])
        k = j
    return out


def only_item(entry: Entry) -> Item | None:
    """The single item of a group that holds nothing else (shown as that item)."""
    if isinstance(entry, Item):
        return entry
    if isinstance(entry, Group) and len(entry.children) == 1:
        return only_item(entry.children[0])
    return None


def flat_rows(group: Group, expand: bool = False) -> list[Item | Fold]:
    """Rows for a table: items and folds in forward order, groups opened."""
    rows: list[Item | Fold] = []
    for entry in runs(group, expand):
        if isinstance(entry, Group):
            rows.extend(flat_rows(entry, expand))
        else:
            rows.append(entry)
    return rows


def boundary(entry: Entry) -> tuple[list[Shape], list[Shape]]:
    """Shapes entering and leaving a group/fold (ports crossing its edge; latents inside
    consume theirs)."""
    items = list(entry.items())
    produced = {p: s for i in items for p, s in zip(i.out_ports, i.outputs)}
    consumed = {p for i in items for p in i.in_ports}
    ins, seen = [], set()
    for i in items:
        for p, s in zip(i.in_ports, i.inputs):
            if p not in produced and p not in seen:
                seen.add(p)
                ins.append(s)
    outs = [s for p, s in produced.items() if p not in consumed]
    return ins, outs


def value_text(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={value_text(v)}" for k, v in params.items())


def settings_summary(members: list[Item]) -> str:
    """One node's settings across the members of a fold: ``k=v`` when all agree, else
    ``k ∈ {v1, v2}`` (or how many values there are)."""
    parts = []
    keys = list(dict.fromkeys(k for m in members for k in m.params))
    for k in keys:
        values = list(dict.fromkeys(value_text(m.params.get(k)) for m in members))
        if len(values) == 1:
            parts.append(f"{k}={values[0]}")
        elif len(values) <= 4:
            parts.append(f"{k} ∈ {{{', '.join(values)}}}")
        else:
            parts.append(f"{k}: {len(values)} values ({values[0]} … {values[-1]})")
    return ", ".join(parts)


def fold_members(fold: Fold) -> list[tuple[str, str, str]]:
    """(relative id, type, settings over all iterations) for each item of one iteration."""
    first = fold.members[0]
    prefix = first.key if isinstance(first, Group) else first.id.rsplit(".", 1)[0]
    per_member = [list(m.items()) for m in fold.members]
    rows = []
    for k, item in enumerate(per_member[0]):
        same = [its[k] for its in per_member]
        kind = f"latent: {item.type}" if item.latent else item.type
        rows.append((_rel(item, prefix), kind, settings_summary(same)))
    return rows
