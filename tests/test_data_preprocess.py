"""Preprocessing: the discrete pipeline's arithmetic, its refusals, and open_dataset errors."""

from __future__ import annotations

import pytest
import torch

from flowspec.data import DataSource, DataSplit, Preprocessing, open_dataset
from flowspec.errors import DataError, SpecError


class Images(DataSource):
    """uint8 images for the tests (not registered)."""

    discrete = True

    def __init__(self, shape=(1, 2, 3)):
        super().__init__(None)
        self.shape = shape


def all_values(shape=(1, 16, 16)):
    return torch.arange(256, dtype=torch.uint8).reshape(1, *shape)


def test_default_is_8bit_uniform_dequantization_in_unit_interval():
    prep = Preprocessing(None, Images((1, 16, 16)))
    x = all_values()
    assert prep.n_bits == 8 and prep.dequantize == "uniform"
    y = prep(x, generator=torch.Generator().manual_seed(0))
    k = x.float()
    assert y.dtype == torch.float32
    # each value v lands in its own bin [v/256, (v+1)/256)
    assert torch.all(y >= k / 256) and torch.all(y < (k + 1) / 256)
    assert torch.equal(prep.deterministic(x), (k + 0.5) / 256)


def test_noise_is_fresh_and_reproducible_with_a_generator():
    prep = Preprocessing(["dequantize"], Images((1, 16, 16)))
    x = all_values()
    assert not torch.equal(prep(x), prep(x))
    a = prep(x, generator=torch.Generator().manual_seed(5))
    b = prep(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # the dequantization noise is uniform: mean offset 1/2 bin
    offsets = torch.cat([prep(x) * 256 - x.float() for _ in range(20)])
    assert float(offsets.mean()) == pytest.approx(0.5, abs=0.02)


def test_n_bits_reduction_and_shorthands():
    prep = Preprocessing([{"n_bits": 5}, {"dequantize": "none"}, "scale"], Images((1, 16, 16)))
    assert prep.n_bits == 5 and prep.levels == 32 and prep.dequantize == "none"
    x = all_values()
    y = prep(x)
    # floor(x / 8) in 0..31, then bin centres / 32
    assert torch.equal(y, (torch.floor(x.float() / 8) + 0.5) / 32)
    assert torch.equal(prep(x), y)  # no noise
    same = Preprocessing([{"n_bits": {"bits": 5}}, {"dequantize": {"kind": "none"}}],
                         Images((1, 16, 16)))
    assert torch.equal(same(x), y)


def test_to_images_inverts_the_pipeline():
    x = all_values()
    for bits in (8, 5, 1):
        prep = Preprocessing([{"n_bits": bits}], Images((1, 16, 16)))
        levels = 2 ** bits
        img = prep.to_images(prep(x))  # any point of a bin maps back to the bin
        expected = torch.round(torch.floor(x.float() / 2 ** (8 - bits)) * 255 / (levels - 1))
        assert img.dtype == torch.uint8 and torch.equal(img, expected.to(torch.uint8))
    prep = Preprocessing(None, Images((1, 16, 16)))
    assert torch.equal(prep.to_images(prep.deterministic(x)), x)  # 8-bit: exact round trip
    out = prep.to_images(torch.tensor([[[[-0.3, 1.7, 0.999]]]]))
    assert out.flatten().tolist() == [0, 255, 255]  # clamped


def test_pad_centres_and_counts_dims():
    prep = Preprocessing([{"pad": {"to": [6, 7]}}], Images((2, 2, 3)))
    assert prep.out_shape == (2, 6, 7)
    x = torch.full((4, 2, 2, 3), 255, dtype=torch.uint8)
    y = prep.deterministic(x)
    assert y.shape == (4, 2, 6, 7)
    inner = y[:, :, 2:4, 2:5]
    assert torch.all(inner == 255.5 / 256)
    assert float(y.sum()) == pytest.approx(4 * 2 * (6 * 255.5 + 36 * 0.5) / 256)
    assert Preprocessing([{"pad": 4}], Images((1, 2, 2))).out_shape == (1, 4, 4)
    with pytest.raises(DataError, match="smaller"):
        Preprocessing([{"pad": {"to": [1, 1]}}], Images((1, 2, 2)))


def test_spec_errors_are_located():
    with pytest.raises(SpecError, match=r"data.preprocess\[0\].*did you mean 'dequantize'"):
        Preprocessing(["dequantise"], Images())
    with pytest.raises(SpecError, match=r"data.preprocess\[1\].*listed twice"):
        Preprocessing(["scale", "scale"], Images())
    with pytest.raises(SpecError, match=r"n_bits.bits"):
        Preprocessing([{"n_bits": 9}], Images())
    with pytest.raises(SpecError, match="takes no value"):
        Preprocessing([{"scale": 3}], Images())
    with pytest.raises(SpecError, match="one-key mapping"):
        Preprocessing([{"scale": None, "pad": None}], Images())


def test_continuous_data_refuses_density_changing_steps():
    source, prep = open_dataset({"dataset": {"moons": {"n_train": 8, "n_test": 8}}})
    x = source.load("train").x
    assert prep.n_bits is None and torch.equal(prep(x), x) and torch.equal(prep.deterministic(x), x)
    for step in ("scale", "dequantize", {"n_bits": 5}, {"pad": 4}):
        with pytest.raises(DataError, match="continuous"):
            open_dataset({"dataset": "moons", "preprocess": [step]})
    with pytest.raises(DataError, match="not images"):
        prep.to_images(x)


def test_raw_batch_checks():
    prep = Preprocessing(None, Images((1, 2, 3)))
    with pytest.raises(DataError, match="shape"):
        prep(torch.zeros(2, 1, 3, 2, dtype=torch.uint8))
    with pytest.raises(DataError, match="uint8"):
        prep(torch.zeros(2, 1, 2, 3))


def test_open_dataset_errors():
    with pytest.raises(SpecError, match="did you mean 'moons'"):
        open_dataset({"dataset": "mons"})
    with pytest.raises(SpecError, match=r"data.dataset.moons.*n_trian"):
        open_dataset({"dataset": {"moons": {"n_trian": 5}}})
    with pytest.raises(SpecError, match=r"data.dataset.moons.n_train"):
        open_dataset({"dataset": {"moons": {"n_train": -1}}})
    with pytest.raises(SpecError, match="no data section"):
        open_dataset(None)
    with pytest.raises(SpecError, match="unknown key"):
        open_dataset({"dataset": "moons", "augment": True})
    with pytest.raises(DataError, match="split"):
        open_dataset({"dataset": "moons"})[0].load("valid")


def test_data_dir_resolution(monkeypatch, tmp_path):
    from flowspec.data import default_data_dir

    monkeypatch.setenv("FLOWSPEC_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert str(default_data_dir("x")) == "x"  # an explicit dir wins over the variable
    monkeypatch.delenv("FLOWSPEC_DATA")
    assert str(default_data_dir()) == "data"
    source, _ = open_dataset({"dataset": "mnist"}, tmp_path / "d")
    with pytest.raises(DataError, match=r"not found.*d/mnist.*flowspec data fetch mnist"):
        source.load("train")


def test_datasplit_len():
    assert len(DataSplit(x=torch.zeros(3, 2))) == 3
