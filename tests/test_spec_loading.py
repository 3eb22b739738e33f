"""Loading specs: YAML rules, overrides, vars, repeat, blocks, factor_out, graphs, the schema."""

from __future__ import annotations

import glob
import json
import os
import textwrap

import _spec_test_nodes  # noqa: F401  (registers the _test_ nodes)
import jsonschema
import pytest
import torch

from flowspec.compile import Flow
from flowspec.errors import SpecError
from flowspec.registry import Registry, params_schema
from flowspec.spec import load_spec, spec_schema
from flowspec.spec import schema as spec_schema_mod
from flowspec.spec.source import parse_yaml, plain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spec(text: str) -> str:
    return textwrap.dedent(text)


@pytest.fixture
def test_split(monkeypatch):
    """factor_out expands to the test split node (the real `split` is not needed)."""
    monkeypatch.setattr(spec_schema_mod, "FACTOR_OUT_NODE", "_test_split")


def ids(s):
    return [n.id for n in s.graph.nodes]


def latents(s):
    return [(lat.id, lat.prior, lat.input, lat.cond) for lat in s.graph.latents]


# -- YAML ---------------------------------------------------------------------------------------
def test_yaml_numbers_are_numbers_and_bools_are_strict():
    doc, problems = parse_yaml(spec("""\
        a: 1e-3
        b: 5e+2
        c: .5
        d: 1.0e-4
        e: on
        f: 010
        g: 0x10
        h: -.inf
        i: [true, False, null, ~]
        """))
    assert not problems
    assert doc["a"] == 0.001 and isinstance(doc["a"], float)
    assert doc["b"] == 500.0 and doc["c"] == 0.5 and doc["d"] == 1e-4
    assert doc["e"] == "on"  # YAML 1.1 would read true
    assert doc["f"] == 10 and doc["g"] == 16 and doc["h"] == float("-inf")
    assert doc["i"] == [True, False, None, None]


def test_every_key_value_and_item_is_located():
    doc, _ = parse_yaml("model:\n  input: [1, 28, 28]\n  flow:\n    - flatten\n", "f.yaml")
    model = doc["model"]
    assert str(doc.key_loc("model")) == "f.yaml:1:1"
    assert str(model.key_loc("input")) == "f.yaml:2:3"
    assert str(model.value_loc("input")) == "f.yaml:2:10"
    assert str(model["input"].value_loc(2)) == "f.yaml:2:18"
    assert str(model["flow"].value_loc(0)) == "f.yaml:4:7"


def test_to_yaml_quotes_strings_that_look_like_other_types():
    from flowspec.spec.source import dump_yaml

    data = {"s": ["on", "1e3", "010", "1:30", "null", "${K}"], "f": [1e-10, 0.001]}
    text = dump_yaml(data)
    assert parse_yaml(text)[0] == data
    import yaml  # a YAML 1.1 reader sees the same strings too

    assert yaml.safe_load(text)["s"] == data["s"]


# -- sources, document, round trip --------------------------------------------------------------
SEQ = spec("""\
    vars: {K: 3, H: 4}
    name: "seq_${K}"
    model:
      input: [4]
      prior: logistic
      flow:
        - _test_scale: {scale: 0.5}
        - repeat: ${K}
          as: i
          body:
            - _test_shift: {parity: "${i % 2}", hidden: "${H * 2}"}
    train: {steps: 5, optimizer: {adam: {lr: 1e-3}}}
    """)


def test_sequential_flow_ids_paths_and_locations(tmp_path):
    path = tmp_path / "seq.yaml"
    path.write_text(SEQ)
    s = load_spec(path)
    assert s.name == "seq_3" and s.source == str(path)
    assert ids(s) == ["flow.0._test_scale", "flow.1.0._test_shift", "flow.1.1._test_shift",
                      "flow.1.2._test_shift"]
    nodes = s.graph.nodes
    assert [n.params for n in nodes[1:]] == [{"parity": p, "hidden": 8} for p in (0, 1, 0)]
    assert nodes[0].params == {"scale": 0.5}
    assert all(isinstance(n.params["hidden"], int) for n in nodes[1:])
    # chained ports, ending at latent z with the model's prior
    assert nodes[1].inputs == ["flow.0._test_scale"] and nodes[0].inputs == ["x"]
    assert latents(s) == [("z", "logistic", "flow.1.2._test_shift", None)]
    # repeated nodes point where they are written
    assert {n.path for n in nodes[1:]} == {"model.flow[1].body[0]._test_shift"}
    assert {str(n.loc) for n in nodes[1:]} == {f"{path}:11:11"}
    assert str(nodes[0].loc) == f"{path}:7:7"
    assert s.graph.input_shape == (4,) and s.graph.file == str(path)


def test_document_is_resolved_and_reloads_to_the_same_spec(tmp_path):
    path = tmp_path / "seq.yaml"
    path.write_text(SEQ)
    s = load_spec(path, ["vars.K=2"])
    doc = s.document
    json.dumps(doc)  # JSON-serialisable
    assert doc["name"] == "seq_2" and doc["vars"] == {"K": 2, "H": 4}
    repeat = doc["model"]["flow"][1]
    assert repeat["repeat"] == 2  # substituted, but not unrolled
    assert repeat["body"][0]["_test_shift"] == {"parity": "${i % 2}", "hidden": 8}
    assert doc["train"]["batch_size"] == 128 and doc["train"]["steps"] == 5  # defaults filled
    assert doc["sample"] == {"n": 64, "temperature": 1.0, "seed": 0}
    assert doc["data"] == {"dataset": None, "preprocess": [], "val_fraction": 0.1,
                           "split_seed": 0}
    for again in (load_spec(s.to_yaml()), load_spec(doc)):
        assert again.document == doc
        assert again.train == s.train and again.sample == s.sample and again.data == s.data
        assert [(n.id, n.type, n.params, n.inputs, n.outputs) for n in again.graph.nodes] == \
               [(n.id, n.type, n.params, n.inputs, n.outputs) for n in s.graph.nodes]
        assert latents(again) == latents(s)


def test_sources_text_dict_and_missing_file(tmp_path):
    from_text = load_spec(SEQ)
    assert from_text.name == "seq_3" and from_text.source is None
    assert from_text.graph.nodes[0].loc.line == 7
    d = {"model": {"input": [2], "flow": ["_test_scale"]}}
    from_dict = load_spec(d)
    assert ids(from_dict) == ["flow.0._test_scale"] and from_dict.name == "spec"
    assert d == {"model": {"input": [2], "flow": ["_test_scale"]}}  # not mutated
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "named.yaml").write_text("model: {input: [2], flow: []}\n")
    assert load_spec(str(tmp_path / "named.yaml")).name == "named"


# -- overrides and quick ------------------------------------------------------------------------
def test_overrides_are_typed_and_create_sections():
    s = load_spec(SEQ, ["train.optimizer.adam.lr=3e-4", "train.steps=7", "sample.temperature=.7",
                        "train.grad_clip=", "model.flow[0]._test_scale.scale=2",
                        "data.preprocess=[]"])
    assert s.train["optimizer"] == {"adam": {"lr": 3e-4}}
    assert s.train["steps"] == 7 and s.train["grad_clip"] is None
    assert s.sample["temperature"] == 0.7
    assert s.graph.nodes[0].params == {"scale": 2}
    s = load_spec({"model": {"input": [2], "flow": []}}, ["train.optimizer.sgd.momentum=0.9"])
    assert s.train["optimizer"] == {"sgd": {"momentum": 0.9}}


def test_override_of_a_bare_name_and_dict_overrides():
    text = "model: {input: [2], flow: [_test_scale]}\ntrain: {optimizer: adam}\n"
    s = load_spec(text, ["train.optimizer.adam.lr=0.5", "model.flow.0._test_scale.scale=3"])
    assert s.train["optimizer"] == {"adam": {"lr": 0.5}}
    assert s.graph.nodes[0].params == {"scale": 3}
    s = load_spec(SEQ, {"vars.K": 1, "train.steps": 9})
    assert ids(s) == ["flow.0._test_scale", "flow.1.0._test_shift"] and s.train["steps"] == 9


def test_var_override_resubstitutes_everywhere():
    s = load_spec(SEQ, ["vars.H=3"])
    assert {n.params["hidden"] for n in s.graph.nodes[1:]} == {6}
    assert load_spec(SEQ, ["vars.K=0"]).graph.latents[0].input == "flow.0._test_scale"


def test_quick_applies_first_then_overrides():
    text = SEQ + "quick: {vars.K: 1, train.steps: 2, train.batch_size: 8}\n"
    normal = load_spec(text)
    assert len(normal.graph.nodes) == 4 and normal.train["steps"] == 5
    assert normal.quick == {"vars.K": 1, "train.steps": 2, "train.batch_size": 8}
    quick = load_spec(text, ["train.steps=3"], quick=True)
    assert len(quick.graph.nodes) == 2
    assert quick.train["steps"] == 3 and quick.train["batch_size"] == 8


# -- vars, expressions, repeat scoping ----------------------------------------------------------
def test_expressions_exact_typed_and_interpolated():
    s = load_spec(spec("""\
        vars: {W: 7, half: "${W // 2}", sizes: [3, 5], tag: "w${W}"}
        name: "run_${W}_${half + 0.5}"
        description: "${tag}"
        model:
          input: ["${max(2, half - 1) * 2}"]
          flow:
            - _test_shift:
                hidden: "${min(W, 2) ** 3 - W % 4}"
                net: {_test_net: {hidden: "${sizes}"}}
        """))
    assert s.name == "run_7_3.5" and s.document["description"] == "w7"
    assert s.document["vars"] == {"W": 7, "half": 3, "sizes": [3, 5], "tag": "w7"}
    assert s.graph.input_shape == (4,)
    assert s.graph.nodes[0].params == {"hidden": 5, "net": {"_test_net": {"hidden": [3, 5]}}}


def test_nested_repeats_scope_their_variables():
    s = load_spec(spec("""\
        model:
          input: [4]
          flow:
            - repeat: 2
              as: i
              body:
                - repeat: 3
                  as: j
                  body:
                    - _test_shift: {parity: "${(i + j) % 2}", hidden: "${10 * i + j + 1}"}
                - _test_scale: {scale: "${i + 1}"}
        """))
    assert ids(s) == ["flow.0.0.0.0._test_shift", "flow.0.0.0.1._test_shift",
                      "flow.0.0.0.2._test_shift", "flow.0.0.1._test_scale",
                      "flow.0.1.0.0._test_shift", "flow.0.1.0.1._test_shift",
                      "flow.0.1.0.2._test_shift", "flow.0.1.1._test_scale"]
    shifts = [n.params for n in s.graph.nodes if n.type == "_test_shift"]
    assert [p["hidden"] for p in shifts] == [1, 2, 3, 11, 12, 13]
    assert [p["parity"] for p in shifts] == [0, 1, 0, 1, 0, 1]
    assert [n.params["scale"] for n in s.graph.nodes if n.type == "_test_scale"] == [1, 2]


def test_repeat_zero_is_nothing():
    s = load_spec("model:\n  input: [4]\n  flow:\n    - repeat: 0\n      body: [_test_scale]\n")
    assert s.graph.nodes == [] and latents(s) == [("z", "standard_normal", "x", None)]


# -- blocks -------------------------------------------------------------------------------------
BLOCKS = spec("""\
    vars: {W: 6}
    blocks:
      step:
        params: {width: "${W}", parity: 0}
        flow:
          - _test_shift: {hidden: "${width}", parity: "${parity}"}
          - _test_scale
      needs: {params: [s], flow: [{_test_scale: {scale: "${s}"}}]}
      plain: [_test_scale]
    model:
      input: [4]
      flow:
        - block: step
        - repeat: 2
          as: i
          block: step
          args: {parity: "${1 - i}", width: 3}
        - block: needs
          args: {s: 0.25}
        - block: plain
    """)


def test_blocks_bind_params_with_defaults_and_required_args(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(BLOCKS)
    s = load_spec(path)
    assert ids(s) == ["flow.0.0._test_shift", "flow.0.1._test_scale",
                      "flow.1.0.0._test_shift", "flow.1.0.1._test_scale",
                      "flow.1.1.0._test_shift", "flow.1.1.1._test_scale",
                      "flow.2._test_scale", "flow.3._test_scale"]
    shifts = [n for n in s.graph.nodes if n.type == "_test_shift"]
    assert [n.params for n in shifts] == [{"hidden": 6, "parity": 0}, {"hidden": 3, "parity": 1},
                                          {"hidden": 3, "parity": 0}]
    assert s.graph.nodes[6].params == {"scale": 0.25}
    # nodes inside a block point at the block
    assert {n.path for n in shifts} == {"blocks.step.flow[0]._test_shift"}
    assert {str(n.loc) for n in shifts} == {f"{path}:6:9"}
    # the document keeps blocks, with vars substituted in defaults and params left for binding
    assert s.document["blocks"]["step"]["params"] == {"width": 6, "parity": 0}
    assert s.document["blocks"]["step"]["flow"][0]["_test_shift"]["hidden"] == "${width}"


# -- factor_out ---------------------------------------------------------------------------------
def test_factor_out_expands_to_split_and_latent(test_split):
    s = load_spec(spec("""\
        model:
          input: [8]
          prior: logistic
          flow:
            - _test_scale
            - factor_out
            - _test_shift
            - factor_out: {prior: _test_cond_prior, dim: 0}
            - _test_scale
        """))
    assert ids(s) == ["flow.0._test_scale", "flow.1._test_split", "flow.2._test_shift",
                      "flow.3._test_split", "flow.4._test_scale"]
    split1, shift, split2 = s.graph.nodes[1:4]
    assert split1.outputs == ["flow.1._test_split.0", "flow.1._test_split.1"]
    assert shift.inputs == ["flow.1._test_split.0"]  # the chain continues with the first part
    assert split2.params == {"dim": 0}  # split params pass through
    assert split2.path == "model.flow[3].factor_out"
    assert latents(s) == [
        ("flow.1.factor_out", "standard_normal", "flow.1._test_split.1", None),
        ("flow.3.factor_out", "_test_cond_prior", "flow.3._test_split.1", "flow.3._test_split.0"),
        ("z", "logistic", "flow.4._test_scale", None),
    ]
    flow = Flow(s.graph).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    z, logdet = flow(x)
    assert [t.shape[1:] for t in z] == [(4,), (2,), (2,)]
    back, inv_logdet = flow.inverse(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(logdet, -inv_logdet)


def test_factor_out_inside_repeat_gets_unique_ids(test_split):
    s = load_spec("model:\n  input: [8]\n  flow:\n    - repeat: 2\n      body: [factor_out]\n")
    assert [lat.id for lat in s.graph.latents] == ["flow.0.0.factor_out", "flow.0.1.factor_out",
                                                   "z"]
    assert s.graph.latents[-1].input == "flow.0.1._test_split.0"


# -- explicit graphs ----------------------------------------------------------------------------
GRAPH = spec("""\
    vars: {K: 2}
    blocks:
      step:
        params: {p: 0}
        flow:
          - _test_shift: {parity: "${p}"}
          - _test_scale
    model:
      input: [4]
      graph:
        - {id: sp, node: _test_split, in: x}
        - {id: a, flow: [_test_scale, {repeat: "${K}", body: [_test_shift]}], in: sp.0}
        - {id: b, block: step, repeat: "${K}", as: i, args: {p: "${i % 2}"}, in: sp.1}
        - {id: za, latent: _test_cond_prior, in: a, cond: b}
        - {id: e, block: step, repeat: 0, in: b}
        - {id: sp2, node: _test_split, in: e, out: [h, g]}
        - {id: m, node: _test_concat, in: [g, h]}
        - {id: zb, latent: standard_normal, in: m}
    """)


def test_graph_lowering_ports_ids_and_latents():
    s = load_spec(GRAPH)
    by_id = {n.id: n for n in s.graph.nodes}
    assert list(by_id) == ["sp", "a.0._test_scale", "a.1.0._test_shift", "a.1.1._test_shift",
                           "b.0.0._test_shift", "b.0.1._test_scale", "b.1.0._test_shift",
                           "b.1.1._test_scale", "sp2", "m"]
    assert by_id["sp"].outputs == ["sp.0", "sp.1"]  # multi-output default ports
    assert by_id["a.0._test_scale"].inputs == ["sp.0"]
    assert by_id["a.1.1._test_shift"].outputs == ["a"]  # a sub-chain's end is named by its id
    assert by_id["b.1.1._test_scale"].outputs == ["b"]
    assert [by_id[f"b.{r}.0._test_shift"].params for r in (0, 1)] == [{"parity": 0},
                                                                     {"parity": 1}]
    assert by_id["sp2"].inputs == ["b"]  # `e` repeats nothing: an alias of its input
    assert by_id["sp2"].outputs == ["h", "g"] and by_id["m"].inputs == ["g", "h"]
    assert latents(s) == [("za", "_test_cond_prior", "a", "b"), ("zb", "standard_normal", "m",
                                                                 None)]
    assert by_id["sp"].path == "model.graph[0]" and by_id["sp"].loc.line == 11
    flow = Flow(s.graph).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    z, logdet = flow(x)
    torch.testing.assert_close(flow.inverse(z)[0], x)
    assert flow.sample(3).shape == (3, 4)


def test_context_classes_and_shape():
    base = "model:\n  input: [2]\n  flow: [_test_scale]\n  context: "
    assert load_spec(base + "{classes: 10}\n").graph.context.num_classes == 10
    assert load_spec(base + "{shape: [3, 2]}\n").graph.context.shape == (3, 2)
    assert load_spec(base.replace("  context: ", "")).graph.context is None


# -- data section -------------------------------------------------------------------------------
def test_data_section_dispatches_and_fills_defaults(monkeypatch):
    datasets, steps = Registry("dataset"), Registry("preprocessing step")
    datasets.register("toy", schema=params_schema(n={"type": "integer", "minimum": 1,
                                                     "default": 100}))(type("Toy", (), {}))
    steps.register("dequantize", schema=params_schema(kind={"enum": ["uniform", "none"],
                                                            "default": "uniform"}))(
        type("Deq", (), {}))
    steps.register("pad", schema=params_schema(to={"type": "array"}, value={"type": "number",
                                                                             "default": 0}))(
        type("Pad", (), {}))
    real = spec_schema_mod.registries

    def fake():
        return {**real(), "dataset": datasets, "preprocess": steps}

    monkeypatch.setattr(spec_schema_mod, "registries", fake)
    text = ("data: {dataset: toy, preprocess: [dequantize, {dequantize: none}, "
            "{pad: {to: [4]}}]}\nmodel: {input: [2], flow: []}\n")
    s = load_spec(text)
    assert s.data == {"dataset": {"toy": {"n": 100}},
                      "preprocess": [{"dequantize": {"kind": "uniform"}},
                                     {"dequantize": {"kind": "none"}},  # scalar shorthand
                                     {"pad": {"to": [4], "value": 0}}],
                      "val_fraction": 0.1, "split_seed": 0}
    assert s.document["data"] == s.data
    with pytest.raises(SpecError) as err:
        load_spec(text.replace("toy,", "{tyo: {n: 1}},").replace("none", "nope"))
    messages = [(p.path, p.message, p.hint) for p in err.value.problems]
    assert messages == [
        ("data.dataset", "unknown dataset 'tyo'", "did you mean 'toy'?"),
        ("data.preprocess[1].dequantize.kind", "expected one of 'uniform', 'none', got 'nope'",
         "did you mean 'none'?"),
    ]


@pytest.mark.parametrize("text", [BLOCKS, GRAPH], ids=["blocks", "graph"])
def test_round_trip_of_blocks_and_graphs(text):
    def key(s):
        return ([(n.id, n.type, n.params, n.inputs, n.outputs, n.path) for n in s.graph.nodes],
                [(lat.id, lat.prior, lat.params, lat.input, lat.cond) for lat in s.graph.latents])

    s = load_spec(text)
    for again in (load_spec(s.to_yaml()), load_spec(s.document)):
        assert again.document == s.document and key(again) == key(s)


# -- the exported schema ------------------------------------------------------------------------
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))


def _raw(text: str):
    doc, problems = parse_yaml(text)
    assert not problems
    return plain(doc)


def test_schema_is_valid_draft07_and_accepts_test_specs():
    schema = spec_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for text in (SEQ, BLOCKS, GRAPH, SEQ + "quick: {vars.K: 1}\n"):
        errors = [e.message for e in validator.iter_errors(_raw(text))]
        assert not errors, errors


def test_schema_rejects_mistakes():
    validator = jsonschema.Draft7Validator(spec_schema())
    bad = [
        "model: {input: [2], flow: [_test_shfit]}\n",
        "model: {input: [2], flow: [{_test_shift: {hiden: 3}}]}\n",
        "model: {input: [2], flow: [{_test_shift: {parity: 2}}]}\n",
        "model: {input: [2], flow: []}\ntrian: {}\n",
        "model: {input: [2], flow: []}\ntrain: {steps: abc}\n",
        "model: {input: [0], flow: []}\n",
    ]
    for text in bad:
        assert list(validator.iter_errors(_raw(text))), text


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_shipped_specs_match_the_schema_and_load(path):
    with open(path) as f:
        text = f.read()
    errors = [f"{list(e.path)}: {e.message[:200]}"
              for e in jsonschema.Draft7Validator(spec_schema()).iter_errors(_raw(text))]
    assert not errors, errors
    load_spec(path, quick=True)
