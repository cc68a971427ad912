"""The lake reads back the schema its files were written with, whoever wrote them."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from pyspark.sql import SparkSession

from rental_platform.spark.lake import Lake
from rental_platform.spark.session import get_or_create_session


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    return get_or_create_session()


def _types(schema) -> list[tuple[str, str]]:
    return [(field.name, field.dataType.simpleString()) for field in schema.fields]


def test_the_schema_comes_from_the_first_folder_with_a_file(spark, tmp_path: Path) -> None:
    empty, written = tmp_path / "dt=2025-01-01", tmp_path / "dt=2025-01-02"
    empty.mkdir()
    frame = spark.sql(
        "SELECT 1L AS booking_id, CAST(10.5 AS decimal(10,2)) AS total_price, "
        "TIMESTAMP '2025-01-01 10:00:00' AS created_at, DATE '2025-01-01' AS booking_date"
    )
    frame.coalesce(1).write.parquet(str(written))
    stored = Lake(spark, str(tmp_path)).stored_schema([str(empty), str(written)])
    assert _types(stored) == _types(frame.schema)


def test_folders_without_files_have_no_schema(spark, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    lake = Lake(spark, str(tmp_path))
    assert lake.stored_schema([str(tmp_path / "empty"), str(tmp_path / "missing")]) is None


def test_a_file_not_written_by_spark_is_read_by_its_parquet_schema(spark, tmp_path) -> None:
    folder = tmp_path / "by_duckdb"
    folder.mkdir()
    with duckdb.connect() as connection:
        connection.execute(
            "COPY (SELECT 1::BIGINT AS booking_id, 'x' AS note, DATE '2025-01-01' AS booking_date)"
            f" TO '{folder / 'part.parquet'}' (FORMAT parquet)"
        )
    stored = Lake(spark, str(tmp_path)).stored_schema([str(folder)])
    assert _types(stored) == [
        ("booking_id", "bigint"),
        ("note", "string"),
        ("booking_date", "date"),
    ]


def test_a_dated_write_gathers_its_rows_into_no_more_tasks_than_periods(spark, tmp_path) -> None:
    """A day's increment writes as one task; a year as many as the session's shuffle has."""
    lake = Lake(spark, str(tmp_path))
    shuffle_partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    assert shuffle_partitions > 1
    assert lake.write_partitions(1) == 1
    assert lake.write_partitions(2) == 2
    assert lake.write_partitions(365) == shuffle_partitions
