"""Data-quality checks, computed inside the Spark step on what actually landed in the lake.

Results name counts and at most a few example keys, never whole rows: some columns hold
personal data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rental_platform.tables import REJECT_REASON, Table

EXAMPLES = 5


@dataclass(frozen=True)
class CheckResult:
    table: str
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def primary_key_unique(df: DataFrame, table: Table) -> CheckResult:
    """Key columns are never null and no key appears twice (one pass; examples only on failure)."""
    key = list(table.key)
    null_key = (
        F.greatest(*[F.col(k).isNull() for k in key]) if len(key) > 1 else F.col(key[0]).isNull()
    )
    per_key = df.groupBy(*key).agg(F.count(F.lit(1)).alias("_rows"), F.max(null_key).alias("_null"))
    totals = per_key.agg(
        F.sum(F.when(F.col("_null"), F.col("_rows")).otherwise(0)).alias("nulls"),
        F.sum(F.when(~F.col("_null") & (F.col("_rows") > 1), 1).otherwise(0)).alias("duplicates"),
    ).collect()[0]
    nulls, duplicate_count = totals["nulls"] or 0, totals["duplicates"] or 0
    passed = nulls == 0 and duplicate_count == 0
    examples = (
        []
        if passed
        else [
            ", ".join(str(value) for value in row)
            for row in per_key.where(~F.col("_null") & (F.col("_rows") > 1))
            .select(*key)
            .limit(EXAMPLES)
            .collect()
        ]
    )
    return CheckResult(
        table.id,
        "primary_key_unique",
        passed,
        f"({', '.join(key)}) is unique and not null"
        if passed
        else f"{duplicate_count} duplicated keys and {nulls} rows with a null key",
        {"null_keys": nulls, "duplicated_keys": duplicate_count, "example_keys": examples},
    )


def row_count_matches_source(
    table: Table, source: dict[str, int], lake: dict[str, int]
) -> CheckResult:
    """Per period (or `undated`, or `all` for snapshots): the lake holds what the source held."""
    mismatches = {
        period: {"source": source.get(period, 0), "lake": lake.get(period, 0)}
        for period in sorted(set(source) | set(lake))
        if source.get(period, 0) != lake.get(period, 0)
    }
    total_source, total_lake = sum(source.values()), sum(lake.values())
    return CheckResult(
        table.id,
        "row_count_matches_source",
        not mismatches,
        f"{total_lake} rows extracted, {total_source} in the source"
        + (f"; {len(mismatches)} periods differ" if mismatches else ""),
        {
            "source_rows": total_source,
            "lake_rows": total_lake,
            "mismatched_periods": dict(list(mismatches.items())[:EXAMPLES]),
        },
    )


def rows_accounted_for(
    curated: Table, raw_rows: int, curated_rows: int, quarantine: DataFrame, collapsed_rows: int
) -> CheckResult:
    """raw = curated + quarantine + collapsed: no row is lost or invented by curation."""
    by_reason = {
        row[REJECT_REASON.name]: row["count"]
        for row in quarantine.groupBy(REJECT_REASON.name).count().collect()
    }
    quarantined = sum(by_reason.values())
    accounted = curated_rows + quarantined + collapsed_rows
    return CheckResult(
        curated.id,
        "rows_accounted_for",
        accounted == raw_rows,
        f"raw {raw_rows} = curated {curated_rows} + quarantined {quarantined} "
        f"+ collapsed {collapsed_rows}"
        if accounted == raw_rows
        else f"raw {raw_rows} != curated {curated_rows} + quarantined {quarantined} "
        f"+ collapsed {collapsed_rows}",
        {
            "raw_rows": raw_rows,
            "curated_rows": curated_rows,
            "quarantined_rows": quarantined,
            "collapsed_rows": collapsed_rows,
            "quarantined_by_reason": dict(sorted(by_reason.items())),
        },
    )


def counts_by_day(df: DataFrame, column: str) -> dict[str, int]:
    rows = df.groupBy(F.to_date(F.col(column)).alias("day")).count().collect()
    return {_label(row["day"]): row["count"] for row in rows}


def _label(day: date | None) -> str:
    return "undated" if day is None else day.isoformat()
