"""The asset layer without Spark: what Dagster records of a step's report. The step itself is
played by a fake runner (no JVM in the fast tier; the Spark steps have their own tests), which
returns the report a real step would for three days of curated bookings."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any, ClassVar

import dagster as dg
import pytest

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.curated import build_curated_steps
from rental_platform.assets.layer import (
    launch_groups,
    launch_name,
    spark_multi_asset,
    spark_multi_assets,
)
from rental_platform.contract import CheckResult, StepReport, StepRequest
from rental_platform.cycle import RANGE_END, RANGE_START
from rental_platform.definitions import spark_steps
from rental_platform.partitions import PlatformPartitions
from rental_platform.resources.catalog import LakeCatalog
from rental_platform.resources.lake import LocalLakeResource
from rental_platform.resources.limits import CheckLimitsResource
from rental_platform.resources.spark import SparkRunner, StepRun

pytestmark = pytest.mark.fast

DAYS = ["2025-01-01", "2025-01-02", "2025-01-03"]
PAIR = (tables.CURATED_BOOKINGS, tables.QUARANTINE_BOOKINGS)
ROWS = {"2025-01-01": 5, "2025-01-02": 7, "2025-01-03": 6}


class FakeSparkRunner(SparkRunner):
    """A named fake: returns the report it is given (JSON) instead of running Spark, and keeps
    the requests it was sent."""

    report: str
    requests: ClassVar[list[StepRequest]] = []

    def run_steps(
        self, context: dg.AssetExecutionContext, requests: Sequence[StepRequest]
    ) -> Iterator[StepRun]:
        for request in requests:
            self.requests.append(request)
            yield StepRun(StepReport.from_json(json.loads(self.report)), {"job": "fake"})


def _check(table: tables.Table, name: str, passed: bool = True, **more: Any) -> dict[str, Any]:
    return {"table": table.id, "name": name, "passed": passed, "description": name, **more}


def _report(rewritten: set[str], **more: Any) -> StepReport:
    partitions = {
        day: {"rows": ROWS[day], "rewritten": day in rewritten, "quarantined": {}} for day in DAYS
    }
    by_day = {
        day: {"passed": True, "description": f"{day}: none", "metadata": {"orphan_bookings": 0}}
        for day in rewritten
    }
    checks = [
        _check(tables.CURATED_BOOKINGS, "schema_matches_catalogue"),
        _check(tables.CURATED_BOOKINGS, "rows_accounted_for"),
        _check(tables.CURATED_BOOKINGS, "quarantine_share_within_limit"),
        _check(tables.CURATED_BOOKINGS, "primary_key_unique", metadata={"null_keys": 0}),
        _check(tables.CURATED_BOOKINGS, "listings_exist", partitions=by_day),
        _check(tables.CURATED_BOOKINGS, "values_in_range"),
    ]
    return StepReport.from_json(
        {
            "step": "curate_daily",
            "tables": {
                t.id: {"table": t.id, "row_count": 18, "partitions": partitions} for t in PAIR
            },
            "checks": checks,
            "duration_seconds": 1.0,
            "committed": None,
        }
        | more
    )


def _materialise(tmp_path, report: StepReport) -> tuple[dg.DagsterInstance, Any]:
    partitions = PlatformPartitions.starting(date(2025, 1, 1))
    (curated_daily,) = [
        spark_multi_asset([step]) for step in build_curated_steps(partitions) if step.partitions_def
    ]
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [curated_daily],
        selection=[asset_key(t) for t in PAIR],
        instance=instance,
        resources={
            "spark": FakeSparkRunner(report=json.dumps(report.to_json())),
            "lake": LocalLakeResource(root=str(tmp_path)),
            "catalog": LakeCatalog(lake_root=str(tmp_path)),
            "limits": CheckLimitsResource(),
        },
        tags={RANGE_START: DAYS[0], RANGE_END: DAYS[-1]},
        raise_on_error=False,
    )
    return instance, result


def _latest(instance: dg.DagsterInstance, check: str) -> dict[str, Any]:
    key = dg.AssetCheckKey(asset_key(tables.CURATED_BOOKINGS), check)
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    return {
        r.partition: r.event.dagster_event.event_specific_data
        for r in reversed(records)
        if r.event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_each_partition_gets_its_own_rows_and_check_results(tmp_path) -> None:
    FakeSparkRunner.requests.clear()
    instance, result = _materialise(tmp_path, _report(set(DAYS)))
    assert result.success
    (request,) = FakeSparkRunner.requests
    assert (request.window_start, request.window_end) == (date(2025, 1, 1), date(2025, 1, 4))
    assert request.tables == tuple(t.id for t in PAIR)

    records = instance.fetch_materializations(asset_key(tables.CURATED_BOOKINGS), 10).records
    rows = {
        r.partition_key: r.asset_materialization.metadata["dagster/row_count"].value
        for r in records
    }
    assert rows == ROWS
    assert all(r.asset_materialization.metadata["job"].value == "fake" for r in records)

    orphans = _latest(instance, "listings_exist")
    assert {day: e.description for day, e in orphans.items()} == {d: f"{d}: none" for d in DAYS}
    keys = _latest(instance, "primary_key_unique")
    assert sorted(keys) == DAYS
    assert keys[DAYS[0]].metadata["judged"].value == "the run's window"
    # Each evaluation targets its partition's materialisation (what the automation waits for).
    targets = {day: e.target_materialization_data.storage_id for day, e in orphans.items()}
    assert targets == {r.partition_key: r.storage_id for r in records}


def test_a_day_left_alone_answers_its_blocking_checks_as_unchanged(tmp_path) -> None:
    instance, result = _materialise(tmp_path, _report({DAYS[0]}))
    assert result.success
    orphans = _latest(instance, "listings_exist")
    assert sorted(orphans) == DAYS
    assert orphans[DAYS[1]].passed
    assert orphans[DAYS[1]].metadata["unchanged"].value == "this run did not rewrite the partition"
    assert "unchanged" not in orphans[DAYS[0]].metadata


def test_a_failed_blocking_check_rejects_the_table_and_fails_the_run(tmp_path) -> None:
    # A table and its quarantine are committed together or not at all.
    report = _report(set(DAYS), rejected={t.id: [f"{t.layer}/{t.name}/v9"] for t in PAIR})
    report.checks[3] = CheckResult(
        tables.CURATED_BOOKINGS.id, "primary_key_unique", False, "2 duplicated keys"
    )
    instance, result = _materialise(tmp_path, report)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "primary_key_unique" in failure.event_specific_data.error.message
    assert instance.fetch_materializations(asset_key(tables.CURATED_BOOKINGS), 10).records == []
    assert not _latest(instance, "primary_key_unique")[DAYS[0]].passed


def test_a_remote_runner_runs_each_jobs_steps_in_one_launch() -> None:
    """Each launch is billed a minute at least: a job's steps are one multi-asset, in the order
    they read each other, but where Dagster cannot hold two partition mappings of one upstream
    asset in one multi-asset (the repeat customers read four weeks of bookings)."""
    steps = spark_steps(PlatformPartitions.starting(date(2025, 1, 1)), 120)
    groups = launch_groups(steps)
    assert [[step.name for step in group] for group in groups] == [
        ["raw_snapshots", "curated_listings", "raw__source_changes"],
        ["raw_daily", "curated_daily"],
        ["kpis_weekly"],
        ["kpis_weekly_repeat_customers"],
        ["kpis_monthly"],
    ]
    assets = spark_multi_assets(steps, one_launch_per_job=True)
    assert [a.node_def.name for a in assets] == [launch_name(group) for group in groups]
    assert len(spark_multi_assets(steps, one_launch_per_job=False)) == len(steps) == 8
