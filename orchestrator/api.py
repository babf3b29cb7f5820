"""A store from a notebook or a script: tables as pandas DataFrames, networks as ``nn.Module``.

    from orchestrator import open_store
    store = open_store("runs/demo")          # any store URI: a local path, s3://bucket/prefix, ...
    store.trials()                           # one row per network, spec fields as columns
    store.swaps(sweep="demo")                # swap rows joined with their trial's fields
    store.variant(trial_id, "reinit", "fc1") # the exact network a swaps row measured

The API reads only: it never writes, renames or deletes anything in a store (no probe, no
marker, no report). It reads through the same code as the CLI (``load_contents`` for ``ls``
and ``report``, the report's statistics, the measurement's weights loader and swap variants),
so its tables hold what the CLI's do, and its errors are the CLI's one-line errors as
exceptions (:class:`trainables.errors.UserError` subclasses, same messages).

Importing this module is light: pandas, pyarrow and torch load when a method first needs them.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from trainables.errors import StoreError, UserError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from trainables.data.tensors import DatasetArrays, DatasetTensors
    from trainables.spec import TrialSpec
    from trainables.store.store import Store

TRIAL_KEYS = ("sweep", "config_id", "seed")
"""The trial columns every joined table carries, before the spec's fields."""
VARIANT_KINDS = ("none", "reinit", "rerandomize", "transplant", "interpolate")


class ArgumentError(UserError, ValueError):
    """An argument to a method that names nothing the store can hold (a kind, an alpha, ...)."""


def open_store(uri: str | os.PathLike[str]) -> StoreReader:
    """The store at ``uri`` (a local path or any URI pyarrow opens, e.g. ``s3://bucket/prefix``),
    for reading only. StoreError (one line) when it cannot be reached or holds no layerswap store."""
    from trainables.store import Store

    store = Store.open(os.fspath(uri))
    if store.version() is None:
        raise StoreError(f"{store.uri} is not a layerswap store (no index/trials)")
    return StoreReader(store)


class StoreReader:
    """A layerswap store, read-only. Accuracies are fractions in [0, 1], losses mean cross-entropy
    in nats, epochs are training epochs (0 = the initial network)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._arrays: dict[str, DatasetArrays] = {}

    @property
    def uri(self) -> str:
        """The store's URI as shown (credentials redacted)."""
        return self._store.uri

    def __repr__(self) -> str:
        return f"open_store({self.uri!r})"

    # Tables ---------------------------------------------------------------------------------

    def trials(self, sweep: str | None = None) -> pd.DataFrame:
        """One row per complete network (one with a trial row): the ``trials`` table's columns, then
        every training-spec field flattened into a column of its own (``optimizer.lr``,
        ``optimizer.momentum``, ``precision``, ... defaults included; lists as tuples). With
        ``sweep``, the networks of that sweep (its ``sweep`` column set to it). Sorted by sweep,
        configuration, seed. StoreError for an unknown sweep."""
        from orchestrator.catalog.contents import load_contents

        contents = load_contents(self._store, sweep)
        return self._trial_frame(contents.trials, unique=sweep is None)[0]

    def swaps(self, sweep: str | None = None) -> pd.DataFrame:
        """The swap measurements of complete networks, each key once (``trial_id``, ``kind``,
        ``layer``, ``epoch``, ``alpha``, ``draw``; ``test_acc`` fraction correct on the full test
        set, ``test_loss``, ``n_test`` samples), joined with their trial's fields (``sweep``,
        ``config_id``, ``seed`` and the flattened spec, as :meth:`trials`). Nullable integers for
        ``epoch`` (null for ``rerandomize``) and ``draw`` (null unless ``rerandomize``)."""
        from orchestrator.catalog.contents import load_contents

        contents = load_contents(self._store, sweep)
        return self._joined(contents.swaps, *self._trial_frame(contents.trials, unique=sweep is None))

    def layers(self, sweep: str | None = None) -> pd.DataFrame:
        """Weight movement of complete networks, one row per (trial, stored checkpoint ``epoch``,
        layer): ``n_params``, ``norm`` (Frobenius norm of the layer's trainable tensors),
        ``dist_init`` (norm of theta_t - theta_0), ``rel_dist_init`` (dist_init / norm of theta_0),
        ``cos_init``, ``dist_final`` (norm of theta_t - theta_T), joined with the trial's fields."""
        return self._measure_table("layers", sweep)

    def criticality(self, sweep: str | None = None) -> pd.DataFrame:
        """Module criticality of complete networks, one row per (trial, layer, settings):
        ``criticality`` ((alpha/sigma)^2 * ||theta_T - theta_0||^2 at the best passing pair; NaN
        when none passed), ``alpha_star``, ``sigma_star``, the losses, and the settings
        (``n_alpha``, ``n_sigma``, ``sigma_max``, ``noise_samples``, ``rtol``, ``subset_size``),
        joined with the trial's fields."""
        return self._measure_table("criticality", sweep)

    def stats(self, sweep: str | None = None) -> pd.DataFrame:
        """The report's per-layer statistics across seeds, computed now by the report's own code:
        equal, column for column, to the ``stats.parquet`` that ``layerswap report STORE`` (with
        ``--sweep``) would write (one row per sweep, config_id, kind, layer, epoch, alpha; ``n``
        seeds, ``mean_acc``, ``std_acc``, Student-t ``ci95_low``/``ci95_high``, ``min_acc``,
        ``max_acc``, the drop against the same seed's trained network: ``mean_drop``,
        ``drop_ci95_low``, ``drop_ci95_high``; NaN spreads where n < 2; then one column per grid
        axis, e.g. ``optimizer.lr``, null for sweeps without it)."""
        from orchestrator.catalog.contents import load_contents, without_diverged
        from orchestrator.report.axes import sweep_axes
        from orchestrator.report.layer_order import layer_order
        from orchestrator.report.layer_stats import read_measures
        from orchestrator.report.stats import compute_stats, stats_to_arrow

        contents = without_diverged(load_contents(self._store, sweep))  # as the report: trained networks only
        layers, _ = read_measures(self._store, contents.trials.column("trial_id").unique())
        networks = layer_order(contents.trials, layers)  # as the report: layers in forward order
        stats = compute_stats(contents.trials, contents.swaps, sweep_axes(self._store), networks)
        return stats_to_arrow(stats).to_pandas()

    # Networks -------------------------------------------------------------------------------

    def spec(self, trial_id: str) -> TrialSpec:
        """The training spec of a complete network (its ``spec.json``, checked against its id)."""
        from trainables.spec import TrialSpec
        from trainables.store import layout

        relpath = layout.index_path("trials", layout.check_trial_id(trial_id))  # never a path outside
        if not self._store.exists(relpath):
            raise StoreError(f"store: {self.uri} holds no complete trial {trial_id!r} (no {relpath})")
        try:
            spec = TrialSpec.from_dict(json.loads(self._store.read_bytes(layout.spec_path(trial_id))))
        except (ValueError, TypeError) as err:
            raise StoreError(f"store: {self._store.path(layout.spec_path(trial_id))} is not a "
                             f"training spec ({err})") from None
        if spec.trial_id != trial_id:
            raise StoreError(f"store: {self._store.path(layout.spec_path(trial_id))} does not hash to "
                             f"its trial id {trial_id} (it is {spec.trial_id}); run layerswap verify")
        return spec

    def network(self, trial_id: str, epoch: int | None = None, device: str = "cpu") -> nn.Module:
        """The network ``trial_id`` with its weights at checkpoint ``epoch`` (default: the trained
        network, ``epochs``), built by its model family, in eval mode, on ``device``. Needs the
        trial's dataset (for the input shape): ``layerswap data NAME`` prepares it."""
        spec = self.spec(trial_id)
        epoch = spec.epochs if epoch is None else epoch
        self._check_epoch(spec, epoch)
        checkpoints = self._checkpoints(spec, {epoch}, device)
        return self._module(spec, checkpoints[epoch], device)

    def variant(
        self,
        trial_id: str,
        kind: str,
        layer: str | None,
        epoch: int = 0,
        alpha: float | None = None,
        draw: int | None = None,
        recalibrate: int = 0,
        device: str = "cpu",
    ) -> nn.Module:
        """The swapped network a swaps row (``trial_id``, ``kind``, ``layer``, ``epoch``, ``alpha``,
        ``draw``) measured, built by the measurement's own code
        (:func:`trainables.measure.swaps.swap_variants`: the same fresh-draw seeds), in eval mode on
        ``device``: evaluated with :func:`trainables.measure.evaluation.evaluate` on the trial's
        test set (:meth:`dataset`) on the device that measured it, it gives the row's ``test_acc``
        exactly.

        ``epoch``: the checkpoint evaluated (``none``), the layer's source (``reinit``, and the
        start of the line for ``interpolate``), the donor (``transplant``, usually the last
        epoch); ignored by ``rerandomize`` (its rows have no epoch). ``alpha`` in [0, 1]: only and
        always for ``interpolate``. ``draw``: the ``rerandomize`` draw (default 0). ``layer``: a
        layer name (``fc1``) or a group's (``layer2.0``, ``stage3``); None for ``none``.
        ``recalibrate`` N > 0: the variant with every BatchNorm's running statistics re-estimated
        on N training samples, as the rows with that ``recalibrate`` measured it (networks with
        BatchNorm only).
        """
        from trainables.measure.stored import network_layers
        from trainables.measure.swaps import swap_variants
        from trainables.plan import GROUP_LEVELS, alpha_key

        spec = self.spec(trial_id)
        key = self._swap_key(kind, layer, epoch, alpha, draw)
        if recalibrate < 0:
            raise ArgumentError(f"recalibrate: {recalibrate} is not allowed; expected 0, or N >= 1 samples")
        if key[2] is not None:
            self._check_epoch(spec, key[2])
        data = self._dataset_arrays(spec.dataset)
        names = network_layers(spec, data.input_shape, data.n_classes, GROUP_LEVELS)
        if kind != "none" and layer not in names:
            raise ArgumentError(
                f"layer: {layer!r} is not a layer or group of {trial_id}; its layers and groups: "
                f"{', '.join(names)}"
            )
        checkpoints = self._checkpoints(spec, {0, spec.epochs} | ({key[2]} - {None}), device)
        model = self._structure(spec)
        swap_key = (key[0], key[1], key[2], alpha_key(key[3]), key[4], recalibrate)
        [variant] = swap_variants(spec, model, checkpoints, [swap_key])
        params = variant.params
        if recalibrate:
            params = self._recalibrated(spec, model, params, recalibrate, device)
        return self._module(spec, params, device)

    def _recalibrated(self, spec: TrialSpec, model: nn.Module, params: dict, n: int, device: str) -> dict:
        """``params`` with every BatchNorm's statistics re-estimated as the measurement does
        (:mod:`trainables.measure.recalibrate`: the same N samples of the same seeded order)."""
        from trainables.measure.recalibrate import has_batchnorm, recalibrated, recalibration_samples

        if not has_batchnorm(model):
            raise StoreError(
                f"store: {spec.trial_id} has no BatchNorm, so no row of it is measured with recalibrate {n}; "
                "use recalibrate=0"
            )
        samples = recalibration_samples(self.dataset(spec.dataset, device).x_train, spec.seed, n)
        return recalibrated(model, params, samples, spec.batch_size)

    def dataset(self, name: str, device: str = "cpu") -> DatasetTensors:
        """The dataset ``name`` as trials train and test on it: pre-normalised float32 features
        (``x_train``, ``x_test``; (N, D) for the MLP datasets) and int64 labels (``y_train``,
        ``y_test``) on ``device``, read from the data root (``$LAYERSWAP_DATA``, else
        ``~/.cache/layerswap/data``; ``layerswap data NAME`` prepares it). DataError when absent."""
        return self._dataset_arrays(name).tensors(device)

    # Helpers --------------------------------------------------------------------------------

    def _dataset_arrays(self, name: str) -> DatasetArrays:
        from trainables.data.datasets import load_dataset

        if name not in self._arrays:
            self._arrays[name] = load_dataset(name)
        return self._arrays[name]

    def _trial_frame(self, trials: Any, unique: bool) -> tuple[pd.DataFrame, list[str]]:
        """Trial rows (Arrow) as pandas: config ids filled, lists as tuples, the flattened spec's
        fields added as columns; one row per network when ``unique``. With the names of the spec's
        fields (the seed first)."""
        from orchestrator.report.stats import with_config_ids
        from trainables.spec import TrialSpec, flat_fields

        frame = with_config_ids(trials).to_pandas()
        if unique:
            frame = frame.drop_duplicates("trial_id", keep="first")
        for column in ("widths", "checkpoints"):
            frame[column] = frame[column].map(lambda value: tuple(int(v) for v in value))
        per_config: dict[str, dict[str, Any]] = {}  # the fields but the seed: one configuration's own
        for config_id, text in zip(frame["config_id"], frame["spec_json"], strict=True):
            if config_id not in per_config:
                per_config[config_id] = flat_fields(TrialSpec.from_dict(json.loads(text)))
        flat = [per_config[config_id] for config_id in frame["config_id"]]
        fields = list(dict.fromkeys(name for row in per_config.values() for name in row))
        for name in fields:
            if name not in frame.columns:
                frame[name] = [row.get(name) for row in flat]
        frame = frame.sort_values(["sweep", "config_id", "seed"], kind="stable").reset_index(drop=True)
        return frame, ["seed", *fields]

    def _joined(self, rows: Any, trials: pd.DataFrame, spec_fields: list[str]) -> pd.DataFrame:
        """Index rows (Arrow) of complete trials joined with their trial's keys and ``spec_fields``."""
        import pandas as pd
        import pyarrow as pa

        columns = list(dict.fromkeys([*TRIAL_KEYS, *spec_fields]))
        frame = rows.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
        return frame.merge(trials[["trial_id", *columns]], on="trial_id", how="inner")

    def _measure_table(self, table: str, sweep: str | None) -> pd.DataFrame:
        from orchestrator.catalog.contents import load_contents

        contents = load_contents(self._store, sweep)
        return self._joined(self._store.read_index(table), *self._trial_frame(contents.trials, sweep is None))

    def _swap_key(
        self, kind: str, layer: str | None, epoch: int, alpha: float | None, draw: int | None
    ) -> tuple[str, str | None, int | None, float | None, int | None]:
        """(kind, layer, epoch, alpha, draw) as the swaps table keys a row of ``kind``."""
        if kind not in VARIANT_KINDS:
            raise ArgumentError(f"kind: {kind!r} is not a swap kind; allowed: {', '.join(VARIANT_KINDS)}")
        if kind == "none" and layer is not None:
            raise ArgumentError(
                f"layer: {layer!r} is not allowed for kind 'none' (the whole network); use None"
            )
        if kind != "none" and not isinstance(layer, str):
            raise ArgumentError(f"layer: {layer!r} is not allowed; {kind} swaps one layer: name it")
        if (kind == "interpolate") != (alpha is not None):
            need = "needs an alpha in [0, 1]" if kind == "interpolate" else "takes no alpha"
            raise ArgumentError(f"alpha: {alpha!r} is not allowed; {kind} {need}")
        if alpha is not None and not 0 <= alpha <= 1:
            raise ArgumentError(f"alpha: {alpha!r} is not allowed; expected a number in [0, 1]")
        if kind != "rerandomize" and draw is not None:
            raise ArgumentError(f"draw: {draw!r} is not allowed; only rerandomize has draws")
        if kind == "rerandomize":
            draw = 0 if draw is None else draw
            if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
                raise ArgumentError(f"draw: {draw!r} is not allowed; expected an integer >= 0")
            return (kind, layer, None, None, draw)
        return (kind, layer, epoch, alpha, None)

    def _check_epoch(self, spec: TrialSpec, epoch: int) -> None:
        if epoch not in spec.checkpoints:
            raise ArgumentError(
                f"epoch: {epoch!r} is not a checkpoint of {spec.trial_id}; its checkpoints: "
                f"{', '.join(map(str, spec.checkpoints))}"
            )

    def _checkpoints(self, spec: TrialSpec, epochs: set[int], device: str) -> dict[int, dict]:
        """The stored weights of ``epochs``, read by the measurement's own loader."""
        import torch

        from trainables.measure.stored import load_checkpoints

        return load_checkpoints(self._store, spec, torch.device(device), sorted(epochs))

    def _structure(self, spec: TrialSpec) -> nn.Module:
        from trainables.measure.stored import structure

        data = self._dataset_arrays(spec.dataset)
        return structure(spec, data.input_shape, data.n_classes)

    def _module(self, spec: TrialSpec, params: dict, device: str) -> nn.Module:
        """``spec``'s network holding ``params`` (copied), in eval mode on ``device``; built by its
        family without touching the caller's random number generators."""
        import torch

        from trainables.models import registry

        data = self._dataset_arrays(spec.dataset)
        with torch.random.fork_rng(devices=[]):
            module = registry.spec_network(spec, data.input_shape, data.n_classes)  # its norm and factory
        module.load_state_dict(params)
        return module.to(device).eval()
