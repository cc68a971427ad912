"""The checks fail when they should: each one on a small frame that breaks it."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from rental_platform import tables
from rental_platform.spark import quality
from rental_platform.spark.session import get_or_create_session


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    return get_or_create_session()


def test_primary_key_check_finds_duplicates_and_nulls(spark: SparkSession) -> None:
    frame = spark.createDataFrame([(1,), (1,), (2,), (None,), (None,)], "booking_id bigint")
    result = quality.primary_key_unique(frame, tables.CURATED_BOOKINGS)
    assert not result.passed
    assert result.metadata == {"null_keys": 2, "duplicated_keys": 1, "example_keys": ["1"]}


def test_primary_key_check_on_a_composite_key(spark: SparkSession) -> None:
    table = tables.POPULAR_LOCATIONS
    rows = [("2025-01-06", "TX", "Austin"), ("2025-01-06", "MA", "Austin")]
    frame = spark.createDataFrame(rows, "week_start string, state string, cityname string")
    assert quality.primary_key_unique(frame, table).passed
    frame = frame.union(spark.createDataFrame([rows[0]], frame.schema))
    assert quality.primary_key_unique(frame, table).metadata["duplicated_keys"] == 1


def test_row_count_check_names_the_days_that_differ() -> None:
    result = quality.row_count_matches_source(
        tables.RAW_BOOKINGS,
        {"2025-01-01": 3, "2025-01-02": 4, "undated": 1},
        {"2025-01-01": 3, "2025-01-02": 2, "undated": 1},
    )
    assert not result.passed
    assert result.metadata["mismatched_periods"] == {"2025-01-02": {"source": 4, "lake": 2}}


def test_accounting_check_catches_a_lost_row(spark: SparkSession) -> None:
    quarantine = spark.createDataFrame([("user_id_null",)], "reject_reason string")
    lost = quality.rows_accounted_for(tables.CURATED_BOOKINGS, 10, 8, quarantine, 0)
    assert not lost.passed
    kept = quality.rows_accounted_for(tables.CURATED_BOOKINGS, 10, 8, quarantine, 1)
    assert kept.passed and kept.metadata["quarantined_by_reason"] == {"user_id_null": 1}
