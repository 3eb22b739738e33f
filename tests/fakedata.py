"""Small files of the real dataset formats, written by tests (never downloaded)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def idx_images(x: np.ndarray) -> bytes:
    return struct.pack(">IIII", 2051, *x.shape) + x.astype(np.uint8).tobytes()


def idx_labels(y: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train=5, n_test=3, gz=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        data[split] = (x, y)
        for stem, blob in ((f"{prefix}-images-idx3-ubyte", idx_images(x)),
                           (f"{prefix}-labels-idx1-ubyte", idx_labels(y))):
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(blob))
            else:
                (root / stem).write_bytes(blob)
    return data


def cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    blob = pickle.dumps({b"batch_label": b"testing batch", b"labels": labels, b"data": data,
                         b"filenames": [f"img{i}.png".encode() for i in range(n)]}, protocol=2)
    return blob, data, labels


def write_cifar(folder: Path) -> dict:
    folder.mkdir(parents=True)
    out = {"train": ([], []), "test": ([], [])}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        blob, data, labels = cifar_batch(2 if name != "test_batch" else 3, i)
        (folder / name).write_bytes(blob)
        split = "test" if name == "test_batch" else "train"
        out[split][0].append(data)
        out[split][1].extend(labels)
    return {k: (np.concatenate(v[0]), v[1]) for k, v in out.items()}


def write_image_folder(root: Path, n: int = 24, size: tuple[int, int] = (20, 16),
                       attributes: tuple[str, ...] = ("Smiling", "Male"), seed: int = 0) -> Path:
    """A CelebA-style folder: random RGB images, list_attr_celeba.txt and a partition list."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}.png" for i in range(n)]
    flags = rng.integers(0, 2, (n, len(attributes)))
    flags[0], flags[1] = 0, 1  # both signs present for every attribute
    for name in names:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name)
    lines = [str(n), " ".join(attributes)]
    lines += [name + " " + " ".join("1" if f else "-1" for f in row)
              for name, row in zip(names, flags)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{name} {0 if i < n * 3 // 4 else 2}\n" for i, name in enumerate(names)))
    return root


def write_table(path: Path, x: np.ndarray, context: np.ndarray | None = None,
                columns: list[str] | None = None, context_names: list[str] | str | None = None,
                array: str | None = None) -> Path:
    """``x`` (and ``context``) in the format of ``path``'s suffix: csv with a header
    (context columns first), npy (x only), npz / safetensors (named arrays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix == ".csv":
        cols = columns or [f"x{i + 1}" for i in range(x.shape[1])]
        table = x
        names = list(cols)
        if context is not None:
            cnames = ([context_names] if isinstance(context_names, str) else context_names) or \
                [f"c{i + 1}" for i in range(context.shape[1])]
            table = np.concatenate([context, x], axis=1)
            names = list(cnames) + names
        np.savetxt(path, table, delimiter=",", header=",".join(names), comments="", fmt="%.9g")
    elif suffix == ".npy":
        np.save(path, x)
    else:
        arrays = {array or "x": x}
        if context is not None:
            arrays[context_names if isinstance(context_names, str) else "context"] = context
        if suffix == ".npz":
            np.savez(path, **arrays)
        else:
            import torch
            from safetensors.torch import save_file

            save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
                      str(path))
    return path


def write_spec_files(data_dir: Path, spec_paths, rows: int = 200, seed: int = 0) -> list[Path]:
    """For every spec reading a `file` dataset at a relative path: a small random file of
    that format, with the spec's columns / array names and its model's shapes (quick)."""
    from flowspec.spec import load_spec

    rng = np.random.default_rng(seed)
    written = []
    for spec_path in spec_paths:
        spec = load_spec(spec_path, quick=True)
        dataset = (spec.data or {}).get("dataset") or {}
        params = dataset.get("file") if isinstance(dataset, dict) else None
        if not params or Path(params["path"]).is_absolute():
            continue
        x = rng.normal(size=(rows, *spec.graph.input_shape)).astype(np.float32)
        ctx_ir = spec.graph.context
        ctx = (rng.normal(size=(rows, *ctx_ir.tensor_shape)).astype(np.float32)
               if ctx_ir is not None and ctx_ir.num_classes is None else None)
        cols = params.get("columns")
        written.append(write_table(data_dir / params["path"], x, ctx,
                                   [cols] if isinstance(cols, str) else cols,
                                   params.get("context"), params.get("array")))
    return written
