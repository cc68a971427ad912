"""The nightly cycle, and what a range run or an audit does the same way (design.md, "How data
flows"): which runs, in which order, for which partitions.

1. A `snapshots` run takes the listings snapshot stamped with the as-of day, applies it to the
   listing history, and compares the source with the lake (`raw/source_changes`): its plan says
   which days to re-extract and which to re-curate.
2. `daily` runs re-extract and re-curate exactly those days, one run per stretch of consecutive
   days that need the same tables.
3. Every weekly and monthly KPI partition that reads a day those runs touched is recomputed
   and published: by the automation sensor when the daemon runs, by the CLI otherwise, from the
   same partition mappings (`assets/presentation.py`). So is every partition computed under
   other KPI definitions than the deployed ones: the sensor sees the assets' code version
   change, the CLI the digest each partition records in the lake.

The three modes differ only in the days compared and the days extracted whatever their
fingerprints say: `nightly` compares the mutable horizon and extracts day D; `audit` compares
every day; `range` extracts every day of its range (`cycle_tags.py`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.reads import INPUTS
from rental_platform.partitions import PlatformPartitions
from rental_platform.spark import code_version
from rental_platform.spark.layout import next_period, period_start
from rental_platform.spark.layout import periods as layout_periods
from rental_platform.spark.manifest import UNDATED, LakeState
from rental_platform.tables import Grain, Layer

# On a daily run: the snapshots run whose plan it carries out (which days of its range).
PLAN_TAG = "rental/plan"
# On a KPI run: the partitions of its range it recomputes, when not all of them.
PERIODS_TAG = "rental/periods"
RANGE_TAG = "rental/range"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# The asset whose materialisation carries a run's plan (assets/raw.py).
SOURCE_CHANGES = dg.AssetKey(["raw", "source_changes"])


@dataclass(frozen=True)
class PartitionRun:
    """One run of a job for a stretch of partitions, of some of its assets."""

    job: str
    assets: tuple[dg.AssetKey, ...]
    first: str
    last: str
    plan: str = ""  # the snapshots run whose plan a daily run carries out
    # The partitions of the range a KPI run recomputes, when not all of them.
    periods: tuple[str, ...] = ()

    def tags(self) -> dict[str, str]:
        # Dagster's own range tags are system tags, which the UI's run list hides: the range
        # is also shown as a tag of the platform's.
        tags = {RANGE_START: self.first, RANGE_END: self.last, RANGE_TAG: self.label}
        if self.plan:
            tags[PLAN_TAG] = self.plan
        if self.periods:
            tags[PERIODS_TAG] = ",".join(self.periods)
        return tags

    @property
    def label(self) -> str:
        return f"{self.first}..{self.last}"


# What a day of the plan needs run: re-extracting a raw table re-curates it too.
_EXTRACTED = {
    tables.RAW_BOOKINGS.id: (
        tables.RAW_BOOKINGS,
        tables.CURATED_BOOKINGS,
        tables.QUARANTINE_BOOKINGS,
    ),
    tables.RAW_USER_VIEWING.id: (
        tables.RAW_USER_VIEWING,
        tables.CURATED_USER_VIEWING,
        tables.QUARANTINE_USER_VIEWING,
    ),
}
_CURATED = {
    tables.CURATED_BOOKINGS.id: (tables.CURATED_BOOKINGS, tables.QUARANTINE_BOOKINGS),
    tables.CURATED_USER_VIEWING.id: (tables.CURATED_USER_VIEWING, tables.QUARANTINE_USER_VIEWING),
}
DAILY_JOB, WEEKLY_JOB, MONTHLY_JOB = "daily", "weekly_kpis", "monthly_kpis"


def planned_days(plan: Mapping[str, Any]) -> dict[str, tuple[date, ...]]:
    """Per raw table, the days a plan re-extracts; per curated (and quarantine) table, the
    days it re-curates: those re-extracted, and those to re-curate only."""
    days: dict[str, set[date]] = defaultdict(set)
    for name, chosen in (("extract", _EXTRACTED), ("curate", _CURATED)):
        for table_id, planned in plan.get(name, {}).items():
            for table in chosen[table_id]:
                days[table.id] |= {date.fromisoformat(d) for d in planned if d != UNDATED}
    return {table_id: tuple(sorted(chosen)) for table_id, chosen in days.items()}


def daily_runs(plan: Mapping[str, Any], plan_run: str) -> list[PartitionRun]:
    """The daily run a plan (raw/source_changes of run `plan_run`) asks for: one run over the
    days from the first planned to the last, of every table some day needs; its steps work on
    each table's planned days only (the run's tag names the plan). One run rather than one
    per stretch of days: a run costs seconds, whatever it does."""
    days = planned_days(plan)
    chosen = [t for t in tables.ALL_TABLES if days.get(t.id)]
    if not chosen:
        return []
    first = min(d for t in chosen for d in days[t.id])
    last = max(d for t in chosen for d in days[t.id])
    keys = tuple(asset_key(t) for t in chosen)
    return [PartitionRun(DAILY_JOB, keys, first.isoformat(), last.isoformat(), plan_run)]


def all_planned_days(plan: Mapping[str, Any]) -> set[date]:
    """Every day a plan re-extracts or re-curates: the days whose KPI periods go stale."""
    return {day for chosen in planned_days(plan).values() for day in chosen}


def plan_of_run(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any] | None:
    """The plan a run's `raw/source_changes` materialisation carries, if it made one."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SOURCE_CHANGES), limit=50
    ).records
    for record in records:
        if record.run_id == run_id:
            return record.asset_materialization.metadata["plan"].value
    return None


def stale_kpi_partitions(
    partitions: PlatformPartitions, days: Iterable[date], latest: date
) -> dict[Grain, set[str]]:
    """The weekly and monthly partitions that read any of `days`, through the same partition
    mappings the automation sensor follows, that start on or before the latest day extracted."""
    subset = partitions.daily.subset_with_partition_keys(
        [day.isoformat() for day in days if day >= partitions.first_day]
    )
    stale: dict[Grain, set[str]] = defaultdict(set)
    for table in tables.tables_of(Layer.PRESENTATION):
        downstream = partitions.of(table.grain)
        for dependency in INPUTS[table.name]:
            if isinstance(dependency, dg.AssetDep) and dependency.partition_mapping is not None:
                mapped = dependency.partition_mapping.get_downstream_partitions_for_partitions(
                    subset, partitions.daily, downstream
                )
                stale[table.grain] |= {
                    key for key in mapped.get_partition_keys() if date.fromisoformat(key) <= latest
                }
    return stale


def kpis_of_other_definitions(
    partitions: PlatformPartitions, state: LakeState, latest: date
) -> dict[Grain, set[str]]:
    """The weekly and monthly partitions the lake holds as computed under other KPI definitions
    than the deployed ones (or before partitions recorded theirs), of any age, that start on or
    before the latest day extracted: a full recompute would give other figures."""
    deployed = code_version.kpis_version()
    stale: dict[Grain, set[str]] = defaultdict(set)
    for table in tables.tables_of(Layer.PRESENTATION):
        first = period_start(table.grain, partitions.first_day)
        for key, partition in state.table(table.id).partitions.items():
            if (
                first <= date.fromisoformat(key) <= latest
                and partition.facts.get(code_version.KPIS) != deployed
            ):
                stale[table.grain].add(key)
    return stale


def kpi_runs(partition_keys: Mapping[Grain, Iterable[str]]) -> list[PartitionRun]:
    """One run of the weekly, one of the monthly KPIs, over their first to last stale
    partition; it recomputes the stale ones only (its tag lists them when they have gaps)."""
    runs = []
    for grain, job in ((Grain.WEEKLY, WEEKLY_JOB), (Grain.MONTHLY, MONTHLY_JOB)):
        keys = sorted(set(partition_keys.get(grain, ())))
        if not keys:
            continue
        assets = tuple(asset_key(t) for t in tables.tables_of(Layer.PRESENTATION, grain))
        first, last = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
        whole = len(layout_periods(grain, first, next_period(grain, last))) == len(keys)
        runs.append(
            PartitionRun(job, assets, keys[0], keys[-1], periods=() if whole else tuple(keys))
        )
    return runs


def periods_of_run(tags: Mapping[str, str]) -> tuple[date, ...] | None:
    """The partitions a KPI run recomputes, if its tag lists them (else all of its range)."""
    listed = tags.get(PERIODS_TAG)
    return tuple(date.fromisoformat(key) for key in listed.split(",")) if listed else None
