"""The warehouse where analysts query the KPI tables: schema `presentation`.

Publishing a window deletes that window's rows and inserts the new ones in one transaction,
so a reader never sees a half-published window and a failure leaves the old rows in place.
Tables are created from the catalogue when missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb

from rental_platform.tables import Column, Table

SCHEMA = "presentation"
PUBLISH_LOG = "_publish_log"


def sql_type(column: Column) -> str:
    """The warehouse type of a catalogue column."""
    if column.type == "string":
        return f"VARCHAR({column.length})" if column.length else "VARCHAR(65535)"
    return {
        "bigint": "BIGINT",
        "int": "INTEGER",
        "double": "DOUBLE PRECISION",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "boolean": "BOOLEAN",
    }.get(column.type, column.type.upper())


def create_table_sql(table: Table) -> str:
    columns = ", ".join(f'"{c.name}" {sql_type(c)}' for c in table.columns)
    return f'CREATE TABLE IF NOT EXISTS {SCHEMA}."{table.name}" ({columns})'


PUBLISH_LOG_SQL = (
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{PUBLISH_LOG} (table_name VARCHAR(128), "
    "window_start DATE, window_end DATE, row_count BIGINT, run_id VARCHAR(64), "
    "published_at TIMESTAMP)"
)


@dataclass(frozen=True)
class Publication:
    table: str
    window_start: date
    window_end: date
    row_count: int


class DuckDBWarehouse(dg.ConfigurableResource):
    """A DuckDB file on this machine (`RENTAL_WAREHOUSE_URL=duckdb:///path`)."""

    path: str

    @property
    def target(self) -> str:
        return f"duckdb:///{self.path}"

    def publish(
        self, table: Table, window_start: date, window_end: date, files: list[str], run_id: str
    ) -> Publication:
        """Replace the rows of [window_start, window_end) with those in `files`."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        column = table.partition_column
        names = ", ".join(f'"{name}"' for name in table.column_names)
        target = f'{SCHEMA}."{table.name}"'
        with duckdb.connect(self.path) as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                connection.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                connection.execute(create_table_sql(table))
                connection.execute(PUBLISH_LOG_SQL)
                connection.execute(
                    f'DELETE FROM {target} WHERE "{column}" >= ? AND "{column}" < ?',
                    [window_start, window_end],
                )
                if files:
                    connection.execute(
                        f"INSERT INTO {target} ({names}) SELECT {names} FROM read_parquet(?)",
                        [files],
                    )
                (rows,) = connection.execute(
                    f'SELECT COUNT(*) FROM {target} WHERE "{column}" >= ? AND "{column}" < ?',
                    [window_start, window_end],
                ).fetchone()
                connection.execute(
                    f"INSERT INTO {SCHEMA}.{PUBLISH_LOG} VALUES (?, ?, ?, ?, ?, ?)",
                    [table.name, window_start, window_end, rows, run_id, _utc_now()],
                )
                connection.execute("COMMIT")
            except BaseException as error:
                connection.execute("ROLLBACK")
                raise RuntimeError(
                    f"publishing {target} for [{window_start}, {window_end}) failed; "
                    f"the previous rows are unchanged: {error}"
                ) from error
        return Publication(table.name, window_start, window_end, rows)


def _utc_now() -> datetime:
    # TIMESTAMP columns hold naive UTC; an aware value would be shifted to the local zone.
    return datetime.now(UTC).replace(tzinfo=None)
