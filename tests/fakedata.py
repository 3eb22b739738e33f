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
