"""Conv nets: a training epoch of layerswap's trainer against the loop a user would write, and the
estimated against the measured peak memory of a conv trial.

Plain loop: a ``DataLoader`` over a torchvision-style dataset (per sample: a PIL image,
``RandomCrop(padding=4)`` and ``RandomHorizontalFlip`` where the recipe augments, ``ToTensor``,
``Normalize``; batch 128, shuffled, no workers), each batch moved with ``.to(device)``, SGD
(lr 0.1, momentum 0.9, weight decay 5e-4). layerswap: :func:`train_network` of the same spec
(the dataset one pre-normalised tensor on the device, flip-crop drawn on the device). Both
start from the same initial weights with the same torch threads. Networks: ``cnn`` 16-32 on
Fashion-MNIST (no augmentation) and ``resnet20`` on CIFAR-10 with flip-crop (CIFAR-10 from the
data root when it is there, else random uint8 images of its shape: the time does not depend on
the pixels). Quick: a fixed number of steps; full: one whole epoch.

Peak memory: one conv trial (``resnet20``, 2,048 training and 512 test images, batch 128, one
epoch, ``reinit`` of every layer, written to a temporary store) in a fresh process; measured = its
peak resident memory after the imports (Linux ``VmHWM``, reset by ``/proc/self/clear_refs``)
minus its resident memory then, or on a GPU ``torch.cuda.max_memory_allocated``; estimated =
:meth:`~trainables.train.pack_shape.PackShape.memory` (tensors only, measured on the meta device).

    python -m benchmarks.conv [--quick]
"""

from __future__ import annotations

import copy
import multiprocessing
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import Mode, busy_warning, device, parse_mode, publish, synchronize, table
from orchestrator.run.packing import optimizer_slots
from trainables.data.datasets import load_dataset, normalization
from trainables.data.tensors import DatasetArrays, DatasetTensors
from trainables.errors import DataError
from trainables.models.architectures import BuildOptions
from trainables.plan import MeasurementPlan
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.store import Store
from trainables.train.network import initial_model, train_network
from trainables.train.pack_shape import PackShape
from trainables.worker.pack_job import Placement, run_network

BATCH = 128
OPTIMIZER = OptimizerSpec("sgd", 0.1, momentum=0.9, weight_decay=5e-4)
QUICK_STEPS = {"cnn": 60, "resnet20": 12}
NETWORKS = {"cnn": ("fashion-mnist", (16, 32), "none"), "resnet20": ("cifar10", (16, 32, 64), "flip-crop")}
"""Network -> (dataset, widths, augment)."""


def dataset(name: str) -> DatasetArrays:
    """The dataset from the data root; CIFAR-10 absent: random uint8 images of its shape and size."""
    try:
        return load_dataset(name)
    except DataError:
        if name != "cifar10":
            raise
    rng = np.random.default_rng(0)
    mean, std = normalization(name)
    images = rng.integers(0, 256, size=(60_000, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=60_000).astype(np.int64)
    return DatasetArrays(name, images[:50_000], labels[:50_000], images[50_000:], labels[50_000:], 10,
                         mean, std, 255.0)


class TorchvisionStyle(Dataset):
    """Samples as torchvision's MNIST/CIFAR datasets give them: a PIL image through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: T.Compose) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        return self.transform(picture), int(self.labels[index])


def plain_loader(arrays: DatasetArrays, augment: str) -> DataLoader:
    mean, std = arrays.mean, arrays.std
    channels = arrays.input_shape[0]
    means = list(mean) if isinstance(mean, tuple) else [mean] * channels
    stds = list(std) if isinstance(std, tuple) else [std] * channels
    side = arrays.input_shape[1]
    steps = [T.RandomCrop(side, padding=4), T.RandomHorizontalFlip()] if augment != "none" else []
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(means, stds)])
    return DataLoader(TorchvisionStyle(arrays.x_train, arrays.y_train, transform), batch_size=BATCH,
                      shuffle=True, num_workers=0)


def plain_epoch(model: torch.nn.Module, loader: DataLoader, steps: int, where: torch.device) -> float:
    """Samples/s of the plain loop over ``steps`` batches (after 3 warm-up batches)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=OPTIMIZER.lr, momentum=OPTIMIZER.momentum,
                                weight_decay=OPTIMIZER.weight_decay)
    model.train()
    batches = iter(loader)
    samples, started = 0, 0.0
    for step in range(steps + 3):
        if step == 3:
            synchronize(where)
            started, samples = time.perf_counter(), 0
        images, labels = next(batches)
        images, labels = images.to(where), labels.to(where)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        samples += len(labels)
    synchronize(where)
    return samples / (time.perf_counter() - started)


def first(data: DatasetTensors, n: int) -> DatasetTensors:
    return DatasetTensors(data.x_train[:n], data.y_train[:n], data.x_test, data.y_test, data.n_classes)


def layerswap_epoch(spec: TrialSpec, data: DatasetTensors, steps: int, where: torch.device) -> float:
    """Samples/s of :func:`train_network` over ``steps`` batches (one epoch of that many samples)."""
    train_network(spec, first(data, 3 * BATCH), where)  # warm-up
    measured = first(data, min(steps * BATCH, data.x_train.shape[0]))
    return measured.x_train.shape[0] / train_network(spec, measured, where).train_seconds


def network_spec(model: str) -> TrialSpec:
    name, widths, augment = NETWORKS[model]
    mean, std = normalization(name)
    return TrialSpec(dataset=name, data_mean=mean, data_std=std, model=model, widths=widths, seed=0,
                     epochs=1, batch_size=BATCH, optimizer=OPTIMIZER, checkpoints=(0, 1), norm="batch",
                     augment=augment)


def compare(model: str, mode: Mode, where: torch.device) -> dict[str, Any]:
    spec = network_spec(model)
    arrays = dataset(spec.dataset)
    steps = mode.pick(QUICK_STEPS[model], -(-len(arrays.y_train) // BATCH))
    network = initial_model(spec, arrays.input_shape, arrays.n_classes).to(where)
    plain = plain_epoch(copy.deepcopy(network), plain_loader(arrays, spec.augment), steps, where)
    ours = layerswap_epoch(spec, arrays.tensors(where), steps, where)
    print(f"  {model}: done", flush=True)
    return {"network": model, "dataset": spec.dataset, "augment": spec.augment, "steps": steps,
            "plain_samples_per_second": plain, "layerswap_samples_per_second": ours, "speedup": ours / plain}


PEAK_TRAIN, PEAK_TEST = 2048, 512


def resident_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measured_trial_peak(queue: multiprocessing.Queue, where: str) -> None:
    """In a fresh process: run one conv trial, put its measured peak bytes on ``queue``."""
    device_ = torch.device(where)
    torch.set_num_threads(2)
    spec = replace(network_spec("resnet20"), augment="flip-crop")
    arrays = dataset(spec.dataset)
    arrays = replace(arrays, x_train=arrays.x_train[:PEAK_TRAIN], y_train=arrays.y_train[:PEAK_TRAIN],
                     x_test=arrays.x_test[:PEAK_TEST], y_test=arrays.y_test[:PEAK_TEST])
    with tempfile.TemporaryDirectory() as root:
        store = Store.open(root)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
        baseline = resident_bytes("VmRSS")
        plan = MeasurementPlan(swaps=("reinit",))
        run_network(spec, plan, arrays.tensors(device_), store, "bench", Placement.here(device_))
        if device_.type == "cuda":
            queue.put(torch.cuda.max_memory_allocated(device_))
        else:
            queue.put(resident_bytes("VmHWM") - baseline)


def peak_memory(where: torch.device) -> dict[str, Any]:
    spec = replace(network_spec("resnet20"), augment="flip-crop")
    shape = PackShape(spec.model, spec.widths, (3, 32, 32), 10, PEAK_TRAIN, PEAK_TEST, BATCH,
                      len(spec.checkpoints), optimizer_slots(spec.optimizer), options=BuildOptions.of(spec))
    estimate = shape.memory().peak(1)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=measured_trial_peak, args=(queue, str(where)))
    child.start()
    measured = queue.get(timeout=1800)
    child.join()
    print("  peak memory: done", flush=True)
    return {"network": spec.model, "n_train": PEAK_TRAIN, "n_test": PEAK_TEST, "batch": BATCH,
            "estimated_bytes": estimate, "measured_bytes": measured,
            "measured_over_estimated": measured / estimate,
            "measured_as": "torch.cuda.max_memory_allocated" if where.type == "cuda" else "VmHWM - VmRSS"}


def main(argv: list[str] | None = None) -> None:
    mode = parse_mode(__doc__.splitlines()[0], argv)
    warning = busy_warning()
    where = device()
    epochs = [compare(model, mode, where) for model in NETWORKS]
    peak = peak_memory(where)
    rows = [[e["network"], e["dataset"], e["augment"], e["plain_samples_per_second"],
             e["layerswap_samples_per_second"], e["speedup"]] for e in epochs]
    headers = ["network", "data", "augment", "plain loop samples/s", "layerswap samples/s", "x plain"]
    text = table(headers, rows)
    text += (f"\n\npeak memory of a {peak['network']} trial ({peak['n_train']:,} training, "
             f"{peak['n_test']:,} test images, batch {peak['batch']}): "
             f"estimated {peak['estimated_bytes'] / 2**20:,.0f} MiB, "
             f"measured {peak['measured_bytes'] / 2**20:,.0f} MiB ({peak['measured_as']}), "
             f"measured/estimated {peak['measured_over_estimated']:.2f}")
    publish("conv", "conv: a training epoch against the plain loop; a conv trial's peak memory", mode, text,
            {"device": str(where), "epochs": epochs, "peak_memory": peak}, warning)


if __name__ == "__main__":
    main()
