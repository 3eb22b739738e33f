"""``flowspec data fetch NAME``: download a dataset's official files, verified.

Each file is streamed to a temporary file in the destination folder, hashed on the
way (MD5 and, where published, SHA-256), and renamed into place only when the
checksums match, so an interrupted or tampered download never looks like data.
Files already present with the right checksums are kept. Mirrors are tried in
order; ``mirror=`` (or ``$FLOWSPEC_MIRROR``) replaces them with one base URL that
serves the files by their plain names (``<mirror>/train-images-idx3-ubyte.gz``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flowspec.errors import DataError, Problem
from flowspec.registry import did_you_mean


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    sha256: str | None = None


@dataclass(frozen=True)
class Resource:
    folder: str  # under the data dir, where the loader looks first
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]


RESOURCES: dict[str, Resource] = {
    "mnist": Resource(
        folder="mnist",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                       "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                       "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                       "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                       "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            "https://storage.googleapis.com/cvdf-datasets/mnist",
            "http://yann.lecun.com/exdb/mnist",
        ),
    ),
    "cifar10": Resource(
        folder="cifar10",
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        mirrors=("https://www.cs.toronto.edu/~kriz",),
    ),
}

CHUNK = 1 << 20


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def _matches(digests: tuple[str, str], rf: RemoteFile) -> bool:
    md5, sha = digests
    return md5 == rf.md5.lower() and (rf.sha256 is None or sha == rf.sha256.lower())


def _download(url: str, dest: Path, rf: RemoteFile, timeout: float) -> None:
    """``url`` -> ``dest`` atomically; raises OSError (network) or DataError (checksum)."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    md5, sha = hashlib.md5(), hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "flowspec"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while block := resp.read(CHUNK):
                md5.update(block)
                sha.update(block)
                out.write(block)
        if not _matches((md5.hexdigest(), sha.hexdigest()), rf):
            raise DataError(
                f"checksum mismatch for {rf.name} from {url}: md5 {md5.hexdigest()} "
                f"(expected {rf.md5})",
                hint="the download is corrupt or the mirror serves a different file")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(name: str, data_dir: str | os.PathLike | None = None, *, mirror: str | None = None,
          timeout: float = 60.0) -> Path:
    """Download dataset ``name`` into ``<data_dir>/<name>/``; returns that folder.

    ``data_dir`` defaults to ``$FLOWSPEC_DATA`` else ``./data``; ``mirror`` to
    ``$FLOWSPEC_MIRROR`` else the official URLs. Raises :class:`DataError` when no
    source gives a file with the published checksums.
    """
    from flowspec.data import default_data_dir

    if name not in RESOURCES:
        sug = did_you_mean(name, sorted(RESOURCES))
        raise DataError(f"no download known for dataset '{name}'",
                        hint=f"did you mean '{sug[0]}'?" if sug
                        else f"fetchable: {', '.join(sorted(RESOURCES))}")
    res = RESOURCES[name]
    mirror = mirror or os.environ.get("FLOWSPEC_MIRROR") or None
    bases = [mirror] if mirror else list(res.mirrors)
    folder = default_data_dir(data_dir) / res.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {folder} ({err})", hint="choose another --data-dir") \
            from None
    for rf in res.files:
        dest = folder / rf.name
        if dest.is_file() and _matches(_digests(dest), rf):
            continue
        problems: list[Problem] = []
        for base in bases:
            url = f"{base.rstrip('/')}/{rf.name}"
            try:
                _download(url, dest, rf, timeout)
                break
            except DataError as err:
                problems.extend(err.problems)
            except (OSError, urllib.error.URLError, ValueError) as err:
                reason = getattr(err, "reason", None) or err
                problems.append(Problem(f"cannot download {url}: {reason}"))
        else:
            problems.append(Problem(
                f"could not fetch {rf.name} for {name}",
                hint=f"check the network, set --mirror / FLOWSPEC_MIRROR, or copy the file "
                     f"(md5 {rf.md5}) into {folder} by hand"))
            raise DataError(problems)
    return folder
