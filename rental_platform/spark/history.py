"""The listing history of kpis.md ("Listing history"): a slowly changing dimension, type 2.

Each listings snapshot, stamped with its as-of day, is compared with the history's open
versions, listing by listing, on every curated column but `_extracted_at` (null equals null):
- unchanged: the open version stays open;
- changed: the open version closes on the stamp day and a new one starts on it;
- gone from the source, or quarantined now: the open version closes on the stamp day;
- back after a gap: a new version starts on the stamp day (the gap stays);
- curated for the first time (new, or fixed after being quarantined): its first version is
  valid from 0001-01-01, since the listing existed all along.
Closed versions never change, so a past period keeps the listings it saw, except that it learns
of listings the platform only learnt of now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.tables import EXTRACTED_AT

# Where a listing's first version starts: before any period, since it existed all along.
BEGINNING = date(1, 1, 1)
# The columns a version is compared on: every curated listing column but when it was read.
COMPARED = [c for c in tables.CURATED_LISTINGS.column_names if c != EXTRACTED_AT.name]
HISTORY_COLUMNS = tables.CURATED_LISTINGS_HISTORY.column_names


@dataclass
class HistoryUpdate:
    """A snapshot applied: the whole new history, and who changed how (the listings whose
    bookings or periods the change may affect)."""

    history: DataFrame
    # Curated for the first time: their bookings, once unknown_apartment, are re-judged.
    new_ids: list[int]
    # The days those listings were created: the periods that now see them start there.
    new_created_days: list[date]
    # Whose validity changed from the stamp on (gone, or back): bookings from then are re-judged.
    coverage_ids: list[int]
    changed: int


def _beginning() -> Column:
    # Not F.lit(BEGINNING): Python writes year 1 as "1-01-01", which Spark cannot parse.
    return F.to_date(F.lit(BEGINNING.isoformat()))


def _same(old: str, new: str) -> Column:
    """Null-safe equality of every compared column of two aliased frames."""
    return reduce(
        lambda a, b: a & b, [F.col(f"{old}.{c}").eqNullSafe(F.col(f"{new}.{c}")) for c in COMPARED]
    )


def apply_snapshot(history: DataFrame, snapshot: DataFrame, stamp: date) -> HistoryUpdate:
    """The history after the snapshot `snapshot` (curated listings) stamped `stamp`.

    The caller makes sure the stamp is later than every stamp applied before."""
    stamp_value = F.lit(stamp)
    open_versions = history.where(F.col("valid_to").isNull()).alias("old")
    closed_versions = history.where(F.col("valid_to").isNotNull())
    known_ids = history.select(F.col("id").alias("_known")).distinct()
    now = snapshot.alias("new")
    pairs = open_versions.join(now, F.col("old.id") == F.col("new.id"), "full_outer")
    kind = (
        F.when(F.col("new.id").isNull(), "gone")
        .when(F.col("old.id").isNull(), "added")
        .when(_same("old", "new"), "same")
        .otherwise("changed")
    )
    # Judged once, eagerly: the collect of who changed and the history's write both read it,
    # where each would otherwise compute the join again (listings are few, so the pass is
    # plan-bound). Held in block storage (memory, then disk) until the frame is dropped.
    judged = pairs.withColumn("_kind", kind).localCheckpoint()
    kept_open = judged.where(F.col("_kind") == "same").select(
        *[F.col(f"old.{c}").alias(c) for c in HISTORY_COLUMNS]
    )
    closed_now = judged.where(F.col("_kind").isin("changed", "gone")).select(
        *[(stamp_value if c == "valid_to" else F.col(f"old.{c}")).alias(c) for c in HISTORY_COLUMNS]
    )
    started = (
        judged.where(F.col("_kind").isin("changed", "added"))
        .select("_kind", *[F.col(f"new.{c}").alias(c) for c in [*COMPARED, EXTRACTED_AT.name]])
        .join(F.broadcast(known_ids), F.col("id") == F.col("_known"), "left")
        .withColumn(
            "valid_from",
            F.when(F.col("_known").isNull(), _beginning()).otherwise(stamp_value),
        )
        .withColumn("valid_to", F.lit(None).cast("date"))
    )
    # Added and never known: new. Added but known (all its versions closed): back.
    started = started.withColumn(
        "_kind",
        F.when((F.col("_kind") == "added") & F.col("_known").isNull(), "new")
        .when(F.col("_kind") == "added", "back")
        .otherwise(F.col("_kind")),
    )
    # Who changed how, in one small collect: the rows that are not "same" are tonight's changes.
    changes = (
        judged.where(F.col("_kind").isin("gone", "changed"))
        .select(F.col("_kind"), F.col("old.id").alias("id"), F.lit(None).cast("date").alias("day"))
        .unionByName(
            started.where(F.col("_kind").isin("new", "back")).select(
                "_kind", "id", F.to_date("listing_created_on").alias("day")
            )
        )
        .collect()
    )
    new_rows = [row for row in changes if row["_kind"] == "new"]
    coverage = [row["id"] for row in changes if row["_kind"] in ("gone", "back")]
    changed = sum(1 for row in changes if row["_kind"] == "changed")
    result = (
        closed_versions.select(*HISTORY_COLUMNS)
        .unionByName(closed_now)
        .unionByName(kept_open)
        .unionByName(started.select(*HISTORY_COLUMNS))
    )
    return HistoryUpdate(
        history=result,
        new_ids=sorted(row["id"] for row in new_rows),
        new_created_days=sorted({row["day"] for row in new_rows if row["day"]}),
        coverage_ids=sorted(coverage),
        changed=changed,
    )


def current_versions(history: DataFrame) -> DataFrame:
    """The versions valid on the latest stamp: curated.listings, what users browse."""
    return history.where(F.col("valid_to").isNull()).select(*tables.CURATED_LISTINGS.column_names)


def valid_on(day: Column, versions: DataFrame | None = None) -> Column:
    """A version (its `valid_from`, `valid_to`) is the one valid on `day`. Give `versions`
    where both sides of a join have such columns, to take them from that side."""

    def column(name: str) -> Column:
        return F.col(name) if versions is None else versions[name]

    valid_from, valid_to = column("valid_from"), column("valid_to")
    return (valid_from <= day) & (valid_to.isNull() | (day < valid_to))


def version_of_booking(bookings: DataFrame, history: DataFrame) -> Column:
    """Join condition: the listing version valid on the day of the booking's booking_date (the
    one curation judges it against)."""
    day = F.to_date(bookings["booking_date"])
    return (bookings["apartment_id"] == history["id"]) & valid_on(day, history)


def with_versions(
    rows: DataFrame,
    history: DataFrame,
    listing_column: str,
    day: Column,
    columns: tuple[str, ...],
    how: str = "inner",
) -> DataFrame:
    """Each of `rows` with `columns` of the version of its listing (`listing_column`) valid on
    its `day`. The history (listings times their versions) is broadcast: the rows are never
    shuffled for it, and nothing grows with the number of periods the rows span. `how="left"`
    keeps a row whose listing had no version that day, with nulls."""
    versions = history.select(F.col("id").alias("_version_of"), "valid_from", "valid_to", *columns)
    matched = (F.col(listing_column) == F.col("_version_of")) & valid_on(day)
    return rows.join(F.broadcast(versions), matched, how).drop(
        "_version_of", "valid_from", "valid_to"
    )


def versions_on(history: DataFrame, days: DataFrame, day_column: str) -> DataFrame:
    """For every row of `days`, the listing versions valid on its `day_column`: one row per
    (day row, listing), with the day row's columns and the version's. Versions of a listing
    do not overlap, so a listing appears at most once per day."""
    return F.broadcast(days).join(history, valid_on(F.col(day_column)))
