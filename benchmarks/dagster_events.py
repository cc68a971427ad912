"""What a single-run backfill costs Dagster itself, without Spark (issue 6's notes).

    python -m benchmarks.dagster_events            # or: make bench-events

A year-long single-run backfill records, per asset and per day, one "materialisation planned"
event before the run starts, and one materialisation and one check evaluation per check after;
a daily multi-asset of six tables with a check each makes that 6,570 events. This times a
do-nothing multi-asset of six daily tables with partitioned checks,
run like `rental-platform run` runs a range (`execute_in_process` with partition-range tags),
on a fresh instance of each kind:
- Dagster's own SQLite storage, one transaction per event;
- the platform's (the repository's dagster.yaml): the same files, a batch of events in one
  transaction, check evaluations included (rental_platform/local/event_log.py);
- Dagster's own with `DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS` (one planned event per
  asset; the platform does not set it: Dagster then cannot show a failed single-run backfill's
  partitions as failed, nor its running ones as in progress, which automation relies on);
- PostgreSQL (the local server), as dagster-postgres stores events one by one, and with the
  production instance's storage (deploy/dagster.yaml: a batch of events in one transaction,
  rental_platform/postgres_storage.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
import yaml

from rental_platform_tests.harness import (
    LOCAL_INSTANCE,
    dagster_postgres_database,
    postgres_instance_config,
)

DAYS = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_date="2026-01-01")
TABLES = [f"table_{i}" for i in range(6)]
SUBSET_PLANNED = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
# Set in the child: the instance's dagster.yaml, "local" or "production" (the repository's),
# "postgres" (dagster-postgres's own storage); Dagster's default SQLite storage if unset.
INSTANCE = "RENTAL_BENCH_INSTANCE"


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    CHECKS = [dg.AssetCheckSpec("checked", asset=name, partitions_def=DAYS) for name in TABLES]


@dg.multi_asset(
    specs=[dg.AssetSpec(name, partitions_def=DAYS) for name in TABLES],
    check_specs=CHECKS,
    partitions_def=DAYS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def six_daily_tables(context):
    """As a platform step does: a materialisation, and a check evaluation, per partition."""
    for name in TABLES:
        for day in context.partition_keys:
            context.add_asset_metadata({"rows": 1}, asset_key=name, partition_key=day)
        yield dg.MaterializeResult(asset_key=name)
    for spec in CHECKS:
        for day in context.partition_keys:
            yield dg.AssetCheckEvaluation(
                asset_key=spec.asset_key, check_name=spec.name, passed=True, partition=day
            )
        yield dg.Output(
            None, output_name=context.assets_def.get_output_name_for_asset_check_key(spec.key)
        )


def time_one_year(home: Path) -> tuple[float, float]:
    """Seconds from creating the run to its start (planned events), and from its start until
    its events are stored: the run's end waits for them (the platform's event logs store them
    in a thread of their own), while its end event's time is taken before."""
    home.mkdir(parents=True)
    kind = os.environ.get(INSTANCE)
    if kind == "local":
        shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    elif kind in ("production", "postgres"):
        config = postgres_instance_config(batching=kind == "production")
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    else:
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    job = dg.Definitions(
        assets=[six_daily_tables], jobs=[dg.define_asset_job("year", selection=TABLES)]
    ).resolve_job_def("year")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        began = time.time()
        result = job.execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2025-01-01",
                "dagster/asset_partition_range_end": "2025-12-31",
            },
        )
        stored = time.time()
        stats = instance.get_run_stats(result.run_id)
    return stats.start_time - began, stored - stats.start_time


def main() -> int:
    if len(sys.argv) > 1:  # the child: one configuration, in its own process
        planned, run = time_one_year(Path(sys.argv[1]))
        print(f"{planned:.1f} {run:.1f}")
        return 0
    events = 3 * len(TABLES) * 365
    print(
        f"one year, {len(TABLES)} daily tables with a check each: {events:,} planned, "
        "materialisation and check events"
    )
    print(f"{'instance':<58}{'before the run':>16}{'the run, stored':>18}")
    for label, extra in (
        ("SQLite (Dagster's default)", {}),
        ("SQLite, the platform's batching event log", {INSTANCE: "local"}),
        (f"SQLite, {SUBSET_PLANNED}", {SUBSET_PLANNED: "1"}),
        ("PostgreSQL, dagster-postgres one event at a time", {INSTANCE: "postgres"}),
        ("PostgreSQL, the production instance's batching event log", {INSTANCE: "production"}),
    ):
        with (
            tempfile.TemporaryDirectory() as scratch,
            dagster_postgres_database(f"rental_bench_events_{os.getpid()}") as database,
        ):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.dagster_events", f"{scratch}/home"],
                env=os.environ | database | extra,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
        print(f"{label:<58}{out[-2]:>14} s{out[-1]:>16} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
