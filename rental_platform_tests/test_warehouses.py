"""Publishing to the warehouses: DuckDB and PostgreSQL for real, Redshift by its parameters.

No Redshift runs here: its SQL is the PostgreSQL path (the same statements, tested on a real
PostgreSQL below); its connection parameters and its COPY statement are checked as built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rental_platform import tables
from rental_platform.resources.warehouse import (
    RedshiftWarehouse,
    Warehouse,
    WarehouseSchemaError,
    copy_from_s3_sql,
    redshift_connect_kwargs,
    warehouse_for,
)
from rental_platform.runs import materialize_range
from rental_platform.settings import parse_warehouse_url
from rental_platform.tables import Column, Layer
from rental_platform_tests.harness import Platform

TABLE = tables.AVG_LISTING_PRICE
WEEK_1, WEEK_2, WEEK_3 = date(2025, 1, 6), date(2025, 1, 13), date(2025, 1, 20)
ARROW_TYPES = {"date": pa.date32(), "string": pa.string(), "bigint": pa.int64()}


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request, tmp_path: Path, postgres_url: str) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield warehouse_for(parse_warehouse_url(f"duckdb:///{tmp_path / 'w.duckdb'}"))
        return
    target = warehouse_for(parse_warehouse_url(postgres_url))
    yield target
    target.query("DROP SCHEMA IF EXISTS presentation CASCADE")


def parquet(path: Path, rows: list[tuple], table: tables.Table = TABLE) -> list[str]:
    """A Parquet file with the catalogue's columns, as the Spark step writes them."""
    fields = [
        pa.field(
            c.name, pa.decimal128(12, 2) if c.type.startswith("decimal") else ARROW_TYPES[c.type]
        )
        for c in table.columns
    ]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in fields]
    pq.write_table(pa.table(columns, schema=pa.schema(fields)), path)
    return [str(path)]


def rows(warehouse: Warehouse) -> list[tuple]:
    return warehouse.query('SELECT * FROM presentation."avg_listing_price" ORDER BY 1, 2')


def week(start: date, currency: str, price: str, count: int) -> tuple:
    return (start, currency, Decimal(price), count)


def test_republishing_is_idempotent_and_windows_are_independent(warehouse, tmp_path) -> None:
    first = [week(WEEK_1, "USD", "100.00", 2), week(WEEK_1, "EUR", "90.50", 1)]
    second = [week(WEEK_2, "USD", "120.00", 3)]
    warehouse.publish(TABLE, WEEK_1, WEEK_2, parquet(tmp_path / "1.parquet", first), "run-1")
    warehouse.publish(TABLE, WEEK_1, WEEK_2, parquet(tmp_path / "1.parquet", first), "run-2")
    assert rows(warehouse) == sorted(first)
    published = warehouse.publish(
        TABLE, WEEK_2, WEEK_3, parquet(tmp_path / "2.parquet", second), "run-3"
    )
    assert published.row_count == 1
    assert rows(warehouse) == sorted(first + second)
    # An empty window removes that window's rows and only those.
    warehouse.publish(TABLE, WEEK_1, WEEK_2, [], "run-4")
    assert rows(warehouse) == second
    log = warehouse.query(
        "SELECT table_name, window_start, window_end, row_count, run_id "
        "FROM presentation._publish_log ORDER BY published_at"
    )
    assert log == [
        ("avg_listing_price", WEEK_1, WEEK_2, 2, "run-1"),
        ("avg_listing_price", WEEK_1, WEEK_2, 2, "run-2"),
        ("avg_listing_price", WEEK_2, WEEK_3, 1, "run-3"),
        ("avg_listing_price", WEEK_1, WEEK_2, 0, "run-4"),
    ]


def test_a_rejected_row_rolls_the_publish_back(warehouse, tmp_path) -> None:
    old = [week(WEEK_1, "USD", "100.00", 2)]
    warehouse.publish(TABLE, WEEK_1, WEEK_2, parquet(tmp_path / "old.parquet", old), "run-1")
    # The delete runs, then the insert meets a null key the warehouse refuses.
    bad = [week(WEEK_1, "GBP", "80.00", 1), (WEEK_1, None, Decimal("1.00"), 1)]
    with pytest.raises(RuntimeError) as error:
        warehouse.publish(TABLE, WEEK_1, WEEK_2, parquet(tmp_path / "bad.parquet", bad), "run-2")
    assert 'presentation."avg_listing_price"' in str(error.value)
    assert "[2025-01-06, 2025-01-13)" in str(error.value)
    assert rows(warehouse) == old
    assert len(warehouse.query("SELECT * FROM presentation._publish_log")) == 1


def test_a_new_catalogue_column_is_added(warehouse, tmp_path) -> None:
    older = dataclasses.replace(TABLE, columns=TABLE.columns[:-1])  # without listing_count
    assert warehouse.ensure_table(older) == []
    warehouse.query(
        "INSERT INTO presentation.\"avg_listing_price\" VALUES ('2025-01-06', 'USD', 1.00)"
    )
    assert warehouse.ensure_table(TABLE) == ["listing_count"]
    assert rows(warehouse) == [(WEEK_1, "USD", Decimal("1.00"), None)]
    assert warehouse.ensure_table(TABLE) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda cs: (*cs[:-1], Column("listing_count", "double", "changed type")),
            "column listing_count is bigint in the warehouse, double in the catalogue",
        ),
        (lambda cs: (cs[0], *cs[2:]), "key column currency is no longer in the catalogue"),
    ],
)
def test_an_unsafe_change_is_refused_and_changes_nothing(warehouse, change, message) -> None:
    warehouse.ensure_table(TABLE)
    before = warehouse.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'presentation' AND table_name = 'avg_listing_price' ORDER BY 1"
    )
    changed = dataclasses.replace(TABLE, columns=change(TABLE.columns), key=("week_start",))
    with pytest.raises(WarehouseSchemaError) as error:
        warehouse.ensure_table(changed)
    assert str(error.value).startswith("presentation.avg_listing_price: ")
    assert message in str(error.value)
    after = warehouse.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'presentation' AND table_name = 'avg_listing_price' ORDER BY 1"
    )
    assert after == before


def test_the_worked_example_lands_identically_in_duckdb_and_postgresql(
    platform: Platform, postgres_url: str
) -> None:
    platform.load_worked_example()
    on_postgres = dataclasses.replace(
        platform.settings, warehouse=parse_warehouse_url(postgres_url)
    )
    platform.run(date(2025, 1, 1), date(2025, 2, 28))
    # The same range again, its KPIs published now to PostgreSQL.
    materialize_range(on_postgres, platform.instance, date(2025, 1, 1), date(2025, 2, 28))
    duck, postgres = (
        warehouse_for(platform.settings.warehouse),
        warehouse_for(on_postgres.warehouse),
    )
    try:
        for table in tables.tables_of(Layer.PRESENTATION):
            query = f'SELECT * FROM presentation."{table.name}" ORDER BY {", ".join(table.key)}'
            assert duck.query(query) == postgres.query(query), table.name
        assert postgres.query(
            "SELECT occupancy_rate FROM presentation.occupancy_rate ORDER BY month_start"
        ) == [
            (4 / 61,),
            (1 / 56,),
        ]
    finally:
        postgres.query("DROP SCHEMA presentation CASCADE")


def test_redshift_connection_parameters() -> None:
    password = parse_warehouse_url("redshift://etl@rs.example:5439/dev", "s3cret")
    assert redshift_connect_kwargs(password, {}) == {
        "host": "rs.example",
        "port": 5439,
        "database": "dev",
        "user": "etl",
        "password": "s3cret",
    }
    serverless = parse_warehouse_url("redshift://rs.example/dev?iam=true&workgroup=analytics")
    assert redshift_connect_kwargs(
        serverless, {"AWS_REGION": "eu-west-1", "AWS_PROFILE": "prod"}
    ) == {
        "host": "rs.example",
        "port": 5439,
        "database": "dev",
        "iam": True,
        "region": "eu-west-1",
        "profile": "prod",
        "is_serverless": True,
        "serverless_work_group": "analytics",
    }
    provisioned = parse_warehouse_url(
        "redshift://etl@rs.example/dev?iam=true&cluster_identifier=c1"
    )
    assert redshift_connect_kwargs(provisioned, {"AWS_DEFAULT_REGION": "us-east-1"}) == {
        "host": "rs.example",
        "port": 5439,
        "database": "dev",
        "iam": True,
        "region": "us-east-1",
        "cluster_identifier": "c1",
        "db_user": "etl",
    }


def test_redshift_copy_statement() -> None:
    assert copy_from_s3_sql(
        '"presentation_staging_top_listings"',
        "s3://lake/presentation/top_listings/week=2025-01-06/",
        "arn:aws:iam::123456789012:role/rental-redshift-copy",
    ) == (
        'COPY "presentation_staging_top_listings" '
        "FROM 's3://lake/presentation/top_listings/week=2025-01-06/' "
        "IAM_ROLE 'arn:aws:iam::123456789012:role/rental-redshift-copy' FORMAT AS PARQUET"
    )


class RecordingCursor:
    """Stands in for a Redshift connection and cursor (none runs here): it records each
    statement and answers the two queries publishing reads."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.description = None

    def cursor(self) -> RecordingCursor:
        return self

    def execute(self, sql: str, parameters: list | None = None) -> None:
        self.statements.append(sql)

    def fetchall(self) -> list:
        return []  # no columns yet: the table is created

    def fetchone(self) -> tuple:
        return (7,)

    def commit(self) -> None:
        self.statements.append("COMMIT")

    def rollback(self) -> None:
        self.statements.append("ROLLBACK")

    def close(self) -> None:
        pass


def test_redshift_loads_an_s3_lake_with_copy_in_the_publish_transaction() -> None:
    recording = RecordingCursor()

    class RecordedRedshift(RedshiftWarehouse):
        def _connect(self) -> RecordingCursor:
            return recording

    role = "arn:aws:iam::123456789012:role/rental-redshift-copy"
    warehouse = RecordedRedshift(url="redshift://etl@rs.example:5439/dev", password="pw")
    warehouse = warehouse.model_copy(update={"copy_role_arn": role})
    lake = "s3://lake/presentation/avg_listing_price"
    files = [f"{lake}/week=2025-01-06/part-0.parquet", f"{lake}/week=2025-01-13/part-0.parquet"]
    publication = warehouse.publish(TABLE, WEEK_1, WEEK_3, files, "run-1")

    assert publication.row_count == 7
    published = recording.statements[recording.statements.index("COMMIT") + 1 :]
    assert published[0].startswith('DELETE FROM presentation."avg_listing_price" WHERE')
    assert published[1].startswith('CREATE TEMP TABLE "avg_listing_price_staging" ("week_start"')
    assert published[2:4] == [
        copy_from_s3_sql('"avg_listing_price_staging"', f"{lake}/week=2025-01-06", role),
        copy_from_s3_sql('"avg_listing_price_staging"', f"{lake}/week=2025-01-13", role),
    ]
    assert published[4].startswith('INSERT INTO presentation."avg_listing_price" ("week_start"')
    assert published[4].endswith('FROM "avg_listing_price_staging"')
    assert published[5] == 'DROP TABLE "avg_listing_price_staging"'
    assert published[-1] == "COMMIT" and "ROLLBACK" not in published
