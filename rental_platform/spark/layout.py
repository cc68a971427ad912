"""How a table's partitions are named, and which periods a window covers.

Pure Python (no Spark, no Dagster), shared by the Spark steps and the Dagster side.

Layout: each write is a version folder `{root}/{layer}/{table}/{version}/`, holding
`{dt|week|month}=YYYY-MM-DD/` folders for a partitioned table, or the files of a snapshot (or of
a daily table's rows whose day is null: they belong to no day, see kpis.md). Which version of
each partition is current is the lake's commit log's to say (`manifest.py`), not the folders'.
"""

from __future__ import annotations

from datetime import date, timedelta

from rental_platform.tables import Grain

PERIOD_PREFIX = {Grain.DAILY: "dt", Grain.WEEKLY: "week", Grain.MONTHLY: "month"}


def period_label(grain: Grain, period: date) -> str:
    """The name of a partition's folder in a version folder (Hive style)."""
    return f"{PERIOD_PREFIX[grain]}={period.isoformat()}"


def parse_period_key(key: str) -> date | None:
    """The period of a partition key (YYYY-MM-DD), or None for `undated` and `all`."""
    try:
        return date.fromisoformat(key)
    except ValueError:
        return None


def period_start(grain: Grain, day: date) -> date:
    """The first day of the period that contains `day` (weeks start on Monday)."""
    if grain is Grain.WEEKLY:
        return day - timedelta(days=day.weekday())
    if grain is Grain.MONTHLY:
        return day.replace(day=1)
    return day


def next_period(grain: Grain, start: date) -> date:
    if grain is Grain.WEEKLY:
        return start + timedelta(days=7)
    if grain is Grain.MONTHLY:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def periods(grain: Grain, start: date, end: date) -> list[date]:
    """Starts of the periods that overlap [start, end)."""
    result = []
    current = period_start(grain, start)
    while current < end:
        result.append(current)
        current = next_period(grain, current)
    return result
