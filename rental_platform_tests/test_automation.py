"""The automation over every partition, evaluated as the sensor evaluates it (Dagster's own
`evaluate_automation_conditions`, on a real instance): a day two months old re-materialised
makes exactly its week, the weeks whose 30-day repeat window holds it, and the months whose
occupancy reads it stale; the CLI's nightly finds the same partitions from the same mappings.
And the sensor that carries out a snapshots run's plan launches the daily runs it asks for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from rental_platform import tables
from rental_platform.assets.checks import asset_key, check_specs
from rental_platform.automation import changed_days
from rental_platform.contract import checks_for
from rental_platform.cycle import (
    SOURCE_CHANGES,
    kpi_runs,
    periods_of_run,
    planned_days,
    stale_kpi_partitions,
)
from rental_platform.definitions import build_definitions
from rental_platform.partitions import PlatformPartitions
from rental_platform.settings import Settings
from rental_platform.spark import code_version
from rental_platform.tables import Grain, Layer, Table

FIRST = date(2025, 1, 1)
NOW = datetime(2025, 4, 1, 6, tzinfo=UTC)  # the daily partitions run to March 31
SETTINGS = Settings.from_env({"RENTAL_PARTITIONS_START": FIRST.isoformat()})
DEFS = build_definitions(SETTINGS)
KPIS = dg.AssetSelection.groups(str(Layer.PRESENTATION))
UPSTREAM = (tables.CURATED_BOOKINGS, tables.CURATED_USER_VIEWING)


def _days(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _materialise_upstream(instance: dg.DagsterInstance, days: list[str]) -> None:
    """What the daily runs report: each day of curated bookings and views, and the listing
    history."""
    for table in UPSTREAM:
        _materialise(instance, table, days)
    _materialise(instance, tables.CURATED_LISTINGS_HISTORY, [None])


def _materialise(instance: dg.DagsterInstance, table: Table, partitions: list) -> None:
    """What a run reports for a table: its partitions, then each partition's checks (passed)."""
    for partition in partitions:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key(table), partition=partition)
        )
    for spec in checks_for(table):
        for partition in partitions:
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=asset_key(table),
                    check_name=spec.name,
                    passed=True,
                    partition=partition,
                )
            )


def _rematerialise(instance: dg.DagsterInstance, table: Table, day: str) -> None:
    """What a daily run records for one day: its materialisation, then its checks, passed,
    against that day. A run of a stand-in asset, not runless events: Dagster keeps one runless
    result per check and partition."""
    daily = dg.DailyPartitionsDefinition(start_date=FIRST.isoformat())

    @dg.asset(key=asset_key(table), partitions_def=daily, check_specs=check_specs((table,), daily))
    def stand_in() -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield dg.MaterializeResult()
        for spec in checks_for(table):
            yield dg.AssetCheckResult(check_name=spec.name, passed=True)

    assert dg.materialize([stand_in], instance=instance, partition_key=day).success


def _materialise_requested(instance: dg.DagsterInstance, result) -> None:
    for table in tables.tables_of(Layer.PRESENTATION):
        for key in result.get_requested_partitions(asset_key(table)):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key(table), partition=key)
            )


def _requested(result) -> dict[str, set[str]]:
    return {
        table.name: set(result.get_requested_partitions(asset_key(table)))
        for table in tables.tables_of(Layer.PRESENTATION)
    }


def test_a_day_two_months_old_makes_its_periods_stale() -> None:
    with dg.instance_for_test() as instance:
        tick = dg.evaluate_automation_conditions(
            DEFS, instance, asset_selection=KPIS, evaluation_time=NOW
        )
        _materialise_upstream(instance, _days(FIRST, date(2025, 3, 31)))
        # Until every KPI partition has been computed once.
        for _ in range(3):
            tick = dg.evaluate_automation_conditions(
                DEFS, instance, asset_selection=KPIS, evaluation_time=NOW, cursor=tick.cursor
            )
            _materialise_requested(instance, tick)
        tick = dg.evaluate_automation_conditions(
            DEFS, instance, asset_selection=KPIS, evaluation_time=NOW, cursor=tick.cursor
        )
        assert tick.total_requested == 0

        # Feb 1, a Saturday two months back, re-curated (a status changed in the source), and
        # its checks passed.
        _rematerialise(instance, tables.CURATED_BOOKINGS, "2025-02-01")
        tick = dg.evaluate_automation_conditions(
            DEFS, instance, asset_selection=KPIS, evaluation_time=NOW, cursor=tick.cursor
        )
        requested = _requested(tick)
        week = {"2025-01-27"}
        # Its own week, for every weekly KPI (they are computed together)...
        for name in ("avg_listing_price", "top_listings", "bookings_per_user"):
            assert requested[name] == week, name
        # ...the five weeks whose window (Sunday - 29 .. Sunday) holds it...
        assert requested["repeat_customer_rate"] == {
            "2025-01-27",
            "2025-02-03",
            "2025-02-10",
            "2025-02-17",
            "2025-02-24",
        }
        # ...and every month from its own: bookings are made ahead. April exists already
        # (the month under way), and is computed empty until its days are extracted.
        assert requested["occupancy_rate"] == {"2025-02-01", "2025-03-01", "2025-04-01"}

    partitions = PlatformPartitions.starting(FIRST)
    stale = stale_kpi_partitions(partitions, [date(2025, 2, 1)], latest=date(2025, 3, 31))
    assert stale[Grain.WEEKLY] == requested["repeat_customer_rate"] | week
    assert stale[Grain.MONTHLY] == {"2025-02-01", "2025-03-01"}


def test_a_deploy_that_changes_the_kpi_definitions_makes_every_period_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sensor sees the KPI assets' code version (a digest of their code) change: every
    partition, of any age, is computed again once, though nothing it reads changed. Shown on
    the KPI that reads the listing history only; the others share its condition and version,
    and wait for their days' checks besides."""
    price = dg.AssetSelection.assets(asset_key(tables.AVG_LISTING_PRICE))
    weeks = set(PlatformPartitions.starting(FIRST).weekly.get_partition_keys(current_time=NOW))

    def tick(defs: dg.Definitions, cursor: object = None) -> dg.EvaluateAutomationConditionsResult:
        result = dg.evaluate_automation_conditions(
            defs, instance, asset_selection=price, evaluation_time=NOW, cursor=cursor
        )
        _materialise_requested(instance, result)
        return result

    with dg.instance_for_test() as instance:
        _materialise(instance, tables.CURATED_LISTINGS_HISTORY, [None])
        _materialise(instance, tables.AVG_LISTING_PRICE, sorted(weeks))
        computed = tick(DEFS, tick(DEFS).cursor)
        assert computed.total_requested == 0

        monkeypatch.setattr(code_version, "kpis_version", lambda: "a deployed digest")
        deployed = build_definitions(SETTINGS)
        graph = deployed.resolve_asset_graph()
        kpi_nodes = [graph.get(asset_key(t)) for t in tables.tables_of(Layer.PRESENTATION)]
        assert {node.code_version for node in kpi_nodes} == {"a deployed digest"}
        assert len({node.automation_condition for node in kpi_nodes}) == 1

        recomputed = tick(deployed, computed.cursor)
        requested = recomputed.get_requested_partitions(asset_key(tables.AVG_LISTING_PRICE))
        assert set(requested) == weeks
        assert tick(deployed, recomputed.cursor).total_requested == 0


def test_the_plan_of_a_snapshots_run_becomes_one_daily_run() -> None:
    plan = {
        "extract": {
            "raw.bookings": {"2025-03-30": "changed", "2025-03-31": "new", "undated": "x"},
            "raw.user_viewing": {"2025-03-31": "new"},
        },
        "curate": {"curated.bookings": {"2025-02-01": "listings learnt: 9"}},
    }

    @dg.asset(key=SOURCE_CHANGES)
    def source_changes() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"plan": dg.MetadataValue.json(plan)})

    with dg.instance_for_test() as instance:
        result = dg.materialize([source_changes], instance=instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="changed_days",
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        )
        requests = changed_days(context)
    (request,) = requests
    assert request.tags["dagster/asset_partition_range_start"] == "2025-02-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2025-03-31"
    assert request.tags["rental/plan"] == result.run_id
    assert {key.to_user_string() for key in request.asset_selection} == {
        "raw/bookings",
        "curated/bookings",
        "quarantine/bookings",
        "raw/user_viewing",
        "curated/user_viewing",
        "quarantine/user_viewing",
    }
    # Its steps work on the planned days of each table only, not on the range's every day.
    assert planned_days(plan) == {
        "raw.bookings": (date(2025, 3, 30), date(2025, 3, 31)),
        "curated.bookings": (date(2025, 2, 1), date(2025, 3, 30), date(2025, 3, 31)),
        "quarantine.bookings": (date(2025, 2, 1), date(2025, 3, 30), date(2025, 3, 31)),
        "raw.user_viewing": (date(2025, 3, 31),),
        "curated.user_viewing": (date(2025, 3, 31),),
        "quarantine.user_viewing": (date(2025, 3, 31),),
    }


def test_stale_periods_with_gaps_are_one_run_per_grain_that_lists_them() -> None:
    runs = kpi_runs(
        {
            Grain.WEEKLY: {"2025-01-06", "2025-02-03", "2025-02-10"},
            Grain.MONTHLY: {"2025-01-01", "2025-02-01"},
        }
    )
    weekly, monthly = runs
    assert (weekly.job, weekly.first, weekly.last) == ("weekly_kpis", "2025-01-06", "2025-02-10")
    assert weekly.tags()["rental/periods"] == "2025-01-06,2025-02-03,2025-02-10"
    assert weekly.tags()["rental/range"] == "2025-01-06..2025-02-10"
    assert periods_of_run(weekly.tags()) == (date(2025, 1, 6), date(2025, 2, 3), date(2025, 2, 10))
    # Consecutive partitions need no list: the run recomputes its whole range.
    assert (monthly.first, monthly.last) == ("2025-01-01", "2025-02-01")
    assert "rental/periods" not in monthly.tags()
    assert periods_of_run(monthly.tags()) is None
