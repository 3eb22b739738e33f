"""The catalogue lists every registry and renders docstrings for the terminal intact."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from flowspec.catalogue import (
    catalogue_markdown,
    doc_markdown,
    doc_text,
    find,
    known_names,
    public,
    registries,
)
from flowspec_cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    from flowspec_cli.common import console

    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setenv("FLOWSPEC_NO_CACHE", "1")  # always run the command under test


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_every_registry_is_in_the_catalogue():
    kinds = {reg.kind for reg, _ in registries()}
    assert kinds == {"node", "net", "prior", "dataset", "preprocessing step", "energy",
                     "objective"}
    text = catalogue_markdown()
    for reg, title in registries():
        assert f"### {title}" in text
        for entry in public(reg):
            assert f"#### `{entry.name}`" in text, (reg.kind, entry.name)


def test_docstrings_render_for_terminal_and_markdown():
    doc = "Flatten to a vector ``[prod(shape)]``, e.g. ``x * 2 - 1``."
    assert doc_markdown(doc) == "Flatten to a vector `[prod(shape)]`, e.g. `x * 2 - 1`."
    console = Console(record=True, width=200)
    console.print(doc_text(doc))
    out = console.export_text()
    assert "[prod(shape)]" in out and "``" not in out and "x * 2 - 1" in out


def test_nodes_command_lists_all_registries_without_eating_markup():
    r = invoke("nodes")
    assert r.exit_code == 0, r.output
    for title in ("Bijector nodes", "Conditioner networks", "Priors", "Datasets",
                  "Preprocessing steps", "Energies"):
        assert title in r.output
    for name in ("mnist", "dequantize", "U2", "glow_cnn", "diag_gaussian", "flatten"):
        assert name in r.output
    assert "``" not in r.output


@pytest.mark.parametrize("kind", ["node", "net", "prior", "dataset", "preprocessing step",
                                  "energy", "objective"])
def test_nodes_name_works_for_every_registry(kind):
    reg = next(reg for reg, _ in registries() if reg.kind == kind)
    entry = public(reg)[0]
    r = runner.invoke(app, ["nodes", entry.name])
    assert r.exit_code == 0, r.output
    assert f"{entry.name} ({kind}" in r.output


def test_nodes_name_shows_brackets_and_code_plainly():
    r = runner.invoke(app, ["nodes", "flatten"])
    assert r.exit_code == 0
    assert "[prod(shape)]" in r.output and "``" not in r.output
    r = runner.invoke(app, ["nodes", "pad"])
    assert "integer | list[integer]" in r.output  # a type with brackets survives too


def test_unknown_name_suggests_across_registries():
    assert find("moonz") == [] and "moons" in known_names()
    r = runner.invoke(app, ["nodes", "dequantise"])
    assert r.exit_code == 2 and "did you mean 'dequantize'" in r.output
    r = runner.invoke(app, ["nodes", "moonz"])
    assert r.exit_code == 2 and "did you mean 'moons'" in r.output
