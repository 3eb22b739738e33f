"""Fuzzing the spec loader with mutated shipped specs: a FlowspecError or a Spec, quickly.

Each case takes one of ``specs/*.yaml`` and applies a few seeded random edits to
its *text* (so YAML syntax breaks too, not only values): lines deleted,
duplicated or swapped, characters changed, YAML specials inserted (anchors,
aliases, tags, flow brackets, control characters), huge numbers, deep nesting,
scalars swapped for lists or mappings. Whatever comes out, ``load_spec`` must
either return a spec or raise the project's own :class:`FlowspecError` -- never
another exception -- and each case must finish within a time bound.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from flowspec.errors import FlowspecError
from flowspec.spec import load_spec

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.yaml"))
CASES = 300
SEED = 20240610
#: seconds one case may take; the slowest shipped spec loads in well under a second.
CASE_LIMIT = 5.0
#: seconds for all cases together (about 20 on an idle machine's single core).
TOTAL_LIMIT = 60.0

SPECIALS = ["&a ", "*a", "[", "]", "{", "}", ": ", "!", "!!python/object:os.system ", "%",
            "@", "\x00", "\x03", "\t", "? ", "- ", "<<: *a", "'", '"', "#", "|", ">", "${",
            "}", "${K}", "${1/0}", "${x", "\ufeff", "~"]
HUGE = ["4294967296", "1" * 90, "9" * 120, "1e400", "-1e400", ".nan", ".inf", "-0",
        "${4096**4096}", "${(10**4096)**4096}", "${" + "+".join(["1"] * 300) + "}",
        "100000", "0x" + "f" * 40, "2**63"]
SWAPS = ["[]", "{}", "[1, 2]", "{a: 1}", "null", "true", "'text'", "[[[[[[1]]]]]]",
         "{" * 40 + "}" * 40, "[" * 80 + "]" * 80]


def _mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            lines = [""]
        i = rng.randrange(len(lines))
        op = rng.randrange(9)
        line = lines[i]
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, line)
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and line:  # change a character
            k = rng.randrange(len(line))
            lines[i] = line[:k] + chr(rng.choice([rng.randrange(32, 127),
                                                  rng.randrange(0, 32)])) + line[k + 1:]
        elif op == 4:  # insert a YAML special
            k = rng.randrange(len(line) + 1)
            lines[i] = line[:k] + rng.choice(SPECIALS) + line[k:]
        elif op in (5, 6):  # replace a value with a huge number or another type
            if ": " in line:
                key, _, _ = line.partition(": ")
                lines[i] = f"{key}: {rng.choice(HUGE if op == 5 else SWAPS)}"
            else:
                lines[i] = line + " " + rng.choice(HUGE)
        elif op == 7:  # deep nesting under a key
            depth = rng.choice([10, 70, 500])
            lines.insert(i, "deep: " + "[" * depth + "]" * depth)
        else:  # an anchor and aliases of it, multiplied
            lines[i:i] = ["lol: &a [x, x, x, x, x, x, x, x]",
                          "lol2: &b [*a, *a, *a, *a, *a, *a, *a, *a]",
                          "lol3: [*b, *b, *b, *b, *b, *b, *b, *b]"]
    return "\n".join(lines) + "\n"


def test_shipped_specs_are_there():
    assert len(SPECS) >= 10


@pytest.mark.slow
def test_mutated_specs_fail_cleanly_and_quickly():
    rng = random.Random(SEED)
    texts = [p.read_text() for p in SPECS]
    outcomes = {"ok": 0, "error": 0}
    slowest = (0.0, "")
    start = time.perf_counter()
    for case in range(CASES):
        text = _mutate(rng.choice(texts), rng)
        t0 = time.perf_counter()
        try:
            load_spec(text)
            outcomes["ok"] += 1
        except FlowspecError as err:
            assert err.problems and all(p.message for p in err.problems), text
            str(err)  # the message can be printed
            outcomes["error"] += 1
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case}: {type(err).__name__}: {err}\n--- spec ---\n{text}")
        took = time.perf_counter() - t0
        slowest = max(slowest, (took, text))
        assert took < CASE_LIMIT, f"case {case} took {took:.1f}s:\n{text}"
    total = time.perf_counter() - start
    assert total < TOTAL_LIMIT, f"{CASES} cases took {total:.1f}s (slowest {slowest[0]:.2f}s)"
    # Most mutations break something; some leave a valid spec. Both happen.
    assert outcomes["error"] > CASES // 3 and outcomes["ok"] > 0, outcomes
