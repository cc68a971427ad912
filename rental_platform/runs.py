"""Headless runs of the cycle (`cycle.py`) through a Dagster instance, so the UI shows them:
the nightly run, the audit, and the materialisation of a date range.

Each is the snapshots run, then the daily runs its plan asks for, then the weekly and monthly
KPI runs for every partition that reads a day they touched (a range run also recomputes every
period of its range). It stops at the first run that fails or whose blocking checks fail,
naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg

from rental_platform.abandoned_runs import release_abandoned_runs, worker_tags
from rental_platform.cycle import (
    DAILY_JOB,
    PartitionRun,
    all_planned_days,
    daily_runs,
    kpi_runs,
    kpis_of_other_definitions,
    plan_of_run,
    stale_kpi_partitions,
)
from rental_platform.cycle_lock import one_cycle_at_a_time
from rental_platform.cycle_tags import Cycle, Mode
from rental_platform.definitions import build_definitions
from rental_platform.jobs import SNAPSHOTS_JOB
from rental_platform.partitions import PlatformPartitions
from rental_platform.settings import Settings
from rental_platform.spark import layout
from rental_platform.spark.manifest import CommitLog, LakeState, store_for
from rental_platform.tables import RAW_BOOKINGS, RAW_USER_VIEWING, Grain

# Step progress at INFO on the console; Dagster's DEBUG events stay in the instance's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class RangeRunError(RuntimeError):
    """A run of the cycle failed; the message says which and why."""


@dataclass
class RunOutcome:
    job: str
    run_id: str
    partitions: str
    failed_checks: list[str] = field(default_factory=list)


def materialize_range(
    settings: Settings, instance: dg.DagsterInstance, start: date, end: date
) -> list[RunOutcome]:
    """Materialise every asset for every partition overlapping [start, end] (inclusive)."""
    if end < start:
        raise RangeRunError(f"--end {end} is before --start {start}")
    return run_cycle(settings, instance, Cycle.range(start, end))


def run_cycle(settings: Settings, instance: dg.DagsterInstance, cycle: Cycle) -> list[RunOutcome]:
    """The snapshots run, the daily runs of its plan, and the KPI runs of what they touched."""
    partitions = PlatformPartitions.starting(settings.partitions_start)
    _check_days_exist(partitions, cycle.compare_from, cycle.as_of)
    # Headless cycles on one instance run whole, one after the other. The `lake` pool alone
    # lets their steps alternate, and a KPI step of one cycle would then find days the other
    # has re-extracted but not yet curated (and fail on them).
    with (
        one_cycle_at_a_time(instance.root_directory),
        _shared_jobs_end_with_it(settings, instance),
    ):
        defs = build_definitions(settings)
        defs.resources["spark"].start_session(cycle.tags())
        release_abandoned_runs(instance)
        return _run_cycle(defs, instance, cycle, partitions, settings.lake_root)


@contextmanager
def _shared_jobs_end_with_it(settings: Settings, instance: dg.DagsterInstance) -> Iterator[None]:
    """A shared remote job serves the cycle's runs and ends with it, not after idling."""
    try:
        yield
    finally:
        if settings.runner.shared_idle_seconds:
            # boto3 and dagster-aws, imported only where a remote runner is configured.
            from rental_platform.resources.shared_job import close_shared_jobs

            close_shared_jobs(instance.root_directory)


def _run_cycle(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cycle: Cycle,
    partitions: PlatformPartitions,
    lake_root: str,
) -> list[RunOutcome]:
    snapshots = _execute(defs, instance, SNAPSHOTS_JOB.name, cycle.tags(), None, "unpartitioned")
    outcomes = [snapshots]
    plan = plan_of_run(instance, snapshots.run_id) or {}
    for run in daily_runs(plan, snapshots.run_id):
        outcomes.append(_execute(defs, instance, DAILY_JOB, {**cycle.tags(), **run.tags()}, run))
    state = CommitLog(store_for(lake_root)).head()
    latest = latest_day_extracted(state)
    if latest is None:
        return outcomes
    stale = stale_kpi_partitions(partitions, all_planned_days(plan), latest)
    for grain, keys in kpis_of_other_definitions(partitions, state, latest).items():
        stale[grain] |= keys
    if cycle.mode is Mode.RANGE:
        for grain in (Grain.WEEKLY, Grain.MONTHLY):
            stale[grain] |= {
                start.isoformat()
                for start in layout.periods(
                    grain, cycle.extract_from, min(cycle.as_of, latest) + timedelta(days=1)
                )
                if start >= layout.period_start(grain, partitions.first_day)
            }
    for run in kpi_runs(stale):
        outcomes.append(_execute(defs, instance, run.job, {**cycle.tags(), **run.tags()}, run))
    return outcomes


def latest_day_extracted(state: LakeState) -> date | None:
    """The last day the lake holds bookings or views of: no period after it is computed."""
    days = [
        date.fromisoformat(key)
        for table in (RAW_BOOKINGS, RAW_USER_VIEWING)
        for key in state.table(table.id).partitions
        if layout.parse_period_key(key)
    ]
    return max(days, default=None)


def _check_days_exist(partitions: PlatformPartitions, first: date, last: date) -> None:
    keys = partitions.daily.get_partition_keys()
    if not keys:
        raise RangeRunError(
            f"no day partition exists yet: they start on {partitions.first_day} "
            "(RENTAL_PARTITIONS_START), and a day exists once it is over"
        )
    for day in (first, last):
        if day.isoformat() not in keys:
            raise RangeRunError(
                f"day {day} has no partition; days run from {keys[0]} to {keys[-1]} "
                "(RENTAL_PARTITIONS_START sets the first day; a day exists once it is over)"
            )


def _execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job: str,
    tags: dict[str, str],
    run: PartitionRun | None,
    label: str = "",
) -> RunOutcome:
    result = defs.resolve_job_def(job).execute_in_process(
        run_config=QUIET,
        instance=instance,
        tags={**tags, **worker_tags()},
        asset_selection=list(run.assets) if run else None,
        raise_on_error=False,
    )
    outcome = RunOutcome(
        job, result.run_id, run.label if run else label, _failed_blocking_checks(result)
    )
    if not result.success or outcome.failed_checks:
        raise RangeRunError(_failure_message(result, outcome, instance))
    return outcome


def _failed_blocking_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    failed = []
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        if not evaluation.passed and evaluation.blocking:
            failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    return failed


def _failure_message(
    result: dg.ExecuteInProcessResult, outcome: RunOutcome, instance: dg.DagsterInstance
) -> str:
    lines = [f"run {outcome.run_id} ({outcome.job}, {outcome.partitions}) failed"]
    if outcome.failed_checks:
        lines.append("blocking checks failed: " + ", ".join(outcome.failed_checks))
    lines += step_errors(result, instance)
    return "\n".join(lines)


def step_errors(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    """What went wrong in each failed step, a line each: errors logged beside the step's own
    (e.g. the traceback a remote job sent through Pipes, which is in the run's event log, not
    among the events the execution returned), then the step's own innermost error."""
    lines = []
    for record in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event and event.step_key and event.engine_event_data.error:
            error = event.engine_event_data.error.to_string().strip()
            lines.append(f"step {event.step_key}: {event.message}: {error}")
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            # Dagster wraps the step's own error: the innermost cause is what went wrong.
            while error is not None and error.cause is not None:
                error = error.cause
            lines.append(f"step {event.step_key}: {error.message.strip() if error else 'failed'}")
    return lines
