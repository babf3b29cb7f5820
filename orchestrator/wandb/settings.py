"""W&B settings resolved on the driver, the way W&B users expect.

The config's ``wandb:`` block and ``--wandb`` win for what they set; the rest
comes from W&B's own environment variables (``WANDB_MODE``, ``WANDB_PROJECT``,
``WANDB_ENTITY``, ``WANDB_DIR``, ``WANDB_TAGS``, ``WANDB_API_KEY``, and
``WANDB_BASE_URL`` for a self-hosted server). The result is handed to every
worker as is, so a worker's own environment does not matter.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import replace

import ray

from orchestrator.config.blocks import WandbConfig
from orchestrator.config.values import ConfigError
from trainables.store import Store, layout
from trainables.worker.wandb_spec import WandbSpec

DEFAULT_BASE_URL = "https://api.wandb.ai"
DEFAULT_INIT_TIMEOUT_SECONDS = 60.0
MODE_ALIASES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                "disabled": "disabled"}
"""WANDB_MODE values W&B accepts for a run of its own, and what they mean here."""


def resolve_wandb(
    block: WandbConfig | None, environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> WandbSpec | None:
    """The settings every run of the sweep uses; None when W&B is off (no block, or mode disabled).

    ``dir`` is made absolute here (default: ``cwd``, so runs land in ``./wandb``
    beside where the sweep was started). Raises ConfigError (one line) for a
    WANDB_MODE W&B does not know, or online mode without any API key.
    """
    if block is None:
        return None
    environ = os.environ if environ is None else environ
    mode = block.mode or _env_mode(environ)
    if mode == "disabled":
        return None
    base_url = environ.get("WANDB_BASE_URL") or None
    env_tags = tuple(tag for tag in environ.get("WANDB_TAGS", "").split(",") if tag)
    return WandbSpec(
        mode=mode,
        dir=os.path.abspath(os.path.expanduser(block.dir or environ.get("WANDB_DIR") or cwd or os.getcwd())),
        project=block.project or environ.get("WANDB_PROJECT") or None,
        entity=block.entity or environ.get("WANDB_ENTITY") or None,
        tags=block.tags if block.tags is not None else env_tags,
        api_key=_api_key(environ, base_url) if mode == "online" else None,
        base_url=base_url,
        init_timeout_seconds=block.init_timeout_seconds or DEFAULT_INIT_TIMEOUT_SECONDS,
    )


def _env_mode(environ: Mapping[str, str]) -> str:
    value = environ.get("WANDB_MODE", "").strip().lower()
    if not value:
        return "online"
    if value not in MODE_ALIASES:
        raise ConfigError(
            f"WANDB_MODE: {environ['WANDB_MODE']!r} is not allowed; allowed: online, offline, disabled"
        )
    return MODE_ALIASES[value]


def _api_key(environ: Mapping[str, str], base_url: str | None) -> str | None:
    """WANDB_API_KEY, else the key ``wandb login`` saved in ~/.netrc for the server.

    None with WANDB_IDENTITY_TOKEN_FILE set (W&B authenticates with that);
    ConfigError when there is no credential at all.
    """
    if environ.get("WANDB_API_KEY"):
        return environ["WANDB_API_KEY"]
    from wandb.sdk.lib.wbauth import read_netrc_auth

    try:
        key = read_netrc_auth(host=base_url or DEFAULT_BASE_URL)
    except Exception as err:  # noqa: BLE001 - a malformed netrc entry is W&B's own error
        raise ConfigError(f"wandb: the API key in ~/.netrc is unusable ({err}); run `wandb login`") from None
    if key is None and not environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        raise ConfigError(
            "wandb: online mode needs a W&B API key and none was found (WANDB_API_KEY, ~/.netrc); "
            "run `wandb login` or set WANDB_API_KEY, or log offline with WANDB_MODE=offline "
            "and upload later with `wandb sync`"
        )
    return key


def on_this_node(settings: WandbSpec | None) -> WandbSpec | None:
    """``settings`` with ``home_node`` = the connected Ray's node of this process (the driver)."""
    if settings is None:
        return None
    return replace(settings, home_node=ray.get_runtime_context().get_node_id())


def sync_hint(settings: WandbSpec, store: Store, sweep: str) -> list[str]:
    """The lines telling how to upload the sweep's offline runs: one ``wandb sync`` command.

    Runs from the driver's node are in ``<dir>/wandb``; runs from other nodes
    in the store under ``wandb/<sweep>/<trial_id>/``. A store that is not a
    local (or mounted) path has to be copied here first.
    """
    local = shlex.quote(os.path.join(settings.dir, "wandb"))
    relpath = layout.wandb_runs_dir(sweep)
    if not store.exists(relpath):
        return [f"W&B offline runs, to upload: wandb sync {local}"]
    if store.is_local:
        return [f"W&B offline runs, to upload: wandb sync {local} {shlex.quote(store.path(relpath))}/*"]
    return [
        f"W&B offline runs from other nodes: {store.child(relpath).uri} (copy that folder here as "
        f"wandb-{sweep}, e.g. with aws s3 cp --recursive)",
        f"W&B offline runs, to upload: wandb sync {local} {shlex.quote(f'wandb-{sweep}')}/*",
    ]
