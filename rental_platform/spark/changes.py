"""Which days of the lake no longer match the source: what a nightly (or audit) run re-extracts
and re-curates (kpis.md, "Always equal to a full recompute").

The source has no change timestamps, so a day is compared by fingerprint (`extract.py`): the one
recorded with the lake's raw partition against the source's now. A day differs when it was never
extracted, or when its fingerprints differ (rows added, removed or changed).

A booking that moved to another day changes two days' fingerprints. Both are re-extracted when
both lie in the window compared. When only one does, the booking's key finds the other: a key
gone from a day is looked up in the source (where is it now?), and a key new to a day is looked
up in the lake (where was it?), so that no copy is left in a day it left, nor is one lost.

Rows with no day are compared by fingerprint too where the table has a key (a key that left
or reached them is followed like any other). A table without one has them read again by every
extraction: they lie anywhere in the source table and are found through its index one by one,
so checksumming them costs what reading them does, and without a key no fewer of them could be
read again. Every extraction replaces them anyway (kpis.md).

Curated days can also be stale with their raw day unchanged: curated before their raw day's
latest extraction (a run that died between the two), or judged against listings the history
has changed since (`pending_listing_effects` of curated.listings_history).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.spark import code_version
from rental_platform.spark.concurrency import map_concurrently
from rental_platform.spark.extract import NO_ROWS, Fingerprint, SourceReader
from rental_platform.spark.lake import Lake
from rental_platform.spark.manifest import UNDATED, Partition
from rental_platform.spark.quality import source_schema_unchanged
from rental_platform.tables import Table

# The daily source tables, with the key that identifies a row of each, where it has one.
DAILY_SOURCES: dict[Table, str | None] = {
    tables.RAW_BOOKINGS: "booking_id",
    tables.RAW_USER_VIEWING: None,
}
CURATED_OF = {
    tables.RAW_BOOKINGS: tables.CURATED_BOOKINGS,
    tables.RAW_USER_VIEWING: tables.CURATED_USER_VIEWING,
}
# Rounds of following moved keys to the days they touch (each round's days may have moves too).
MOVE_ROUNDS = 5
# Keys new to the compared days that detection lists in the driver, at most (see _moved_away).
PREFILTERED_KEYS = 100_000
# `row_differences` numbers a row's day (days since 1970), and the rows with no day below any:
# a number shuffles in a third of a date's text, which is also formatted row by row.
_EPOCH = date(1970, 1, 1)
_UNDATED_DAY = -(2**31)


@dataclass
class ChangePlan:
    """Per raw table, the days to re-extract; per curated table, the days to re-curate only.
    Each with the reason, as the UI shows it."""

    extract: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    curate: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    # Per raw table, the source's fingerprint of each day to re-extract that the comparison
    # checksummed (and of the rows with no day): the extraction records these rather than
    # checksumming the days again (`SourceReader.counts_of_days`).
    fingerprints: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # When the comparison began: its fingerprints were read after it.
    compared_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # What the comparison cost the source: queries, and rows its checksums read.
    cost: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "extract": {t: dict(sorted(d.items())) for t, d in self.extract.items() if d},
            "curate": {t: dict(sorted(d.items())) for t, d in self.curate.items() if d},
            "fingerprints": {t: dict(sorted(f.items())) for t, f in self.fingerprints.items()},
            "compared_at": self.compared_at.isoformat(),
            "cost": self.cost,
        }


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


def _difference(recorded: Fingerprint | None, source: Fingerprint) -> str | None:
    if recorded is None:
        return "never extracted"
    if recorded == source:
        return None
    if recorded.rows != source.rows:
        delta = source.rows - recorded.rows
        return f"changed: {abs(delta)} rows {'added' if delta > 0 else 'removed'} (net)"
    return f"changed: rows changed ({source.rows} rows)"


def estimated_rows(lake: Lake, reader: SourceReader, raw: Table, days: Sequence[date]) -> int:
    """The source's rows in the given days, estimated without reading them, for choosing
    between its date index and a scan: the lake's count of the days it holds; for the others,
    the lake's mean rows per day, or, while the lake holds no day of the table (a first
    backfill), a sample of them counted by the source (`SourceReader.sampled_rows`). Left to
    choose, the source's optimiser read 91 days of a 3-year table through the index in 85 s,
    where a scan takes a tenth of that (benchmarks/results/nightly.md)."""
    partitions = lake.state.table(raw.id).partitions
    missing = [day for day in days if day.isoformat() not in partitions]
    held = lake.committed_rows(raw, days)
    if not missing:
        return held
    periods = lake.committed_periods(raw)
    if periods:
        return held + len(missing) * lake.committed_rows(raw, periods) // len(periods)
    return held + reader.sampled_rows(raw, missing)


def compares_undated(raw: Table) -> bool:
    """Whether the comparison fingerprints the table's rows with no day: only where it has a
    key (the module's docstring). A keyless table's are read by every extraction instead."""
    return DAILY_SOURCES[raw] is not None


def recorded_fingerprint(partition: Partition | None) -> Fingerprint | None:
    """The source's fingerprint of a raw partition's rows when they were extracted; None for
    a partition never extracted (or from before fingerprints were recorded)."""
    return Fingerprint.from_json(partition.facts.get("fingerprint")) if partition else None


def detect(
    lake: Lake,
    reader: SourceReader,
    start: date,
    end: date,
    force_from: date | None,
    first_day: date,
) -> ChangePlan:
    """The plan for the days [start, end): each day whose source fingerprint differs from the
    lake's, every day from `force_from` on whatever it says, the days moved keys touch (from
    `first_day` on, the lake's first), and the curated days that are stale."""
    plan = ChangePlan()
    queries_before = reader.queries

    def compare(source: tuple[Table, str | None]) -> _Comparison:
        return _compare_table(lake, reader, *source, start, end, force_from, first_day)

    # The tables side by side: each is mostly a wait on the source's checksum query, which the
    # source runs on one core, and on small Spark jobs.
    outcomes = map_concurrently(compare, DAILY_SOURCES.items(), name="detect")
    for raw, outcome in zip(DAILY_SOURCES, outcomes, strict=True):
        plan.extract[raw.id].update(outcome.planned)
        if outcome.fingerprints:
            plan.fingerprints[raw.id] = outcome.fingerprints
    _stale_curation(lake, plan)
    _pending_listing_effects(lake, plan)
    plan.cost = {
        "source_queries": reader.queries - queries_before,
        "source_rows_checksummed": sum(outcome.rows_checksummed for outcome in outcomes),
    }
    return plan


@dataclass(frozen=True)
class _Comparison:
    """One daily table's days to re-extract with their reasons, the source's fingerprints of
    those it checksummed, and the source rows its checksums read."""

    planned: dict[str, str]
    fingerprints: dict[str, dict[str, Any]]
    rows_checksummed: int


def _compare_table(
    lake: Lake,
    reader: SourceReader,
    raw: Table,
    key: str | None,
    start: date,
    end: date,
    force_from: date | None,
    first_day: date,
) -> _Comparison:
    """One daily table's days to re-extract (the differing days and the days its moved keys
    touch)."""
    if not source_schema_unchanged(raw, reader.columns(raw)).passed:
        # Its checksums cannot be computed: extract the as-of day only, whose extraction
        # fails the table's source_schema_unchanged check, naming the column.
        return _Comparison({(end - timedelta(days=1)).isoformat(): "source schema changed"}, {}, 0)
    # Days from `force_from` on are extracted whatever their fingerprints say: only those
    # before it (and a keyed table's rows with no day) are checksummed.
    checksummed_end = max(start, min(end, force_from)) if force_from else end
    checksummed_days = _days(start, checksummed_end)
    compared = compares_undated(raw)
    source = reader.fingerprints(
        raw,
        start,
        checksummed_end,
        estimated_rows(lake, reader, raw, checksummed_days),
        undated=compared,
    )
    committed = lake.state.table(raw.id).partitions
    differing: dict[date, str] = {}
    for day in _days(start, end):
        recorded = committed.get(day.isoformat())
        if force_from is not None and day >= force_from:
            differing[day] = "new" if recorded is None else "asked for"
            continue
        reason = _difference(recorded_fingerprint(recorded), source.get(day, NO_ROWS))
        if reason:
            differing[day] = reason
    undated_changed = compared and (
        recorded_fingerprint(committed.get(UNDATED)) != source.get(None, NO_ROWS)
    )
    planned: dict[str, str] = {}
    if undated_changed:
        planned[UNDATED] = "rows with no day changed"
    elif not compared:
        planned[UNDATED] = "rows with no day: read every time"
    planned.update((day.isoformat(), reason) for day, reason in differing.items())
    # A moved key can leave a stale copy only in a partition the plan keeps: with none kept
    # (a first backfill, a range over the whole lake) there is nothing to look for.
    kept = [
        k
        for k in committed
        if k not in planned and (k == UNDATED or date.fromisoformat(k) >= first_day)
    ]
    if key is not None and (differing or undated_changed) and kept:
        _follow_moves(lake, reader, raw, key, set(differing), undated_changed, planned, first_day)
    checksummed = {day.isoformat(): day for day in checksummed_days}
    seen = {k: source.get(checksummed[k], NO_ROWS) for k in planned if k in checksummed}
    if compared:
        seen[UNDATED] = source.get(None, NO_ROWS)
    return _Comparison(
        planned,
        {k: fingerprint.to_json() for k, fingerprint in seen.items()},
        sum(f.rows for f in source.values()),
    )


def _follow_moves(
    lake: Lake,
    reader: SourceReader,
    raw: Table,
    key: str,
    days: set[date],
    undated: bool,
    planned: dict[str, str],
    first: date,
) -> None:
    """Add to the table's `planned` days those a moved key left or reached outside `days`,
    from `first` on: a booking moved before the lake's first day has left the lake's scope."""
    for _ in range(MOVE_ROUNDS):
        lake_keys = _lake_keys(lake, raw, key, [d.isoformat() for d in days], undated)
        source_keys = reader.keys_by_day(raw, key, days, undated)
        # The keys only one side has, kept by Spark: the source is read once per round, and
        # however many keys are new to these days, the driver never holds them all.
        moves = (
            lake_keys.alias("l")
            .join(source_keys.alias("s"), "key", "full_outer")
            .select(
                "key",
                F.col("s.key").isNull().alias("gone"),
                F.col("l.key").isNull().alias("arrived"),
            )
            .where(F.col("gone") | F.col("arrived"))
            .persist()
        )
        try:
            compared = {d.isoformat() for d in days} | ({UNDATED} if undated else set())
            found = _moved_here(reader, raw, key, moves, planned, first) | _moved_away(
                lake, raw, key, moves, compared, planned
            )
        finally:
            moves.unpersist()
        if not found:
            return
        days, undated = found, False


def _moved_here(
    reader: SourceReader,
    raw: Table,
    key: str,
    moves: DataFrame,
    planned: dict[str, str],
    first: date,
) -> set[date]:
    """Plan the days, from `first` on, that the lake's keys gone from the compared days now
    have in the source; return the days newly planned."""
    gone = [row["key"] for row in moves.where(F.col("gone")).select("key").collect()]
    found: set[date] = set()
    for moved_key, now in reader.days_of(raw, key, gone).items():
        if now is not None and now >= first and now.isoformat() not in planned:
            planned[now.isoformat()] = f"a row moved here ({key} {moved_key})"
            found.add(now)
    return found


def _moved_away(
    lake: Lake,
    raw: Table,
    key: str,
    moves: DataFrame,
    compared: set[str],
    planned: dict[str, str],
) -> set[date]:
    """Plan the other partitions of the lake that still hold a key new to the compared days
    (its stale copy); return the days newly planned. Up to PREFILTERED_KEYS new keys, the
    partitions' key ranges rule out most partitions without a read."""
    arrived = moves.where(F.col("arrived")).select("key")
    few = sorted(row["key"] for row in arrived.limit(PREFILTERED_KEYS + 1).collect())
    keys = few if len(few) <= PREFILTERED_KEYS else None
    elsewhere = [
        label
        for label, partition in lake.state.table(raw.id).partitions.items()
        if label not in compared and _may_hold(partition.facts, keys)
    ]
    if not elsewhere:
        return set()
    stale = (
        _lake_keys(lake, raw, key, elsewhere, False)
        .join(arrived, "key", "left_semi")
        .groupBy("day")
        .agg(F.min("key").alias("key"))
        .collect()
    )
    found: set[date] = set()
    for row in stale:
        label = row["day"].isoformat() if row["day"] else UNDATED
        if label not in planned:
            planned[label] = f"a row moved away ({key} {row['key']})"
            if row["day"]:
                found.add(row["day"])
    return found


def _may_hold(facts: dict[str, Any], keys: list[int] | None) -> bool:
    """Whether a partition whose keys span [min_key, max_key] may hold one of `keys` (sorted;
    None when too many to list): a new booking's key, above every older one, rules out every
    older day without a read."""
    low, high = facts.get("min_key"), facts.get("max_key")
    if keys is None or low is None or high is None:
        return keys != [] and facts.get("fingerprint", {}).get("rows", 1) > 0
    first = bisect_left(keys, low)
    return first < len(keys) and keys[first] <= high


def _lake_keys(lake: Lake, raw: Table, key: str, keys: list[str], undated: bool) -> DataFrame:
    """(key, day) of the lake's committed rows of the given partitions."""
    rows = lake.read(raw, keys + ([UNDATED] if undated else []))
    return rows.select(F.col(key).alias("key"), F.to_date(raw.partition_column).alias("day"))


def _stale_curation(lake: Lake, plan: ChangePlan) -> None:
    """Curated days missing, curated from an older extraction than the raw day's current one
    (a run that died between extracting and curating), or under other rules: of every age, as
    a full recompute would curate them all."""
    for raw, curated in CURATED_OF.items():
        raw_partitions = lake.state.table(raw.id).partitions
        curated_partitions = lake.state.table(curated.id).partitions
        for day, partition in raw_partitions.items():
            if day == UNDATED or day in plan.extract[raw.id]:
                continue
            done = curated_partitions.get(day)
            if done is None:
                plan.curate[curated.id][day] = "extracted, never curated"
            elif reason := curation_out_of_date(done, partition):
                plan.curate[curated.id][day] = reason


def curation_out_of_date(done: Partition, extracted: Partition) -> str | None:
    """Why a curated day does not hold what curating its raw day now gives, or None: it was
    curated from an older extraction, or under other rules (a deploy changed them)."""
    if done.facts.get("raw_version") != extracted.version:
        return "re-extracted since it was curated"
    if done.facts.get(code_version.RULES) != code_version.rules_version():
        return "curated under other rules"
    return None


def _pending_listing_effects(lake: Lake, plan: ChangePlan) -> None:
    """Booking days a change of the listing history affects (see `listing_effects`) that were
    curated against an older history."""
    curated = lake.state.table(tables.CURATED_BOOKINGS.id).partitions
    planned = plan.extract[tables.RAW_BOOKINGS.id]
    for effect in lake.table_facts(tables.CURATED_LISTINGS_HISTORY).get("pending_effects", []):
        for day, reason in effect["days"].items():
            done = curated.get(day)
            if done and done.facts.get("listings_seq", 0) < effect["seq"] and day not in planned:
                plan.curate[tables.CURATED_BOOKINGS.id].setdefault(day, reason)


def listing_effects(
    lake: Lake, stamp: date, new_ids: list[int], created: list[date], coverage: list[int]
) -> dict[str, str]:
    """The curated booking days a history change stamped `stamp` affects:
    - days with bookings rejected as unknown_apartment of a listing now learnt;
    - days from the stamp on, when listings went or came back (their bookings are re-judged);
    - the day each learnt listing was created (or the first curated day, if it was earlier):
      re-curating it marks the periods that now see the listing (its creation week, the months
      since) stale, through the partitions that read that day.
    """
    curated = lake.state.table(tables.CURATED_BOOKINGS.id).partitions
    quarantine = lake.state.table(tables.QUARANTINE_BOOKINGS.id).partitions
    dated = sorted(k for k in curated if k != UNDATED)
    if not dated:
        return {}
    learnt = set(new_ids)
    days: dict[str, str] = {}
    for day in dated:
        rejected = quarantine.get(day)
        unknown = set(rejected.facts.get("unknown_apartments", [])) if rejected else set()
        if unknown & learnt:
            days[day] = f"listings learnt: {_some(sorted(unknown & learnt))}"
        elif coverage and date.fromisoformat(day) >= stamp:
            days[day] = f"listings gone or back on {stamp}: {_some(coverage)}"
    for created_day in created:
        day = max(created_day.isoformat(), dated[0])
        if day in curated and day <= dated[-1]:
            days.setdefault(day, "a listing created on this day was learnt")
    return days


def _some(ids: list[int], shown: int = 5) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(map(str, ids[:shown])) + more


def still_pending(lake: Lake, effects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listing effects some booking day has not been re-curated for yet."""
    curated = lake.state.table(tables.CURATED_BOOKINGS.id).partitions
    return [
        effect
        for effect in effects
        if any(
            day in curated and curated[day].facts.get("listings_seq", 0) < effect["seq"]
            for day in effect["days"]
        )
    ]


def unknown_apartments(quarantine: DataFrame) -> dict[str, list[int]]:
    """Per day, the listings of the bookings rejected as unknown_apartment: when one of them
    is learnt, that day is re-curated."""
    rows = (
        quarantine.where(F.col("reject_reason") == "unknown_apartment")
        .groupBy(F.to_date("booking_date").alias("day"))
        .agg(F.sort_array(F.collect_set("apartment_id")).alias("ids"))
        .collect()
    )
    return {row["day"].isoformat(): list(row["ids"]) for row in rows if row["day"]}


def row_differences(
    lake: Lake, raw: Table, key: str | None, dated: DataFrame, undated: DataFrame | None
) -> dict[str, Any]:
    """What a re-extraction changed, for the raw asset's metadata: days extracted for the
    first time, days unchanged, and per changed day the rows added, removed and changed
    (by key; a table without one compares whole rows). Only days whose fingerprint differs
    from the one recorded are compared, against their committed version. `dated` and
    `undated` are the rows the step wrote (`undated` None when it kept the rows with no
    day)."""
    staged = lake.staged(raw)
    new_days, same, changed = [], 0, []
    for day_key in staged:
        before = lake.partition(raw, day_key)
        if before is None:
            new_days.append(day_key)
        elif before.facts.get("fingerprint") == staged[day_key].facts.get("fingerprint"):
            same += 1
        else:
            changed.append(day_key)
    report: dict[str, Any] = {"new_days": len(new_days), "unchanged_days": same}
    if not changed:
        return report | {"changed_days": {}}
    columns = [c for c in raw.column_names if c != "_extracted_at"]
    day = F.coalesce(F.unix_date(F.to_date(raw.partition_column)), F.lit(_UNDATED_DAY))
    changed_days = [date.fromisoformat(k) for k in changed if k != UNDATED]
    new = dated.where(F.to_date(raw.partition_column).isin(*changed_days))
    if undated is not None and UNDATED in changed:
        new = new.unionByName(undated)
    keys = [key] if key else []

    def signed(rows: DataFrame, sign: int) -> DataFrame:
        return rows.select(
            day.alias("_day"), *keys, _row_hash(columns).alias("_row"), F.lit(sign).alias("_sign")
        )

    # A row in both versions of its day cancels out: what is left of the old version was
    # removed, what is left of the new one added. One aggregation, where a join of the two
    # versions (or Spark's exceptAll) shuffles and sorts each of them; over a hash of each
    # row, so that it shuffles a long per row rather than the row's columns.
    left = (
        signed(lake.read(raw, changed), -1)
        .unionByName(signed(new, 1))
        .groupBy("_day", *keys, "_row")
        .agg(F.sum("_sign").alias("_net"))
        .where(F.col("_net") != 0)
    )
    kinds = _keyed_differences(left, key) if key else _unkeyed_differences(left)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in kinds.groupBy("_day", "_kind").agg(F.sum("_rows").alias("_rows")).collect():
        counts[_day_label(row["_day"])][row["_kind"]] = row["_rows"]
    return report | {"changed_days": dict(sorted(counts.items()))}


def _day_label(day: int) -> str:
    """A partition's key from `row_differences`' day number."""
    return UNDATED if day == _UNDATED_DAY else (_EPOCH + timedelta(days=day)).isoformat()


def _row_hash(columns: list[str]) -> Column:
    """A 64-bit hash of a row's values and of which of them are null (Spark's hashes skip a
    null, so (7, null) and (null, 7) alone would hash alike). Two rows of a day (and key) that
    differ and still hash alike would pass for one: a chance in 2^64 for each pair."""
    return F.xxhash64(*columns, F.array(*[F.col(c).isNull() for c in columns]))


def _unkeyed_differences(left: DataFrame) -> DataFrame:
    """(day, kind, rows): rows without a key are only added or removed."""
    return left.select(
        "_day",
        F.when(F.col("_net") > 0, "added").otherwise("removed").alias("_kind"),
        F.abs("_net").alias("_rows"),
    )


def _keyed_differences(left: DataFrame, key: str) -> DataFrame:
    """(day, kind, rows) of each key left over: only in the old version, it was removed from
    its day; only in the new, added to its day; in both, it moved (removed from one day, added
    to the other) or, on the same day, changed (some value differs)."""
    per_key = left.groupBy(key).agg(
        F.max(F.when(F.col("_net") < 0, F.col("_day"))).alias("_old"),
        F.max(F.when(F.col("_net") > 0, F.col("_day"))).alias("_new"),
    )

    def at(side: str, what: str) -> Column:
        return F.struct(F.col(side).alias("day"), F.lit(what).alias("kind"))

    kind = (
        F.when(F.col("_old").isNull(), F.array(at("_new", "added")))
        .when(F.col("_new").isNull(), F.array(at("_old", "removed")))
        .when(F.col("_old") != F.col("_new"), F.array(at("_old", "removed"), at("_new", "added")))
        .otherwise(F.array(at("_new", "changed")))
    )
    return per_key.select(F.explode(kind).alias("_d")).select(
        F.col("_d.day").alias("_day"), F.col("_d.kind").alias("_kind"), F.lit(1).alias("_rows")
    )
