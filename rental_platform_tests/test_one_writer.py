"""One writer per partition (design.md, "What the platform promises"): two `rental-platform run`
on overlapping ranges of one lake, warehouse and Dagster instance run one after the other (a
headless cycle holds the instance's cycle lock; every step also holds the one-slot `lake` pool)
and end in the state one run leaves; a run killed while holding the slot does not keep the next
one waiting for ever."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path

import dagster as dg
import psutil
import pytest

from rental_platform.cycle_lock import one_cycle_at_a_time
from rental_platform_tests import chaos
from rental_platform_tests.harness import Platform, start_cli_run

FIRST, LAST = date(2025, 1, 1), date(2025, 2, 28)


@dataclass
class Shared:
    """One platform driven by CLI processes that share a Dagster instance."""

    platform: Platform
    env: dict[str, str]
    home: Path
    undisturbed: dict[str, list[tuple]]
    # What the first run printed.
    output: str = ""

    def start(self, first: date, last: date) -> subprocess.Popen:
        return start_cli_run(self.env, first, last, output=subprocess.PIPE)


@pytest.fixture(scope="module")
def shared(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    platform.load_worked_example()
    home = tmp_path_factory.mktemp("dagster_home")
    shared = Shared(platform, platform.cli_env(home), home, {})
    shared.output = _finish(shared.start(FIRST, LAST))
    shared.undisturbed = platform.state()
    yield shared


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


def test_a_run_prints_no_warning(shared: Shared) -> None:
    """Nothing a user would take for trouble: no Python warning, no Spark or Hadoop WARN line
    (nor Spark's notice of how to change its log level)."""
    lines = shared.output.splitlines()
    assert [line for line in lines if "WARN" in line or "Warning" in line] == []
    assert not any("setLogLevel" in line for line in lines)


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


def _record(request: pytest.FixtureRequest, shared: Shared, fault: str, started: float) -> None:
    state = shared.platform.state()
    chaos.record_recovery(request.node.nodeid, fault, shared.undisturbed, state, started)


def test_overlapping_runs_take_turns_and_end_as_one_run(
    shared: Shared, instance: dg.DagsterInstance, request: pytest.FixtureRequest
) -> None:
    before = {run.run_id for run in instance.get_runs()}
    first = shared.start(FIRST, date(2025, 2, 10))
    started = time.monotonic()
    time.sleep(0.5)
    second = shared.start(date(2025, 2, 1), LAST)
    _finish(first)
    _finish(second)
    _record(request, shared, "two CLI runs on overlapping ranges, 0.5 s apart", started)
    assert shared.platform.state() == shared.undisturbed
    runs = [run for run in instance.get_runs() if run.run_id not in before]
    assert len({run.tags["rental/worker"] for run in runs}) == 2  # both processes ran
    spans = sorted(span for run in runs for span in _step_spans(instance, run.run_id))
    assert len(spans) > len(runs)
    for (_, end), (start, _) in pairwise(spans):
        assert end <= start, "two steps wrote at the same time"


def test_a_killed_run_does_not_hold_the_lake(
    shared: Shared, instance: dg.DagsterInstance, request: pytest.FixtureRequest
) -> None:
    """SIGKILL while a step holds the pool's slot: the next run marks the dead run failed,
    frees its slot and completes, instead of waiting for ever."""
    before = {run.run_id for run in instance.get_runs()}
    killed = shared.start(FIRST, LAST)
    deadline = time.monotonic() + 300
    while not instance.event_log_storage.get_concurrency_run_ids():
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    started = time.monotonic()
    killed.wait()
    (dead,) = [run for run in instance.get_runs() if run.run_id not in before]
    assert dead.status == dg.DagsterRunStatus.STARTED  # nothing else knows it died
    output = _finish(shared.start(FIRST, LAST), timeout=300)
    _record(request, shared, "run SIGKILLed holding the lake pool's slot", started)
    assert shared.platform.state() == shared.undisturbed
    assert dead.run_id in output
    dead = instance.get_run_by_id(dead.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    assert not instance.event_log_storage.get_concurrency_run_ids()


def _line(process: subprocess.Popen, timeout: float = 120) -> str:
    """The process's next line of output; fails rather than wait for ever."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return process.stdout.readline().decode()


def _jvms(process: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(process.pid).children(recursive=True) if p.name() == "java"]


def test_a_run_waiting_for_another_cycle_starts_its_jvm_only_when_its_turn_comes(
    shared: Shared,
) -> None:
    """A command that finds another cycle running on the instance says so, and waits for it
    without a JVM of its own: one started early would sit idle, holding its memory, for the
    whole of the other cycle. When the other ends, it runs as ever."""
    with one_cycle_at_a_time(shared.home):  # held here, as another cycle's process holds it
        waiting = start_cli_run(
            shared.env | {"PYTHONUNBUFFERED": "1"}, FIRST, LAST, output=subprocess.PIPE
        )
        assert "waits for it to end" in _line(waiting)
        # Printed once Dagster is imported: an early start would have begun seconds before.
        assert "run as of" in _line(waiting)
        time.sleep(2)
        assert waiting.poll() is None
        assert _jvms(waiting) == []
    _finish(waiting)
    assert shared.platform.state() == shared.undisturbed
