"""Dagster's event batching, which both of the platform's instances turn on, and what their
event logs share to store a batch together.

Dagster hands a step's events to the event log in batches (one statement or transaction for a
backfill's hundreds of per-partition materialisations) only while `DAGSTER_EVENT_BATCH_SIZE`
is above 0 in the process that runs the step; unset, it stores them one by one. The instances'
storages (`local/event_log.py`, `postgres_storage.py`) set it when they open, so every process
that opens the instance (the CLI, the webserver, the daemon, a run's worker) batches.

Dagster does not batch check evaluations: a partitioned check's evaluation per partition and
check (thousands in a backfill) would each be stored in transactions of their own. The event
logs hold a run's evaluations until the run's next other event (a step always logs one after
its checks: the checks' outputs, then its success or failure), and store them together. A
process killed in between loses the evaluations of a step that then never succeeded, as
Dagster's own batching would lose its batch's events.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEventType,
)
from dagster._core.events.log import EventLogEntry

BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# A batch is stored when it ends or reaches this size (a year of one daily asset's
# materialisations is 365).
BATCH_SIZE = 5000


def turn_on_event_batching() -> None:
    """Batch this process's events, unless the environment already says how."""
    os.environ.setdefault(BATCH_SIZE_VARIABLE, str(BATCH_SIZE))


def _batchable(event: EventLogEntry) -> bool:
    """Events stored in a batch: all but run status changes, which Dagster mirrors in the runs
    table, and runless check evaluations; those are stored one by one, in order."""
    if not event.is_dagster_event:
        return True
    kind = event.dagster_event_type
    if kind in ASSET_CHECK_EVENTS:
        return bool(event.run_id)
    return kind not in EVENT_TYPE_TO_PIPELINE_RUN_STATUS


def _held(event: EventLogEntry) -> bool:
    """A run's check evaluation, which Dagster hands over on its own: held for a batch."""
    return (
        event.is_dagster_event
        and event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and bool(event.run_id)
    )


class EventBatching:
    """Mixed into a Dagster event log (before it): hands the batchable events of a batch, and
    the held check evaluations, to the log's `_store_together`, in the order they came; the
    rest to the log's own `store_event`."""

    def _start_batching(self) -> None:
        # Keeps the events of the process's threads in the order they were handed over.
        self._order_lock = threading.RLock()
        self._held_checks: list[EventLogEntry] = []

    def _store_together(self, events: list[EventLogEntry]) -> None:
        """What `store_event` does for each event, for many events at once."""
        raise NotImplementedError

    def store_event(self, event: EventLogEntry) -> None:
        with self._order_lock:
            if _held(event):
                self._held_checks.append(event)
                if len(self._held_checks) >= BATCH_SIZE:
                    self._store_held()
                return
            self._store_held()
            super().store_event(event)  # type: ignore[misc]

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        with self._order_lock:
            self._store_held()
            pending: list[EventLogEntry] = []
            for event in events:
                if _batchable(event):
                    pending.append(event)
                    continue
                self._store_together(pending)
                pending = []
                super().store_event(event)  # type: ignore[misc]
            self._store_together(pending)

    def dispose(self) -> None:
        with self._order_lock:
            self._store_held()
        super().dispose()  # type: ignore[misc]

    def _store_held(self) -> None:
        held, self._held_checks = self._held_checks, []
        self._store_together(held)
