"""One writer per partition (design.md, "What the platform promises"): two `rental-platform run`
on overlapping ranges of one lake, warehouse and Dagster instance take turns step by step (the
`lake` pool has one slot) and end in the state one run leaves; a run killed while holding the
slot does not keep the next one waiting for ever."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path

import dagster as dg
import pytest

from rental_platform import tables
from rental_platform_tests import worked_example as example
from rental_platform_tests.conftest import Platform

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIRST, LAST = date(2025, 1, 1), date(2025, 2, 28)
KPI_TABLES = tables.tables_of(tables.Layer.PRESENTATION)
LAKE_TABLES = (
    tables.CURATED_BOOKINGS,
    tables.QUARANTINE_BOOKINGS,
    tables.CURATED_LISTINGS_HISTORY,
    tables.OCCUPANCY_RATE,
)


@dataclass
class Shared:
    """One platform driven by CLI processes that share a Dagster instance."""

    platform: Platform
    env: dict[str, str]
    home: Path

    def start(self, first: date, last: date) -> subprocess.Popen:
        return subprocess.Popen(
            [BIN / "rental-platform", "run", "--start", str(first), "--end", str(last)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def state(self) -> dict[str, list[tuple]]:
        """What a reader sees: every KPI table of the warehouse and the committed lake tables
        (their extraction times aside)."""
        state = {
            t.name: self.platform.warehouse(
                f'SELECT * FROM presentation."{t.name}" ORDER BY '
                + ", ".join(str(n + 1) for n in range(len(t.columns)))
            )
            for t in KPI_TABLES
        }
        for table in LAKE_TABLES:
            columns = ", ".join(f'"{c}"' for c in table.column_names if c != "_extracted_at")
            state[table.id] = self.platform.lake(table, f"SELECT {columns} FROM t ORDER BY ALL")
        return state


@pytest.fixture(scope="module")
def shared(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", example.APARTMENTS)
    platform.execute(
        "INSERT INTO apartment_attributes (id, cityname, state) VALUES (%s,%s,%s)",
        example.APARTMENT_ATTRIBUTES,
    )
    platform.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", example.BOOKINGS)
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    settings = platform.settings
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RENTAL_MYSQL_URL": platform.mysql_url,
        "RENTAL_LAKE_ROOT": settings.lake_root,
        "RENTAL_WAREHOUSE_URL": settings.warehouse.public_url,
        "RENTAL_PARTITIONS_START": settings.partitions_start.isoformat(),
    }
    yield Shared(platform, env, home)


@pytest.fixture
def instance(shared: Shared, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The instance the CLI runs share, as the UI would open it."""
    monkeypatch.setenv("DAGSTER_HOME", str(shared.home))
    with dg.DagsterInstance.get() as instance:
        yield instance


def _finish(run: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = run.communicate(timeout=timeout)
    assert run.returncode == 0, output.decode()[-3000:]
    return output.decode()


def _step_spans(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float]]:
    """(start, end) of every step of a run, from its event log."""
    started: dict[str, float] = {}
    spans = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            spans.append((started.pop(event.step_key), record.timestamp))
    return spans


def test_overlapping_runs_take_turns_and_end_as_one_run(
    shared: Shared, instance: dg.DagsterInstance
) -> None:
    _finish(shared.start(FIRST, LAST))
    undisturbed = shared.state()
    before = {run.run_id for run in instance.get_runs()}
    first = shared.start(FIRST, date(2025, 2, 10))
    time.sleep(0.5)
    second = shared.start(date(2025, 2, 1), LAST)
    _finish(first)
    _finish(second)
    assert shared.state() == undisturbed
    runs = [run for run in instance.get_runs() if run.run_id not in before]
    assert len({run.tags["rental/worker"] for run in runs}) == 2  # both processes ran
    spans = sorted(span for run in runs for span in _step_spans(instance, run.run_id))
    assert len(spans) > len(runs)
    for (_, end), (start, _) in pairwise(spans):
        assert end <= start, "two steps wrote at the same time"


def test_a_killed_run_does_not_hold_the_lake(shared: Shared, instance: dg.DagsterInstance) -> None:
    """SIGKILL while a step holds the pool's slot: the next run marks the dead run failed,
    frees its slot and completes, instead of waiting for ever."""
    before = {run.run_id for run in instance.get_runs()}
    killed = shared.start(FIRST, LAST)
    deadline = time.monotonic() + 300
    while not instance.event_log_storage.get_concurrency_run_ids():
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    (dead,) = [run for run in instance.get_runs() if run.run_id not in before]
    assert dead.status == dg.DagsterRunStatus.STARTED  # nothing else knows it died
    output = _finish(shared.start(FIRST, LAST), timeout=300)
    assert dead.run_id in output
    dead = instance.get_run_by_id(dead.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    assert not instance.event_log_storage.get_concurrency_run_ids()
