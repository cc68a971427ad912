"""The checks fail when they should: each one on a small frame that breaks it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from rental_platform import contract, tables
from rental_platform.local.session import local_session
from rental_platform.spark import quality


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    return local_session()


def test_primary_key_check_finds_duplicates_and_nulls(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [(key, 2) for key in (1, 1, 2, None, None)], "booking_id bigint, nights int"
    ).withColumn("total_price", F.lit(10).cast("decimal(10,2)"))
    rows, (result, values) = quality.row_checks(frame, tables.CURATED_BOOKINGS)
    assert rows == 5 and values.passed
    assert (result.name, result.passed) == (contract.PRIMARY_KEY.name, False)
    assert result.metadata == {"null_keys": 2, "duplicated_keys": 1, "example_keys": ["1"]}


def test_a_shared_key_hash_without_equal_keys_is_no_duplicate(spark: SparkSession) -> None:
    # Two different keys whose 64-bit hashes collide cannot be built on purpose: the check is
    # told its hashes collided, and must find no equal keys behind them.
    frame = spark.createDataFrame([(1,), (2,)], "booking_id bigint")
    result = quality._key_result(tables.CURATED_BOOKINGS, frame, nulls=0, hash_shared=True)
    assert result.passed
    assert result.metadata == {"null_keys": 0, "duplicated_keys": 0, "example_keys": []}


def test_primary_key_check_on_a_composite_key(spark: SparkSession) -> None:
    table = tables.POPULAR_LOCATIONS
    rows = [("2025-01-06", "TX", "Austin", 3, 1), ("2025-01-06", "MA", "Austin", 2, 2)]
    frame = spark.createDataFrame(
        rows, "week_start string, state string, cityname string, booking_count long, rank int"
    )
    assert quality.row_checks(frame, table)[1][0].passed
    frame = frame.union(spark.createDataFrame([rows[0]], frame.schema))
    assert quality.row_checks(frame, table)[1][0].metadata["duplicated_keys"] == 1


def test_row_count_check_names_the_days_that_differ() -> None:
    result = quality.row_count_matches_source(
        tables.RAW_BOOKINGS,
        {"2025-01-01": 3, "2025-01-02": 4, "undated": 1},
        {"2025-01-01": 3, "2025-01-02": 2, "undated": 1},
    )
    assert not result.passed
    assert result.metadata["mismatched_periods"] == {"2025-01-02": {"source": 4, "lake": 2}}
    # Each day on its own; the rows with no day are no partition's.
    assert sorted(result.partitions) == ["2025-01-01", "2025-01-02"]
    assert result.of_partition("2025-01-01").passed
    second = result.of_partition("2025-01-02")
    assert not second.passed
    assert second.description == "2 rows extracted, 4 in the source"


def test_rows_with_no_day_that_differ_fail_every_day() -> None:
    result = quality.row_count_matches_source(
        tables.RAW_BOOKINGS, {"2025-01-01": 3, "undated": 2}, {"2025-01-01": 3, "undated": 1}
    )
    day = result.of_partition("2025-01-01")
    assert not result.passed and not day.passed
    assert day.metadata["undated_rows"] == {"source": 2, "lake": 1}


def test_orphan_bookings_fail_their_own_day(spark: SparkSession) -> None:
    bookings = spark.createDataFrame(
        [(1, 10, "2025-01-01 09:00:00"), (2, 99, "2025-01-02 09:00:00")],
        "booking_id long, apartment_id long, booking_date string",
    ).withColumn("booking_date", F.to_timestamp("booking_date"))
    history = spark.createDataFrame(
        [(10, date(2024, 1, 1), None)], "id long, valid_from date, valid_to date"
    )
    days = [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)]
    result = quality.listings_exist(bookings, history, days)
    assert not result.passed and result.metadata["example_booking_ids"] == ["2"]
    assert [result.of_partition(d.isoformat()).passed for d in days] == [True, False, True]
    assert result.of_partition("2025-01-02").metadata["orphan_bookings"] == 1
    # A check that judged the window only: every partition gets the window's result.
    assert (
        quality.listings_exist(bookings, history, []).of_partition("2025-01-01").metadata["judged"]
        == "the run's window"
    )


def test_accounting_check_catches_a_lost_row() -> None:
    window = quality.Curation(
        raw=10, curated=8, quarantined_by_reason={"user_id_null": 1}, collapsed=0
    )
    lost = quality.rows_accounted_for(tables.CURATED_BOOKINGS, window)
    assert not lost.passed
    assert lost.description == "raw 10 != curated 8 + quarantined 1 + collapsed 0"
    kept = quality.rows_accounted_for(tables.CURATED_BOOKINGS, replace(window, collapsed=1))
    assert kept.passed and kept.metadata["quarantined_by_reason"] == {"user_id_null": 1}
    undated_lost = quality.Curation(raw=3, curated=0, quarantined_by_reason={"x": 2}, collapsed=0)
    assert not quality.rows_accounted_for(
        tables.CURATED_BOOKINGS, replace(window, collapsed=1), undated_lost
    ).passed


def test_quarantine_is_counted_by_day_and_reason(spark: SparkSession) -> None:
    quarantine = spark.createDataFrame(
        [
            ("2025-01-01 10:00:00", "user_id_null"),
            ("2025-01-01 11:00:00", "user_id_null"),
            ("2025-01-01 12:00:00", "price_not_positive"),
            ("2025-01-02 09:00:00", "user_id_null"),
            (None, "booking_date_null"),
        ],
        "booking_date string, reject_reason string",
    ).withColumn("booking_date", F.to_timestamp("booking_date"))
    assert quality.quarantined_by_partition(quarantine, tables.QUARANTINE_BOOKINGS) == {
        "2025-01-01": {"user_id_null": 2, "price_not_positive": 1},
        "2025-01-02": {"user_id_null": 1},
        "undated": {"booking_date_null": 1},
    }


def test_schema_check_names_the_differing_columns(spark: SparkSession) -> None:
    table = tables.BOOKINGS_PER_USER
    good = spark.createDataFrame([], "week_start date, user_id bigint, booking_count bigint")
    assert quality.schema_matches(table, good.schema).passed
    bad = spark.createDataFrame([], "week_start date, user_id string, extra int")
    result = quality.schema_matches(table, bad.schema)
    assert not result.passed
    assert result.metadata["differences"] == [
        "user_id: catalogue bigint, stored string",
        "booking_count: catalogue bigint, stored absent",
        "extra: not in the catalogue",
    ]


def test_value_ranges_come_from_the_catalogue(spark: SparkSession) -> None:
    table = tables.OCCUPANCY_RATE
    frame = spark.createDataFrame(
        [("2025-01-01", 10, 4, 0.4), ("2025-02-01", 10, 12, 1.2), ("2025-03-01", 0, 0, None)],
        "month_start string, available_nights bigint, booked_nights bigint, occupancy_rate double",
    )
    key, result = quality.row_checks(frame, table)[1]
    assert key.passed
    assert (result.name, result.passed) == (contract.VALUES.name, False)
    assert result.metadata["violations"] == {"occupancy_rate": 1}
    assert quality.row_checks(frame.where("booked_nights < 12"), table)[1][1].passed


def test_freshness_warns_on_an_old_newest_partition() -> None:
    now = datetime(2025, 3, 10, 6, tzinfo=UTC)
    fresh = quality.freshness(tables.RAW_BOOKINGS, date(2025, 3, 9), now, 48)
    assert fresh.passed and fresh.metadata["age_hours"] == 6.0
    assert fresh.description == "newest partition 2025-03-09 ended 6 h ago (limit 48 h)"
    stale = quality.freshness(tables.RAW_BOOKINGS, date(2025, 3, 6), now, 48)
    assert not stale.passed and stale.metadata["age_hours"] == 78.0
    assert stale.description == "newest partition 2025-03-06 ended 3.2 days ago (limit 48 h)"
    # A demo's data, read long after: in days, not 14620.9 h.
    old = quality.freshness(
        tables.RAW_BOOKINGS, date(2025, 3, 31), datetime(2026, 12, 1, tzinfo=UTC), 48
    )
    assert old.description == "newest partition 2025-03-31 ended 609 days ago (limit 48 h)"
    assert not quality.freshness(tables.RAW_BOOKINGS, None, now, 48).passed


def test_every_declared_check_is_blocking_but_freshness() -> None:
    declared = {spec for table in tables.ALL_TABLES for spec in contract.checks_for(table)}
    assert {spec.name for spec in declared if not spec.blocking} == {"freshness"}
    assert contract.checks_for(tables.QUARANTINE_BOOKINGS) == []
    assert contract.LISTINGS_EXIST in contract.checks_for(tables.CURATED_BOOKINGS)


def test_both_window_checks_count_the_same_rows() -> None:
    """The rows with no day are a backlog of their own: a one-day run is judged on its day,
    and both checks of its window report the same rows."""
    window = quality.Curation(
        raw=100, curated=96, quarantined_by_reason={"user_id_null": 2}, collapsed=2
    )
    undated = quality.Curation(
        raw=10, curated=0, quarantined_by_reason={"booking_date_null": 10}, collapsed=0
    )
    accounting = quality.rows_accounted_for(tables.CURATED_BOOKINGS, window, undated)
    share = quality.quarantine_share(tables.CURATED_BOOKINGS, window, 0.05)
    assert accounting.passed and share.passed
    assert share.metadata["quarantine_share"] == 0.02
    for name in ("raw_rows", "quarantined_rows", "quarantined_by_reason"):
        assert accounting.metadata[name] == share.metadata[name], name
    assert accounting.metadata["undated_quarantined_rows"] == 10
