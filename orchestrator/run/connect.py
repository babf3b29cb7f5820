"""Starting Ray here, or joining a cluster within a time limit, quietly.

Joining an address where no Ray answers would otherwise hang for minutes (Ray
retries its GCS connection) and ignore SIGTERM; here it is refused with one
line after ``timeout_s``. Ray's start-up chatter (the token-authentication
notice, INFO lines) is kept off the user's terminal; warnings and errors
still show.

Starting Ray on this machine takes seconds of waiting for its processes, so a
sweep starts it in the background (:class:`BackgroundRay`) while it imports
torch, reads the dataset and plans, and undoes it when the plan is refused.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import ray
import ray._private.node as ray_node

from orchestrator.run.interrupts import stop_on_sigterm
from orchestrator.run.logs import new_log_path
from trainables.errors import UserError

DEFAULT_CONNECT_TIMEOUT_S = 60.0
_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
"""Logs "Token authentication is enabled for this Ray cluster ..." at every start."""


LOCAL_RAY_CONFIG = {
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}
"""Ray's settings for a Ray started here: its clients retry connecting to the raylet's sockets
every 0.1 s, not every second (Ray's default: 10 tries, 1 s apart; the same 10 s in all). The
raylet's own first connection to its object store often comes before the store listens: with the
default, Ray's start then took a second longer (about one start in six here, 2.1 s against 3.1 s)."""


class ClusterError(UserError):
    """The Ray cluster to join cannot be reached; the message names the address and what to check."""


def connect_ray(
    address: str | None, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, env_vars: dict[str, str] | None = None,
    py_modules: list[ModuleType] | None = None,
) -> bool:
    """Join ``address`` within ``timeout_s`` seconds, or start Ray on this machine (all its CPUs and GPUs);
    False when this process was connected already (a test's Ray, a notebook's: used as it is).

    ``env_vars`` are set in every worker of this job (Ray's runtime_env, kept in memory);
    ``py_modules`` (a custom model's code) are importable in every worker. A Ray already
    initialised in this process (tests) is used as it is.
    """
    runtime_env = job_runtime_env(env_vars, py_modules)
    if ray.is_initialized():
        return False
    if address:
        logging.getLogger(_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
        _check_port(address, timeout_s)
        _join(address, timeout_s, runtime_env)
    else:
        start_local_ray(runtime_env)
    stop_on_sigterm()  # ray.init replaced the CLI's handler with its own
    return True


def job_runtime_env(
    env_vars: dict[str, str] | None = None, py_modules: list[ModuleType] | None = None
) -> dict | None:
    """Ray's runtime_env for this job: ``env_vars`` set in every worker, ``py_modules`` importable in
    every worker (None: neither)."""
    entries = (("env_vars", env_vars), ("py_modules", py_modules))
    return {key: value for key, value in entries if value} or None


def disconnect_ray() -> None:
    """Leave Ray, stopping the processes of a Ray this process started (as its exit would, but
    without the half second Ray's exit hook sleeps first)."""
    if ray.is_initialized():
        ray.shutdown()


class LeavingRay:
    """:func:`disconnect_ray` in a helper thread, so that Ray's processes stop while the command
    builds its report; :meth:`wait` blocks until they have (nothing to wait for when this
    command neither started nor joined a Ray)."""

    def __init__(self, connected_here: bool) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if connected_here:
            self._thread = threading.Thread(target=self._leave, name="layerswap-leave-ray")
            self._thread.start()

    def _leave(self) -> None:
        try:
            disconnect_ray()
        except BaseException as err:  # handed to the thread that waits
            self._error = err

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            if self._error is not None:
                raise self._error


UNUSED_SERVICES = ("start_api_server", "start_monitor", "start_log_monitor")
"""The methods of Ray's ``Node`` that start what a Ray started for one command never uses:

- the API server: with ``include_dashboard=False``, a dashboard process whose only module
  records Ray's usage statistics (ray-project/ray#26042); ``ray.init`` waits for it to
  publish its address (1.0-1.2 s here);
- the autoscaler monitor: one machine has nothing to scale (and at ``ray.shutdown`` it tried
  to report to the stopped GCS for a second, or told the driver "the autoscaler failed");
- the log monitor: it sends workers' output to drivers, and ``log_to_driver=False`` here.

Each is a Python process that imports much of Ray while the driver plans. On 2 cores (Ray 2.60),
``ray.init`` took 3.9-4.4 s with them and 1.8-2.0 s without; with the API server alone left out,
Ray's processes used 5.4 s of CPU by 3 s after ``ray.init``, 1.5 s of it the two monitors'.
"""


@contextmanager
def _without_unused_services() -> Iterator[None]:
    """While Ray starts in this context, its ``Node`` starts none of :data:`UNUSED_SERVICES`.

    A Ray release whose ``Node`` lacks one of these methods starts that one as it is.
    """
    originals = {name: getattr(ray_node.Node, name) for name in UNUSED_SERVICES
                 if hasattr(ray_node.Node, name)}

    def start_nothing(node: ray_node.Node, **_: object) -> None:
        """No process; the node's dashboard address stays None, as Ray's Node sets it at first."""

    for name in originals:
        setattr(ray_node.Node, name, start_nothing)
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(ray_node.Node, name, method)


def start_local_ray(runtime_env: dict | None = None) -> None:
    """Start Ray on this machine (all its CPUs and GPUs, none of :data:`UNUSED_SERVICES`) with
    ``runtime_env`` (:func:`job_runtime_env`), quietly; from any thread."""
    logging.getLogger(_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
    worker_log = logging.getLogger("ray._private.worker")
    worker_log.addFilter(_not_main_thread_notice)
    try:
        # Trial output stays in Tune's trial logs; the driver prints one line per event.
        with _without_unused_services():
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, runtime_env=runtime_env, _system_config=LOCAL_RAY_CONFIG)
    finally:
        worker_log.removeFilter(_not_main_thread_notice)


class BackgroundRay:
    """Ray started on this machine in a helper thread, while the driver goes on planning.

    :meth:`wait` returns once Ray is up (raising what the start raised);
    :meth:`cancel`, for a sweep refused meanwhile, waits for the start to end
    and shuts down the Ray it started, so a refusal leaves no Ray behind. A
    Ray already running in this process (a test's, a notebook's) is used as it is.

    The helper thread lives as long as the process: Ray's processes die with the
    thread that started them (``PR_SET_PDEATHSIG``), not only with the process.
    """

    def __init__(self, runtime_env: dict | None = None) -> None:
        self.started_here = not ray.is_initialized()
        self.began = time.monotonic()
        self.up_after: float | None = None
        """Seconds from the start to Ray being up (None until then)."""
        self._error: BaseException | None = None
        self._up = threading.Event()
        self._release = threading.Event()
        if self.started_here:
            threading.Thread(
                target=self._start, args=(runtime_env,), name="layerswap-ray", daemon=True
            ).start()
        else:
            self._up.set()

    def _start(self, runtime_env: dict | None) -> None:
        try:
            start_local_ray(runtime_env)
        except BaseException as err:  # handed to the thread that waits
            self._error = err
        finally:
            self.up_after = time.monotonic() - self.began
            self._up.set()
        self._release.wait()

    def wait(self) -> float:
        """Block until Ray is up; the seconds waited here (what the overlap did not hide)."""
        waited = time.monotonic()
        self._up.wait()
        if self.started_here:
            stop_on_sigterm()
        if self._error is not None:
            raise self._error
        return time.monotonic() - waited

    def cancel(self) -> None:
        """Undo the start: wait for it to end, then shut down the Ray it started."""
        if self.started_here:
            self._up.wait()
            disconnect_ray()
            self._release.set()


def _what_to_check(address: str) -> str:
    return (
        f"check that Ray runs there (`ray start --head` prints the address), that {address!r} is its "
        "GCS address (host:port, default port 6379) and that no firewall blocks it"
    )


def _check_port(address: str, timeout_s: float) -> None:
    """For ``host:port``: fail at once when nothing listens there."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", a ray:// client address, ...: ray.init resolves those
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except TimeoutError:
        raise ClusterError(
            f"cluster: {address} did not answer within {timeout_s:g} s; {_what_to_check(address)}"
        ) from None
    except OSError as err:
        raise ClusterError(
            f"cluster: cannot connect to {address} ({err.strerror or err}); {_what_to_check(address)}"
        ) from None


TOKEN_REFUSED = "InvalidAuthToken"
"""In Ray's connection log: the cluster uses token authentication and this driver sent no token or
another one (Ray retries for about 20 s before it gives up)."""


def _wait_to_join(thread: threading.Thread, timeout_s: float, log_path: Path) -> bool:
    """Wait up to ``timeout_s`` seconds for the joining ``thread``; True, at once, when Ray's
    connection log at ``log_path`` shows the cluster refused this driver's token."""
    deadline = time.monotonic() + timeout_s
    while thread.is_alive() and (left := deadline - time.monotonic()) > 0:
        thread.join(min(0.25, left))
        if thread.is_alive() and TOKEN_REFUSED in log_path.read_text(errors="replace"):
            return True
    return False


def _not_main_thread_notice(record: logging.LogRecord) -> bool:
    """Drops Ray's "SIGTERM handler is not set because current thread is not the main thread"."""
    return not str(record.msg).startswith("SIGTERM handler is not set")


def _join(address: str, timeout_s: float, runtime_env: dict | None) -> None:
    """ray.init(address) in a helper thread, so that a Ray that never answers cannot hang the driver.

    While it runs, file descriptor 2 (where Ray's C++ core logs its connection
    retries) goes to a log file. When it times out, the connection attempt is
    abandoned: its thread keeps logging into that file, Python's ``sys.stderr``
    is moved to the terminal's descriptor, and Ray's exit hook (which would
    wait for the attempt) is dropped.
    """
    outcome: list[BaseException | None] = []
    worker_log = logging.getLogger("ray._private.worker")
    worker_log.addFilter(_not_main_thread_notice)
    log_path = new_log_path("ray-connect")
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)

    def join() -> None:
        try:
            ray.init(
                address=address, log_to_driver=True, logging_level=logging.WARNING, runtime_env=runtime_env
            )
            outcome.append(None)
        except BaseException as err:  # handed to the main thread
            outcome.append(err)

    thread = threading.Thread(target=join, name="layerswap-connect", daemon=True)
    thread.start()
    token_refused = False
    try:
        token_refused = _wait_to_join(thread, timeout_s, log_path)
    finally:
        worker_log.removeFilter(_not_main_thread_notice)
        if outcome:
            os.dup2(terminal, 2)
            os.close(terminal)
            if log_path.stat().st_size == 0:
                log_path.unlink()
        else:
            sys.stderr = os.fdopen(terminal, "w", buffering=1)
            atexit.unregister(ray.shutdown)
    if token_refused:
        raise ClusterError(
            f"cluster: the Ray at {address} refused this driver: it uses token authentication "
            f"(Ray's messages: {log_path}); on its head `--address auto` finds the token, elsewhere "
            "copy its ~/.ray/auth_token here and set RAY_AUTH_MODE=token"
        )
    if not outcome:
        raise ClusterError(
            f"cluster: no Ray answered at {address} within {timeout_s:g} s (--connect-timeout); "
            f"{_what_to_check(address)} (Ray's messages: {log_path})"
        )
    if outcome[0] is not None:
        message = str(outcome[0]).strip().splitlines()
        raise ClusterError(
            f"cluster: cannot join {address} ({message[0] if message else type(outcome[0]).__name__}); "
            f"{_what_to_check(address)}"
        )
