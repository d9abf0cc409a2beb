"""Leader election on a ``coordination.k8s.io/v1`` Lease, so that two operators never both act.

The holder renews the Lease every ``renew_s``; a candidate takes it only once it has not been
renewed for ``duration_s``. Every write is a compare-and-swap on the Lease's resourceVersion, so
of two candidates racing for an expired Lease exactly one wins. A leader that cannot reach the
apiserver for longer than its Lease pauses (``leading`` is cleared, so nothing acts) and resumes
if it renews again; one that finds another holder exits, as client-go's elector does. Pausing
rather than exiting lets an operator ride out an apiserver restart with its caches intact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx  # the HTTP client lightkube 1.x is built on
from lightkube import ApiError, Client
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger(__name__)

LEASE_NAME = "kapell-operator"
DURATION_S = 15
RENEW_S = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """Campaigns for the Lease in a thread; ``leading`` is set while this process holds it."""

    def __init__(
        self,
        client: Client,
        identity: str,
        namespace: str,
        on_lost: Callable[[], None],
        name: str = LEASE_NAME,
        duration_s: int = DURATION_S,
        renew_s: float = RENEW_S,
    ) -> None:
        self._client = client
        self.identity = identity
        self._namespace = namespace
        self._name = name
        self._duration_s = duration_s
        self._renew_s = renew_s
        self._on_lost = on_lost
        self.leading = threading.Event()
        self._stop = threading.Event()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop campaigning and give the Lease up, so a successor need not wait for expiry."""
        self._stop.set()
        if self.leading.is_set():
            try:
                lease = self._client.get(Lease, self._name, namespace=self._namespace)
                if lease.spec is not None and lease.spec.holderIdentity == self.identity:
                    lease.spec.holderIdentity = None
                    lease.spec.renewTime = None
                    self._client.replace(lease)
            except (ApiError, httpx.HTTPError):
                pass

    def _run(self) -> None:
        last_renewed = 0.0
        has_led = False
        while not self._stop.is_set():
            try:
                held: bool | None = self._try_acquire_or_renew()
            except (ApiError, httpx.HTTPError, OSError) as exc:
                log.info("leader election: %s", exc)
                held = None  # unknown: the apiserver did not answer
            if held:
                last_renewed = time.monotonic()
                has_led = True
                if not self.leading.is_set():
                    log.info("%s: now leading", self.identity)
                    self.leading.set()
            elif held is False and has_led:
                log.error("%s: another operator holds the lease; stopping", self.identity)
                self.leading.clear()
                self._on_lost()
                return
            elif self.leading.is_set() and time.monotonic() - last_renewed > self._duration_s:
                log.warning(
                    "%s: lease not renewed for %d s; paused", self.identity, self._duration_s
                )
                self.leading.clear()
            self._stop.wait(self._renew_s)

    def _try_acquire_or_renew(self) -> bool:
        """True if this candidate holds the Lease now, False if another validly does."""
        now = _now()
        try:
            lease = self._client.get(Lease, self._name, namespace=self._namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            return self._create(now)
        spec = lease.spec if lease.spec is not None else LeaseSpec()
        lease.spec = spec
        holder = spec.holderIdentity
        if holder and holder != self.identity and not self._expired(spec, now):
            return False
        transitions = spec.leaseTransitions or 0
        if holder != self.identity:
            transitions += 1
            spec.acquireTime = now
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = self._duration_s
        spec.renewTime = now
        spec.leaseTransitions = transitions
        try:
            self._client.replace(lease)  # carries resourceVersion: fails if someone wrote first
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        return True

    def _expired(self, spec: Any, now: datetime) -> bool:
        renewed = spec.renewTime or spec.acquireTime
        if renewed is None:
            return True
        duration = spec.leaseDurationSeconds or self._duration_s
        return bool((now - renewed).total_seconds() > duration)

    def _create(self, now: datetime) -> bool:
        lease = Lease(
            metadata=ObjectMeta(name=self._name, namespace=self._namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=self._duration_s,
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            ),
        )
        try:
            self._client.create(lease)
        except ApiError as exc:
            if exc.status.code == 409:  # another candidate created it first
                return False
            raise
        return True
