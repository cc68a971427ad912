"""Headless materialisation of a date range, through a Dagster instance (so the UI shows it).

One run per partition grain, in dependency order, each over the whole range of its
partitions (the multi-assets run a single Spark step for a range), stopping at the first
run that fails or whose blocking checks fail.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date

import dagster as dg

from rental_platform.jobs import GRAIN_JOBS, GrainJob
from rental_platform.spark.layout import period_start
from rental_platform.tables import Grain

# Step progress at INFO on the console; Dagster's DEBUG events stay in the instance's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class RangeRunError(RuntimeError):
    """A run of the range failed; the message says which and why."""


@dataclass
class RunOutcome:
    job: str
    run_id: str
    partitions: str
    failed_checks: list[str] = field(default_factory=list)


def partition_range(job: GrainJob, start: date, end: date) -> tuple[str, str] | None:
    """The first and last partition keys of the job's grain that overlap [start, end]."""
    if job.grain is Grain.SNAPSHOT:
        return None
    return period_start(job.grain, start).isoformat(), period_start(job.grain, end).isoformat()


def materialize_range(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    start: date,
    end: date,
    grains: Collection[Grain] = tuple(Grain),
) -> list[RunOutcome]:
    """Materialise every asset (of the given grains) for every partition overlapping
    [start, end] (inclusive)."""
    if end < start:
        raise RangeRunError(f"--end {end} is before --start {start}")
    # Refuse a range some grain cannot cover before launching anything.
    ranges = [(job, partition_range(job, start, end)) for job in GRAIN_JOBS if job.grain in grains]
    for job, keys in ranges:
        _check_partitions_exist(defs, job, keys)
    outcomes = []
    for job, keys in ranges:
        tags = (
            {
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[1],
            }
            if keys
            else {}
        )
        result = defs.resolve_job_def(job.name).execute_in_process(
            run_config=QUIET, instance=instance, tags=tags, raise_on_error=False
        )
        outcome = RunOutcome(
            job.name,
            result.run_id,
            f"{keys[0]}..{keys[1]}" if keys else "unpartitioned",
            _failed_blocking_checks(result),
        )
        outcomes.append(outcome)
        if not result.success or outcome.failed_checks:
            raise RangeRunError(_failure_message(result, outcome))
    return outcomes


def _check_partitions_exist(defs: dg.Definitions, job: GrainJob, keys: tuple[str, str] | None):
    if keys is None:
        return
    partitions_def = defs.resolve_job_def(job.name).partitions_def
    existing = set(partitions_def.get_partition_keys())
    for key in keys:
        if key not in existing:
            first, last = (
                partitions_def.get_first_partition_key(),
                partitions_def.get_last_partition_key(),
            )
            raise RangeRunError(
                f"{job.name}: partition {key} does not exist; partitions run from {first} to "
                f"{last} (RENTAL_PARTITIONS_START sets the first day; a day exists once it is over)"
            )


def _failed_blocking_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    failed = []
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        if not evaluation.passed and evaluation.blocking:
            failed.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
    return failed


def _failure_message(result: dg.ExecuteInProcessResult, outcome: RunOutcome) -> str:
    lines = [f"run {outcome.run_id} ({outcome.job}, {outcome.partitions}) failed"]
    if outcome.failed_checks:
        lines.append("blocking checks failed: " + ", ".join(outcome.failed_checks))
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            # Dagster wraps the step's own error: the innermost cause is what went wrong.
            while error is not None and error.cause is not None:
                error = error.cause
            lines.append(f"step {event.step_key}: {error.message.strip() if error else 'failed'}")
    return "\n".join(lines)
