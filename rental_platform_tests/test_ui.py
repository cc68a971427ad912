"""The UI's API, for real: a `dagster-webserver` and a `dagster-daemon` on loopback, driven
through Dagster's Python GraphQL client. Lists the assets, launches a 90-day partitioned
backfill of every layer, waits for it, and reads back the runs, steps and check results."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import Page, expect, sync_playwright

from rental_platform import tables
from rental_platform.cycle_tags import Cycle
from rental_platform.seed import SeedScale, seed_source
from rental_platform_tests.harness import BIN, REPO, Platform, free_port, running_services

SCALE = SeedScale(
    listings=40, users=150, bookings=900, views=2_000, start=date(2025, 1, 1), days=90
)
BACKFILL_TIMEOUT_SECONDS = 420


@pytest.fixture(scope="module")
def webserver(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a webserver (and a daemon beside it) whose code location has loaded."""
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
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(webserver: str) -> DagsterGraphQLClient:
    host, port = webserver.removeprefix("http://").split(":")
    return DagsterGraphQLClient(host, port_number=int(port))


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
        "raw/source_changes": "nightly"
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


SCREENSHOTS = REPO / ".rental" / "ui"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser_page(webserver: str, backfill: dict) -> Iterator[Page]:
    """A page of Debian's Chromium, driven by Playwright, that skips the UI's newsletter
    dialog whenever it covers the page (on a first visit)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"),
            lambda _: page.get_by_role("button", name="Skip").click(),
        )
        yield page
        browser.close()


def _open(page: Page, url: str, shot: str) -> None:
    page.goto(url, wait_until="networkidle")
    page.wait_for_timeout(2000)  # the UI fills in what it fetched after the network is idle
    # An action, so that the newsletter dialog's handler runs before the screenshot.
    page.mouse.move(1, 1)
    page.screenshot(path=SCREENSHOTS / f"{shot}.png")


def test_the_graph_shows_the_layers_and_the_quarantine_apart(
    browser_page: Page, webserver: str
) -> None:
    _open(browser_page, f"{webserver}/asset-groups", "asset-graph")
    # Each group is a box of the graph, and an entry of the list beside it (to the left).
    lefts = {}
    for group in ("raw", "curated", "quarantine", "presentation", "nightly"):
        names = browser_page.get_by_text(group, exact=True).filter(visible=True)
        expect(names).to_have_count(2)
        lefts[group] = max(name.bounding_box()["x"] for name in names.all())
    # The graph reads from left to right in the order the data flows.
    assert lefts["raw"] < lefts["curated"] < lefts["presentation"], lefts
    assert lefts["raw"] < lefts["quarantine"], lefts
    assert lefts["curated"] < lefts["nightly"], lefts


def test_a_partition_shows_its_own_row_count(
    browser_page: Page, webserver: str, platform: Platform
) -> None:
    day = "2025-03-30"
    ((rows,),) = platform.lake(
        tables.RAW_BOOKINGS, f"SELECT COUNT(*) FROM t WHERE CAST(booking_date AS DATE) = '{day}'"
    )
    _open(
        browser_page,
        f"{webserver}/assets/raw/bookings?view=partitions&partition={day}",
        "partition-row-count",
    )
    row = browser_page.locator("tr", has=browser_page.get_by_text("dagster/row_count", exact=True))
    expect(row).to_have_count(1)
    assert row.inner_text().split()[-1] == str(rows)
    whole = browser_page.locator("tr", has=browser_page.get_by_text("window_rows", exact=True))
    assert int(whole.inner_text().split()[-1].replace(",", "")) > rows


# Counts the pixels of a canvas in the colour of Dagster's plot lines and points (a blue).
PLOTTED_PIXELS = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 200 && data[i + 2] > 180 && data[i] < 140 && data[i + 1] < 120) count++;
  }
  return count;
}"""


def test_a_kpi_is_plotted_by_partition(browser_page: Page, webserver: str) -> None:
    _open(browser_page, f"{webserver}/assets/presentation/occupancy_rate", "kpi-overview")
    browser_page.get_by_text("Plots", exact=True).click()
    browser_page.wait_for_timeout(2000)
    browser_page.screenshot(path=SCREENSHOTS / "kpi-plots.png")
    title = browser_page.get_by_text("occupancy_rate", exact=True).last
    plot = browser_page.locator("div", has=title).filter(has=browser_page.locator("canvas")).last
    assert plot.locator("canvas").count() == 1
    assert plot.locator("canvas").evaluate(PLOTTED_PIXELS) > 50


def test_a_check_shows_its_partition(browser_page: Page, webserver: str) -> None:
    _open(browser_page, f"{webserver}/assets/curated/bookings?view=checks", "check-partition")
    latest = browser_page.get_by_text("Partition", exact=True).locator("..")
    expect(latest).to_contain_text("2025-03-31")


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
