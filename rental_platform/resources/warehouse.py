"""The warehouse where analysts query the KPI tables: schema `presentation`.

One interface, three warehouses: DuckDB on one machine, PostgreSQL, and Amazon Redshift.
PostgreSQL and Redshift share every statement (only SQL both accept); DuckDB differs only in
its parameter marker and in reading the Parquet files itself.

Publishing a window deletes that window's rows and inserts the new ones in one transaction, so
a reader never sees a half-published window and a failure leaves the old rows in place. The
schema and tables are created from the catalogue when missing; a column the catalogue gained
is added; a change that cannot be applied safely stops before anything is changed.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg

from rental_platform.settings import WarehouseTarget, parse_warehouse_url
from rental_platform.tables import Column, Table

SCHEMA = "presentation"
PUBLISH_LOG = "_publish_log"
INSERT_BATCH_ROWS = 500


class WarehouseSchemaError(RuntimeError):
    """The warehouse table cannot be brought to the catalogue's shape safely."""


@dataclass(frozen=True)
class Publication:
    table: str
    window_start: date
    window_end: date
    row_count: int


@dataclass(frozen=True)
class WarehouseColumn:
    """A column as the warehouse's information_schema describes it."""

    name: str
    data_type: str
    length: int | None
    precision: int | None
    scale: int | None
    nullable: bool


def sql_type(column: Column) -> str:
    """The warehouse type of a catalogue column (the same text for all three warehouses)."""
    if column.type == "string":
        return f"VARCHAR({column.length or 65535})"
    return {
        "bigint": "BIGINT",
        "int": "INTEGER",
        "double": "DOUBLE PRECISION",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "boolean": "BOOLEAN",
    }.get(column.type, column.type.upper())


def _family(data_type: str, precision: int | None, scale: int | None) -> str:
    """A type name all three warehouses' information_schemas agree on."""
    name = data_type.lower()
    if name.startswith(("decimal", "numeric")):
        return f"decimal({precision},{scale})"
    if name.startswith(("character varying", "varchar", "text")):
        return "string"
    if name.startswith("timestamp"):
        return "timestamp"
    return {
        "double precision": "double",
        "double": "double",
        "float8": "double",
        "int8": "bigint",
        "integer": "int",
        "int4": "int",
        "bool": "boolean",
    }.get(name, name)


def column_ddl(column: Column, table: Table) -> str:
    not_null = " NOT NULL" if column.name in table.key else ""
    return f'"{column.name}" {sql_type(column)}{not_null}'


def create_table_sql(table: Table) -> str:
    columns = ", ".join(column_ddl(c, table) for c in table.columns)
    return f'CREATE TABLE IF NOT EXISTS {SCHEMA}."{table.name}" ({columns})'


PUBLISH_LOG_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{PUBLISH_LOG} (table_name VARCHAR(128), "
    "window_start DATE, window_end DATE, row_count BIGINT, run_id VARCHAR(64), "
    "published_at TIMESTAMP)"
)


def schema_changes(table: Table, existing: dict[str, WarehouseColumn]) -> list[Column]:
    """The catalogue columns the warehouse table lacks; raise if any difference is unsafe."""
    problems = []
    for column in table.columns:
        found = existing.get(column.name)
        if found is None:
            continue
        have = _family(found.data_type, found.precision, found.scale)
        if have != column.type:
            problems.append(
                f"column {column.name} is {have} in the warehouse, {column.type} in the catalogue"
            )
        elif column.length and found.length and found.length < column.length:
            problems.append(
                f"column {column.name} is VARCHAR({found.length}), catalogue needs {column.length}"
            )
    for name, found in existing.items():
        if name not in table.column_names and not found.nullable:
            problems.append(f"key column {name} is no longer in the catalogue")
    for name in table.key:
        if existing and name not in existing:
            problems.append(f"key column {name} is new: the rows already there have no value")
    if problems:
        raise WarehouseSchemaError(
            f"{SCHEMA}.{table.name}: cannot apply the catalogue safely, nothing was changed: "
            + "; ".join(problems)
        )
    return [c for c in table.columns if c.name not in existing]


class Warehouse(dg.ConfigurableResource, ABC):
    """A warehouse at `url` (RENTAL_WAREHOUSE_URL). Configure `url` and `password` with
    `EnvVar` when they hold a secret, so the UI shows the variables' names only."""

    url: str
    password: str = ""

    # How the driver marks a query parameter.
    placeholder: ClassVar[str] = "%s"

    @property
    def copies_from_s3(self) -> bool:
        """Whether it loads Parquet files from S3 itself (else they are copied here first)."""
        return False

    @cached_property
    def endpoint(self) -> WarehouseTarget:
        """The parsed `url`: the configuration stays the variables' text (what the UI shows),
        parsed once per resource."""
        return parse_warehouse_url(self.url, self.password)

    @property
    def target(self) -> str:
        """Where the tables are, without a password: for logs and metadata."""
        return self.endpoint.public_url

    @abstractmethod
    def _connect(self) -> Any:
        """A DB-API connection, outside any transaction."""

    def _begin(self, connection: Any) -> Any:
        """Open a transaction and return the cursor to run it with. DB-API drivers open the
        transaction implicitly with the first statement."""
        return connection.cursor()

    @abstractmethod
    def _insert_files(self, cursor: Any, table: Table, files: list[str]) -> None:
        """Insert the rows of the Parquet files into the table."""

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with closing(self._connect()) as connection:
            cursor = self._begin(connection)
            try:
                yield cursor
                connection.commit()
            except BaseException:
                connection.rollback()
                raise

    def query(self, sql: str, parameters: list | None = None) -> list[tuple]:
        """Run one statement in its own transaction; its rows, if it returns any."""
        with self._transaction() as cursor:
            cursor.execute(sql, parameters or [])
            if cursor.description is None:
                return []
            return [tuple(row) for row in cursor.fetchall()]

    def ensure_table(self, table: Table) -> list[str]:
        """Create the schema and the table, or add the columns the catalogue gained.

        Returns the names of the columns added. Runs before, and apart from, a publish.
        """
        with self._transaction() as cursor:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cursor.execute(PUBLISH_LOG_TABLE)
            existing = self._columns(cursor, table)
            if not existing:
                cursor.execute(create_table_sql(table))
                return []
            added = schema_changes(table, existing)
            for column in added:
                cursor.execute(
                    f'ALTER TABLE {SCHEMA}."{table.name}" ADD COLUMN "{column.name}" '
                    + sql_type(column)
                )
            return [column.name for column in added]

    def _columns(self, cursor: Any, table: Table) -> dict[str, WarehouseColumn]:
        marker = self.placeholder
        cursor.execute(
            "SELECT column_name, data_type, character_maximum_length, numeric_precision, "
            "numeric_scale, is_nullable FROM information_schema.columns "
            f"WHERE table_schema = {marker} AND table_name = {marker}",
            [SCHEMA, table.name],
        )
        return {
            row[0]: WarehouseColumn(row[0], row[1], row[2], row[3], row[4], row[5] == "YES")
            for row in cursor.fetchall()
        }

    def publish(
        self, table: Table, window_start: date, window_end: date, files: list[str], run_id: str
    ) -> Publication:
        """Replace the rows of [window_start, window_end) with those in `files`."""
        self.ensure_table(table)
        column, marker = table.partition_column, self.placeholder
        target = f'{SCHEMA}."{table.name}"'
        window = f'"{column}" >= {marker} AND "{column}" < {marker}'
        try:
            with self._transaction() as cursor:
                cursor.execute(f"DELETE FROM {target} WHERE {window}", [window_start, window_end])
                if files:
                    self._insert_files(cursor, table, files)
                cursor.execute(
                    f"SELECT COUNT(*) FROM {target} WHERE {window}", [window_start, window_end]
                )
                (rows,) = cursor.fetchone()
                cursor.execute(
                    f"INSERT INTO {SCHEMA}.{PUBLISH_LOG} VALUES ({', '.join([marker] * 6)})",
                    [table.name, window_start, window_end, rows, run_id, _utc_now()],
                )
        except Exception as error:
            raise RuntimeError(
                f"publishing {target} for [{window_start}, {window_end}) to {self.target} failed; "
                f"the previous rows are unchanged: {error}"
            ) from error
        return Publication(table.name, window_start, window_end, rows)


class DuckDBWarehouse(Warehouse):
    """A DuckDB file on this machine (`duckdb:///path`)."""

    placeholder: ClassVar[str] = "?"

    def _connect(self) -> Any:
        import duckdb

        path = Path(self.endpoint.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path))

    def _begin(self, connection: Any) -> Any:
        # A DuckDB cursor is a second connection, outside this one's transaction.
        connection.begin()
        return connection

    def _insert_files(self, cursor: Any, table: Table, files: list[str]) -> None:
        names = ", ".join(f'"{name}"' for name in table.column_names)
        cursor.execute(
            f'INSERT INTO {SCHEMA}."{table.name}" ({names}) SELECT {names} FROM read_parquet(?)',
            [files],
        )


class SqlWarehouse(Warehouse):
    """PostgreSQL and Redshift: rows arrive as batched multi-row INSERTs (right for KPI-sized
    tables), in SQL both accept."""

    def _insert_files(self, cursor: Any, table: Table, files: list[str]) -> None:
        import pyarrow.parquet as pq

        names = ", ".join(f'"{name}"' for name in table.column_names)
        row_marker = "(" + ", ".join([self.placeholder] * len(table.columns)) + ")"
        for path in files:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(
                batch_size=INSERT_BATCH_ROWS, columns=table.column_names
            ):
                rows = list(
                    zip(
                        *(batch.column(name).to_pylist() for name in table.column_names),
                        strict=True,
                    )
                )
                cursor.execute(
                    f'INSERT INTO {SCHEMA}."{table.name}" ({names}) VALUES '
                    + ", ".join([row_marker] * len(rows)),
                    [value for row in rows for value in row],
                )


class PostgresWarehouse(SqlWarehouse):
    """PostgreSQL (`postgresql://user@host:port/db`), through psycopg 3."""

    def _connect(self) -> Any:
        import psycopg

        target = self.endpoint
        return psycopg.connect(
            host=target.host,
            port=target.port,
            dbname=target.database,
            user=target.user,
            password=target.password or None,
        )


def redshift_connect_kwargs(
    target: WarehouseTarget, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    """What redshift_connector.connect needs for each URL form.

    Password: host, port, database, user, password. IAM: temporary credentials for the
    workgroup (Redshift Serverless) or the cluster (provisioned), in the AWS region and
    profile of the usual AWS settings.
    """
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {"host": target.host, "port": target.port, "database": target.database}
    if not target.iam:
        return kwargs | {"user": target.user, "password": target.password}
    kwargs["iam"] = True
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if env.get("AWS_PROFILE"):
        kwargs["profile"] = env["AWS_PROFILE"]
    if target.workgroup:
        kwargs |= {"is_serverless": True, "serverless_work_group": target.workgroup}
    else:
        kwargs |= {"cluster_identifier": target.cluster_identifier, "db_user": target.user}
    return kwargs


class RedshiftWarehouse(SqlWarehouse):
    """Amazon Redshift (`redshift://user@host:port/db`), through redshift_connector, with a
    password from RENTAL_WAREHOUSE_PASSWORD or IAM authentication.

    With `copy_role_arn` (RENTAL_REDSHIFT_COPY_ROLE_ARN), Parquet files on S3 are loaded by
    Redshift itself with COPY, so they never pass through the Dagster process."""

    copy_role_arn: str | None = None

    @property
    def copies_from_s3(self) -> bool:
        return bool(self.copy_role_arn)

    def _connect(self) -> Any:
        import redshift_connector

        return redshift_connector.connect(**redshift_connect_kwargs(self.endpoint))

    def _insert_files(self, cursor: Any, table: Table, files: list[str]) -> None:
        if not (self.copy_role_arn and files[0].startswith("s3://")):
            super()._insert_files(cursor, table, files)
            return
        names = ", ".join(f'"{name}"' for name in table.column_names)
        staging = f'"{table.name}_staging"'
        columns = ", ".join(column_ddl(c, table) for c in table.columns)
        cursor.execute(f"CREATE TEMP TABLE {staging} ({columns})")
        for folder in sorted({uri.rsplit("/", 1)[0] for uri in files}):
            cursor.execute(copy_from_s3_sql(staging, folder, self.copy_role_arn))
        cursor.execute(
            f'INSERT INTO {SCHEMA}."{table.name}" ({names}) SELECT {names} FROM {staging}'
        )
        cursor.execute(f"DROP TABLE {staging}")


def copy_from_s3_sql(staging_table: str, s3_prefix: str, iam_role: str) -> str:
    """The Redshift COPY that loads a KPI partition's Parquet files from the S3 lake into a
    staging table, for the delete-and-insert that follows in the same transaction.

    COPY from Parquet takes no column list: it fills the columns in file order, so the staging
    table is created from the catalogue, in the catalogue's order, like the files.
    """
    return (
        f"COPY {staging_table} FROM '{s3_prefix.rstrip('/')}/' "
        f"IAM_ROLE '{iam_role}' FORMAT AS PARQUET"
    )


WAREHOUSES: dict[str, type[Warehouse]] = {
    "duckdb": DuckDBWarehouse,
    "postgresql": PostgresWarehouse,
    "redshift": RedshiftWarehouse,
}


def warehouse_for(target: WarehouseTarget, copy_role_arn: str | None = None) -> Warehouse:
    """The resource for a target. A password is handed over as the environment variable it came
    from, so the UI and run config show the variable's name, never the password."""
    warehouse = WAREHOUSES[target.kind]
    options: dict[str, Any] = {"copy_role_arn": copy_role_arn} if target.kind == "redshift" else {}
    if not target.password:
        return warehouse(url=target.public_url, **options)
    if os.environ.get("RENTAL_WAREHOUSE_PASSWORD"):
        return warehouse(
            url=target.public_url, password=dg.EnvVar("RENTAL_WAREHOUSE_PASSWORD"), **options
        )
    return warehouse(url=dg.EnvVar("RENTAL_WAREHOUSE_URL"), **options)


def _utc_now() -> datetime:
    # TIMESTAMP columns hold naive UTC; an aware value would be shifted to the local zone.
    return datetime.now(UTC).replace(tzinfo=None)
