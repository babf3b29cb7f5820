"""Claims on real filesystems (a local path and a moto S3 server): atomic create-if-absent, a live
holder skipped, a released claim free again, a dead driver's claim taken over, one winner in a race."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import s3_uri
from trainables.store import Store, layout
from trainables.store.claims import BestEffortFiles, Claims, LocalFiles, S3Files

A, B, C = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store.open(str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return Store.open(s3_uri(endpoint, f"claims/{tmp_path.name}"))


def test_each_filesystem_has_its_atomic_create(store):
    with Claims(store) as claims:
        assert isinstance(claims.files, LocalFiles if store.is_local else S3Files)
        assert claims.files.atomic and claims.warning is None


def test_a_live_holder_is_skipped_and_a_released_claim_is_free(store):
    with Claims(store) as first, Claims(store) as second:
        assert first.take([A, B]) == ([A, B], {})
        mine, theirs = second.take([B, C])
        assert mine == [C] and list(theirs) == [B]
        assert theirs[B].owner == first.me.owner and theirs[B].pid == os.getpid()
        assert second.holder(B) == theirs[B]
        first.release([B])
        assert second.holder(B) is None
        assert second.take([B]) == ([B], {})
    # both drivers ended: their claims and leases are gone
    assert store.list_files(layout.CLAIMS_DIR) == []


def dead_driver(store: Store, trial_id: str, lease_seconds: float | None = None) -> str:
    """The owner id of a driver that claimed ``trial_id`` (with a lease of ``lease_seconds``, default
    the module's 90 s) and was killed with SIGKILL, leaving its claim and its lease behind."""
    lease = "" if lease_seconds is None else f"claims.LEASE_SECONDS = {lease_seconds!r}\n"
    script = (
        "import os, signal, trainables.store.claims as claims\n"
        "from trainables.store import Store\n"
        f"{lease}"
        f"driver = claims.Claims(Store.open({store.location!r})).__enter__()\n"
        f"assert driver.take([{trial_id!r}]) == ([{trial_id!r}], {{}})\n"
        "print(driver.me.owner, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    dead = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    return dead.stdout.split()[0]


def moved_elsewhere(store: Store, owner: str) -> None:
    """Make ``owner``'s lease name another machine's process space: its pid means nothing here."""
    lease = json.loads(store.read_bytes(layout.lease_path(owner)))
    store.write_bytes(layout.lease_path(owner), json.dumps({**lease, "space": "other-host/x/1"}).encode())


def test_a_claim_whose_driver_died_elsewhere_is_taken_over_once_its_lease_expires(store):
    """A driver killed with SIGKILL keeps its claim and lease file; on another machine only the
    lease's expiry frees the claim (the lease is made to last 1 s here, in the dying driver)."""
    owner = dead_driver(store, A, lease_seconds=1.0)
    moved_elsewhere(store, owner)
    assert json.loads(store.read_bytes(layout.claim_path(A)))["owner"] == owner  # left behind
    time.sleep(1.5)  # its lease expires
    with Claims(store) as heir:
        assert heir.holder(A) is None  # its lease expired: nobody alive holds it
        assert heir.take([A]) == ([A], {})
        assert json.loads(store.read_bytes(layout.claim_path(A)))["owner"] == heir.me.owner


def test_a_dead_drivers_claim_on_this_machine_is_taken_over_before_its_lease_expires(store):
    owner = dead_driver(store, A)
    lease = json.loads(store.read_bytes(layout.lease_path(owner)))
    assert lease["expires"] > time.time() + 60  # still valid for a minute and more
    with Claims(store) as heir:
        assert lease["space"] == heir.space != ""  # it ran here: its process is known to be gone
        assert heir.holder(A) is None
        assert heir.take([A]) == ([A], {})
        assert json.loads(store.read_bytes(layout.claim_path(A)))["owner"] == heir.me.owner


def test_a_live_driver_in_another_process_or_a_dead_one_elsewhere_keeps_its_claim(store):
    script = (
        "import sys, time, trainables.store.claims as claims\n"
        "from trainables.store import Store\n"
        f"driver = claims.Claims(Store.open({store.location!r})).__enter__()\n"
        f"assert driver.take([{A!r}]) == ([{A!r}], {{}})\n"
        "print(driver.me.owner, flush=True)\n"
        "sys.stdin.read()\n"  # holds the claim until the test closes its stdin
    )
    live = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        owner = live.stdout.readline().split()[0]
        with Claims(store) as other:
            assert other.take([A]) == ([], {A: other.holder(A)})
            assert other.holder(A).owner == owner and other.holder(A).pid == live.pid
    finally:
        live.stdin.close()
        live.wait(timeout=60)
    # a driver that died on another machine (its lease names another process space): its pid
    # means nothing here, so only the lease's expiry frees the claim
    elsewhere = dead_driver(store, B)
    moved_elsewhere(store, elsewhere)
    with Claims(store) as heir:
        assert heir.take([B])[0] == [] and heir.holder(B).owner == elsewhere


def test_of_drivers_claiming_at_once_exactly_one_wins(store):
    drivers = [Claims(store).__enter__() for _ in range(6)]
    won: list[str] = []
    barrier = threading.Barrier(len(drivers))

    def claim(driver: Claims) -> None:
        barrier.wait()
        if driver.take([A])[0]:
            won.append(driver.me.owner)

    threads = [threading.Thread(target=claim, args=(driver,)) for driver in drivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(won) == 1
        assert json.loads(store.read_bytes(layout.claim_path(A)))["owner"] == won[0]
    finally:
        for driver in drivers:
            driver.__exit__(None, None, None)


def test_without_an_atomic_create_it_is_said_in_one_line(tmp_path):
    """A filesystem pyarrow offers without create-if-absent (here: a SubTreeFileSystem, as any
    other scheme would be) gets best-effort claims and one warning line."""
    import pyarrow.fs as pafs

    local = Store.open(str(tmp_path / "store"))
    other = Store(local.uri, local.location, pafs.SubTreeFileSystem(local.root, pafs.LocalFileSystem()), "")
    with Claims(other) as claims:
        assert isinstance(claims.files, BestEffortFiles) and not claims.files.atomic
        assert claims.warning == (
            f"store: {local.uri} offers no atomic create (pyarrow's subtree filesystem cannot create a file "
            "only if it is absent): claims are best effort, so two drivers started at the same moment may "
            "both train or measure one network"
        )
        assert claims.take([A]) == ([A], {})
