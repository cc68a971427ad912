"""The production instance's storage (`deploy/dagster.yaml`): dagster-postgres's, with an event
log that stores a batch of events in one connection and transaction.

A single-run backfill of a year records thousands of per-partition events: a "materialisation
planned" per asset and day before the run, a materialisation and a check evaluation per asset,
check and day after its step. dagster-postgres stores each on its own, in a new connection
(its engine keeps none open) and a transaction of its own, twice for an asset event and three
times for a check's; given a batch, it stores materialisations in one statement but every
other event still one by one. This one stores the events of a batch, and a run's held check
evaluations (`event_batching.py`), in one connection and one transaction, each table's rows
in one statement: the same rows, in the same order (`make bench-events` measures the
difference).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.events.log import EventLogEntry
from dagster._core.storage.config import PostgresStorageConfig
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config
from sqlalchemy import Connection

from rental_platform.event_batching import EventBatching, indexed, turn_on_event_batching


class BatchingPostgresEventLogStorage(EventBatching, PostgresEventLogStorage):
    """dagster-postgres's event log, storing each batch in one transaction."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, **kwargs) -> None:
        # The connection each thread has open for a batch: Dagster's writes through `_connect`
        # (the asset index, a check's execution record) go into the batch's transaction.
        self._open = threading.local()
        self._start_batching()
        super().__init__(postgres_url, should_autocreate_tables, **kwargs)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """dagster-postgres's, after waiting for the writer (`event_batching.py`) so that it
        reads what was stored; or within a batch this thread stores, the batch's connection."""
        connection = getattr(self._open, "connection", None)
        if connection is not None:
            yield connection
            return
        self._wait_for_writer()
        with super()._connect() as connection:
            yield connection

    @contextmanager
    def _batch_transaction(self) -> Iterator[Connection]:
        with super()._connect() as connection:
            # The engine autocommits; a batch is one transaction, as `index_transaction` does.
            connection = connection.execution_options(isolation_level="READ COMMITTED")
            with connection.begin():
                self._open.connection = connection
                try:
                    yield connection
                finally:
                    del self._open.connection

    def _store_together(self, events: list[EventLogEntry]) -> None:
        """What `store_event` does for each event, for many events of one run at once."""
        rows = [self._event_to_row(event) for event in events]
        with self._batch_transaction() as connection:
            stored = self._insert_events(connection, events, rows)
            self._index(connection, [each for each in stored if indexed(each[0])])


class BatchingPostgresStorage(DagsterPostgresStorage):
    """`storage: custom:` in dagster.yaml, configured as `storage: postgres:` is:
    dagster-postgres's storage with the batching event log; it turns Dagster's event batching on
    (`event_batching.py`)."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, **kwargs) -> None:
        super().__init__(postgres_url, should_autocreate_tables, **kwargs)
        self._event_log_storage = BatchingPostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=kwargs.get("token_provider")
        )
        turn_on_event_batching()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: PostgresStorageConfig
    ) -> BatchingPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            token_provider=get_token_provider_from_config(config_value),
        )
