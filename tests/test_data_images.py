"""Image datasets from small files of the real formats: MNIST IDX, CIFAR-10 pickles, folders."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import idx_labels, write_cifar, write_mnist

from flowspec.data import load_image_as, open_dataset
from flowspec.errors import DataError

# ---------------------------------------------------------------- MNIST (IDX) ----------


def mnist(data_dir, **params):
    return open_dataset({"dataset": {"mnist": params}, "val_fraction": 0}, data_dir)[0]


def test_mnist_gz_roundtrip(tmp_path):
    data = write_mnist(tmp_path / "mnist")
    src = mnist(tmp_path)
    assert src.shape == (1, 28, 28) and src.discrete and src.num_classes == 10
    for split in ("train", "test"):
        d = src.load(split)
        x, y = data[split]
        assert d.x.dtype == torch.uint8 and d.x.shape == (len(y), 1, 28, 28)
        assert np.array_equal(d.x[:, 0].numpy(), x)
        assert d.y.dtype == torch.int64 and d.y.tolist() == y.tolist()


def test_mnist_uncompressed_pad_and_limit(tmp_path):
    data = write_mnist(tmp_path, gz=False)  # files straight in the data dir
    src = mnist(tmp_path, pad=32, limit=2)
    d = src.load("train")
    assert src.shape == (1, 32, 32) and d.x.shape == (2, 1, 32, 32)
    assert np.array_equal(d.x[:, 0, 2:30, 2:30].numpy(), data["train"][0][:2])
    assert int(d.x[:, :, :2].sum() + d.x[:, :, 30:].sum() + d.x[..., :2].sum()) == 0


@pytest.mark.parametrize("damage", ["swap", "truncate", "count", "gzip", "label"])
def test_mnist_corruption_is_a_data_error(tmp_path, damage):
    root = tmp_path / "mnist"
    write_mnist(root)
    img, lab = root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz"
    if damage == "swap":
        img.write_bytes(lab.read_bytes())
        match = "magic"
    elif damage == "truncate":
        img.write_bytes(gzip.compress(gzip.decompress(img.read_bytes())[:-10]))
        match = "truncated"
    elif damage == "count":
        lab.write_bytes(gzip.compress(idx_labels(np.zeros(4))))
        match = "5 images but 4 labels"
    elif damage == "gzip":
        img.write_bytes(img.read_bytes()[:100])
        match = "cannot read"
    else:
        lab.write_bytes(gzip.compress(idx_labels(np.array([1, 2, 3, 4, 12]))))
        match = "not a digit"
    with pytest.raises(DataError, match=match):
        mnist(tmp_path).load("train")


REAL_MNIST = Path("/work/shared/data/mnist")


@pytest.mark.skipif(not (REAL_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="real MNIST files not present")
def test_real_mnist_test_split():
    d = mnist(REAL_MNIST.parent).load("test")
    assert d.x.shape == (10_000, 1, 28, 28)
    assert d.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert float(d.x.double().mean()) == pytest.approx(33.791, abs=1e-3)


# ---------------------------------------------------------------- CIFAR-10 -------------


def cifar(data_dir, **params):
    return open_dataset({"dataset": {"cifar10": params}, "val_fraction": 0}, data_dir)[0]


def check_cifar(src, data):
    for split, n in (("train", 10), ("test", 3)):
        d = src.load(split)
        raw, labels = data[split]
        assert d.x.shape == (n, 3, 32, 32) and d.x.dtype == torch.uint8
        assert d.y.tolist() == labels
        # row layout: 1024 red, then green, then blue values, each row-major 32x32
        assert np.array_equal(d.x[1, 0].numpy(), raw[1, :1024].reshape(32, 32))
        assert np.array_equal(d.x[1, 2].numpy(), raw[1, 2048:].reshape(32, 32))


def test_cifar_batches_folder(tmp_path):
    data = write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    src = cifar(tmp_path)
    assert src.shape == (3, 32, 32) and src.num_classes == 10
    check_cifar(src, data)


def test_cifar_read_from_the_tarball(tmp_path):
    data = write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    check_cifar(cifar(tmp_path), data)


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_refuses_arbitrary_globals(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(str(marker))}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3.*mkdir is not allowed"):
        cifar(tmp_path).load("train")
    assert not marker.exists()


def test_cifar_bad_contents(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match=r"expected uint8 \[N, 3072\]"):
        cifar(tmp_path).load("test")
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch is missing"):
        cifar(tmp_path).load("test")
    with pytest.raises(DataError, match="flowspec data fetch cifar10"):
        cifar(tmp_path / "empty").load("test")


# ---------------------------------------------------------------- image folders --------

COLOURS = {"a": [(255, 0, 0), (0, 255, 0), (0, 0, 255)], "b": [(10, 20, 30), (200, 100, 50)]}


def write_folder(root: Path, with_lists=True, lists_in: Path | None = None) -> list[str]:
    from PIL import Image

    lists_in = lists_in or root
    names = []
    for cls, colours in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i, c in enumerate(colours):
            name = f"{cls}{i}.png"
            Image.new("RGB", (10, 8), c).save(root / cls / name)
            names.append(name)
    if with_lists:
        lines = [str(len(names)), "Smiling Male"]
        lines += [f"{n}  {'1' if i % 2 else '-1'} {'1' if i < 2 else '-1'}"
                  for i, n in enumerate(names)]
        (lists_in / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        parts = {"a0.png": 0, "a1.png": 2, "a2.png": 0, "b0.png": 1, "b1.png": 2}
        (lists_in / "list_eval_partition.txt").write_text(
            "".join(f"{n} {p}\n" for n, p in parts.items()))
    return names


def folder(data_dir, **params):
    return open_dataset({"dataset": {"image_folder": params}, "val_fraction": 0}, data_dir)[0]


@pytest.mark.parametrize("layout", ["inside", "celeba"])
def test_image_folder_labels_attributes_partition(tmp_path, layout):
    if layout == "inside":
        write_folder(tmp_path / "faces")
        src = folder(tmp_path, path="faces", size=4)
    else:  # celeba/list_*.txt beside celeba/faces/
        (tmp_path / "celeba").mkdir()
        write_folder(tmp_path / "celeba" / "faces", lists_in=tmp_path / "celeba")
        src = folder(tmp_path, path="celeba/faces", size=4)
    assert src.shape == (3, 4, 4) and src.num_classes == 2
    assert src.attribute_names == ["Smiling", "Male"]
    train, test = src.load("train"), src.load("test")
    # partition: train = a0, a2; test = a1, b1 (b0 is validation, unused)
    assert train.x.shape == (2, 3, 4, 4) and test.x.shape == (2, 3, 4, 4)
    assert train.y.tolist() == [0, 0] and test.y.tolist() == [0, 1]
    assert train.x[0, :, 0, 0].tolist() == [255, 0, 0]  # solid colours survive the resize
    assert test.x[1, :, 2, 3].tolist() == [200, 100, 50]
    # attributes of a0, a2 / a1, b1 (rows 0, 2 / 1, 4): Smiling = odd row, Male = row < 2
    assert train.attrs.dtype == torch.bool
    assert train.attrs.tolist() == [[False, True], [False, False]]
    assert test.attrs.tolist() == [[True, True], [False, False]]


def test_image_folder_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    import flowspec.data.folder as mod

    root = tmp_path / "faces"
    write_folder(root, with_lists=False)
    first = folder(tmp_path, path=str(root), size=4, split=0.4).load("train")
    caches = list((root / ".flowspec-cache").glob("*.safetensors"))
    assert len(caches) == 1

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(mod, "decode_image", boom)
    again = folder(tmp_path, path=str(root), size=4, split=0.4).load("train")
    assert torch.equal(again.x, first.x)
    # a different size is a different cache entry: decoding needed
    with pytest.raises(AssertionError, match="decoded again"):
        folder(tmp_path, path=str(root), size=5).load("train")
    # so is a changed folder
    os.utime(root / "a" / "a0.png", ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        folder(tmp_path, path=str(root), size=4, split=0.4).load("train")


def test_image_folder_fraction_split_and_no_labels(tmp_path):
    from PIL import Image

    root = tmp_path / "flat"
    root.mkdir()
    for i in range(10):
        Image.new("L", (6, 6), i * 20).save(root / f"{i}.png")
    src = folder(tmp_path, path="flat", size=3, channels=1, split=0.3)
    train, test = src.load("train"), src.load("test")
    assert src.num_classes is None and train.y is None and train.attrs is None
    assert len(train) == 7 and len(test) == 3
    values = sorted(int(v) for v in torch.cat([train.x, test.x])[:, 0, 0, 0])
    assert values == [i * 20 for i in range(10)]  # every image exactly once
    assert torch.equal(folder(tmp_path, path="flat", size=3, channels=1, split=0.3)
                       .load("test").x, test.x)  # deterministic


def test_centre_crop_and_squash(tmp_path):
    from PIL import Image

    root = tmp_path / "strip"
    root.mkdir()
    img = Image.new("RGB", (12, 4))
    for xx in range(12):
        for yy in range(4):
            img.putpixel((xx, yy), [(255, 0, 0), (0, 255, 0), (0, 0, 255)][xx // 4])
    img.save(root / "s.png")
    img.save(root / "t.png")
    x = folder(tmp_path, path="strip", size=2, split=0.5).load("train").x
    assert x[0, :, :, :].permute(1, 2, 0).reshape(-1, 3).tolist() == [[0, 255, 0]] * 4
    squashed = folder(tmp_path, path="strip", size=3, crop="none", split=0.5).load("train").x
    assert squashed[0, 0, 1, 0] > 200 and squashed[0, 2, 1, 2] > 200  # red left, blue right


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        folder(tmp_path, path="nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        folder(tmp_path, path="empty").load("train")
    root = tmp_path / "faces"
    write_folder(root)
    (root / "a" / "a9.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="a9.png"):
        folder(tmp_path, path="faces", size=4).load("train")
    (root / "a" / "a9.png").unlink()
    (root / "a" / "a5.png").write_bytes((root / "a" / "a0.png").read_bytes())
    with pytest.raises(DataError, match="no attributes for image 'a/a5.png'"):
        folder(tmp_path, path="faces", size=4).load("train")
    (root / "list_attr_celeba.txt").unlink()
    with pytest.raises(DataError, match="no partition for image 'a/a5.png'"):
        folder(tmp_path, path="faces", size=4).load("train")
    assert len(folder(tmp_path, path="faces", size=4, split=0.5).load("train")) == 3


def test_load_image_as(tmp_path):
    from PIL import Image

    p = tmp_path / "x.jpg"
    Image.new("RGB", (40, 30), (0, 0, 255)).save(p)
    grey = load_image_as(p, (1, 5, 5))
    assert grey.shape == (1, 5, 5) and grey.dtype == torch.uint8
    rgb = load_image_as(p, [3, 8, 8])
    assert rgb.shape == (3, 8, 8) and int(rgb[2].float().mean()) > 240
    with pytest.raises(DataError, match="no such image"):
        load_image_as(tmp_path / "missing.png", (3, 8, 8))
