"""Dagster's event batching, which both of the platform's instances turn on, and what their
event logs share: storing a batch together, in a thread of its own.

Storing a batch together means one statement per table where Dagster makes one per event: the
events' rows, their tags, the check executions their evaluations complete. An asset's row in
the index, which every asset event overwrites, is written once per asset and event type: what
the last of them would leave. The rows are those Dagster stores, which the tests compare.

Dagster hands a step's events to the event log in batches (one statement or transaction for a
backfill's hundreds of per-partition materialisations) only while `DAGSTER_EVENT_BATCH_SIZE`
is above 0 in the process that runs the step; unset, it stores them one by one. The instances'
storages (`local/event_log.py`, `postgres_storage.py`) set it when they open, so every process
that opens the instance (the CLI, the webserver, the daemon, a run's worker) batches.

Dagster does not batch check evaluations: a partitioned check's evaluation per partition and
check (thousands in a backfill) would each be stored in transactions of their own. The event
logs hold a run's evaluations until the run's next other event (a step always logs one after
its checks: the checks' outputs, then its success or failure), and store them together.

Storing a step's events takes Dagster seconds in a backfill, while Spark, which runs the next
step, waits. So the event logs store in a writer thread of their own, in the order the events
came, while the caller goes on: the next step's Spark work runs meanwhile. Whoever reads the
event log first waits until everything handed over is stored (read-your-writes), and so does a
run's end: a run seen to have ended has all its events stored. A failure to store one run's
events keeps no other run's from being stored. It is raised to whoever next reads the log, or
closes it; not where a run's end is handed over, which Dagster would answer by storing the
whole batch again. A process killed while the writer still holds events loses them, as
Dagster's own batching loses the batch it holds; the lake, which a step commits before its
events are handed over, loses nothing.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import groupby
from typing import Any

from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEventType,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from sqlalchemy import Connection, bindparam

BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# An event stored: the event, its row in the event log, and the row's storage id.
Stored = tuple[EventLogEntry, dict[str, Any], int]
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


# The event log's methods for concurrency pools, which Dagster calls as each step starts and
# ends (the `lake` pool's slot): they read and write the slots, not events, so they do not wait
# for the writer, and the next step's Spark work starts while the last step's events are stored.
POOL_METHODS = (
    "get_pool_limits",
    "initialize_concurrency_limit_to_default",
    "claim_concurrency_slot",
    "check_concurrency_claim",
    "free_concurrency_slot_for_step",
    "free_concurrency_slots_for_run",
    "get_concurrency_info",
    "get_concurrency_keys",
    "get_concurrency_run_ids",
)


def _ends_a_run(event: EventLogEntry) -> bool:
    """A run's success, failure or cancellation: stored after everything before it."""
    return (
        event.is_dagster_event
        and EVENT_TYPE_TO_PIPELINE_RUN_STATUS.get(event.dagster_event_type) in FINISHED_STATUSES
    )


class EventBatching:
    """Mixed into a Dagster event log (before it): hands the events it is given, and the held
    check evaluations, to a writer thread, which stores consecutive batchable ones through the
    log's `_store_together` and the rest through the log's own `store_event`, in the order they
    came. The log calls `_wait_for_writer` before each connection it opens, which returns at
    once in the writer and in the pool methods (`POOL_METHODS`)."""

    def _start_batching(self) -> None:
        # Keeps the events of the process's threads in the order they were handed over.
        self._order_lock = threading.RLock()
        self._held_checks: list[EventLogEntry] = []
        self._handed_over: queue.Queue[list[EventLogEntry] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        # Set in the writer thread, which waits for no one, and within the pool methods.
        self._not_waiting = threading.local()
        self._write_error: Exception | None = None

    def _store_together(self, events: list[EventLogEntry]) -> None:
        """What `store_event` does for each event, for many events of one run at once."""
        raise NotImplementedError

    def _insert_events(
        self,
        connection: Connection,
        events: Sequence[EventLogEntry],
        rows: Sequence[dict[str, Any]],
    ) -> list[Stored]:
        """Insert the events' rows (Dagster's `_event_to_row`) in one statement."""
        event_ids = connection.execute(
            SqlEventLogStorageTable.insert().returning(
                SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
            ),
            rows,
        ).scalars()
        return list(zip(events, rows, event_ids, strict=True))

    def _index(self, connection: Connection, stored: list[Stored]) -> None:
        """What Dagster's `store_event` writes besides an event's row, for a batch's events
        stored through `connection`: an asset event's tags and its asset's row, a check
        event's execution record. Each table's rows in one statement where they do not
        depend on one another; Dagster's own code writes the rest."""
        assets = [
            (event, event_id)
            for event, _, event_id in stored
            if event.dagster_event_type in ASSET_EVENTS and event.dagster_event.asset_key
        ]
        if assets:
            self._store_asset_event_tags(connection, *zip(*assets, strict=True))
        for event, event_id in _last_of_each_kind(assets):
            self._store_asset_event(connection, event, event_id)
        evaluated: list[Stored] = []
        for event, row, event_id in stored:
            if _partition_evaluated(event):
                evaluated.append((event, row, event_id))
            elif event.dagster_event_type in ASSET_CHECK_EVENTS:
                self._store_evaluations(connection, evaluated)
                evaluated = []
                self.store_asset_check_event(event, event_id)
        self._store_evaluations(connection, evaluated)

    def _store_evaluations(self, connection: Connection, evaluated: list[Stored]) -> None:
        """What `store_asset_check_event` does for a run's evaluations of its checks'
        partitions, in one statement: each completes the execution record its run planned.
        Where a record was not planned (Dagster inserts one then), each goes Dagster's way:
        updating a record again writes the same values."""
        if not evaluated:
            return
        updated = connection.execute(
            _EVALUATED, [_evaluation_values(*each) for each in evaluated]
        ).rowcount
        if updated != len(evaluated):
            for event, _, event_id in evaluated:
                self.store_asset_check_event(event, event_id)

    def store_event(self, event: EventLogEntry) -> None:
        self.store_event_batch([event])

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        with self._order_lock:
            handed: list[EventLogEntry] = []
            for event in events:
                if _held(event):
                    self._held_checks.append(event)
                    if len(self._held_checks) >= BATCH_SIZE:
                        handed += self._take_held()
                    continue
                handed += [*self._take_held(), event]
                if _ends_a_run(event):
                    self._hand_over(handed)
                    handed = []
                    # What the writer failed to store is left for the next reader: raised here,
                    # Dagster would store this batch again, event by event (its fallback).
                    self._wait_for_writer(raise_error=False)
            self._hand_over(handed)

    def dispose(self) -> None:
        with self._order_lock:
            self._hand_over(self._take_held())
            writer, self._writer = self._writer, None
            if writer is not None:
                self._handed_over.put(None)
                writer.join()
            self._raise_write_error()
        super().dispose()  # type: ignore[misc]

    def _take_held(self) -> list[EventLogEntry]:
        held, self._held_checks = self._held_checks, []
        return held

    def _hand_over(self, events: list[EventLogEntry]) -> None:
        """Queue `events` for the writer, starting it if need be."""
        if not events:
            return
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write, name="event-log-writer", daemon=True
            )
            self._writer.start()
        self._handed_over.put(events)

    def _wait_for_writer(self, raise_error: bool = True) -> None:
        """Wait until the writer has stored everything handed over, then raise what it failed
        to store, if anything (unless told not to). Nothing in the writer thread itself, which
        waits for no one."""
        if getattr(self._not_waiting, "active", False):
            return
        self._handed_over.join()
        if raise_error:
            self._raise_write_error()

    @contextmanager
    def _without_waiting(self) -> Iterator[None]:
        before = getattr(self._not_waiting, "active", False)
        self._not_waiting.active = True
        try:
            yield
        finally:
            self._not_waiting.active = before

    def _raise_write_error(self) -> None:
        error, self._write_error = self._write_error, None
        if error is not None:
            raise error

    def _write(self) -> None:
        """The writer: stores what is queued, all of it at once, until told to stop (None)."""
        self._not_waiting.active = True
        while True:
            taken = [self._handed_over.get()]
            while not self._handed_over.empty():
                taken.append(self._handed_over.get())
            events = [event for batch in taken if batch is not None for event in batch]
            try:
                self._store_in_order(events)
            except Exception as error:  # raised where the writer is next waited for
                self._write_error = error
            finally:
                for _ in taken:
                    self._handed_over.task_done()
            if None in taken:
                return

    def _store_in_order(self, events: list[EventLogEntry]) -> None:
        """Stores `events` in order, a run's consecutive batchable ones together. A part that
        fails does not stop the others: one run's database refusing writes loses no other
        run's events. The first failure is raised once all are tried."""
        failure: Exception | None = None
        for (_, batchable), part in groupby(events, key=lambda e: (e.run_id, _batchable(e))):
            for unit in [list(part)] if batchable else [[event] for event in part]:
                try:
                    if batchable:
                        self._store_together(unit)
                    else:
                        super().store_event(unit[0])  # type: ignore[misc]
                except Exception as error:
                    failure = failure or error
        if failure is not None:
            raise failure


def indexed(event: EventLogEntry) -> bool:
    """An event Dagster also records in the cross-run index: an asset or check event."""
    kind = event.dagster_event_type
    return kind in ASSET_EVENTS or kind in ASSET_CHECK_EVENTS


def _last_of_each_kind(events: list[tuple[EventLogEntry, int]]) -> list[tuple[EventLogEntry, int]]:
    """The last event of each type per asset, in their order: an asset's row in the index
    holds columns that each event type overwrites with its own values, so storing these alone
    leaves the row as storing every event in turn would (a backfill's hundreds of partitions
    of one asset update it once per type)."""
    last = {
        (event.dagster_event.asset_key, event.dagster_event_type): index
        for index, (event, _) in enumerate(events)
    }
    return [events[index] for index in sorted(last.values())]


def _partition_evaluated(event: EventLogEntry) -> bool:
    """A run's evaluation of one partition of a check: stored by `_store_evaluations`."""
    return (
        event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and bool(event.run_id)
        and event.dagster_event.event_specific_data.partition is not None
    )


# Dagster's update of a planned check execution with its evaluation
# (`SqlEventLogStorage._update_asset_check_evaluation`), for a partition, with bound values.
_EVALUATED = (
    AssetCheckExecutionsTable.update()
    .where(
        (AssetCheckExecutionsTable.c.asset_key == bindparam("key_asset_key"))
        & (AssetCheckExecutionsTable.c.check_name == bindparam("key_check_name"))
        & (AssetCheckExecutionsTable.c.run_id == bindparam("key_run_id"))
        & (AssetCheckExecutionsTable.c.partition == bindparam("key_partition"))
    )
    .values(
        execution_status=bindparam("execution_status"),
        evaluation_event=bindparam("evaluation_event"),
        evaluation_event_timestamp=bindparam("evaluation_event_timestamp"),
        evaluation_event_storage_id=bindparam("evaluation_event_storage_id"),
        materialization_event_storage_id=bindparam("materialization_event_storage_id"),
    )
)


def _evaluation_values(event: EventLogEntry, row: dict[str, Any], event_id: int) -> dict[str, Any]:
    """`_EVALUATED`'s values for one evaluation, as Dagster's update sets them; the event is
    serialized once, for its row in the log and its execution record alike."""
    evaluation = event.dagster_event.event_specific_data
    target = evaluation.target_materialization_data
    status = (
        AssetCheckExecutionRecordStatus.SUCCEEDED
        if evaluation.passed
        else AssetCheckExecutionRecordStatus.FAILED
    )
    return {
        "key_asset_key": evaluation.asset_key.to_string(),
        "key_check_name": evaluation.check_name,
        "key_run_id": event.run_id,
        "key_partition": evaluation.partition,
        "execution_status": status.value,
        "evaluation_event": row["event"],
        "evaluation_event_timestamp": row["timestamp"],
        "evaluation_event_storage_id": event_id,
        "materialization_event_storage_id": target.storage_id if target else None,
    }


def _pool_method(name: str) -> Callable[..., Any]:
    """The event log's own pool method `name`, run without waiting for the writer."""

    def pool_method(self: EventBatching, *args: Any, **kwargs: Any) -> Any:
        with self._without_waiting():
            return getattr(super(EventBatching, self), name)(*args, **kwargs)

    pool_method.__name__ = name
    return pool_method


for _name in POOL_METHODS:
    setattr(EventBatching, _name, _pool_method(_name))
