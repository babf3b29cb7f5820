"""CIFAR-10 and CIFAR-100 in torchvision's layout, and importing the official archives.

The data root holds the extracted archive as torchvision leaves it
(``<root>/cifar-10-batches-py/data_batch_1`` ... ``data_batch_5``, ``test_batch``;
``<root>/cifar-100-python/train``, ``test``). Each file is the official pickle of a
dict with ``data`` (uint8, one row of 3072 values per image: 1024 red, 1024
green, 1024 blue, each 32x32 row-major) and the labels (``labels``; CIFAR-100's
``fine_labels``), read with the restricted unpickler (no code runs on load).

No package registry ships CIFAR: :func:`import_archive` extracts an archive
fetched elsewhere (``layerswap data cifar10 --from cifar-10-python.tar.gz``),
after checking it against the MD5 published with the dataset, and only the files
the loader reads, each to a temporary name then renamed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.data.unpickle import RestrictedUnpickler
from trainables.errors import DataError

_SIDE, _CHANNELS = 32, 3
_PIXELS = _SIDE * _SIDE * _CHANNELS
_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

Split = tuple[np.ndarray, np.ndarray]
"""Images uint8 (N, 3, 32, 32) and labels int64 (N,)."""


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR dataset lives under the data root and which archive it comes from."""

    folder: str
    archive: str
    md5: str
    """The MD5 published for ``archive`` (on the dataset's page, and in torchvision)."""
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels: str
    n_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return self.train + self.test


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", 10,
    ),
    "cifar100": CifarLayout(
        "cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",), ("test",), "fine_labels", 100,
    ),
}


def read_cifar(name: str, root: Path) -> tuple[Split, Split]:
    """(train, test) of ``name`` from the data root; DataError (one line) when it is not there."""
    layout = LAYOUTS[name]
    folder = root / layout.folder
    missing = [file for file in layout.files if not (folder / file).is_file()]
    if missing:
        raise DataError(
            f"could not load {name}: no {', '.join(missing)} in {folder}; download {layout.archive} "
            f"({_URL}) and run `layerswap data {name} --from {layout.archive}`"
        )
    train = [_read_batch(folder / file, layout) for file in layout.train]
    test = [_read_batch(folder / file, layout) for file in layout.test]
    return _concatenate(train), _concatenate(test)


def _concatenate(batches: list[Split]) -> Split:
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _read_batch(path: Path, layout: CifarLayout) -> Split:
    """One official pickle file as (images (N, 3, 32, 32), labels (N,)); DataError naming a bad file."""
    fix = f"delete {path.parent} and import {layout.archive} again"
    try:
        with path.open("rb") as f:
            batch = RestrictedUnpickler(f, encoding="latin1").load()
    except DataError as err:
        raise DataError(f"{path}: {err}; {fix}") from err
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise DataError(f"{path}: not a readable CIFAR pickle ({err}); {fix}") from err
    if not isinstance(batch, dict) or "data" not in batch or layout.labels not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path}: expected a dict with 'data' and {layout.labels!r}, found {keys}; {fix}")
    data, labels = batch["data"], np.asarray(batch[layout.labels])
    shaped = isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == _PIXELS
    if not shaped or data.dtype != np.uint8:
        described = f"{data.dtype}{data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' is {described}, expected uint8 (N, {_PIXELS}); {fix}")
    n = data.shape[0]
    in_range = n == 0 or 0 <= labels.min() <= labels.max() < layout.n_classes
    if labels.shape != (n,) or labels.dtype.kind not in "iu" or not in_range:
        raise DataError(
            f"{path}: {layout.labels!r} should be {n} integers in [0, {layout.n_classes - 1}], "
            f"found {labels.dtype}{labels.shape}; {fix}"
        )
    return data.reshape(n, _CHANNELS, _SIDE, _SIDE), labels.astype(np.int64)


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes, read in chunks (a CIFAR archive is 160-170 MB)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_archive(name: str, archive: Path, root: Path, expected_md5: str | None = None) -> str:
    """Extract ``name``'s files from ``archive`` into ``root``; a one-line description of what was done.

    The archive must have ``expected_md5`` (default: the MD5 published for the
    dataset's archive) before anything is read from it. Only the files the
    loader reads are extracted, each to a temporary name in the target folder
    and then renamed; the result is read back through :func:`read_cifar`.
    """
    layout = LAYOUTS[name]
    expected = layout.md5 if expected_md5 is None else expected_md5
    if not archive.is_file():
        raise DataError(f"--from: {archive} is not a file; download {layout.archive} from {_URL}")
    found = file_md5(archive)
    if found != expected:
        raise DataError(
            f"--from: {archive} has MD5 {found}, but {layout.archive} has MD5 {expected}; "
            f"nothing was extracted (a partial download, or another file? get it again from {_URL})"
        )
    folder = root / layout.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for file in layout.files:
                _extract(tar, f"{layout.folder}/{file}", folder / file, archive)
    except (OSError, tarfile.TarError, EOFError, zlib.error) as err:
        raise DataError(f"--from: cannot extract {archive} into {folder} ({err})") from err
    train, test = read_cifar(name, root)
    return (f"{name}: {len(train[1])} training and {len(test[1])} test images from {archive} (MD5 ok), "
            f"in {folder}")


def _extract(tar: tarfile.TarFile, member_name: str, target: Path, archive: Path) -> None:
    """One regular file of the archive to ``target``, through a temporary name in its folder."""
    try:
        member = tar.getmember(member_name)
    except KeyError:
        raise DataError(f"--from: {archive} has no {member_name}") from None
    source = tar.extractfile(member) if member.isfile() else None
    if source is None:
        raise DataError(f"--from: {member_name} in {archive} is not a regular file")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, source:
            shutil.copyfileobj(source, out, 1 << 20)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
