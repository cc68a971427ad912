"""A small seeded marketplace through every layer: tables non-empty and consistent."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.seed import SCALES, seed_source
from rental_platform.spark.manifest import UNDATED, CommitLog, Partition, store_for
from rental_platform.tables import Layer
from rental_platform_tests.harness import Platform

SCALE = SCALES["tiny"]
CURATED_PAIRS = [
    (tables.RAW_APARTMENTS, tables.CURATED_LISTINGS, tables.QUARANTINE_LISTINGS),
    (tables.RAW_BOOKINGS, tables.CURATED_BOOKINGS, tables.QUARANTINE_BOOKINGS),
    (tables.RAW_USER_VIEWING, tables.CURATED_USER_VIEWING, tables.QUARANTINE_USER_VIEWING),
]


@pytest.fixture(scope="module")
def seeded(platform: Platform) -> Platform:
    platform.source_rows = seed_source(platform.admin.pymysql_kwargs(), SCALE, seed=7)
    # The tiny scale still has at least one row of every kind of dirt: a larger share.
    platform.settings = dataclasses.replace(platform.settings, max_quarantine_share=0.2)
    platform.outcomes = platform.run(SCALE.start, SCALE.start + timedelta(days=SCALE.days - 1))
    return platform


def count(platform: Platform, table: tables.Table, where: str = "TRUE") -> int:
    return platform.lake(table, f"SELECT COUNT(*) FROM t WHERE {where}")[0][0]


def test_raw_is_a_full_copy_of_the_source(seeded: Platform) -> None:
    for name, rows in seeded.source_rows.items():
        assert count(seeded, tables.TABLES[f"raw.{name}"]) == rows, name


@pytest.mark.parametrize(("raw", "curated", "quarantine"), CURATED_PAIRS)
def test_curation_keeps_every_row_once(seeded: Platform, raw, curated, quarantine) -> None:
    kept, rejected = count(seeded, curated), count(seeded, quarantine)
    assert kept > 0 and rejected > 0
    if raw is tables.RAW_USER_VIEWING:
        # Exact duplicates (after reading a null wishlist flag as false) collapse to one row.
        duplicates = seeded.lake(
            raw,
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM t "
            "WHERE user_id IS NOT NULL AND apartment_id IS NOT NULL AND viewed_at IS NOT NULL "
            "GROUP BY user_id, apartment_id, viewed_at, COALESCE(is_wishlisted, FALSE), "
            "call_to_action)",
        )[0][0]
        assert duplicates > 0
    else:
        duplicates = 0
    assert count(seeded, raw) == kept + rejected + duplicates


def test_every_kpi_table_is_published(seeded: Platform) -> None:
    for table in tables.tables_of(Layer.PRESENTATION):
        rows = seeded.warehouse(f'SELECT COUNT(*) FROM presentation."{table.name}"')[0][0]
        assert rows > 0, table.name


def test_kpis_agree_with_curated_bookings(seeded: Platform) -> None:
    confirmed = count(seeded, tables.CURATED_BOOKINGS, "booking_status = 'confirmed'")
    per_user = seeded.warehouse("SELECT SUM(booking_count) FROM presentation.bookings_per_user")
    durations = seeded.warehouse("SELECT SUM(booking_count) FROM presentation.avg_booking_duration")
    assert per_user[0][0] == durations[0][0] == confirmed
    rates = seeded.warehouse(
        "SELECT MIN(occupancy_rate), MAX(occupancy_rate) FROM presentation.occupancy_rate"
    )[0]
    assert 0 < rates[0] <= rates[1] <= 1


def _partition_metadata(platform: Platform, table: tables.Table) -> dict[str, dict]:
    """The metadata of each partition's latest materialisation, as the UI shows it."""
    key = asset_key(table)
    records = platform.instance.fetch_materializations(key, limit=10_000).records
    latest: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        materialization = record.asset_materialization
        latest[materialization.partition] = {
            name: value.value for name, value in materialization.metadata.items()
        }
    return latest


@pytest.mark.parametrize(
    ("table", "day"),
    [
        (tables.RAW_BOOKINGS, "CAST(booking_date AS DATE)"),
        (tables.CURATED_USER_VIEWING, "CAST(viewed_at AS DATE)"),
        (tables.QUARANTINE_BOOKINGS, "CAST(booking_date AS DATE)"),
    ],
)
def test_each_partition_records_its_own_rows(seeded: Platform, table, day) -> None:
    """One single-run backfill, yet each day's materialisation has that day's rows (not the
    window's), and the window's total is recorded apart."""
    lake = dict(seeded.lake(table, f"SELECT CAST({day} AS VARCHAR), COUNT(*) FROM t GROUP BY 1"))
    recorded = _partition_metadata(seeded, table)
    assert len(recorded) == SCALE.days
    assert {
        partition: meta["dagster/row_count"]
        for partition, meta in recorded.items()
        if meta["dagster/row_count"]
    } == {day: rows for day, rows in lake.items() if day is not None}
    assert {meta["window_rows"] for meta in recorded.values()} == {sum(lake.values())}


def test_quarantine_partitions_record_their_reasons(seeded: Platform) -> None:
    table = tables.QUARANTINE_BOOKINGS
    lake = seeded.lake(
        table,
        "SELECT CAST(CAST(booking_date AS DATE) AS VARCHAR), reject_reason, COUNT(*) FROM t "
        "WHERE booking_date IS NOT NULL GROUP BY ALL",
    )
    recorded = _partition_metadata(seeded, table)
    assert lake
    for day, reason, rows in lake:
        assert recorded[day][f"quarantined_{reason}"] == rows, (day, reason)


def test_kpi_partitions_record_their_values(seeded: Platform) -> None:
    recorded = _partition_metadata(seeded, tables.OCCUPANCY_RATE)
    published = seeded.warehouse(
        "SELECT CAST(month_start AS VARCHAR), booked_nights, occupancy_rate "
        "FROM presentation.occupancy_rate"
    )
    assert published
    for month, booked, rate in published:
        assert recorded[month]["booked_nights"] == booked
        assert recorded[month]["occupancy_rate"] == pytest.approx(float(rate))
    top = _partition_metadata(seeded, tables.TOP_LISTINGS)
    for week, currency, revenue in seeded.warehouse(
        "SELECT CAST(week_start AS VARCHAR), currency, MAX(revenue) "
        "FROM presentation.top_listings GROUP BY 1, 2"
    ):
        assert top[week][f"top_revenue_{currency}"] == pytest.approx(float(revenue))


def test_each_partition_has_its_check_results(seeded: Platform) -> None:
    key = dg.AssetCheckKey(asset_key(tables.CURATED_BOOKINGS), "primary_key_unique")
    records = seeded.instance.event_log_storage.get_asset_check_execution_history(key, limit=10_000)
    by_partition = {
        record.event.dagster_event.event_specific_data.partition: record.status.value
        for record in records
    }
    days = [(SCALE.start + timedelta(days=n)).isoformat() for n in range(SCALE.days)]
    assert by_partition == dict.fromkeys(days, "SUCCEEDED")
    # Each judged that partition's materialisation: what makes Dagster count it as passed
    # (the KPI automation waits for the blocking checks of a re-materialised day).
    targets = {
        record.event.dagster_event.event_specific_data.partition: (
            record.event.dagster_event.event_specific_data.target_materialization_data.storage_id
        )
        for record in records
    }
    materialized = seeded.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key.asset_key, asset_partitions=days), limit=len(days)
    ).records
    assert targets == {record.partition_key: record.storage_id for record in materialized}


def _evaluations(platform: Platform, table: tables.Table, check: str) -> dict[str, Any]:
    """Each partition's latest evaluation of a check."""
    key = dg.AssetCheckKey(asset_key(table), check)
    records = platform.instance.event_log_storage.get_asset_check_execution_history(key, 10_000)
    evaluations = [r.event.dagster_event.event_specific_data for r in reversed(records)]
    return {evaluation.partition: evaluation for evaluation in evaluations}


def test_a_check_that_judges_days_gives_each_day_its_own_result(seeded: Platform) -> None:
    """row_count_matches_source judges each day on its own: a day's evaluation holds that
    day's counts, from the source and from the lake. A check of the window (the key's
    uniqueness) says that it judged the window."""
    by_day = dict(
        seeded.lake(
            tables.RAW_BOOKINGS,
            "SELECT CAST(CAST(booking_date AS DATE) AS VARCHAR), COUNT(*) FROM t "
            "WHERE booking_date IS NOT NULL GROUP BY 1",
        )
    )
    with seeded.source.cursor() as cursor:
        cursor.execute(
            "SELECT CAST(DATE(booking_date) AS CHAR), COUNT(*) FROM bookings "
            "WHERE booking_date IS NOT NULL GROUP BY 1"
        )
        in_source = dict(cursor.fetchall())
    evaluations = _evaluations(seeded, tables.RAW_BOOKINGS, "row_count_matches_source")
    days = [(SCALE.start + timedelta(days=n)).isoformat() for n in range(SCALE.days)]
    assert sorted(evaluations) == days
    for day in days:
        counts = {k: evaluations[day].metadata[k].value for k in ("source_rows", "lake_rows")}
        assert counts == {"source_rows": in_source.get(day, 0), "lake_rows": by_day.get(day, 0)}
        assert evaluations[day].passed
    assert len(set(by_day.values())) > 1  # so that the days' counts tell them apart
    window = _evaluations(seeded, tables.CURATED_BOOKINGS, "primary_key_unique")[days[0]]
    assert window.metadata["judged"].value == "the run's window"


def test_kpi_previews_show_the_latest_period_best_first(seeded: Platform) -> None:
    table = tables.TOP_LISTINGS
    latest = seeded.instance.get_latest_materialization_event(asset_key(table))
    metadata = latest.asset_materialization.metadata
    week = seeded.warehouse(
        "SELECT CAST(MAX(week_start) AS VARCHAR) FROM presentation.top_listings"
    )
    assert metadata["preview_period"].value == week[0][0]
    shown = [
        (r.data["currency"], r.data["apartment_id"], r.data["revenue"], r.data["rank"])
        for r in metadata["preview"].value.records
    ]
    published = seeded.warehouse(
        "SELECT currency, apartment_id, revenue, rank FROM presentation.top_listings "
        f"WHERE week_start = DATE '{week[0][0]}' ORDER BY rank, currency, apartment_id LIMIT 20"
    )
    assert shown == [(c, a, float(r), k) for c, a, r, k in published]


def test_the_rows_with_no_day_are_quarantined_once(seeded: Platform) -> None:
    """They belong to no window: a later run of one day, whose extraction found them as they
    were, leaves their quarantine as it is (and its checks count that day's rows only)."""

    def undated_quarantine() -> Partition:
        head = CommitLog(store_for(seeded.settings.lake_root)).head()
        return head.table(tables.QUARANTINE_BOOKINGS.id).partitions[UNDATED]

    before = undated_quarantine()
    assert before.rows > 0
    day = SCALE.start + timedelta(days=3)
    seeded.run(day, day)
    assert undated_quarantine() == before
    key = dg.AssetCheckKey(asset_key(tables.CURATED_BOOKINGS), "rows_accounted_for")
    evaluation = seeded.instance.get_latest_asset_check_evaluation_record(key).event
    metadata = evaluation.dagster_event.event_specific_data.metadata
    raw_rows = count(seeded, tables.RAW_BOOKINGS, f"CAST(booking_date AS DATE) = DATE '{day}'")
    assert metadata["raw_rows"].value == raw_rows
    assert "undated_raw_rows" not in metadata
