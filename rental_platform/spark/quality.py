"""Data-quality checks, computed inside the Spark step on what actually landed in the lake.

Results name counts and at most a few example keys, never whole rows: some columns hold
personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from rental_platform import tables
from rental_platform.contract import (
    ACCOUNTED,
    DISTINCT_ROWS,
    FRESHNESS,
    LISTINGS_EXIST,
    PRIMARY_KEY,
    QUARANTINE_SHARE,
    ROW_COUNT,
    SCHEMA,
    SOURCE_SCHEMA,
    VALUES,
    VERSIONS,
    CheckResult,
    checks_for,
)
from rental_platform.spark.history import version_of_booking
from rental_platform.spark.lake import period_of, spark_type
from rental_platform.spark.manifest import UNDATED, WHOLE
from rental_platform.tables import REJECT_REASON, Grain, Table

EXAMPLES = 5


def row_checks(df: DataFrame, table: Table) -> tuple[int, list[CheckResult]]:
    """The rows of a landed table, and its row-level checks: primary_key_unique (or, for a
    table without a key, no_duplicate_rows) and, where the catalogue has value rules,
    values_in_range. One aggregation computes them all.

    Rows are grouped by a 64-bit hash of their key, not by the key: a shuffle of one long per
    row instead of the key's columns (five, for views). Equal keys have equal hashes, so no
    shared hash means no duplicate; only if some hash is shared are the keys themselves
    grouped, to tell a duplicate from a collision and fetch examples."""
    key = list(table.key or table.distinct)
    rules = {c.name: c.valid for c in table.columns if c.valid}
    per_hash = (
        df.select(
            F.xxhash64(*key).alias("_hash"),
            (_null_key(key) if table.key else F.lit(False)).alias("_null"),
            *[
                F.when(F.col(name).isNotNull() & ~F.expr(rule), 1).otherwise(0).alias(name)
                for name, rule in rules.items()
            ],
        )
        .groupBy("_hash", "_null")
        .agg(F.count(F.lit(1)).alias("_rows"), *[F.sum(name).alias(name) for name in rules])
    )
    totals = per_hash.agg(
        F.sum("_rows").alias("_rows"),
        F.sum(F.when(F.col("_null"), F.col("_rows")).otherwise(0)).alias("_nulls"),
        F.sum(F.when(~F.col("_null") & (F.col("_rows") > 1), 1).otherwise(0)).alias("_shared"),
        *[F.sum(name).alias(name) for name in rules],
    ).collect()[0]
    results = [_key_result(table, df, totals["_nulls"] or 0, bool(totals["_shared"]))]
    if VALUES in checks_for(table):
        violations = {name: totals[name] for name in rules if totals[name]}
        results.append(_values_result(table, rules, violations))
    return totals["_rows"] or 0, results


def _null_key(key: list[str]) -> Column:
    """True where any column of the key is null."""
    return F.greatest(*[F.col(k).isNull() for k in key], F.lit(False))


def _key_result(table: Table, df: DataFrame, nulls: int, hash_shared: bool) -> CheckResult:
    """primary_key_unique; for a table without a key, no_duplicate_rows, where a null is a
    value like any other (Spark groups nulls together)."""
    key = list(table.key or table.distinct)
    unique = ~_null_key(key) if table.key else F.lit(True)
    duplicated = (
        df.groupBy(*key).count().where(unique & (F.col("count") > 1)).select(*key)
        if hash_shared
        else None
    )
    duplicate_count = duplicated.count() if duplicated is not None else 0
    passed = nulls == 0 and duplicate_count == 0
    examples = (
        [", ".join(str(value) for value in row) for row in duplicated.limit(EXAMPLES).collect()]
        if duplicate_count
        else []
    )
    if not table.key:
        return CheckResult(
            table.id,
            DISTINCT_ROWS.name,
            passed,
            "no two rows are equal" if passed else f"{duplicate_count} rows occur more than once",
            {"duplicated_rows": duplicate_count, "example_rows": examples},
        )
    return CheckResult(
        table.id,
        PRIMARY_KEY.name,
        passed,
        f"({', '.join(key)}) is unique and not null"
        if passed
        else f"{duplicate_count} duplicated keys and {nulls} rows with a null key",
        {"null_keys": nulls, "duplicated_keys": duplicate_count, "example_keys": examples},
    )


def _values_result(table: Table, rules: dict[str, str], violations: dict[str, int]) -> CheckResult:
    """Each column's `valid` predicate holds for every non-null value."""
    return CheckResult(
        table.id,
        VALUES.name,
        not violations,
        "all values in range"
        if not violations
        else "; ".join(f"{n} rows break {rules[name]}" for name, n in violations.items()),
        {"rules": rules, "violations": violations},
    )


def row_count_matches_source(
    table: Table, source: dict[str, int], lake: dict[str, int]
) -> CheckResult:
    """Per period (or `undated`, or `all` for snapshots): the lake holds what the source held.
    Each day is judged on its own; rows with no day that differ fail every day, whose commit
    they hold back too."""
    mismatches = {
        period: {"source": source.get(period, 0), "lake": lake.get(period, 0)}
        for period in sorted(set(source) | set(lake))
        if source.get(period, 0) != lake.get(period, 0)
    }
    total_source, total_lake = sum(source.values()), sum(lake.values())
    undated = mismatches.get(UNDATED)
    days = sorted((set(source) | set(lake)) - {UNDATED, WHOLE})
    return CheckResult(
        table.id,
        ROW_COUNT.name,
        not mismatches,
        f"{total_lake} rows extracted, {total_source} in the source"
        + (f"; {len(mismatches)} periods differ" if mismatches else ""),
        {
            "source_rows": total_source,
            "lake_rows": total_lake,
            "mismatched_periods": dict(list(mismatches.items())[:EXAMPLES]),
        },
        {day: _day_count(source.get(day, 0), lake.get(day, 0), undated) for day in days},
    )


def _day_count(source: int, lake: int, undated: dict[str, int] | None) -> dict[str, Any]:
    outside = (
        f"; the rows with no day differ: {undated['lake']} extracted, {undated['source']} in "
        "the source"
        if undated
        else ""
    )
    return {
        "passed": source == lake and not undated,
        "description": f"{lake} rows extracted, {source} in the source{outside}",
        "metadata": {"source_rows": source, "lake_rows": lake}
        | ({"undated_rows": undated} if undated else {}),
    }


def quarantined_by_partition(quarantine: DataFrame, table: Table) -> dict[str, dict[str, int]]:
    """A quarantine's rows by partition key (`undated` for rows with no day, `all` for a
    snapshot) and reason, in one pass: the accounting sums it, each partition keeps its own."""
    period = period_of(table) if table.grain is not Grain.SNAPSHOT else F.lit(None)
    none_key = UNDATED if table.grain is not Grain.SNAPSHOT else WHOLE
    by_partition: dict[str, dict[str, int]] = {}
    for row in quarantine.groupBy(period.alias("_period"), REJECT_REASON.name).count().collect():
        key = row["_period"].isoformat() if row["_period"] is not None else none_key
        by_partition.setdefault(key, {})[row[REJECT_REASON.name]] = row["count"]
    return by_partition


@dataclass(frozen=True)
class Curation:
    """What curating a set of raw rows made of them. Where each went: curated, quarantined (by
    reason), or collapsed into an equal row."""

    raw: int
    curated: int
    quarantined_by_reason: dict[str, int]
    collapsed: int

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    @property
    def accounted(self) -> bool:
        return self.raw == self.curated + self.quarantined + self.collapsed

    def equation(self) -> str:
        sign = "=" if self.accounted else "!="
        return (
            f"raw {self.raw} {sign} curated {self.curated} + quarantined {self.quarantined} "
            f"+ collapsed {self.collapsed}"
        )

    def counts(self, prefix: str = "") -> dict[str, Any]:
        return {
            f"{prefix}raw_rows": self.raw,
            f"{prefix}curated_rows": self.curated,
            f"{prefix}quarantined_rows": self.quarantined,
            f"{prefix}collapsed_rows": self.collapsed,
            f"{prefix}quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
        }


def rows_accounted_for(
    curated: Table, window: Curation, undated: Curation | None = None
) -> CheckResult:
    """raw = curated + quarantine + collapsed: no row is lost or invented by curation, in the
    window's days and in the rows with no day (`undated`, when the step curated them)."""
    passed = window.accounted and (undated is None or undated.accounted)
    return CheckResult(
        curated.id,
        ACCOUNTED.name,
        passed,
        window.equation() + (f"; undated: {undated.equation()}" if undated else ""),
        window.counts() | (undated.counts("undated_") if undated else {}),
    )


def counts_by_day(df: DataFrame, column: str) -> dict[str, int]:
    rows = df.groupBy(F.to_date(F.col(column)).alias("day")).count().collect()
    return {_label(row["day"]): row["count"] for row in rows}


def _label(day: date | None) -> str:
    return "undated" if day is None else day.isoformat()


# The MySQL types each catalogue type is read from (spec/source_schema.sql).
SOURCE_TYPES = {
    "bigint": {"bigint"},
    "int": {"int"},
    "string": {"varchar", "char", "text", "tinytext", "mediumtext", "longtext"},
    "timestamp": {"datetime", "timestamp"},
    "date": {"date"},
    "boolean": {"tinyint", "bit", "boolean"},
}


def source_schema_unchanged(table: Table, found: dict[str, Any]) -> CheckResult:
    """The source table against the columns the platform reads from it: each must be there,
    with its contract's type (decimals with their precision and scale). `found`: name ->
    extract.SourceColumn."""
    read = [c for c in table.columns if c.name != tables.EXTRACTED_AT.name]
    missing = [c.name for c in read if c.name not in found]
    retyped = [
        f"{c.name}: {_described(found[c.name])}, the contract has {c.type}"
        for c in read
        if c.name in found and not _readable_as(found[c.name], c.type)
    ]
    new = sorted(set(found) - {c.name for c in read})
    problems = [f"column {name} is gone" for name in missing] + [
        f"column {text}" for text in retyped
    ]
    return CheckResult(
        table.id,
        SOURCE_SCHEMA.name,
        not problems,
        f"source table {table.name}: "
        + ("; ".join(problems) if problems else "as the contract has it")
        + (f"; new columns not read: {', '.join(new)}" if new else ""),
        {"missing_columns": missing, "retyped_columns": retyped, "new_columns": new},
    )


def _readable_as(column: Any, catalogue_type: str) -> bool:
    if catalogue_type.startswith("decimal"):
        precision, scale = (int(n) for n in catalogue_type[8:-1].split(","))
        return column.data_type == "decimal" and (column.precision, column.scale) == (
            precision,
            scale,
        )
    return column.data_type in SOURCE_TYPES[catalogue_type]


def _described(column: Any) -> str:
    if column.data_type == "decimal":
        return f"decimal({column.precision},{column.scale})"
    return column.data_type


def schema_matches(table: Table, stored: T.StructType | None) -> CheckResult:
    """The Parquet files as written hold the catalogue's columns, in order, with its types.
    `stored` is None when the step wrote no file (an empty window): nothing to compare."""
    want = {c.name: spark_type(c.type).simpleString() for c in table.columns}
    have = {f.name: f.dataType.simpleString() for f in stored.fields} if stored else want
    differences = [
        f"{name}: catalogue {kind}, stored {have.get(name, 'absent')}"
        for name, kind in want.items()
        if have.get(name) != kind
    ] + [f"{name}: not in the catalogue" for name in have if name not in want]
    if not differences and list(have) != list(want):
        differences.append("columns stored in another order")
    return CheckResult(
        table.id,
        SCHEMA.name,
        not differences,
        "columns and types as in the catalogue"
        if not differences
        else f"{len(differences)} differences from the catalogue",
        {"differences": differences[:EXAMPLES]},
    )


def quarantine_share(curated: Table, window: Curation, limit: float) -> CheckResult:
    """The share of the window's raw rows rejected stays under the limit: a jump means a broken
    source. The window is its days, as `rows_accounted_for` counts them: the rows with no day
    are a backlog of their own, which a one-day run must not be judged on."""
    share = window.quarantined / window.raw if window.raw else 0.0
    return CheckResult(
        curated.id,
        QUARANTINE_SHARE.name,
        share <= limit,
        f"{window.quarantined} of {window.raw} rows quarantined ({share:.2%}, limit {limit:.2%})",
        {
            "quarantine_share": round(share, 6),
            "limit": limit,
            "raw_rows": window.raw,
            "quarantined_rows": window.quarantined,
            "quarantined_by_reason": dict(sorted(window.quarantined_by_reason.items())),
        },
    )


def listings_exist(bookings: DataFrame, history: DataFrame, days: list[date]) -> CheckResult:
    """Every curated booking points at a listing version valid on its booking's day (the
    listings may have been re-curated since the bookings were); each of `days` on its own."""
    orphans = bookings.join(
        F.broadcast(history), version_of_booking(bookings, history), "left_anti"
    )
    by_day = {
        row["day"].isoformat(): (row["orphans"], [str(i) for i in row["examples"]])
        for row in orphans.groupBy(F.to_date("booking_date").alias("day"))
        .agg(
            F.count(F.lit(1)).alias("orphans"),
            F.slice(F.sort_array(F.collect_list("booking_id")), 1, EXAMPLES).alias("examples"),
        )
        .collect()
    }
    count = sum(n for n, _ in by_day.values())
    examples = sorted((i for _, ids in by_day.values() for i in ids), key=int)[:EXAMPLES]
    return CheckResult(
        tables.CURATED_BOOKINGS.id,
        LISTINGS_EXIST.name,
        count == 0,
        _orphans(count),
        {"orphan_bookings": count, "example_booking_ids": examples},
        {day.isoformat(): _day_orphans(*by_day.get(day.isoformat(), (0, []))) for day in days},
    )


def _day_orphans(count: int, examples: list[str]) -> dict[str, Any]:
    return {
        "passed": count == 0,
        "description": _orphans(count),
        "metadata": {"orphan_bookings": count, "example_booking_ids": examples},
    }


def _orphans(count: int) -> str:
    if count == 0:
        return "every booking's listing has a version valid on its day"
    return f"{count} bookings of listings with no version valid on their day"


def versions_disjoint(history: DataFrame) -> CheckResult:
    """A listing's versions must not overlap, or a period would see two of them: each starts
    where its predecessor ended or later, ends after it starts, and only the last is open."""
    ordered = Window.partitionBy("id").orderBy("valid_from")
    bad = (
        history.withColumn("_next_from", F.lead("valid_from").over(ordered))
        .where(
            (F.col("valid_to").isNotNull() & (F.col("valid_to") <= F.col("valid_from")))
            | (F.col("_next_from").isNotNull() & F.col("valid_to").isNull())
            | (F.col("_next_from") < F.col("valid_to"))
        )
        .select("id")
        .distinct()
    )
    count = bad.count()
    examples = [str(r["id"]) for r in bad.limit(EXAMPLES).collect()] if count else []
    return CheckResult(
        tables.CURATED_LISTINGS_HISTORY.id,
        VERSIONS.name,
        count == 0,
        "versions are disjoint" if count == 0 else f"{count} listings have overlapping versions",
        {"listings_with_overlaps": count, "example_ids": examples},
    )


def freshness(table: Table, newest: date | None, now: datetime, hours: float) -> CheckResult:
    """The newest day partition ends no more than `hours` before now."""
    if newest is None:
        return CheckResult(table.id, FRESHNESS.name, False, "no partition yet", {})
    age = now - datetime.combine(newest + timedelta(days=1), datetime.min.time(), now.tzinfo)
    age_hours = round(age.total_seconds() / 3600, 1)
    return CheckResult(
        table.id,
        FRESHNESS.name,
        age_hours <= hours,
        f"newest partition {newest.isoformat()} ended {_duration(age_hours)} ago "
        f"(limit {_duration(hours)})",
        {"newest_partition": newest.isoformat(), "age_hours": age_hours, "limit_hours": hours},
    )


def _duration(hours: float) -> str:
    """Hours as a person reads them: `6 h`, `48 h`, `3.2 days`, `609 days`."""
    if hours <= 48:
        return f"{hours:g} h"
    days = hours / 24
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"
