"""The campaign run's tenant lock: short-lived, renewed by its holder as the run goes on.

A run holds `campaigns:<tenant id>` (a row of services/locks.py) for as long as it runs, so
two runs for one tenant never overlap, and a crashed run's lock lapses within LOCK_TTL_MS.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from backend.core.clock import china_iso
from backend.services.locks import LockLost, acquire_lock, release_lock, renew_lock
from backend.store.db import database
from backend.store.models import JobLock, Tenant

log = logging.getLogger(__name__)

# A run renews its lock while it goes on, so a crashed run's lock lapses within minutes.
LOCK_TTL_MS = 3 * 60 * 1000
LOCK_RENEW_MS = 60 * 1000  # renewed at least this often (between phases, before sends)
LOCK_HEARTBEAT_S = 60.0  # and by a heartbeat thread every this many seconds of real time


class JobLocked(RuntimeError):
    """Another run holds the tenant's lock: this run did nothing."""


class JobLockLost(LockLost):
    """This run's lock lapsed (the run stalled past LOCK_TTL_MS) and another run took it."""


def lock_name(tenant_id: int) -> str:
    """The lock row a tenant's campaign runs share."""
    return f"campaigns:{tenant_id}"


class RunLock:
    """A run's tenant lock, short-lived and renewed by the holder as the run goes on.

    Two kinds of renewal. `beat(now_ms)` is called on the run's own thread between the job's
    phases and before each send; it renews the lock once LOCK_RENEW_MS have passed since the
    last renewal, and raises JobLockLost if the lock has been taken meanwhile (this run stalled
    past LOCK_TTL_MS), which stops the run. And while the lock is held a heartbeat thread
    renews it every LOCK_HEARTBEAT_S seconds of real time, on the run's clock, so one long
    phase (attribution, scoring, deciding a big policy) does not outlive the TTL. The heartbeat
    never raises: if its renewal finds the lock taken it stops renewing for good and the run's
    next `beat` raises. It is stopped before the lock is released, so nothing renews a lock
    after its run ended; a process that dies takes the thread with it, so its lock lapses.
    """

    def __init__(self, name: str, holder: str, now_ms: int, clock=None) -> None:
        self.name = name
        self.holder = holder
        self.renewed_ms = now_ms
        self.clock = clock
        self.fixed_ms = now_ms
        self.lost = False
        self._guard = threading.Lock()  # one renewal at a time: beat and heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> int:
        """The run's "now": the clock's, or the fixed time the run was started with."""
        return self.clock.now_ms() if self.clock is not None else self.fixed_ms

    def _renew(self, at: int) -> bool:
        """Renew at `at`; False (and lost for good) if the lock is no longer ours."""
        with self._guard:
            if self.lost:
                return False
            if not renew_lock(self.name, self.holder, at, LOCK_TTL_MS):
                self.lost = True
                return False
            self.renewed_ms = max(self.renewed_ms, at)
            return True

    def beat(self, now_ms: int | None = None) -> None:
        """Renew if LOCK_RENEW_MS have passed; raise JobLockLost if the lock was taken."""
        at = self.now() if now_ms is None else now_ms
        if not self.lost and at - self.renewed_ms < LOCK_RENEW_MS:
            return
        if not self._renew(at):
            raise JobLockLost(
                f"the run lock {self.name} lapsed and was taken over; this run stopped"
            )

    # -- the heartbeat thread --------------------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat thread (while the lock is held)."""
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"lock-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat and wait for it: before the lock is released."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _heartbeat(self) -> None:
        try:  # renewals connect on demand: this thread's own pooled connection
            while not self._stop.wait(LOCK_HEARTBEAT_S):
                try:
                    if not self._renew(self.now()):
                        log.error("run lock %s was taken over; heartbeat stopped", self.name)
                        return
                except Exception:  # a failed renewal is retried at the next tick
                    log.exception("run lock %s: heartbeat renewal failed", self.name)
        finally:
            if not database.is_closed():
                database.close()


@contextmanager
def holding(tenant: Tenant, now_ms: int, clock=None) -> Iterator[RunLock]:
    """Hold the tenant's run lock for the block, renewed as it goes (raises JobLocked if
    another run holds it). The heartbeat stops before the release: nothing renews the lock
    after its run ended."""
    holder = uuid.uuid4().hex
    name = lock_name(tenant.id)
    if not acquire_lock(name, holder, now_ms, LOCK_TTL_MS):
        row = JobLock.get_or_none(JobLock.name == name)
        until = china_iso(row.expires_ms) if row else "soon"
        raise JobLocked(
            f"another run-campaigns holds the lock for tenant {tenant.appid}; if that run "
            f"crashed, the lock lapses at {until}"
        )
    lock = RunLock(name, holder, now_ms, clock)
    lock.start()
    try:
        yield lock
    finally:
        lock.stop()
        release_lock(name, holder)
