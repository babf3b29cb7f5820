"""CIFAR-10 and CIFAR-100: small files in the official pickle format and a small archive, through the
real loader, the restricted unpickler and ``layerswap data NAME --from ARCHIVE``."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.cli import main
from trainables.data.cifar import LAYOUTS, import_archive
from trainables.data.datasets import load_dataset, prepare_dataset
from trainables.errors import DataError


def official_batch(n: int, labels_key: str, n_classes: int, seed: int) -> tuple[bytes, np.ndarray, list[int]]:
    """A batch file as the CIFAR pickles are: a protocol-2 pickle of a dict with ``data``
    (uint8, n x 3072: the red, green and blue planes of 32x32 row-major) and the labels as a list."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(label) for label in rng.integers(0, n_classes, size=n)]
    batch = {"batch_label": f"batch {seed}", labels_key: labels, "data": data,
             "filenames": [f"img_{seed}_{i}.png" for i in range(n)]}
    return pickle.dumps(batch, protocol=2), data, labels


def official_archive(tmp_path: Path, name: str, per_file: int) -> tuple[Path, dict[str, tuple]]:
    """A .tar.gz laid out as the published archive (plus a file the loader does not read)."""
    layout = LAYOUTS[name]
    contents = {}
    archive = tmp_path / layout.archive
    with tarfile.open(archive, "w:gz") as tar:
        for seed, file in enumerate(layout.files):
            body, data, labels = official_batch(per_file, layout.labels, layout.n_classes, seed)
            contents[file] = (data, labels)
            members = ((f"{layout.folder}/{file}", body), (f"{layout.folder}/readme.html", b"x"))
            for member, payload in members:
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return archive, contents


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_an_archive_with_its_md5_is_extracted_and_read_as_images(tmp_path, name):
    archive, contents = official_archive(tmp_path, name, per_file=7)
    root = tmp_path / "data"
    description = import_archive(name, archive, root, expected_md5=md5(archive))
    layout = LAYOUTS[name]
    n_train = 7 * len(layout.train)
    assert description == (f"{name}: {n_train} training and 7 test images from {archive} (MD5 ok), "
                           f"in {root / layout.folder}")
    assert sorted(p.name for p in (root / layout.folder).iterdir()) == sorted(layout.files)  # no readme
    data = load_dataset(name, root)
    assert data.x_train.shape == (n_train, 3, 32, 32) and data.x_test.shape == (7, 3, 32, 32)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.n_classes == layout.n_classes and data.pixel_scale == 255.0
    first_data, first_labels = contents[layout.train[0]]
    # channel c, row i, column j of image r is byte c*1024 + i*32 + j of its row
    assert data.x_train[3, 1, 5, 30] == first_data[3, 1024 + 5 * 32 + 30]
    assert data.x_train[3, 2, 31, 0] == first_data[3, 2048 + 31 * 32]
    assert data.y_train[:7].tolist() == first_labels
    assert data.y_test.tolist() == contents[layout.test[0]][1]
    assert prepare_dataset(name, root).startswith(f"{name}: {n_train} training and 7 test images in ")


def test_the_tensors_are_normalised_per_channel(tmp_path):
    archive, _ = official_archive(tmp_path, "cifar10", per_file=4)
    import_archive("cifar10", archive, tmp_path / "data", expected_md5=md5(archive))
    data = load_dataset("cifar10", tmp_path / "data")
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2470, 0.2435, 0.2616)
    tensors = data.tensors("cpu")
    raw = data.x_test[2, 1].astype(np.float64) / 255.0
    expected = (raw - 0.4822) / 0.2435
    np.testing.assert_allclose(tensors.x_test[2, 1].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert tensors.x_train.dtype == torch.float32 and tensors.input_shape == (3, 32, 32)


def test_an_archive_without_the_published_md5_is_refused_before_anything_is_extracted(tmp_path, capsys):
    archive, _ = official_archive(tmp_path, "cifar10", per_file=2)
    root = tmp_path / "data"
    assert main(["data", "cifar10", "--root", str(root), "--from", str(archive)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"layerswap: error: --from: {archive} has MD5 {md5(archive)}, but cifar-10-python.tar.gz has MD5 "
        "c58f30108f718f92721af3b95e74349a; nothing was extracted (a partial download, or another file? get "
        "it again from https://www.cs.toronto.edu/~kriz/cifar.html)"
    ]
    assert not root.exists()


def test_an_absent_dataset_says_what_was_looked_for_and_how_to_get_it(tmp_path, capsys):
    assert main(["data", "cifar100", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"layerswap: error: could not load cifar100: no train, test in {tmp_path / 'cifar-100-python'}; "
        "download cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) and run "
        "`layerswap data cifar100 --from cifar-100-python.tar.gz`"
    ]
    with pytest.raises(DataError, match="^--from: mnist is not imported from an archive"):
        prepare_dataset("mnist", tmp_path, archive=tmp_path / "x.tar.gz")


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_batch_file_that_would_run_code_is_refused_by_name(tmp_path):
    archive, _ = official_archive(tmp_path, "cifar10", per_file=2)
    root = tmp_path / "data"
    import_archive("cifar10", archive, root, expected_md5=md5(archive))
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [Exploit()]}, protocol=2))
    with pytest.raises(DataError) as refused:
        load_dataset("cifar10", root)
    assert str(refused.value).startswith(f"{bad}: refusing to unpickle posix.system")
    bad.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, protocol=2))
    with pytest.raises(DataError, match=r"'labels' should be 2 integers in \[0, 9\]"):
        load_dataset("cifar10", root)
