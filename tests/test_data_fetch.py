"""`flowspec data fetch`: downloads from a local HTTP server, checksums, atomic writes."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import threading

import pytest

import flowspec.data.fetch as fetch_mod
from flowspec.data import open_dataset
from flowspec.data.fetch import RemoteFile, Resource, fetch
from flowspec.errors import DataError


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (base_url, folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, log
    finally:
        httpd.shutdown()
        httpd.server_close()


def tiny_mnist(www) -> dict[str, bytes]:
    """Four small but valid IDX files (2 train, 1 test), gzipped."""
    files = {}
    for prefix, n in (("train", 2), ("t10k", 1)):
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(
            struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 784))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(
            struct.pack(">II", 2049, n) + bytes([3] * n))
    for name, blob in files.items():
        (www / name).write_bytes(blob)
    return files


def resource_for(files: dict[str, bytes], wrong: str | None = None) -> Resource:
    entries = []
    for name, blob in files.items():
        md5 = hashlib.md5(blob).hexdigest()
        if name == wrong:
            md5 = "0" * 32
        entries.append(RemoteFile(name, md5, hashlib.sha256(blob).hexdigest()))
    return Resource(folder="mnist", files=tuple(entries), mirrors=("http://127.0.0.1:9/none",))


def test_fetch_downloads_verifies_and_loads(server, tmp_path, monkeypatch):
    base, www, log = server
    files = tiny_mnist(www)
    monkeypatch.setitem(fetch_mod.RESOURCES, "mnist", resource_for(files))
    data_dir = tmp_path / "data"
    out = fetch("mnist", data_dir, mirror=base)
    assert out == data_dir / "mnist"
    for name, blob in files.items():
        assert (out / name).read_bytes() == blob
    assert not list(out.glob(".*part"))  # no temporaries left
    d = open_dataset({"dataset": "mnist", "val_fraction": 0}, data_dir)[0].load("train")
    assert d.x.shape == (2, 1, 28, 28) and d.y.tolist() == [3, 3]
    # already there and verified: nothing is downloaded again
    n_requests = len(log)
    fetch("mnist", data_dir, mirror=base)
    assert len(log) == n_requests


def test_mirror_from_environment(server, tmp_path, monkeypatch):
    base, www, log = server
    files = tiny_mnist(www)
    monkeypatch.setitem(fetch_mod.RESOURCES, "mnist", resource_for(files))
    monkeypatch.setenv("FLOWSPEC_MIRROR", base + "/")
    monkeypatch.setenv("FLOWSPEC_DATA", str(tmp_path / "env-data"))
    assert fetch("mnist") == tmp_path / "env-data" / "mnist"
    assert len(log) == 4


def test_checksum_mismatch_fails_and_leaves_nothing(server, tmp_path, monkeypatch):
    base, www, _ = server
    files = tiny_mnist(www)
    bad = "t10k-labels-idx1-ubyte.gz"
    monkeypatch.setitem(fetch_mod.RESOURCES, "mnist", resource_for(files, wrong=bad))
    with pytest.raises(DataError, match=f"checksum mismatch for {bad}") as err:
        fetch("mnist", tmp_path / "data", mirror=base)
    assert "by hand" in str(err.value)
    folder = tmp_path / "data" / "mnist"
    assert not (folder / bad).exists()
    assert not list(folder.glob(".*"))  # the temporary file is gone too


def test_corrupt_local_file_is_replaced(server, tmp_path, monkeypatch):
    base, www, _ = server
    files = tiny_mnist(www)
    monkeypatch.setitem(fetch_mod.RESOURCES, "mnist", resource_for(files))
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"half a download")
    fetch("mnist", tmp_path / "data", mirror=base)
    assert (folder / "train-labels-idx1-ubyte.gz").read_bytes() == \
        files["train-labels-idx1-ubyte.gz"]


def test_no_network_and_unknown_names(server, tmp_path, monkeypatch):
    base, www, _ = server
    files = tiny_mnist(www)
    monkeypatch.setitem(fetch_mod.RESOURCES, "mnist", resource_for(files))
    (www / "train-images-idx3-ubyte.gz").unlink()  # the mirror lacks a file: HTTP 404
    with pytest.raises(DataError, match="cannot download .*train-images-idx3-ubyte.gz"):
        fetch("mnist", tmp_path / "data", mirror=base)
    with pytest.raises(DataError, match="cannot download"):  # nothing listens on port 9
        fetch("mnist", tmp_path / "data", mirror="http://127.0.0.1:9", timeout=2)
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        fetch("mnsit", tmp_path)


def test_published_checksums_match_the_shared_readme():
    # The table in code is the one users rely on: it must be the published one.
    from pathlib import Path

    readme = Path("/work/shared/data/README.md")
    if not readme.is_file():
        pytest.skip("shared data README not present")
    text = readme.read_text()
    for rf in fetch_mod.RESOURCES["mnist"].files:
        assert rf.md5 in text and rf.sha256 in text, rf.name
