"""Planning a sweep's trials on the driver: pack sizes, balanced packs, queues of packs.

A pack is seeds of one configuration (one ``config_id``: the same training spec but for the
seed) trained together in one trial (``trainables/train/pack.py``); a queue is the packs one
Tune trial works through, one after the other. Every figure of a configuration (its network,
batch size, epochs, optimizer slots, dataset) comes from its own spec, never from the sweep
config, whose grid may vary any of them; what the sweep config gives is how to run (``pack``,
resources). Every figure here comes from a
:class:`~trainables.train.pack_shape.PackShape` (by the family's formula, else measured from
the network on the meta device); nothing here touches a GPU (GPU memory is read through NVML); the
memory a trial may use is :mod:`orchestrator.run.budget`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from orchestrator.catalog.naming import configuration_labels
from orchestrator.config.sweep_config import SweepConfig
from orchestrator.config.values import ConfigError
from orchestrator.run.budget import MemoryBudget, check_memory
from trainables.data.tensors import DatasetArrays
from trainables.models.architectures import BuildOptions
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.pack_shape import PackShape, measure_network

CPU_PACK_STEP_FLOPS = 2.0e9
"""On a CPU, pack networks until one step does about this many matmul FLOPs.

Below it a step pays noticeably for per-operation overhead and thread
wake-ups; above it batching more networks gains nothing
(``python -m benchmarks pack_kernels``).
"""

MAX_PACK = 32
"""Upper bound on an automatic pack: larger packs gain little and lose more on a failure."""

MEMORY_HEADROOM = 0.8
"""Fraction of a trial's memory budget an automatic pack may plan to use."""

TRIALS_PER_SLOT = 4
"""At most this many Tune trials per slot: beyond it, each Tune trial works through a queue of packs
(the driver's cost per event grows with the number of trials)."""



def optimizer_slots(optimizer: OptimizerSpec) -> int:
    """Tensors the optimizer keeps per parameter: Adam 2, SGD with momentum 1, plain SGD 0."""
    if optimizer.name == "adam":
        return 2
    return 1 if optimizer.momentum else 0


def pack_shape(spec: TrialSpec, data: DatasetArrays) -> PackShape:
    """What sizes a trial of ``spec``'s configuration on ``data`` (its dataset's arrays); a
    ``batch_size`` beyond the training set is one batch of all of it per epoch, and sized as such."""
    return PackShape(
        model=spec.model, widths=spec.widths, input_shape=data.input_shape, n_classes=data.n_classes,
        n_train=len(data.y_train), n_test=len(data.y_test),
        batch_size=min(spec.batch_size, len(data.y_train)),
        n_checkpoints=len(spec.checkpoints), optimizer_slots=optimizer_slots(spec.optimizer),
        options=BuildOptions.of(spec),
    )


def by_configuration(specs: list[TrialSpec]) -> dict[str, list[TrialSpec]]:
    """``specs`` grouped by ``config_id``, configurations and seeds in their order in ``specs``."""
    groups: dict[str, list[TrialSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.config_id, []).append(spec)
    return groups


def memory_subject(config: SweepConfig, label: str) -> str | None:
    """How a memory refusal names a configuration: by its label in a sweep with a grid, else by its
    widths (None: :func:`~orchestrator.run.budget.check_memory`'s default)."""
    return f"grid configuration {label}" if config.grid.axes else None


def check_buildable(
    config: SweepConfig, specs: list[TrialSpec], datasets: Mapping[str, DatasetArrays]
) -> None:
    """Refuse the sweep (one line naming the configuration) when a configuration's network cannot be
    built and run on its dataset: its family refuses those widths, or a step fails on the meta device
    (:func:`~trainables.train.pack_shape.measure_network`, cached for the packing that follows)."""
    labels = configuration_labels(specs)
    for config_id, group in by_configuration(specs).items():
        spec, data = group[0], datasets[group[0].dataset]
        try:
            measure_network(spec.model, spec.widths, data.input_shape, data.n_classes, spec.batch_size,
                            BuildOptions.of(spec))
        except (ValueError, RuntimeError) as err:
            subject = (
                f"grid: the configuration {labels[config_id]} does not fit" if config.grid.axes
                else f"model {spec.model!r} with widths {list(spec.widths)}"
            )
            raise ConfigError(f"{subject}: {err} (on {spec.dataset}, samples of shape "
                              f"{list(data.input_shape)})") from None


def check_smallest_trials(
    config: SweepConfig, specs: list[TrialSpec], datasets: Mapping[str, DatasetArrays],
    budget: MemoryBudget | None,
) -> None:
    """Refuse the sweep when even the smallest trials (``pack``, else 1 network) of one of the
    configurations of ``specs`` cannot fit ``budget``; the line names that configuration."""
    labels = configuration_labels(specs)
    for config_id, group in by_configuration(specs).items():
        shape = pack_shape(group[0], datasets[group[0].dataset])
        check_memory(shape, config.pack or 1, budget, memory_subject(config, labels[config_id]))


def largest_pack(shape: PackShape, budget: MemoryBudget | None, threads: int, gpu: bool = False) -> int:
    """The automatic K for ``pack: auto``, between 1 and :data:`MAX_PACK`.

    On a CPU: enough networks for one step to reach :data:`CPU_PACK_STEP_FLOPS`
    (small networks gain from amortised overhead, large ones run at K = 1),
    rounded up to a multiple of ``threads`` (the trial's torch threads): a CPU
    ``bmm`` splits the batch of K products among the threads, so an odd K on
    two threads leaves one idle for a while (measured 25% slower). On a GPU:
    as many as fit. Either way no more than fit in :data:`MEMORY_HEADROOM` of
    the budget; a GPU of unknown memory (``budget`` None) gets 1, and so does a
    family without a stacked form (it trains one network per trial) or whose
    stacked form did not measure faster on this kind of device
    (:meth:`~trainables.train.pack_shape.PackShape.packs_automatically`).
    """
    if not shape.packs_automatically("cuda" if gpu else "cpu"):
        return 1
    if budget is None:
        return 1 if gpu else _flops_pack(shape, threads)
    memory = shape.memory()
    room = budget.bytes * MEMORY_HEADROOM - budget.process_bytes - memory.shared
    fitting = max(1, int(room // memory.per_network))
    if budget.device == "cuda":
        return min(MAX_PACK, fitting)
    return min(_flops_pack(shape, threads), fitting)


def _flops_pack(shape: PackShape, threads: int) -> int:
    wanted = math.ceil(CPU_PACK_STEP_FLOPS / shape.step_flops)
    if wanted <= 1:
        return 1
    return max(1, min(MAX_PACK // threads * threads, threads * math.ceil(wanted / threads)))


def trials_per_configuration(
    networks: list[int], largest: list[int], costs: list[float], slots: int, waves: int
) -> list[int]:
    """How many trials (packs) each configuration gets: balanced work, a multiple of ``slots`` in all.

    At least ``ceil(n / largest)`` each; in all the smallest multiple of
    ``slots`` reaching ``waves * slots`` (never more trials than networks).
    Extra trials go, one at a time, to the configuration whose trials are now the most
    work (``cost``: one network's work).
    """
    trials = [math.ceil(n / k) for n, k in zip(networks, largest, strict=True)]
    target = max(sum(trials), waves * slots)
    target = min(sum(networks), math.ceil(target / slots) * slots)
    while sum(trials) < target:
        open_ = [i for i, (t, n) in enumerate(zip(trials, networks, strict=True)) if t < n]
        busiest = max(open_, key=lambda i: networks[i] * costs[i] / trials[i])
        trials[busiest] += 1
    return trials


def split_evenly(specs: list[TrialSpec], parts: int) -> list[list[TrialSpec]]:
    """``specs`` in ``parts`` consecutive packs whose sizes differ by at most one, larger first."""
    size, extra = divmod(len(specs), parts)
    packs, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        packs.append(specs[start:end])
        start = end
    return packs


def make_packs(
    config: SweepConfig,
    todo: list[TrialSpec],
    datasets: Mapping[str, DatasetArrays],
    slots: int,
    budget: MemoryBudget | None,
    log: Callable[[str], None],
    labels: Mapping[str, str] | None = None,
) -> list[list[TrialSpec]]:
    """The networks of ``todo`` in packs of consecutive seeds of one configuration (``config_id``).

    ``pack: N`` gives packs of N. ``pack: auto`` gives each configuration as few
    packs as its largest pack allows (:func:`largest_pack`), then more until the
    number of trials is a multiple of ``slots`` (trials the cluster runs at
    once) and, with several configurations, at least two per slot, so that no
    slot idles while one trial finishes (10 seeds on 4 slots: 3, 3, 2, 2).
    One line per configuration names it by ``labels`` (``{config_id: label}``, by default
    :func:`~orchestrator.catalog.naming.configuration_labels` of ``todo``).
    """
    groups = list(by_configuration(todo).items())
    labels = labels if labels is not None else configuration_labels(todo)
    shapes = [pack_shape(specs[0], datasets[specs[0].dataset]) for _, specs in groups]
    threads = max(1, int(config.resources.cpu_per_trial))
    if config.pack:
        counts = [math.ceil(len(specs) / config.pack) for _, specs in groups]
    else:
        counts = trials_per_configuration(
            [len(specs) for _, specs in groups],
            [largest_pack(shape, budget, threads, config.resources.gpu_per_trial > 0) for shape in shapes],
            [float(pack_cost(specs[:1], shape)) for (_, specs), shape in zip(groups, shapes, strict=True)],
            max(1, slots), waves=1 if len(groups) == 1 else 2,
        )
    packs: list[list[TrialSpec]] = []
    for (config_id, specs), shape, count in zip(groups, shapes, counts, strict=True):
        if config.pack:
            group = [specs[i : i + config.pack] for i in range(0, len(specs), config.pack)]
        else:
            group = split_evenly(specs, count)
        check_memory(shape, len(group[0]), budget, memory_subject(config, labels[config_id]))
        sizes = sorted({len(pack) for pack in group}, reverse=True)
        log(f"{labels[config_id]}: {len(specs)} networks in {len(group)} trial(s) "
            f"of {' or '.join(map(str, sizes))}")
        packs.extend(group)
    return packs


def make_queues(packs: list[list[TrialSpec]], slots: int, costs: list[float]) -> list[list[list[TrialSpec]]]:
    """The packs as Tune trials: one pack each, or with more than :data:`TRIALS_PER_SLOT` per slot,
    ``TRIALS_PER_SLOT * slots`` queues of about equal work (``costs``: each pack's), packs in order."""
    if len(packs) <= TRIALS_PER_SLOT * max(1, slots):
        return [[pack] for pack in packs]
    n_queues = TRIALS_PER_SLOT * max(1, slots)
    loads = [0.0] * n_queues
    members: list[list[int]] = [[] for _ in range(n_queues)]
    for index in sorted(range(len(packs)), key=lambda i: -costs[i]):
        lightest = min(range(n_queues), key=lambda q: (loads[q], q))
        loads[lightest] += costs[index]
        members[lightest].append(index)
    return [[packs[i] for i in sorted(indices)] for indices in members if indices]


def pack_cost(pack: list[TrialSpec], shape: PackShape) -> float:
    """A pack's training work in FLOPs (networks x steps x FLOPs per step), from its own spec;
    ``shape`` is the pack's (:func:`pack_shape`)."""
    return len(pack) * pack[0].epochs * math.ceil(shape.n_train / shape.batch_size) * shape.step_flops
