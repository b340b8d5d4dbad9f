"""Data sets that install offline: scikit-learn digits (built-in default) and
Fashion-MNIST from IDX files (Debian package ``dataset-fashion-mnist``), plus
user arrays: an .npz file, or for data larger than memory a directory of .npy files that
n2c memory-maps.

Every loader returns a :class:`Dataset`: float images ``x`` (N, C, H, W) as the
network sees them, integer labels ``y``, and ``input_scale``, the value of one
integer input unit (digits: pixel values 0..16 are fed as x = pixel/16, so one
unit is 1/16 and the integer backends receive the exact pixel values).
"""

from __future__ import annotations

import gzip
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from n2c.errors import DatasetError

FASHION_DIR = Path(os.environ.get("N2C_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
SPLIT_SEED = 0  # fixed stratified split: numbers are comparable from run to run


@dataclass
class Dataset:
    name: str
    x: np.ndarray  # float32 (N, C, H, W)
    y: np.ndarray  # int64 (N,)
    input_scale: float
    num_classes: int

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int | None) -> "Dataset":
        if n is None:
            return self
        if n < 1:
            raise DatasetError(f"--samples must be >= 1, got {n}")
        return Dataset(self.name, self.x[:n], self.y[:n], self.input_scale, self.num_classes)


def load_digits(split: str) -> Dataset:
    """scikit-learn digits, 8x8, pixel values 0..16, fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    d = sk_load()
    images = d.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, d.target, test_size=0.2, random_state=SPLIT_SEED, stratify=d.target)
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return Dataset("digits", x / 16.0, y.astype(np.int64), 1.0 / 16.0, 10)


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file: 2 zero bytes, type byte 0x08, ndim, big-endian dims, data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {tuple(dims)} but holds {data.size} values")
    return data.reshape(tuple(dims))


def load_fashion_mnist(split: str) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    img = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
    lab = FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists() or not lab.exists():
        raise DatasetError(
            f"Fashion-MNIST not found in {FASHION_DIR}; install it with "
            "'apt-get install -y dataset-fashion-mnist' or set N2C_FASHION_DIR")
    x = read_idx(img).astype(np.float32)[:, None] / 255.0
    return Dataset("fashion-mnist", x, read_idx(lab).astype(np.int64), 1.0 / 255.0, 10)


def load_arrays(path: str) -> Dataset:
    """User data: an .npz with arrays ``x`` (N, C, H, W) and ``y`` (N,), optional ``input_scale``."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"data file {path} does not exist")
    try:
        with np.load(p, allow_pickle=False) as f:
            x, y = f["x"].astype(np.float32, copy=False), f["y"].astype(np.int64, copy=False)
            scale = float(f["input_scale"]) if "input_scale" in f else None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path} must be an .npz with arrays 'x' (N,C,H,W) and 'y' (N,): "
                           f"{' '.join(str(e).split())[:160]}") from None
    except MemoryError:
        raise DatasetError(f"{path} declares arrays too large for this machine's memory; check the file") from None
    return _checked(path, p.stem, x, y, scale)


CHUNK = 4096  # samples per pass of the checks over a memory-mapped x


def _load_member(path: Path, what: str, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path} is not a readable .npy array ({what}): {' '.join(str(e).split())[:160]}") from None


def load_directory(path: str) -> Dataset:
    """User data larger than memory: a directory holding the .npz's members as .npy files,
    ``x.npy`` (N, C, H, W) float32, ``y.npy`` (N,) integers, optionally ``input_scale.npy``.
    ``x`` is memory-mapped: a process reads only the samples it uses (a batch, its shard under
    torchrun), and the checks pass over it in chunks of ``CHUNK`` samples."""
    root = Path(path)
    if not (root / "x.npy").is_file() or not (root / "y.npy").is_file():
        raise DatasetError(f"data directory {path} must hold x.npy (N,C,H,W) and y.npy (N,) (write them with "
                           "np.save; optionally input_scale.npy)")
    x = _load_member(root / "x.npy", "x", mmap=True)
    if x.dtype != np.float32:
        raise DatasetError(f"{root / 'x.npy'} holds {x.dtype}; memory-mapped data must be float32, the values the "
                           "network sees: np.save('x.npy', x.astype(np.float32))")
    y = _load_member(root / "y.npy", "y", mmap=True)  # mapped: its declared size is checked before it is read
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{root / 'y.npy'} holds {y.dtype}; labels must be integers (class indices)")
    scale = None
    if (root / "input_scale.npy").is_file():
        value = _load_member(root / "input_scale.npy", "input_scale", mmap=True)
        if value.size != 1 or not np.issubdtype(value.dtype, np.number) or not float(value.reshape(-1)[0]) > 0:
            raise DatasetError(f"{root / 'input_scale.npy'} must hold one positive number")
        scale = float(value.reshape(-1)[0])
    if x.ndim == 4 and not x.flags.c_contiguous:
        raise DatasetError(f"{root / 'x.npy'} is stored in Fortran order; save it in C order (np.save of "
                           "np.ascontiguousarray(x))")
    return _checked(str(root), root.name, x, y, scale, _file_chunks(root / "x.npy", x))


def _file_chunks(path: Path, x: np.memmap):
    """x.npy read in chunks of ``CHUNK`` samples by plain reads, which leave no pages of the file
    mapped into the process (reading through the map would)."""
    with open(path, "rb") as f:
        f.seek(x.offset)  # where the map starts: past the .npy header
        per_sample = int(np.prod(x.shape[1:]))
        for i in range(0, len(x), CHUNK):
            n = min(CHUNK, len(x) - i)
            yield np.fromfile(f, dtype=x.dtype, count=n * per_sample)


def _checked(path: str, name: str, x: np.ndarray, y: np.ndarray, scale: float | None, chunks=None) -> Dataset:
    """The checks every user data set passes; ``chunks``: x in parts (default: x whole)."""
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DatasetError(f"{path}: x must be (N, C, H, W) and y (N,), got {x.shape} and {y.shape}")
    if len(x) == 0 or x.size == 0:
        raise DatasetError(f"{path} holds no samples (x has shape {x.shape}); give at least one")
    y = np.asarray(y, dtype=np.int64)
    top = 0.0
    for part in chunks if chunks is not None else [x]:
        if not np.isfinite(part).all():
            raise DatasetError(f"{path}: x contains NaN or infinity")
        top = max(top, float(np.abs(part).max()))
    if (y < 0).any():
        raise DatasetError(f"{path}: labels y must be class indices 0, 1, ..., got {int(y.min())}")
    return Dataset(name, x, y, scale if scale is not None else (top / 255.0 or 1.0), int(y.max()) + 1)


DATASETS = {"digits": load_digits, "fashion-mnist": load_fashion_mnist}


def is_user_data(name: str) -> bool:
    """An .npz file or a directory of .npy files (:func:`load_directory`), not a named data set."""
    return name.endswith(".npz") or Path(name).is_dir()


def training_and_evaluation(name: str, samples: int | None = None) -> tuple[Dataset, Dataset, str]:
    """The training samples (the first ``samples``) and the samples to evaluate on, named: a
    data set's test split, or for user data of one split (an .npz, a directory) its last tenth, held out of the
    training samples (evaluating on the samples trained on would say nothing)."""
    if not is_user_data(name):
        return load_dataset(name, "train").head(samples), load_dataset(name, "test"), "test"
    data = load_dataset(name)
    held = max(1, len(data) // 10)
    if len(data) < 2:
        raise DatasetError(f"{name} holds {len(data)} sample; training needs at least 2 (one is held out to "
                           "evaluate on)")
    train = Dataset(data.name, data.x[:-held], data.y[:-held], data.input_scale, data.num_classes).head(samples)
    test = Dataset(data.name, data.x[-held:], data.y[-held:], data.input_scale, data.num_classes)
    return train, test, f"held-out (the file's last {held} samples, not trained on)"


def load_dataset(name: str, split: str = "test") -> Dataset:
    """A named data set (``digits``, ``fashion-mnist``), a path to an .npz file, or a directory of
    .npy files (:func:`load_directory`, memory-mapped)."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if name in DATASETS:
        return DATASETS[name](split)
    if name.endswith(".npz"):
        return load_arrays(name)
    if Path(name).is_dir():
        return load_directory(name)
    raise DatasetError(f"unknown data set {name!r}; use one of {sorted(DATASETS)}, a path to an .npz file or a "
                       "directory with x.npy and y.npy")
