"""Docs generated from the registry stay in sync with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_readme_catalogue_is_current():
    # A fresh process, so test-only registrations of other test modules don't leak in.
    code = "from flowspec.catalogue import catalogue_markdown; print(catalogue_markdown())"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- catalogue:start -->")[1].split("<!-- catalogue:end -->")[0]
    assert section.strip() == fresh, "README catalogue is stale: run `python -m flowspec.catalogue`"


def test_every_node_is_documented():
    from flowspec.bijectors import NODES
    from flowspec.catalogue import catalogue_markdown

    text = catalogue_markdown()
    for entry in NODES:
        if not entry.name.startswith("_"):
            assert f"`{entry.name}`" in text and entry.doc, entry.name


def test_readme_spec_example_is_valid():
    from flowspec.spec import load_spec

    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]]
    assert blocks, "the README shows a spec"
    for text in blocks:
        spec = load_spec(text)
        assert spec.graph.nodes


def test_spec_language_training_options_are_current():
    from flowspec.catalogue import TRAIN_END, TRAIN_START, train_options_markdown

    doc = (ROOT / "docs" / "spec-language.md").read_text()
    section = doc.split(TRAIN_START)[1].split(TRAIN_END)[0]
    assert section.strip() == train_options_markdown(), \
        "docs/spec-language.md training options are stale: run `python -m flowspec.catalogue`"
    for name in ("adamw", "cosine", "weight_decay", "ema", "early_stopping"):
        assert f"| `{name}` |" in section
