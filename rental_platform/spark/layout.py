"""Where a table's partitions live in the lake, and which periods a window covers.

Pure Python (no Spark, no Dagster): the Spark steps write by it and the warehouse publisher
reads by it, so both always agree on paths.

Layout: `{root}/{layer}/{table}/{dt|week|month}=YYYY-MM-DD/` for partitioned tables,
`{root}/{layer}/{table}/` for snapshots, and `{root}/{layer}/{table}_undated/` for the rows of a
daily table whose partition column is null (they belong to no day; see kpis.md).
"""

from __future__ import annotations

from datetime import date, timedelta

from rental_platform.tables import Grain, Table

PERIOD_PREFIX = {Grain.DAILY: "dt", Grain.WEEKLY: "week", Grain.MONTHLY: "month"}


def table_path(root: str, table: Table) -> str:
    return f"{root.rstrip('/')}/{table.layer}/{table.name}"


def undated_path(root: str, table: Table) -> str:
    return f"{table_path(root, table)}_undated"


def period_label(grain: Grain, period: date) -> str:
    return f"{PERIOD_PREFIX[grain]}={period.isoformat()}"


def period_path(root: str, table: Table, period: date) -> str:
    return f"{table_path(root, table)}/{period_label(table.grain, period)}"


def parse_period_label(grain: Grain, label: str) -> date | None:
    """The period of a partition folder name, or None for anything else (staging, trash)."""
    prefix = PERIOD_PREFIX[grain] + "="
    if not label.startswith(prefix):
        return None
    try:
        return date.fromisoformat(label.removeprefix(prefix))
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
