"""The local Dagster instance's storage: Dagster's own SQLite storage, whose event log stores a
batch of events in one transaction per database.

A single-run backfill of a year records one "materialisation planned" event per asset and day
before it starts, and one materialisation per asset and day at its end: thousands of events,
which Dagster hands over in batches. Dagster's SQLite event log stores a batch one event at a
time, each in a connection and transaction of its own (about 9 ms apiece here); this one
stores it in two transactions, one in the run's database and one in the index, each table's
rows in one statement (`event_batching.py`). The rows are the same, in the same order. It
holds a run's check evaluations for a batch too (three transactions each in Dagster's).

Every event, batched or not, also pays for a new SQLAlchemy engine: Dagster's SQLite event log
makes one per connection, and so compiles each statement again and sets up the dialect anew.
This one keeps an engine per database file, with the same pool (none: each use opens and
closes its own SQLite connection, which checkpoints the write-ahead log into the file the UI
watches for a run's new events).

Dagster holds one lock across every database while a connection is open. This one holds a
lock per database: the writer storing a run's events (`event_batching.py`) does not hold up a
step claiming or freeing its pool slot in the index.

Dagster also asks the index, for every asset event, whether the tags table and the asset key
table's newer columns exist, and for every check event whether the check executions table
does: each answer a schema query, and for a table a new engine too. Tables and columns are
added by migrations and never dropped, so this one keeps a yes and asks again after a no.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqlEventLogStorageTable, SqliteEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    SqliteStorageConfig,
    _event_logs_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from rental_platform.event_batching import EventBatching, indexed, turn_on_event_batching

# Engines kept: the index and the databases of the runs a process last wrote or read.
CACHED_ENGINES = 16


class BatchingSqliteEventLogStorage(EventBatching, SqliteEventLogStorage):
    """Dagster's SQLite event log, storing each batch in one transaction per database, through
    an engine kept per database."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data=inst_data)
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        # One lock per database, held while a connection to it is open (`_db_lock`, Dagster's
        # lock, guards only the engines and these locks). No thread opens a second database
        # while it holds one: under Dagster's single lock, that would wait for itself. A lock
        # lives while a thread uses it: a daemon opens the databases of thousands of runs.
        self._shard_locks: weakref.WeakValueDictionary[str, threading.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._start_batching()
        # The connection each thread has open per database, for the writes Dagster makes
        # through `index_connection` within a batch's own transaction.
        self._open = threading.local()
        # Index tables and asset key columns known to exist.
        self._tables_present: set[str] = set()
        self._asset_key_columns_present: set[str] = set()

    def _engine(self, shard: str) -> Engine:
        """The shard's engine, made as Dagster makes it; called under `_db_lock`."""
        engine = self._engines.pop(shard, None) or create_engine(
            self.conn_string_for_shard(shard),
            poolclass=NullPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        self._engines[shard] = engine
        if len(self._engines) > CACHED_ENGINES:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        """Dagster's `_connect`, with the shard's kept engine instead of a new one; within a
        connection this thread has open to the shard, that connection. The first connection a
        thread opens waits for the writer (`event_batching.py`): it reads what was stored."""
        opened: dict[str, Connection] = self._open.__dict__
        if shard in opened:
            yield opened[shard]
            return
        if not opened:
            self._wait_for_writer()
        with self._db_lock:
            shard_lock = self._shard_locks.setdefault(shard, threading.Lock())
            engine = self._engine(shard)
        with shard_lock:
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as connection, connection.begin():
                opened[shard] = connection
                try:
                    yield connection
                finally:
                    del opened[shard]

    def has_table(self, table_name: str) -> bool:
        """Dagster's answer, kept once it is yes."""
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)
        return table_name in self._tables_present

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        """Dagster's answer, kept once it is yes."""
        known = column_name in self._asset_key_columns_present
        if not known and super()._has_asset_key_col_on_connection(conn, column_name):
            self._asset_key_columns_present.add(column_name)
        return column_name in self._asset_key_columns_present

    def _store_together(self, events: list[EventLogEntry]) -> None:
        """What `store_event` does for each event, for many events of one run at once."""
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as connection:
            connection.execute(SqlEventLogStorageTable.insert(), rows)
        mirrored = [(event, row) for event, row in zip(events, rows, strict=True) if indexed(event)]
        if not mirrored:
            return
        # Mirrored in the cross-run index, as `store_event` does, with what it indexes.
        with self.index_transaction() as connection:
            self._index(connection, self._insert_events(connection, *zip(*mirrored, strict=True)))


class BatchingSqliteStorage(DagsterSqliteStorage):
    """`storage: custom:` in dagster.yaml: Dagster's SQLite storage in the same files, with the
    batching event log; it turns Dagster's event batching on (`event_batching.py`)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = BatchingSqliteEventLogStorage(_event_logs_directory(base_dir))
        turn_on_event_batching()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: SqliteStorageConfig
    ) -> BatchingSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
