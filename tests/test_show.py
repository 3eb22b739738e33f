"""`flowspec show`: repeated structure folded, settings whole, a tree that nests."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from flowspec import outline
from flowspec_cli.main import app

SPECS = Path(__file__).parent.parent / "specs"
GLOW = ["--set", "vars.width=8"]  # the structure of glow_mnist, built fast
runner = CliRunner()


def show(*args, width=120):
    from flowspec_cli.common import console

    old = console.width
    console.width = width
    try:
        r = runner.invoke(app, ["show", *map(str, args)])
    finally:
        console.width = old
    assert r.exit_code == 0, r.output
    return r.output


def test_glow_folds_to_far_fewer_lines():
    folded = show(SPECS / "glow_mnist.yaml", *GLOW)
    expanded = show(SPECS / "glow_mnist.yaml", *GLOW, "--expand")
    assert "flow.0.0.1.0..7" in folded and "glow_step ×8" in folded
    assert "flow.2.0..7" in folded
    assert "= 8 ×" in folded  # the per-step parameter count
    assert "77 nodes, 3 latent(s)" in folded
    assert len(folded.splitlines()) < 40
    assert len(expanded.splitlines()) > 77  # every node a row
    assert len(show(SPECS / "glow_mnist.yaml", *GLOW, width=80).splitlines()) < 60
    assert "flow.0.0.1.3.2.affine_coupling" in expanded
    assert "flow.0.0.1.3.2.affine_coupling" not in folded


def test_settings_are_wrapped_not_cut():
    out = show(SPECS / "glow_mnist.yaml", *GLOW, width=80)
    assert "..." not in out
    flat = "".join(out.split())  # wrapped over lines, but whole
    assert '"glow_cnn":{"width":8}' in flat


def test_values_that_differ_across_a_fold_are_summarised():
    out = show(SPECS / "realnvp_moons.yaml", "--set", "vars.K=2", "--set", "vars.hidden=8")
    assert "affine_coupling ×2" in out and "parity ∈ {0, 1}" in out
    out = show(SPECS / "realnvp_moons.yaml", "--set", "vars.K=6", "--set", "vars.hidden=8")
    assert "affine_coupling ×6" in out and "parity: 6 values (0 … 5)" in out


def test_tree_nests_as_the_spec_is_written():
    out = show(SPECS / "glow_mnist.yaml", *GLOW, "--tree")
    lines = out.splitlines()

    def depth(text):
        line = next(ln for ln in lines if text in ln)
        return (len(line) - len(line.lstrip("│├└─ "))) // 4

    assert depth("flow [1, 32, 32]") == 1  # model.flow under the spec's name
    assert depth("flow.0 repeat ×2") == 2
    assert depth("flow.0.0 ") == 3
    assert depth("flow.0.0.0.squeeze") == 4
    assert depth("flow.0.0.1.0..7 glow_step ×8") == 4
    assert depth("flow.0.0.2 factor_out") == 4
    assert depth("flow.0.0.2.split") == 5
    assert depth("1.inv_conv1x1: lu=true") == 5  # one step's members, under its fold
    assert depth("z latent: diag_gaussian") == 1


def test_outline_groups_follow_ids_and_paths():
    from flowspec.api import build_flow
    from flowspec.spec import load_spec

    spec = load_spec(SPECS / "glow_mnist.yaml", ["vars.width=8"])
    flow = build_flow(spec)
    root = outline.build_outline(spec.graph, flow.port_shapes, {}, {},
                                 order=[nid for nid, _ in flow.node_items()])
    (body, z) = root.children
    assert body.key == "flow" and isinstance(z, outline.Item) and z.latent
    level0 = body.children[0].children[0]
    assert body.children[0].label == "repeat ×2" and level0.key == "flow.0.0"
    kinds = [c.label if isinstance(c, outline.Group) else c.type for c in level0.children]
    assert kinds == ["", "glow_step repeat ×8", "factor_out"]
    assert [c.type for c in level0.children[2].children] == ["split", "conditional_gaussian"]
    (fold,) = outline.runs(level0.children[1])
    assert isinstance(fold, outline.Fold) and fold.count == 8 and fold.key == "flow.0.0.1.0..7"
    assert outline.boundary(fold) == ([(4, 16, 16)], [(4, 16, 16)])
