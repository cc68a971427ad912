"""Operating the platform: KPI dependencies on upstream days, the nightly schedules, transient
failures, and a blocking check that stops bad data on real rows."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.layer import is_transient
from rental_platform.definitions import build_definitions
from rental_platform.runs import RangeRunError
from rental_platform.settings import Settings
from rental_platform_tests.harness import Platform

DEFS = build_definitions(Settings.from_env({"RENTAL_PARTITIONS_START": "2024-01-01"}))
GRAPH = DEFS.resolve_asset_graph()


def test_the_definitions_load_as_a_code_location_would() -> None:
    dg.Definitions.validate_loadable(DEFS)


def upstream_days(kpi: tables.Table, partition: str, upstream: tables.Table) -> list[str]:
    child, parent = GRAPH.get(asset_key(kpi)), GRAPH.get(asset_key(upstream))
    mapping = GRAPH.get_partition_mapping(child.key, parent.key)
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        child.partitions_def.subset_with_partition_keys([partition]),
        child.partitions_def,
        parent.partitions_def,
    )
    return sorted(result.partitions_subset.get_partition_keys())


def days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def test_a_weekly_kpi_reads_its_seven_days() -> None:
    for kpi in (tables.BOOKINGS_PER_USER, tables.TOP_LISTINGS, tables.ENGAGEMENT_FUNNEL):
        assert upstream_days(kpi, "2025-02-03", tables.CURATED_BOOKINGS) == days(
            "2025-02-03", "2025-02-09"
        )


def test_repeat_customer_rate_covers_the_30_days_ending_on_sunday() -> None:
    read = upstream_days(tables.REPEAT_CUSTOMER_RATE, "2025-02-03", tables.CURATED_BOOKINGS)
    window = days("2025-01-11", "2025-02-09")  # Sunday - 29 .. Sunday
    assert set(window) <= set(read)
    assert read[-1] == "2025-02-09"


def test_occupancy_reads_every_booking_day_up_to_the_month_end() -> None:
    read = upstream_days(tables.OCCUPANCY_RATE, "2025-02-01", tables.CURATED_BOOKINGS)
    assert read == days("2024-01-01", "2025-02-28")


def test_a_day_rematerialised_marks_the_weeks_that_read_it_stale() -> None:
    child, parent = (
        GRAPH.get(asset_key(tables.REPEAT_CUSTOMER_RATE)),
        GRAPH.get(asset_key(tables.CURATED_BOOKINGS)),
    )
    mapping = GRAPH.get_partition_mapping(child.key, parent.key)
    weeks = mapping.get_downstream_partitions_for_partitions(
        parent.partitions_def.subset_with_partition_keys(["2025-01-15"]),
        parent.partitions_def,
        child.partitions_def,
    ).get_partition_keys()
    # Every week whose window holds Jan 15 (Sundays Jan 19 .. Feb 13), at most one more.
    assert {"2025-01-13", "2025-01-20", "2025-01-27", "2025-02-03", "2025-02-10"} <= set(weeks)


def test_every_spark_multi_asset_backfills_in_one_run() -> None:
    for assets_def in DEFS.assets:
        if assets_def.partitions_def is not None:
            assert assets_def.backfill_policy == dg.BackfillPolicy.single_run()


def test_the_nightly_schedule_runs_the_cycle_for_yesterday() -> None:
    schedule = DEFS.resolve_schedule_def("nightly")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2025, 3, 10, 2, tzinfo=UTC)
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags == {
        "dagster/schedule_name": "nightly",
        "rental/mode": "nightly",
        "rental/as_of": "2025-03-09",
        # RENTAL_MUTABLE_DAYS (120) back, but not before the first day
        "rental/compare_from": "2024-11-09",
        "rental/extract_from": "2025-03-09",
    }
    assert schedule.job_name == "snapshots"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_the_weekly_audit_compares_every_day() -> None:
    schedule = DEFS.resolve_schedule_def("weekly_audit")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2025, 3, 9, 4, tzinfo=UTC)
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["rental/mode"] == "audit"
    assert request.tags["rental/compare_from"] == "2024-01-01"
    assert request.tags["rental/as_of"] == "2025-03-08"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_kpis_are_automated_and_the_sensor_is_on() -> None:
    sensor = DEFS.resolve_sensor_def("kpi_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    for table in tables.tables_of(tables.Layer.PRESENTATION):
        assert GRAPH.get(asset_key(table)).automation_condition is not None


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("java.sql.SQLNonTransientConnectionException: Could not connect to address", True),
        ("Communications link failure", True),
        ("org.apache.spark.SparkException: ExecutorLostFailure (executor 1 exited)", True),
        ("AnalysisException: Column 'x' does not exist", False),
        # A wrong password or database stays wrong: retrying only delays the failure.
        ("Could not connect to address=(host=db): Access denied for user 'reader'", False),
        ("Could not connect to address=(host=db): Unknown database 'rentl'", False),
    ],
)
def test_transient_failures_are_told_apart(message: str, transient: bool) -> None:
    assert is_transient(RuntimeError(message)) is transient


@pytest.fixture(scope="module")
def too_dirty(platform: Platform) -> Platform:
    """One valid listing, two valid bookings and two that break rules: 50% quarantined."""
    platform.execute(
        "INSERT INTO apartments VALUES (1, 'a', 'web', 100, 'USD', '2025-01-01', 1, NULL)"
    )
    platform.execute(
        "INSERT INTO bookings VALUES (%s, %s, 1, '2025-01-06 10:00:00', '2025-01-10', "
        "'2025-01-12', 100, 'USD', %s)",
        [(1, 1, "confirmed"), (2, 2, "confirmed"), (3, None, "confirmed"), (4, 3, "refunded")],
    )
    with pytest.raises(RangeRunError) as error:
        platform.run(date(2025, 1, 1), date(2025, 1, 12))
    platform.error = str(error.value)
    return platform


def test_a_failing_blocking_check_stops_the_run(too_dirty: Platform) -> None:
    assert "curated/bookings:quarantine_share_within_limit" in too_dirty.error
    record = too_dirty.instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(asset_key(tables.CURATED_BOOKINGS), "quarantine_share_within_limit")
    )
    evaluation = record.event.dagster_event.event_specific_data
    assert not evaluation.passed
    assert evaluation.metadata["quarantined_by_reason"].value == {
        "invalid_status": 1,
        "user_id_null": 1,
    }


def test_nothing_downstream_of_a_failed_check_is_materialised(too_dirty: Platform) -> None:
    """Nor is the table itself: its new version was written, but not committed."""
    for table in (
        tables.CURATED_BOOKINGS,
        tables.QUARANTINE_BOOKINGS,
        *tables.tables_of(tables.Layer.PRESENTATION),
    ):
        assert too_dirty.instance.get_latest_materialization_event(asset_key(table)) is None
    assert too_dirty.lake(tables.CURATED_BOOKINGS) == []
    assert "were not committed" in too_dirty.error
    assert too_dirty.warehouse(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'presentation'"
    ) == [(0,)]


def test_the_same_rows_pass_under_a_looser_limit(too_dirty: Platform) -> None:
    too_dirty.settings = dataclasses.replace(too_dirty.settings, max_quarantine_share=0.5)
    too_dirty.run(date(2025, 1, 1), date(2025, 1, 12))
    assert too_dirty.warehouse("SELECT SUM(booking_count) FROM presentation.bookings_per_user") == [
        (2,)
    ]
