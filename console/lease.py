"""The console worker's leader lease: of the workers running, only the lease holder publishes.

Two workers started by mistake, or a second one kept as a standby, must not both run the
scheduler, the ingest subscription or the config push: they would share the broker client id
and knock each other off. The leader holds a row of `worker_leases` (name, holder,
expires_at) and renews it every RENEW_S; the others try to take it on the same beat and get it
once it has expired, so a standby takes over at most LEASE_S + RENEW_S after the leader died.

Taking and renewing are one atomic UPDATE ... WHERE holder = me OR expires_at < now (row locks
on PostgreSQL, the single writer on SQLite); the very first time the row is INSERTed, and of two
workers inserting at once the primary key lets exactly one win. A leader that cannot renew (the
database is unreachable, or busy with a long transaction) steps down MARGIN_S before its lease
ends, so it has stopped publishing before anyone else may start: renewals every 2 s leave room
for about 10 s of database trouble before that. Times come from the injected clock: the workers'
clocks must agree to well within MARGIN_S (they run NTP, as scheduling needs anyway).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, Table, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from console.db import Database
from console.models import WorkerLease
from scheduler import Clock

log = logging.getLogger(__name__)

LEADER_LEASE = "console-worker"
LEASE_S = 15.0  # how long a taken or renewed lease lasts
RENEW_S = 2.0  # how often the leader renews and a standby tries
MARGIN_S = 3.0  # a leader not renewed steps down this long before its lease ends
_LEASES = cast(Table, WorkerLease.__table__)


class LeaseStore(Protocol):
    """What the elector needs of the database (Lease; a fake in tests)."""

    def acquire(self, holder: str, now: datetime, duration_s: float) -> bool: ...

    def release(self, holder: str, now: datetime) -> None: ...


def default_holder() -> str:
    """A name for this worker that tells an operator where it runs (host, pid) and is unique."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """One named lease in the database; no threads, no state of its own."""

    def __init__(self, db: Database, name: str = LEADER_LEASE) -> None:
        self.db = db
        self.name = name

    def acquire(self, holder: str, now: datetime, duration_s: float) -> bool:
        """Take or renew the lease for `holder` until now + duration_s; False if another
        holder's lease has not expired."""
        until = now + timedelta(seconds=duration_s)
        with self.db.session() as session:
            stmt = (
                update(_LEASES)
                .where(
                    _LEASES.c.name == self.name,
                    or_(_LEASES.c.holder == holder, _LEASES.c.expires_at < now),
                )
                .values(holder=holder, expires_at=until)
            )
            if cast(CursorResult[Any], session.execute(stmt)).rowcount == 1:
                return True
        try:
            with self.db.write_session() as session:
                if session.scalar(select(_LEASES.c.name).where(_LEASES.c.name == self.name)):
                    return False  # held by another, and not expired
                session.execute(
                    insert(_LEASES).values(name=self.name, holder=holder, expires_at=until)
                )
        except IntegrityError:
            return False  # another worker inserted it first
        return True

    def release(self, holder: str, now: datetime) -> None:
        """Give the lease up at once (a clean stop): a standby need not wait for it to expire."""
        with self.db.session() as session:
            session.execute(
                update(_LEASES)
                .where(_LEASES.c.name == self.name, _LEASES.c.holder == holder)
                .values(expires_at=now - timedelta(seconds=1))
            )

    def holder(self, now: datetime) -> str | None:
        """Who holds the lease now (None: nobody, or it expired)."""
        with self.db.session() as session:
            row = session.get(WorkerLease, self.name)
            return row.holder if row is not None and row.expires_at > now else None


class LeaderElector:
    """Takes, renews and gives up the lease, and tells the worker when it leads.

    Two threads: the beat asks the database every renew_s; the transitions thread runs
    `on_elected` when this worker becomes the leader (start what publishes; if it raises,
    the lease is given up and tried again on a later beat) and `on_deposed` when it stops
    being the leader (stop all that publishes). A slow start or stop therefore never delays
    a renewal, and a hanging database never keeps a leader in office: `is_leader()` turns
    False on its own at the step-down time, and the transitions thread acts on it.
    """

    def __init__(
        self,
        lease: LeaseStore,
        clock: Clock,
        *,
        holder: str | None = None,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        margin_s: float = MARGIN_S,
        on_elected: Callable[[], None] = lambda: None,
        on_deposed: Callable[[], None] = lambda: None,
    ) -> None:
        if not (renew_s > 0 and margin_s > 0 and renew_s + margin_s < lease_s):
            raise ValueError(
                f"need 0 < renew_s ({renew_s}), 0 < margin_s ({margin_s}) and "
                f"renew_s + margin_s < lease_s ({lease_s})"
            )
        self.lease = lease
        self.clock = clock
        self.holder = holder or default_holder()
        self.lease_s = float(lease_s)
        self.renew_s = float(renew_s)
        self.margin_s = float(margin_s)
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._lock = threading.Lock()
        self._leading = False  # the lease is ours (as the last beat found)
        self._valid_until: datetime | None = None  # step down at this instant if not renewed
        self._transition = threading.Lock()  # one on_elected/on_deposed at a time
        self._running = False  # on_elected ran and on_deposed has not (transitions only)
        self._changed = threading.Event()

    def is_leader(self) -> bool:
        """This worker holds the lease, with more than the margin left."""
        with self._lock:
            leading, valid_until = self._leading, self._valid_until
        return leading and valid_until is not None and self.clock.now() < valid_until

    def tick(self) -> bool:
        """One beat and the transition it calls for, synchronously (start-up, tests)."""
        self._beat()
        self._reconcile()
        return self.is_leader()

    def run(self, stop: threading.Event) -> None:
        """Beat every renew_s until `stop`; transitions run on a thread of their own."""
        transitions = threading.Thread(
            target=self._reconcile_loop, args=(stop,), name="lease-transitions", daemon=True
        )
        transitions.start()
        try:
            while not stop.is_set():
                self._beat()
                if stop.wait(self.renew_s):
                    break
        finally:
            self._changed.set()
            transitions.join(self.lease_s)

    def resign(self) -> None:
        """Stop leading (if leading) and release the lease, so a standby takes over at once."""
        with self._lock:
            held = self._leading
            self._leading, self._valid_until = False, None
        self._reconcile()
        if held:
            self._give_up()
            log.info("lease %s: released", self.holder)

    # --- the beat ------------------------------------------------------------------------------

    def _beat(self) -> None:
        started = self.clock.now()
        try:
            held: bool | None = self.lease.acquire(self.holder, started, self.lease_s)
        except SQLAlchemyError as exc:
            log.warning("lease %s: the database did not answer: %s", self.holder, exc)
            held = None
        self._settle(held, started)

    def _settle(self, held: bool | None, started: datetime) -> None:
        now = self.clock.now()
        valid_until = started + timedelta(seconds=self.lease_s - self.margin_s)
        if held and valid_until <= now:
            held = None  # renewed, but the answer came too late to rely on
        with self._lock:
            old_until = self._valid_until
            was_leading = self._leading and old_until is not None and now < old_until
            if held:
                self._leading, self._valid_until = True, valid_until
            elif held is False or self._valid_until is None or now >= self._valid_until:
                self._leading, self._valid_until = False, None
            leading = self._leading
        if leading and not was_leading:
            log.info("lease %s: leading (lease %.0f s, renewed every %.0f s)",
                     self.holder, self.lease_s, self.renew_s)  # fmt: skip
        elif was_leading and not leading:
            why = "another worker holds the lease" if held is False else "could not renew it"
            log.warning("lease %s: stepping down (%s)", self.holder, why)
        if leading != was_leading:
            self._changed.set()

    # --- transitions -----------------------------------------------------------------------

    def _reconcile_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            # Woken by a beat that changed something, or looks round on its own: a lease not
            # renewed in time ends at its step-down instant, beat or no beat.
            self._changed.wait(0.1)
            self._changed.clear()
            if not stop.is_set():
                self._reconcile()

    def _reconcile(self) -> None:
        """Start or stop leading so that it matches the lease."""
        with self._transition:
            leader = self.is_leader()
            if leader and not self._running:
                self._running = True
                try:
                    self._on_elected()
                except Exception:  # could not start leading (the broker is away): retry later
                    log.exception("lease %s: could not take the lead; giving it up", self.holder)
                    self._running = False
                    with self._lock:
                        self._leading, self._valid_until = False, None
                    self._give_up()
            elif not leader and self._running:
                log.info("lease %s: not leading: stopping all that publishes", self.holder)
                self._running = False
                try:
                    self._on_deposed()
                except Exception:  # whatever failed to stop, the lease is no longer relied on
                    log.exception("lease %s: stepping down failed", self.holder)

    def _give_up(self) -> None:
        try:
            self.lease.release(self.holder, self.clock.now())
        except SQLAlchemyError as exc:
            log.warning("lease %s: could not release (it expires by itself): %s", self.holder, exc)
