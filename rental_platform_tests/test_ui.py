"""The UI's API, for real: a `dagster-webserver` and a `dagster-daemon` on loopback, driven
through Dagster's Python GraphQL client. Lists the assets, launches a 90-day partitioned
backfill of every layer, waits for it, and reads back the runs, steps and check results."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from rental_platform import tables
from rental_platform.cycle import Cycle
from rental_platform.seed import SeedScale, seed_source
from rental_platform_tests.conftest import BIN, Platform, free_port, running_services

REPO = Path(__file__).resolve().parents[1]
SCALE = SeedScale(
    listings=40, users=150, bookings=900, views=2_000, start=date(2025, 1, 1), days=90
)
BACKFILL_TIMEOUT_SECONDS = 420


@pytest.fixture(scope="module")
def client(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagsterGraphQLClient]:
    seed_source(platform.admin.pymysql_kwargs(), SCALE, seed=3)
    home = tmp_path_factory.mktemp("dagster_home")
    env = {
        **platform.cli_env(home),
        # So few listings still get at least one of each kind of dirt: a larger share.
        "RENTAL_MAX_QUARANTINE_SHARE": "0.4",
    }
    port = free_port()
    commands = [
        [BIN / "dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        [BIN / "dagster-daemon", "run", "-w", "workspace.yaml"],
    ]
    with running_services(commands, env, REPO, home / "services.log"):
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (home / "services.log").read_text()[-3000:]
            time.sleep(1)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        # The server answers before its code location has loaded.
        while not client._execute(ASSETS)["assetNodes"]:
            assert time.monotonic() < deadline, client._execute(LOCATIONS)
            time.sleep(1)
        yield client


ASSETS = "{ assetNodes { assetKey { path } groupName kinds } }"
LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
RUNS = """
query($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status tags { key value } stepStats { stepKey status } } }
  }
}"""
CHECKS = """
query($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks {
      name blocking executionForLatestMaterialization { status evaluation { success } }
    } } }
  }
}"""


def _range(table: tables.Table, first: str, last: str) -> dict:
    selector = {"assetKey": {"path": [str(table.layer), table.name]}}
    if first:
        selector["partitions"] = {"range": {"start": first, "end": last}}
    return selector


def _selection() -> list[dict]:
    ranges = {
        tables.Grain.SNAPSHOT: ("", ""),
        tables.Grain.DAILY: ("2025-01-01", "2025-03-31"),
        tables.Grain.WEEKLY: ("2024-12-30", "2025-03-24"),
        tables.Grain.MONTHLY: ("2025-01-01", "2025-03-01"),
    }
    return [_range(table, *ranges[table.grain]) for table in tables.ALL_TABLES]


@pytest.fixture(scope="module")
def backfill(client: DagsterGraphQLClient) -> dict:
    launched = client._execute(LAUNCH, {"params": {"partitionsByAssets": _selection()}})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id = result["backfillId"]
    deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
    status = "REQUESTED"
    while status in ("REQUESTED", "CANCELING", "FAILING"):
        assert time.monotonic() < deadline, f"backfill still {status}"
        time.sleep(3)
        status = client._execute(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"][
            "status"
        ]
    runs = client._execute(RUNS, {"id": backfill_id})["runsOrError"]["results"]
    return {"status": status, "runs": runs}


def test_the_asset_graph_is_served(client: DagsterGraphQLClient) -> None:
    nodes = client._execute(ASSETS)["assetNodes"]
    groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    assert groups == {"/".join([str(t.layer), t.name]): str(t.layer) for t in tables.ALL_TABLES} | {
        "raw/source_changes": "raw"
    }
    kinds = {"/".join(n["assetKey"]["path"]): set(n["kinds"]) for n in nodes}
    assert kinds["raw/bookings"] == {"spark", "mysql", "parquet"}
    assert kinds["presentation/top_listings"] == {"spark", "parquet", "duckdb"}


def test_a_90_day_backfill_runs_one_spark_step_per_layer(backfill: dict) -> None:
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    described = [
        (
            run["status"],
            [step["stepKey"] for step in run["stepStats"]],
            {t["key"]: t["value"] for t in run["tags"] if "partition" in t["key"]},
        )
        for run in backfill["runs"]
    ]
    assert [run["status"] for run in backfill["runs"]] == ["SUCCESS"] * len(described), described
    steps = Counter(step["stepKey"] for run in backfill["runs"] for step in run["stepStats"])
    # Every multi-asset runs over its whole range in one step. One may run twice, each time
    # for a subset of its tables, when those tables' upstreams finish at different times
    # (curated user_viewing needs no listings; curated bookings waits for them).
    assert set(steps) == {
        "raw_snapshots",
        "curated_listings",
        "raw_daily",
        "curated_daily",
        "kpis_weekly",
        "kpis_weekly_repeat_customers",
        "kpis_monthly",
    }, described
    assert max(steps.values()) <= 2, described
    full_ranges = {
        ("2025-01-01", "2025-03-31"),
        ("2024-12-30", "2025-03-24"),
        ("2025-01-01", "2025-03-01"),
    }
    for _, _, tags in described:
        if tags:
            assert (
                tags["dagster/asset_partition_range_start"],
                tags["dagster/asset_partition_range_end"],
            ) in full_ranges, described


def test_check_results_are_read_back(client: DagsterGraphQLClient, backfill: dict) -> None:
    keys = [{"path": ["curated", "bookings"]}, {"path": ["presentation", "occupancy_rate"]}]
    nodes = client._execute(CHECKS, {"keys": keys})["assetNodes"]
    results = {
        ("/".join(n["assetKey"]["path"]), c["name"]): c["executionForLatestMaterialization"]
        for n in nodes
        for c in n["assetChecksOrError"]["checks"]
    }
    assert results[("curated/bookings", "rows_accounted_for")]["evaluation"]["success"] is True
    assert results[("curated/bookings", "quarantine_share_within_limit")]["status"] == "SUCCEEDED"
    assert results[("presentation/occupancy_rate", "values_in_range")]["evaluation"]["success"]


WEEK_OF_CHANGE = date(2025, 2, 10)
CHANGE_TIMEOUT_SECONDS = 420


def _confirmed_in_week(warehouse_query) -> int:
    return warehouse_query(
        "SELECT COALESCE(SUM(booking_count), 0) FROM presentation.bookings_per_user "
        f"WHERE week_start = DATE '{WEEK_OF_CHANGE}'"
    )[0][0]


def test_a_change_in_the_source_flows_through_the_daemon(
    client: DagsterGraphQLClient, backfill: dict, platform: Platform
) -> None:
    """The nightly cycle as the daemon runs it, started from the UI: a snapshots run (here an
    audit, so that a change in February is looked for), then the daily run the `changed_days`
    sensor launches from its plan, then the KPI runs the automation sensor launches; at the
    end, the week's KPI tells the booking cancelled in the source."""
    before = _confirmed_in_week(platform.warehouse)
    ((booking_id,),) = platform.lake(
        tables.CURATED_BOOKINGS,
        "SELECT min(booking_id) FROM t WHERE booking_status = 'confirmed' "
        f"AND CAST(booking_date AS DATE) = DATE '{WEEK_OF_CHANGE}' + 2",
    )
    platform.execute(
        f"UPDATE bookings SET booking_status = 'cancelled' WHERE booking_id = {booking_id}"
    )
    cycle = Cycle.audit(SCALE.end - timedelta(days=1), SCALE.start)
    snapshots = client.submit_job_execution("snapshots", tags=cycle.tags())
    deadline = time.monotonic() + CHANGE_TIMEOUT_SECONDS
    while True:
        try:
            after = _confirmed_in_week(platform.warehouse)
        except Exception:  # a run of the daemon's is publishing: DuckDB has one writer
            after = before
        if after == before - 1:
            break
        assert time.monotonic() < deadline, client._execute(ALL_RUNS)
        time.sleep(3)
    (daily,) = client._execute(RUNS_BY_TAG, {"key": PLAN, "value": snapshots})["runsOrError"][
        "results"
    ]
    assert daily["status"] == "SUCCESS"
    assert {t["key"]: t["value"] for t in daily["tags"]}["dagster/sensor_name"] == "changed_days"


PLAN = "rental/plan"
RUNS_BY_TAG = """
query($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""
ALL_RUNS = "{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }"
