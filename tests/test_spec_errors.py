"""Every kind of spec mistake: one focused message at the exact file:line:col and path."""

from __future__ import annotations

import textwrap

import _spec_test_nodes  # noqa: F401  (registers the _test_ nodes)
import pytest

from flowspec.errors import SpecError
from flowspec.spec import load_spec


def problems(tmp_path, text: str, overrides=None, **kw):
    """Load ``text`` from a file; return [(line, col, path, message, hint)] of the error."""
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as err:
        load_spec(path, overrides, **kw)
    out = []
    for p in err.value.problems:
        if p.loc is not None and p.loc.line is not None:
            assert p.loc.file == str(path)
        out.append((p.loc.line if p.loc else None, p.loc.col if p.loc else None, p.path,
                    p.message, p.hint))
    return out


def at(text: str, line: int, needle: str) -> tuple[int, int]:
    """(line, column) of ``needle`` on 1-based ``line`` of the dedented ``text``."""
    col = textwrap.dedent(text).splitlines()[line - 1].index(needle) + 1
    assert col > 0
    return line, col


def one(tmp_path, text, overrides=None):
    got = problems(tmp_path, text, overrides)
    assert len(got) == 1, got
    return got[0]


# -- YAML level ---------------------------------------------------------------------------------
def test_bad_yaml_syntax_is_located(tmp_path):
    line, col, path, message, hint = one(tmp_path, """\
        model:
          input: [2
          flow: []
        """)
    assert (line, col, path) == (3, 7, "")
    assert message.startswith("invalid YAML: expected ',' or ']'")
    assert hint.endswith("spec.yaml:2:10")  # where the list was opened


def test_duplicate_key_is_an_error_at_the_second_key(tmp_path):
    line, col, path, message, hint = one(tmp_path, """\
        model:
          input: [2]
          flow: []
          input: [4]
        """)
    assert (line, col, message) == (4, 3, "duplicate key 'input'")
    assert hint.endswith("spec.yaml:2:3")


def test_python_tags_never_run(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "system", lambda *a: pytest.fail("a tag ran code"))
    got = one(tmp_path, """\
        model: {input: [2], flow: []}
        name: !!python/object/apply:os.system ["echo hi"]
        """)
    assert got[:4] == (2, 7, "", "YAML tag '!!python/object/apply:os.system' is not allowed")
    text = "model: {input: [2], flow: [!custom x]}\n"
    got = one(tmp_path, text)
    assert got[:4] == (*at(text, 1, "!custom"), "", "YAML tag '!custom' is not allowed")


# -- names, keys, types, ranges -----------------------------------------------------------------
def test_unknown_node_with_did_you_mean(tmp_path):
    assert one(tmp_path, """\
        model:
          input: [4]
          flow:
            - _test_scale
            - _test_shfit: {parity: 1}
        """) == (5, 7, "model.flow[1]", "unknown node '_test_shfit'", "did you mean '_test_shift'?")


def test_unknown_key_with_did_you_mean(tmp_path):
    text = """\
        model:
          input: [4]
          flow:
            - _test_shift: {hiden: 3}
        """
    assert one(tmp_path, text) == (*at(text, 4, "hiden"), "model.flow[0]._test_shift.hiden",
                                   "unknown key 'hiden'", "did you mean 'hidden'?")


def test_wrong_type_in_a_nested_net(tmp_path):
    text = """\
        model:
          input: [4]
          flow:
            - _test_shift:
                net: {_test_net: {hidden: [8, abc]}}
        """
    assert one(tmp_path, text) == (*at(text, 5, "abc"),
                                   "model.flow[0]._test_shift.net._test_net.hidden[1]",
                                   "expected integer >= 1, got 'abc'", None)


def test_wrong_type_says_what_was_expected(tmp_path):
    text = """\
        model:
          input: [4]
          flow:
            - _test_shift: {hidden: abc}
        """
    assert one(tmp_path, text) == (*at(text, 4, "abc"), "model.flow[0]._test_shift.hidden",
                                   "expected integer >= 1, got 'abc'", None)


def test_out_of_range(tmp_path):
    text = """\
        model:
          input: [4]
          flow:
            - _test_shift: {parity: 2}
        """
    assert one(tmp_path, text) == (*at(text, 4, "2}"), "model.flow[0]._test_shift.parity",
                                   "expected integer >= 0 and <= 1, got 2", None)


def test_a_wrong_net_name_is_one_message_not_a_flood_of_branches(tmp_path):
    text = """\
        model:
          input: [4]
          flow:
            - _test_shift: {net: {_test_nte: {}}}
        """
    assert one(tmp_path, text) == (*at(text, 4, "_test_nte"), "model.flow[0]._test_shift.net",
                                   "unknown net '_test_nte'", "did you mean '_test_net'?")


def test_train_and_sample_sections(tmp_path):
    got = problems(tmp_path, """\
        model: {input: [2], flow: []}
        train:
          stepz: 3
          compile: on
          optimizer: {adma: {lr: 1}}
          batch_size: 0
        sample: {temperature: hot}
        """)
    assert got == [
        (3, 3, "train.stepz", "unknown key 'stepz'", "did you mean 'steps'?"),
        (4, 12, "train.compile", "expected true/false, got 'on'", None),
        (5, 15, "train.optimizer.adma", "unknown key 'adma'", "did you mean 'adam'?"),
        (6, 15, "train.batch_size", "expected integer >= 1, got 0", None),
        (7, 23, "sample.temperature", "expected number >= 0, got 'hot'", None),
    ]


def test_unknown_section_and_model_key(tmp_path):
    got = problems(tmp_path, """\
        modle: {}
        model: {input: [2], flow: [], priro: logistic}
        """)
    assert got == [
        (1, 1, "modle", "unknown section 'modle'", "did you mean 'model'?"),
        (2, 31, "model.priro", "unknown key 'priro' in model", "did you mean 'prior'?"),
    ]


# -- vars and blocks ----------------------------------------------------------------------------
def test_unknown_variable_with_did_you_mean(tmp_path):
    text = """\
        vars: {hidden: 3}
        model:
          input: [4]
          flow:
            - _test_shift: {hidden: "${hiden + 1}"}
        """
    assert one(tmp_path, text) == (*at(text, 5, '"${'), "model.flow[0]._test_shift.hidden",
                                   "unknown variable 'hiden'", "did you mean 'hidden'?")


def test_repeat_index_is_not_visible_outside_its_body(tmp_path):
    text = """\
        model:
          input: [4]
          flow:
            - repeat: 2
              as: i
              body: [_test_scale]
            - _test_shift: {parity: "${i}"}
        """
    assert one(tmp_path, text) == (*at(text, 7, '"${'), "model.flow[1]._test_shift.parity",
                                   "unknown variable 'i'", "declare it under vars:")


def test_expressions_are_arithmetic_only(tmp_path):
    text = """\
        vars: {K: 2}
        model:
          input: [4]
          flow:
            - _test_scale: {scale: "${__import__('os').getcwd()}"}
        """
    line, col, path, message, _ = one(tmp_path, text)
    assert (line, col, path) == (*at(text, 5, '"${'), "model.flow[0]._test_scale.scale")
    assert message.startswith("expressions may only use numbers")


def test_missing_and_unknown_block_args(tmp_path):
    text = """\
        blocks:
          step:
            params: [width]
            flow:
              - _test_shift: {hidden: "${width}"}
        model:
          input: [4]
          flow:
            - block: step
            - block: step
              args: {width: 3, widht: 4}
            - block: stpe
        """
    assert problems(tmp_path, text) == [
        (*at(text, 9, "block"), "model.flow[0]", "block 'step' needs argument 'width'",
         "add args: {width: ...}"),
        (*at(text, 11, "widht"), "model.flow[1].args.widht",
         "unknown argument 'widht' of block 'step'", "did you mean 'width'?"),
        (*at(text, 12, "stpe"), "model.flow[2].block", "unknown block 'stpe'",
         "did you mean 'step'?"),
    ]


def test_a_problem_in_a_repeated_block_is_reported_once(tmp_path):
    text = """\
        blocks:
          step:
            flow:
              - _test_shift: {parity: 3}
        model:
          input: [4]
          flow:
            - repeat: 4
              block: step
            - block: step
        """
    assert one(tmp_path, text) == (*at(text, 4, "3}"), "blocks.step.flow[0]._test_shift.parity",
                                   "expected integer >= 0 and <= 1, got 3", None)


def test_block_recursion(tmp_path):
    text = """\
        blocks:
          a: [{block: a}]
        model: {input: [2], flow: [{block: a}]}
        """
    assert one(tmp_path, text)[:4] == (*at(text, 2, "a}"), "blocks.a[0].block",
                                       "block 'a' uses itself (a -> a)")


# -- graph and shape errors ---------------------------------------------------------------------
def test_dangling_input(tmp_path):
    assert problems(tmp_path, """\
        model:
          input: [4]
          graph:
            - {id: f, node: _test_scale, in: x}
            - {id: g, node: _test_scale, in: ff}
            - {id: z, latent: standard_normal, in: g}
        """) == [
        (4, 7, "model.graph[0]", "output 'f' is never consumed",
         "send it to a latent node or another bijector"),
        (5, 7, "model.graph[1]", "input 'ff' is not produced by any node", "did you mean 'f'?"),
    ]


def test_unconsumed_output(tmp_path):
    assert problems(tmp_path, """\
        model:
          input: [4]
          graph:
            - {id: sp, node: _test_split, in: x, out: [h, e]}
            - {id: z, latent: standard_normal, in: h}
        """) == [(4, 7, "model.graph[0]", "output 'e' is never consumed",
                  "send it to a latent node or another bijector")]


def test_cycle_names_the_nodes(tmp_path):
    got = problems(tmp_path, """\
        model:
          input: [4]
          graph:
            - {id: a, node: _test_scale, in: c}
            - {id: b, node: _test_scale, in: a}
            - {id: c, node: _test_scale, in: b}
            - {id: z, latent: standard_normal, in: x}
        """)
    assert [(g[0], g[2]) for g in got] == [(4, "model.graph[0]"), (5, "model.graph[1]"),
                                           (6, "model.graph[2]")]
    assert {g[3] for g in got} == {"node is part of a cycle: a -> b -> c"}


def test_odd_dimension_shape_error(tmp_path):
    assert one(tmp_path, """\
        model:
          input: [5]
          flow:
            - _test_scale
            - _test_shift
        """)[:4] == (5, 7, "model.flow[1]._test_shift",
                     "_test_shift needs an even number of features, got [5] (input shape [5])")


def test_shape_error_inside_a_block_points_at_the_block(tmp_path):
    text = """\
        blocks:
          b: [_test_scale, _test_shift]
        model:
          input: [3]
          flow: [{block: b}]
        """
    assert one(tmp_path, text)[:3] == (*at(text, 2, "_test_shift"), "blocks.b[1]._test_shift")


def test_prior_needing_a_cond_port_in_a_sequential_flow(tmp_path):
    text = """\
        model:
          input: [4]
          prior: _test_cond_prior
          flow: []
        """
    assert one(tmp_path, text)[:4] == (*at(text, 3, "_test_cond"), "model.prior",
                                       "prior '_test_cond_prior' needs a 'cond' port to "
                                       "condition on")


def test_graph_item_mistakes(tmp_path):
    text = """\
        model:
          input: [4]
          prior: logistic
          graph:
            - {id: a, node: _test_scale, flow: [], in: x}
            - {id: b, latent: standard_normal, in: x, out: [q]}
            - {node: _test_scale, in: x}
        """
    assert [g[:4] for g in problems(tmp_path, text)] == [
        (3, 3, "model.prior", "model.prior is the prior of a sequential flow's end; a graph "
                              "names its priors in latent items"),
        (5, 7, "model.graph[0]", "a graph item needs exactly one of node, flow, block, latent "
                                 "(got node, flow)"),
        (*at(text, 6, "out"), "model.graph[1].out", "'out' does not apply to a latent item"),
        (7, 7, "model.graph[2]", "missing key 'id'"),
    ]


# -- all at once, and overrides -----------------------------------------------------------------
def test_every_problem_in_the_file_is_reported_together(tmp_path):
    text = """\
        vars: {K: 2}
        model:
          input: [4]
          flow:
            - _test_shfit
            - repeat: "${K}"
              as: i
              body:
                - _test_shift: {parity: "${i + 5}"}
            - _test_scale: {scale: "${k}"}
        train: {steps: -1}
        """
    parity = "model.flow[1].body[0]._test_shift.parity"
    assert [g[:4] for g in problems(tmp_path, text)] == [
        (5, 7, "model.flow[0]", "unknown node '_test_shfit'"),
        (*at(text, 9, '"${'), parity, "expected integer >= 0 and <= 1, got 5"),
        (*at(text, 9, '"${'), parity, "expected integer >= 0 and <= 1, got 6"),
        (*at(text, 10, '"${'), "model.flow[2]._test_scale.scale", "unknown variable 'k'"),
        (*at(text, 11, "-1"), "train.steps", "expected integer >= 1 or null, got -1"),
    ]


def test_override_errors_name_the_override(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model: {input: [2], flow: [_test_scale]}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path, ["trian.steps=3", "train.stepz=3", "train.steps=abc", "novalue",
                         "model.flow.3=x"])
    got = [(str(p.loc), p.path, p.message, p.hint) for p in err.value.problems]
    assert got == [
        ("--set novalue", "", "expected PATH=VALUE, got 'novalue'", "e.g. --set train.steps=100"),
        ("--set trian.steps=3", "trian.steps", "unknown section 'trian'", "did you mean 'train'?"),
        ("--set model.flow.3=x", "model.flow.3",
         "cannot set 'model.flow.3': 'model.flow' is a list; index 3 is out of range (0..0)", None),
        ("--set train.stepz=3", "train.stepz", "unknown key 'stepz'", "did you mean 'steps'?"),
        ("--set train.steps=abc", "train.steps", "expected integer >= 1 or null, got 'abc'",
         None),
    ]


def test_quick_overrides_are_located_in_the_file(tmp_path):
    text = """\
        model: {input: [2], flow: []}
        quick:
          train.steps: 0
          trian.x: 1
        """
    assert [g[:4] for g in problems(tmp_path, text, quick=True)] == [
        (*at(text, 3, "0"), "train.steps", "expected integer >= 1 or null, got 0"),
        (4, 3, "trian.x", "unknown section 'trian'"),
    ]
    # not applied, the quick paths are still checked
    assert [g[:4] for g in problems(tmp_path, text)] == [
        (4, 3, "quick.trian.x", "unknown section 'trian'"),
    ]


def test_header_vars_and_model_structure(tmp_path):
    text = """\
        flowspec: 2
        name: "bad name"
        vars: {a: "${b}", b: "${a + 1}", c: "${1 / 0}"}
        model: {flow: [], graph: []}
        """
    assert [g[:4] for g in problems(tmp_path, text)] == [
        (*at(text, 1, "2"), "flowspec", "unsupported language version 2 (this is flowspec 1)"),
        (*at(text, 2, '"bad'), "name", "expected a name of letters, digits, _ . + -, got "
                                       "'bad name'"),
        (*at(text, 3, '"${a'), "vars.b", "variables refer to each other in a cycle: a -> b -> a"),
        (*at(text, 3, '"${1'), "vars.c", "division by zero"),
        (*at(text, 4, "{"), "model", "missing key 'input'"),
        (*at(text, 4, "{"), "model", "give either flow: or graph:, not both"),
    ]
    assert [g[:4] for g in problems(tmp_path, "")] == [
        (1, 1, "model", "missing section 'model'")]


def test_mangled_specs_raise_spec_errors_never_crash():
    """Random junk in random places (seeded): always a SpecError with located problems."""
    import copy
    import random

    from test_spec_loading import BLOCKS, GRAPH, SEQ

    from flowspec.spec.source import parse_yaml, plain

    docs = [plain(parse_yaml(t)[0]) for t in (SEQ, BLOCKS, GRAPH)]
    junk = [None, "abc", "${zz}", "${K", -1, 0, 2.5, True, [], {}, [1, "x"], {"a": 1},
            "_test_scale", "factor_out", {"repeat": "x"}, {"block": 3}, "${1/0}", 10**9]

    def paths(v, pre=()):
        if pre:
            yield pre
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            yield from paths(x, (*pre, k))

    rng = random.Random(0)
    failures = 0
    for _ in range(300):
        doc = copy.deepcopy(rng.choice(docs))
        for _ in range(rng.randint(1, 4)):
            *parent, last = rng.choice(list(paths(doc)))
            target = doc
            for k in parent:
                target = target[k]
            target[last] = copy.deepcopy(rng.choice(junk))
        try:
            load_spec(doc)
        except SpecError as err:
            failures += 1
            assert err.problems and all(p.message for p in err.problems)
    assert failures > 200  # most mutations are mistakes, and each was reported
