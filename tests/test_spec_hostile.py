"""Hostile and careless specs (issue 10): a located message and exit 2, never a traceback,
a hang or a memory blow-up. One test per class of input; docs/reliability.md lists them."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowspec.errors import SpecError
from flowspec.graph import GraphIR, LatentIR, NodeIR, _toposort, analyse
from flowspec.spec import limits, load_spec
from flowspec_cli.main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

SMALL_MODEL = """\
model:
  input: [2]
  flow:
    - affine_coupling: {net: {mlp: {hidden: [8]}}}
"""


def spec_file(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problem(source, overrides=None):
    """The one (first) problem of a spec that must fail, and the seconds it took."""
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        load_spec(source, overrides)
    took = time.perf_counter() - start
    assert err.value.problems
    return err.value.problems[0], took


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    return result.exit_code, result.output


# -- characters and markup -------------------------------------------------------------------
@pytest.mark.parametrize("char", ["\x03", "\x00", "\x1b"])
def test_control_character_is_located(tmp_path, char):
    path = tmp_path / "spec.yaml"
    path.write_text(f"model: {{input: [2], flow: []}}\nname: x{char}\n", encoding="utf-8")
    p, _ = problem(path)
    assert (p.loc.file, p.loc.line, p.loc.col) == (str(path), 2, 8)
    assert f"U+{ord(char):04X}" in p.message and p.hint
    code, out = cli("validate", path)
    assert code == 2 and f"{path}:2:8" in out


@pytest.mark.parametrize("key", ["[/x]", "[old]", "[bold red]x[/]"])
def test_markup_in_keys_is_printed_as_written(tmp_path, key):
    path = spec_file(tmp_path, f"""\
        model:
          input: [2]
          flow:
            - affine_coupling: {{net: {{mlp: {{hidden: [8]}}}}, "{key}": 1}}
        """)
    code, out = cli("validate", path)
    assert code == 2
    assert f"unknown key '{key}'" in out and f"affine_coupling.{key}" in out


# -- expressions -------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, words", [
    ("+".join(["1"] * 1000), "longer than 500 characters"),
    ("+".join(["1"] * 240), "more than 200 terms"),
    ("-" * 150 + "1", "nests more than 100 levels"),
    ("(" * 300 + "1" + ")" * 300, "longer than 500"),
    ("(" * 220 + "1" + ")" * 220, "cannot parse"),
])
def test_long_and_deep_expressions(expr, words):
    p, took = problem(f'vars: {{a: "${{{expr}}}"}}\n' + SMALL_MODEL)
    assert words in p.message and p.path == "vars.a" and p.loc.line == 1
    assert len(p.message) < 200 and took < 5


def test_a_long_chain_of_variables_resolves_without_recursion():
    n = 3000
    chain = ", ".join(f'v{i}: "${{v{i + 1} + 1}}"' for i in range(n)) + f", v{n}: 0"
    spec = load_spec(f"vars: {{{chain}}}\n" + SMALL_MODEL)
    assert spec.document["vars"]["v0"] == n
    cyc = ", ".join(f'c{i}: "${{c{(i + 1) % 500}}}"' for i in range(500))
    p, _ = problem(f"vars: {{{cyc}}}\n" + SMALL_MODEL)
    assert "cycle" in p.message and "..." not in p.path


@pytest.mark.parametrize("expr", ["4096**4096", "(10**4096)**4096", "2**333", "10**99 * 10**99",
                                  "4096**4096**4096"])
def test_huge_integer_results_are_refused_before_computing(expr):
    p, took = problem(f'vars: {{a: "${{{expr}}}"}}\n' + SMALL_MODEL)
    assert "more than 100 digits" in p.message and took < 2
    p, _ = problem(f'vars: {{a: "text ${{{expr}}}"}}\n' + SMALL_MODEL)  # interpolated too
    assert "more than 100 digits" in p.message


def test_huge_numbers_written_in_yaml(tmp_path):
    p, _ = problem("vars: {a: " + "9" * 150 + "}\n" + SMALL_MODEL)
    assert "not a valid !!int" in p.message and "100 digits" in p.hint and len(p.message) < 80
    for value, words in (("18446744073709551616", "too large"), (".inf", "finite"),
                         (".nan", "finite"), ("1e400", "finite")):
        p, _ = problem(f"""\
            model:
              input: [2]
              flow:
                - planar: {{init_scale: {value}}}
            """.replace("            ", ""))
        assert words in p.message and p.path == "model.flow[0].planar.init_scale", p.format()


# -- YAML bombs and nesting --------------------------------------------------------------------
def test_billion_laughs_is_refused_quickly():
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    p, took = problem("\n".join(lines) + "\n" + SMALL_MODEL)
    assert p.message == "aliases expand the YAML to 4,412,961,533 values (at most 500,000)"
    assert p.loc.line is not None and took < 5


@pytest.mark.parametrize("text", [
    "deep: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep: " + "{a: " * 100 + "1" + "}" * 100 + "\n",
    "".join(f"{'  ' * i}k{i}:\n" for i in range(100)) + "  " * 100 + "v\n",
])
def test_deep_nesting_is_refused(text):
    p, took = problem(text + SMALL_MODEL)
    assert "nested more than 64 levels" in p.message and took < 5


def test_aliases_nesting_through_each_other():
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 200)]
    p, _ = problem("\n".join(lines) + "\n" + SMALL_MODEL)
    assert "nested more than 64 levels" in p.message


def test_huge_dict_sources_are_refused():
    deep: dict = {}
    for _ in range(5000):
        deep = {"a": deep}
    for doc, words in (({"vars": {"a": 10**5000}}, "100 digits"), (deep, "64 levels")):
        p, _ = problem(doc)
        assert words in p.message


# -- unrolling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("flow, words", [
    ("[{repeat: 100000, body: [affine_coupling]}]", "repeat: 100000 unrolls to about 100,000"),
    ("[{repeat: 100000, as: i, body: [{repeat: '${i}', body: [actnorm]}]}]", "at most 50,000"),
    ("[{repeat: 100000, body: [{repeat: 100000, body: []}]}]", "repeat: 100000 unrolls about"),
])
def test_huge_repeats_stop_while_unrolling(flow, words):
    p, took = problem(f"model:\n  input: [2]\n  flow: {flow}\n")
    assert words in p.message and took < 30, (p.format(), took)


def test_blocks_calling_blocks_cannot_multiply_unboundedly():
    blocks = "\n".join(f"  b{i}: [{{block: b{i + 1}}}, {{block: b{i + 1}}}]" for i in range(40))
    p, took = problem(f"blocks:\n{blocks}\n  b40: []\nmodel:\n  input: [2]\n"
                      "  flow: [{block: b0}]\n")
    assert "more than 200,000 times" in p.message and took < 30


def test_large_variable_copied_by_a_repeat_is_bounded():
    big = "[" + ", ".join(["1"] * 20_000) + "]"
    p, took = problem(f"vars: {{big: {big}}}\nmodel:\n  input: [2]\n  flow:\n"
                      "    - repeat: 10000\n      body: [{planar: {init_scale: '${big}'}}]\n")
    assert "more than 1,000,000 values" in p.message and took < 30


def test_realnvp_cifar10_with_6000_levels_is_refused_in_linear_time():
    start = time.perf_counter()
    p, _ = problem(ROOT / "specs" / "realnvp_cifar10.yaml", ["vars.L=6000"])
    assert "repeat: 6000 unrolls to about 90,000 nodes" in p.message
    assert p.path == "model.flow[1].repeat"
    assert time.perf_counter() - start < 30  # minutes before (quadratic scheduling)


def test_a_20k_node_spec_validates_in_seconds():
    text = """\
        vars: {K: 10000}
        model:
          input: [2]
          flow:
            - repeat: ${K}
              as: i
              body:
                - affine_coupling: {mask: half, parity: "${i}", net: {mlp: {hidden: [8]}}}
                - actnorm
        """
    start = time.perf_counter()
    spec = load_spec(textwrap.dedent(text))
    assert len(spec.graph.nodes) == 20_000
    assert time.perf_counter() - start < 60  # ~3 s on an idle core


def test_graph_analysis_is_linear():
    n = 100_000
    deps = {i: [i - 1] if i else [] for i in range(n)}
    start = time.perf_counter()
    order, stuck = _toposort(deps)
    assert order == list(range(n)) and not stuck
    assert time.perf_counter() - start < 5  # the quadratic one needed minutes
    nodes = [NodeIR(f"n{i}", "actnorm", {}, [f"n{i - 1}" if i else "x"], [f"n{i}"])
             for i in range(30_000)]
    graph = GraphIR((4,), nodes, [LatentIR("z", "standard_normal", {}, "n29999")])
    start = time.perf_counter()
    analysis = analyse(graph)
    assert len(analysis.forward_order) == 30_000 and time.perf_counter() - start < 20


def test_many_problems_are_listed_up_to_a_limit():
    items = "\n".join(f"    - {{id: n{i}, node: actnorm, in: missing{i}}}" for i in range(300))
    p_all = None
    with pytest.raises(SpecError) as err:
        load_spec(f"model:\n  input: [2]\n  graph:\n{items}\n"
                  "    - {id: z, latent: standard_normal, in: x}\n")
    p_all = err.value.problems
    assert len(p_all) == limits.MAX_LISTED_PROBLEMS + 1
    assert "more problems" in p_all[-1].message


def test_oversized_spec_file(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * limits.MAX_SPEC_BYTES + "\n")
    p, took = problem(path)
    assert "larger than" in p.message and took < 2


# -- building: validated but unbuildable -------------------------------------------------------
HUGE_HIDDEN = """\
data:
  dataset: {moons: {n_train: 64, n_test: 64}}
model:
  input: [2]
  flow:
    - affine_coupling: {net: {mlp: {hidden: [4294967296]}}}
train: {steps: 1, batch_size: 8}
"""


@pytest.mark.parametrize("command", ["show", "check", "train"])
def test_huge_hidden_sizes_are_a_located_error_in_every_command(tmp_path, command):
    path = spec_file(tmp_path, HUGE_HIDDEN)
    extra = ["--out", tmp_path / "runs", "--device", "cpu"] if command == "train" else []
    start = time.perf_counter()
    code, out = cli(command, path, *extra)
    assert code == 2, out
    assert f"{path}:6:7: model.flow[0].affine_coupling: building node 'affine_coupling'" in out
    assert "would allocate 4,294,967,296 more numbers" in out
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("value, words", [
    ('"${4096**4096}"', "more than 100 digits"),
    ("1.0e300", "non-finite initial values in 'u'"),
])
def test_huge_initial_scales(tmp_path, value, words):
    path = spec_file(tmp_path, f"model:\n  input: [2]\n  flow:\n    - planar: {{init_scale: "
                               f"{value}}}\n")
    for command in ("show", "check"):
        code, out = cli(command, path)
        assert code == 2 and words in out and f"{path}:4:" in out, out


def test_torch_errors_while_building_are_located(monkeypatch):
    from flowspec.bijectors.actnorm import ActNorm
    from flowspec.compile import Flow

    def broken(self, *args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 1 PiB")

    monkeypatch.setattr(ActNorm, "__init__", broken)
    spec = load_spec("model:\n  input: [2]\n  flow: [actnorm]\n")
    with pytest.raises(SpecError) as err:
        Flow(spec.graph)
    (p,) = err.value.problems
    assert p.path == "model.flow[0].actnorm" and p.loc.line == 3
    assert p.message == ("cannot build node 'actnorm' (flow.0.actnorm): RuntimeError: CUDA out "
                         "of memory.")


def test_structural_counts_that_take_minutes_to_build(tmp_path):
    from flowspec.compile import Flow

    spec = load_spec("model:\n  input: [2]\n  flow: [{bnaf: {hidden: 4, layers: 100000}}]\n")
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        Flow(spec.graph)
    assert "creates more than 10,000 tensors" in err.value.problems[0].message
    assert time.perf_counter() - start < 30


# -- overrides ---------------------------------------------------------------------------------
def test_override_of_an_undeclared_variable(tmp_path):
    moons = ROOT / "specs" / "realnvp_moons.yaml"
    code, out = cli("validate", moons, "--set", "vars.k=2")
    assert code == 2
    assert "--set vars.k=2: vars.k: unknown variable 'k'" in out and "vars.K" in out
    p, _ = problem(SMALL_MODEL, ["vars.K=2"])
    assert p.hint == "the spec declares no vars: add it under vars: first"
    p, _ = problem(moons, ["vars.hiden=2"])
    assert p.hint == "did you mean 'vars.hidden'?"
    p, _ = problem(moons, {"vars.width": 2})
    assert p.hint == "the spec declares: K, hidden"
    quick = spec_file(tmp_path, "vars: {K: 2}\nquick: {vars.KK: 1}\n" + SMALL_MODEL)
    p, _ = problem(quick)
    assert (p.loc.line, p.message) == (2, "unknown variable 'KK': overrides change declared "
                                          "variables only")


def test_override_of_a_misplaced_key_points_at_its_place():
    code, out = cli("validate", ROOT / "specs" / "realnvp_moons.yaml", "--set", "train.lr=3e-4")
    assert code == 2
    assert ("--set train.lr=3e-4: train.lr: unknown key 'lr' ('lr' is set under "
            "train.optimizer.adam.lr)") in out
