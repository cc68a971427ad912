"""Faults injected for real (design.md, "What the platform promises"): the source connection
killed from a second session in the middle of a query, the warehouse's backend terminated in
the middle of a publish. Each time the run recovers (or fails naming the cause), the previous
committed state stays readable, and the end state equals an undisturbed run's."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import psycopg
import pymysql
import pytest

from rental_platform import tables
from rental_platform.resources.warehouse import warehouse_for
from rental_platform.runs import RangeRunError, RunOutcome
from rental_platform.settings import parse_warehouse_url
from rental_platform.spark.manifest import CommitLog, LocalStore
from rental_platform_tests import chaos
from rental_platform_tests.harness import Platform, start_cli_run

START, END = date(2025, 1, 1), date(2025, 2, 28)


def _record(
    request: pytest.FixtureRequest,
    fault: str,
    undisturbed: dict[str, list[tuple]],
    injected_at: float,
) -> dict[str, list[tuple]]:
    """Record the fault for `make chaos`; return the state it left, for the test's asserts."""
    state = request.getfixturevalue("example_platform").state()
    chaos.record_recovery(request.node.nodeid, fault, undisturbed, state, injected_at)
    return state


@pytest.fixture(scope="module")
def example_platform(platform: Platform) -> Platform:
    platform.load_worked_example()
    platform.run(START, END)
    platform.undisturbed = platform.state()
    return platform


def _admin(platform: Platform) -> pymysql.connections.Connection:
    return pymysql.connect(**platform.admin.pymysql_kwargs(), autocommit=True)


def test_a_source_connection_killed_mid_query_is_retried(
    example_platform: Platform, request: pytest.FixtureRequest
) -> None:
    """The bookings table is locked from a second session, so the platform's first query of it
    waits; that query's connection is then KILLed, and the lock released. The step fails with
    the driver's error, is retried after its backoff, and the run ends as an undisturbed one."""
    platform = example_platform
    locker, killer = _admin(platform), _admin(platform)
    outcome: list[list[RunOutcome] | BaseException] = []
    killed: list[int] = []
    try:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLES bookings WRITE")
        runner = threading.Thread(
            target=lambda: outcome.append(_outcome(lambda: platform.run(START, END)))
        )
        runner.start()
        deadline = time.monotonic() + 120
        while not killed:
            assert time.monotonic() < deadline and runner.is_alive(), outcome
            with killer.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM information_schema.PROCESSLIST WHERE db = DATABASE() "
                    "AND state LIKE '%metadata lock%' AND info LIKE '%bookings%'"
                )
                for (connection_id,) in cursor.fetchall():
                    cursor.execute(f"KILL {int(connection_id)}")
                    killed.append(connection_id)
                    injected_at = time.monotonic()
            time.sleep(0.1)
        with locker.cursor() as cursor:
            cursor.execute("UNLOCK TABLES")
        runner.join(timeout=600)
    finally:
        locker.close()
        killer.close()
    (result,) = outcome
    state = _record(
        request, "source connection KILLed mid-extraction", platform.undisturbed, injected_at
    )
    assert not isinstance(result, BaseException), result
    assert _retried(platform, result), "the killed query's step was not retried"
    assert state == platform.undisturbed


def _outcome(work):
    try:
        return work()
    except BaseException as error:  # handed to the test's thread
        return error


def test_the_warehouse_backend_terminated_mid_publish_is_retried(
    example_platform: Platform, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """The publish of occupancy_rate waits on a lock taken from a second session; its backend
    is then terminated (pg_terminate_backend). The previous rows stay as they were, and the
    retried step publishes the same rows an undisturbed run does."""
    platform = example_platform
    settings = platform.settings
    platform.settings = dataclasses.replace(settings, warehouse=parse_warehouse_url(postgres_url))
    try:
        platform.run(START, END)
        undisturbed = platform.state()
        outcome: list = []
        with (
            psycopg.connect(postgres_url) as locker,
            psycopg.connect(postgres_url, autocommit=True) as killer,
        ):
            locker.execute("LOCK TABLE presentation.occupancy_rate IN ACCESS EXCLUSIVE MODE")
            runner = threading.Thread(
                target=lambda: outcome.append(_outcome(lambda: platform.run(START, END)))
            )
            runner.start()
            terminated: list[int] = []
            deadline = time.monotonic() + 300
            while not terminated:
                assert time.monotonic() < deadline and runner.is_alive(), outcome
                for (pid,) in killer.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM%occupancy_rate%'"
                ).fetchall():
                    killer.execute("SELECT pg_terminate_backend(%s)", [pid])
                    terminated.append(pid)
                    injected_at = time.monotonic()
                time.sleep(0.1)
            locker.rollback()
            # Before the retry (after its backoff), the previous publication is intact.
            assert platform.kpis()["occupancy_rate"] == undisturbed["warehouse.occupancy_rate"]
        runner.join(timeout=600)
        (result,) = outcome
        state = _record(
            request, "warehouse backend terminated mid-publish", undisturbed, injected_at
        )
        assert not isinstance(result, BaseException), result
        assert _retried(platform, result)
        assert state == undisturbed
    finally:
        warehouse_for(platform.settings.warehouse).query("DROP SCHEMA presentation CASCADE")
        platform.settings = settings


# Another process that opens the DuckDB file, says so, and keeps it open.
HOLD_DUCKDB = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
    "time.sleep(600)"
)


def test_a_duckdb_warehouse_held_by_another_process_is_retried(
    example_platform: Platform,
) -> None:
    """DuckDB lets one process at a time open its file: another one (an analyst's query) holds
    it while the KPIs publish. The publish fails on the lock, is retried after its backoff, by
    when the other process has let go, and the run ends as an undisturbed one."""
    platform = example_platform
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DUCKDB, platform.settings.warehouse.database],
        stdout=subprocess.PIPE,
        text=True,
    )
    earlier = {run.run_id for run in platform.instance.get_runs()}
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome: list = []
        runner = threading.Thread(
            target=lambda: outcome.append(_outcome(lambda: platform.run(START, END)))
        )
        runner.start()
        deadline = time.monotonic() + 300
        while not _retried(
            platform, [run for run in platform.instance.get_runs() if run.run_id not in earlier]
        ):
            assert time.monotonic() < deadline and runner.is_alive(), outcome
            time.sleep(0.5)
    finally:
        holder.kill()
        holder.wait()
    runner.join(timeout=600)
    (result,) = outcome
    assert not isinstance(result, BaseException), result
    assert _retried(platform, result)
    assert platform.state() == platform.undisturbed


def _retried(platform: Platform, outcomes: list[RunOutcome]) -> bool:
    return any(
        record.dagster_event and record.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
        for run in outcomes
        for record in platform.instance.all_logs(run.run_id)
    )


# --- the run killed (SIGKILL) in the middle of writing ------------------------------------


@pytest.fixture(scope="module")
def cli_env(example_platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`rental-platform` in a subprocess on the module's platform: same source, lake and
    warehouse, a Dagster instance of its own."""
    return example_platform.cli_env(tmp_path_factory.mktemp("dagster_home"))


def _uncommitted(lake_root: str, table: tables.Table) -> bool:
    """Whether a version of the table is on disk that the newest commit does not name."""
    folder = Path(lake_root) / str(table.layer) / table.name
    if not folder.is_dir():
        return False
    named = {
        partition.folder.split("/")[2]
        for partition in CommitLog(LocalStore(lake_root)).head().table(table.id).partitions.values()
    }
    return any(child.name not in named for child in folder.iterdir())


# A kill point per layer; `make chaos` adds a quarantine and a monthly KPI. (A re-run of the
# same range takes no new listings snapshot: the listing history only moves forward.)
KILL_POINTS = [tables.RAW_BOOKINGS, tables.CURATED_BOOKINGS, tables.TOP_LISTINGS] + (
    [tables.QUARANTINE_BOOKINGS, tables.OCCUPANCY_RATE] if chaos.full_matrix() else []
)


@pytest.mark.parametrize("table", KILL_POINTS, ids=lambda t: t.id)
def test_a_run_killed_while_writing_leaves_the_committed_state(
    example_platform: Platform, cli_env: dict, table: tables.Table, request: pytest.FixtureRequest
) -> None:
    """SIGKILL the moment a new version of the table is on disk, before its commit: what the
    lake's readers see is the previous commit, whole; the re-run ends as an undisturbed run."""
    platform = example_platform
    root = platform.settings.lake_root
    head = CommitLog(LocalStore(root)).head()
    before = {t.id: sorted(head.files(t.id)) for t in tables.ALL_TABLES}
    run = start_cli_run(cli_env, START, END)
    deadline = time.monotonic() + 300
    while not _uncommitted(root, table):
        assert run.poll() is None, "the run ended before writing"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    injected_at = time.monotonic()
    run.wait()
    after = CommitLog(LocalStore(root)).head()
    assert after.seq >= head.seq
    for other in tables.ALL_TABLES:
        files = after.files(other.id)
        assert all(Path(f).is_file() for f in files), other.id
        if other is table:
            assert sorted(files) == before[other.id]  # the version being written is not in
    assert platform.state() == platform.undisturbed  # what readers see did not change
    platform.run(START, END)
    state = _record(
        request, f"run SIGKILLed while writing {table.id}", platform.undisturbed, injected_at
    )
    assert state == platform.undisturbed


def test_a_run_killed_inside_the_warehouse_transaction(
    example_platform: Platform, cli_env: dict, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """SIGKILL while the publish of occupancy_rate holds its transaction open (it waits on a
    lock taken from a second session): PostgreSQL rolls it back, the previous rows stay, and
    the re-run publishes what an undisturbed run does."""
    platform = example_platform
    settings = platform.settings
    platform.settings = dataclasses.replace(settings, warehouse=parse_warehouse_url(postgres_url))
    try:
        platform.run(START, END)
        undisturbed = platform.state()
        env = {**cli_env, "RENTAL_WAREHOUSE_URL": postgres_url}
        with (
            psycopg.connect(postgres_url) as locker,
            psycopg.connect(postgres_url, autocommit=True) as watcher,
        ):
            locker.execute("LOCK TABLE presentation.occupancy_rate IN ACCESS EXCLUSIVE MODE")
            run = start_cli_run(env, START, END)
            deadline = time.monotonic() + 300
            while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM%occupancy_rate%'"
            ).fetchall():
                assert run.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            os.killpg(run.pid, signal.SIGKILL)
            injected_at = time.monotonic()
            run.wait()
            locker.rollback()
        assert platform.state() == undisturbed
        platform.run(START, END)
        state = _record(request, "run SIGKILLed while publishing", undisturbed, injected_at)
        assert state == undisturbed
    finally:
        warehouse_for(platform.settings.warehouse).query("DROP SCHEMA presentation CASCADE")
        platform.settings = settings


# --- the disk refuses a write ---------------------------------------------------------------


# The data of a table, and the commit log itself; `make chaos` adds a raw table.
REFUSING_FOLDERS = ["curated/bookings", "_lake/commits"] + (
    ["raw/bookings"] if chaos.full_matrix() else []
)


@pytest.mark.parametrize("folder", REFUSING_FOLDERS)
def test_a_lake_folder_that_refuses_writes(
    example_platform: Platform, folder: str, request: pytest.FixtureRequest
) -> None:
    """The run fails naming the folder, readers keep seeing the previous commit whole, and once
    the folder takes writes again the re-run ends as an undisturbed run."""
    platform = example_platform
    root = Path(platform.settings.lake_root)
    with chaos.refusing_writes(root / folder), pytest.raises(RangeRunError) as error:
        platform.run(START, END)
    injected_at = time.monotonic()
    assert folder in str(error.value)
    assert platform.state() == platform.undisturbed
    platform.run(START, END)
    state = _record(
        request, f"lake folder {folder} refuses writes", platform.undisturbed, injected_at
    )
    assert state == platform.undisturbed
