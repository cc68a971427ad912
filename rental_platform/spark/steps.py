"""The Spark steps: what the local runner calls in-process and a remote job runs by entrypoint.

A step takes a `StepRequest` (which tables, which window, where the lake is), writes new
versions of its tables' partitions to the lake, computes its checks on what it wrote, and then
commits, in one commit, the tables whose blocking checks all passed (a table and its quarantine
pass or fail together). It returns a `StepReport`. Nothing here knows about Dagster.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.contract import (
    SCHEMA,
    CheckResult,
    StepReport,
    StepRequest,
    TableReport,
    checks_for,
)
from rental_platform.spark import (
    changes,
    code_version,
    curate,
    figures,
    history,
    kpis,
    layout,
    quality,
)
from rental_platform.spark.concurrency import map_concurrently, side_by_side
from rental_platform.spark.extract import NO_ROWS, Fingerprint, SourceReader
from rental_platform.spark.lake import Lake
from rental_platform.spark.manifest import UNDATED, WHOLE, Partition
from rental_platform.tables import Grain, Layer, Table


class StepInputsMissing(RuntimeError):
    """A step's inputs are not all committed (or are older than their own inputs): computing
    from them would publish wrong numbers, so the step stops and names them."""


def commit_group(table: Table) -> str:
    """Tables committed together or not at all: a curated table, its quarantine (each raw row
    is in one of them), and for listings the history too."""
    if table is tables.CURATED_LISTINGS_HISTORY:
        return tables.CURATED_LISTINGS.name
    if table.layer in (Layer.CURATED, Layer.QUARANTINE):
        return table.name
    return table.id


class _Step:
    """One step's working state: the request, the lake, and the report being filled."""

    def __init__(self, spark: SparkSession, request: StepRequest) -> None:
        self.spark = spark
        self.request = request
        self.lake = Lake(spark, request.lake_root)
        self.report = StepReport(request.step)

    def selected(self, table: Table) -> bool:
        return table.id in self.request.tables

    @property
    def window(self) -> tuple[date, date]:
        start, end = self.request.window_start, self.request.window_end
        if start is None or end is None:
            raise ValueError(f"step {self.request.step} needs a window")
        return start, end

    def days_of(self, table: Table) -> list[date]:
        """The days of the window the step works on for `table`: all, or those asked for."""
        start, end = self.window
        days = layout.periods(Grain.DAILY, start, end)
        if self.request.only_days is None:
            return days
        asked = set(self.request.only_days.get(table.id, ()))
        return [day for day in days if day in asked]

    def record(self, table: Table, rows: int, **metadata: Any) -> None:
        self.report.tables[table.id] = TableReport(table.id, rows, metadata)

    def check(self, result: CheckResult) -> None:
        self.report.checks.append(result)

    def check_schema(self, table: Table) -> None:
        """Compare what the step wrote for `table` with the catalogue (quarantines carry no
        checks: they keep raw values as they came)."""
        if self.selected(table) and SCHEMA in checks_for(table):
            self.check(quality.schema_matches(table, self.lake.stored_schema(table)))

    def land_periods(
        self,
        table: Table,
        df: DataFrame,
        periods: list[date],
        clustered: bool = False,
        per_period: dict[str, Column] | None = None,
    ) -> DataFrame:
        """Write `df` if the table was asked for, and return what was written."""
        if not self.selected(table):
            return df
        return self.lake.stage_periods(df, table, periods, clustered, per_period)

    def land_undated(self, table: Table, df: DataFrame) -> DataFrame:
        return self.lake.stage_undated(df, table) if self.selected(table) else df

    def land_snapshot(self, table: Table, df: DataFrame) -> DataFrame:
        return self.lake.stage_snapshot(df, table) if self.selected(table) else df

    def add_facts(self, table: Table, key: str, **facts: Any) -> None:
        if self.selected(table):
            self.lake.add_facts(table, key, **facts)

    def skip(self, reason: str) -> None:
        """Change nothing: report the tables as the lake has them, and why."""
        self.report.skipped = reason
        for table_id in self.request.tables:
            partitions = self.lake.state.table(table_id).partitions.values()
            self.report.tables[table_id] = TableReport(
                table_id, sum(p.rows for p in partitions), {"unchanged": reason}
            )

    def keep(self, reason: str) -> None:
        """Rewrite nothing, but commit the table facts set (a later stamp): the step compared
        its tables' inputs with those they were made from, and found them the same."""
        self.skip(reason)
        self.commit()

    def commit(self) -> None:
        """Commit the selected tables whose commit group's blocking checks all passed."""
        failed = {
            commit_group(tables.TABLES[check.table])
            for check in self.report.checks
            if not check.passed and check.blocking
        }
        chosen = [tables.TABLES[t] for t in self.request.tables]
        passing = [t for t in chosen if commit_group(t) not in failed]
        self.report.rejected = {
            t.id: self.lake.staged_folders([t]) for t in chosen if commit_group(t) in failed
        }
        self.report.committed = self.lake.commit(passing, self.request.writer or self.request.step)

    def report_partitions(self) -> None:
        """Each reported table's partitions of the window as the lake now has them (those the
        step did not rewrite too, marked so), for Dagster's per-partition view."""
        if self.request.window_start is None or self.request.window_end is None:
            return
        for table_id, table_report in self.report.tables.items():
            table = tables.TABLES[table_id]
            if table.grain is Grain.SNAPSHOT:
                continue
            staged = self.lake.staged(table)
            # A rejected table's partitions as the step wrote them (and its checks judged).
            current = (
                staged
                if table_id in self.report.rejected
                else self.lake.state.table(table_id).partitions
            )
            for period in layout.periods(table.grain, *self.window):
                key = period.isoformat()
                if (partition := current.get(key)) is not None:
                    table_report.partitions[key] = figures.of_partition(partition) | {
                        "rewritten": key in staged
                    }


def latest_day_extracted(lake: Lake) -> date | None:
    """The last day any run extracted: no period after it is computed (kpis.md)."""
    days = [day for table in changes.DAILY_SOURCES for day in lake.committed_periods(table)]
    return max(days, default=None)


def _require_curated_days(step: _Step, table: Table, first: date, last: date) -> None:
    """Every day of [first, last] must be committed in `table`, curated from its raw day's
    current extraction under the current rules; else the step stops, naming the days."""
    raw = {v: k for k, v in changes.CURATED_OF.items()}[table]
    problems: dict[str, list[str]] = defaultdict(list)
    day = first
    while day <= last:
        done, extracted = (
            step.lake.partition(table, day.isoformat()),
            step.lake.partition(raw, day.isoformat()),
        )
        if done is None or extracted is None:
            problems["not committed"].append(day.isoformat())
        elif reason := changes.curation_out_of_date(done, extracted):
            problems[reason].append(day.isoformat())
        day += timedelta(days=1)
    if problems:
        raise StepInputsMissing(
            f"step {step.request.step}: {table.id} is incomplete for [{first}, {last}]: "
            + "; ".join(
                f"{len(days)} days {what}: {', '.join(days[:5])}{' ...' if len(days) > 5 else ''}"
                for what, days in problems.items()
            )
            + ". Extract and curate those days first (rental-platform nightly, or run)."
        )


def _first_day(step: _Step, table: Table) -> date | None:
    """The first day the lake holds for a daily table: the request's, or the first committed."""
    if step.request.first_day is not None:
        return step.request.first_day
    return min(step.lake.committed_periods(table), default=None)


# --- raw ---------------------------------------------------------------------------------------


def _reader(step: _Step) -> SourceReader:
    if step.request.source is None:
        raise ValueError(f"step {step.request.step} needs a source connection")
    return SourceReader(step.spark, step.request.source, datetime.now(UTC))


def _stamp(facts: dict[str, Any]) -> date | None:
    stamp = facts.get("stamp")
    return date.fromisoformat(stamp) if stamp else None


def extract_snapshot(step: _Step) -> None:
    """The listing tables, whole, stamped with the run's as-of day; nothing if a snapshot with
    that stamp or a later one was taken already (the history only moves forward).

    Each table's fingerprint is read first. Where every table's is the one the lake's snapshot
    was taken with, the source has not changed since: that snapshot is kept and only its stamp
    moves (a quiet night rewrites no listing table; `curate_listings` then keeps the history).
    """
    stamp = step.request.as_of
    if stamp is None:
        raise ValueError("step extract_snapshot needs the as-of day to stamp the snapshot with")
    recorded = _stamp(step.lake.table_facts(tables.RAW_APARTMENTS))
    if recorded is not None and stamp <= recorded:
        step.skip(
            f"no snapshot taken for {stamp}: the one of {recorded} is newer or as new, "
            "and the listing history only moves forward"
        )
        return
    reader = _reader(step)
    chosen = _selected(step, tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES)
    source_schemas: dict[Table, CheckResult] = {}
    fingerprints: dict[Table, Fingerprint] = {}

    def compare(table: Table) -> None:
        source_schemas[table] = _check_source_schema(step, reader, table)
        if source_schemas[table].passed:
            fingerprints[table] = reader.fingerprint_of_snapshot(table)

    map_concurrently(compare, chosen)
    if len(fingerprints) == len(chosen) and all(
        Fingerprint.from_json(step.lake.table_facts(t).get("fingerprint")) == fingerprints[t]
        for t in chosen
    ):
        for table in chosen:
            step.lake.set_table_facts(table, stamp=stamp.isoformat())
        step.keep(
            f"the source's listings are as the snapshot of {recorded} read them (same rows and "
            f"checksums): that snapshot is kept, stamped {stamp}"
        )
        return

    def extract(table: Table) -> None:
        step.land_snapshot(table, reader.snapshot(table))
        rows = step.lake.staged(table)[WHOLE].rows
        step.lake.set_table_facts(
            table, stamp=stamp.isoformat(), fingerprint=fingerprints[table].to_json()
        )
        step.record(table, rows, stamp=stamp.isoformat(), **_new_columns(source_schemas[table]))
        step.check_schema(table)
        step.check(
            quality.row_count_matches_source(
                table, {"all": fingerprints[table].rows}, {"all": rows}
            )
        )

    map_concurrently(extract, [t for t in chosen if t in fingerprints])


def _check_source_schema(step: _Step, reader: SourceReader, table: Table) -> CheckResult:
    """Check the source table's columns before reading it: a column gone or retyped stops
    the table's extraction with a check naming it, rather than a query failing on it."""
    check = quality.source_schema_unchanged(table, reader.columns(table))
    step.check(check)
    if not check.passed:
        step.record(table, 0, not_extracted=check.description)
    return check


def extract_daily(step: _Step) -> None:
    reader = _reader(step)

    def extract(table: Table) -> None:
        source_schema = _check_source_schema(step, reader, table)
        if not source_schema.passed:
            return
        days = step.days_of(table)
        fingerprints, counts = _source_before_reading(step, reader, table, days)
        window_rows = sum(n for day, n in counts.items() if day is not None)
        # The read is split on day boundaries: each day's rows come from one JDBC query.
        key = changes.DAILY_SOURCES[table]
        dated = step.lake.stage_periods(
            reader.days(table, days, window_rows),
            table,
            days,
            clustered=True,
            per_period={"min_key": F.min(key), "max_key": F.max(key)} if key else None,
        )
        for day in days:
            step.add_facts(
                table, day.isoformat(), fingerprint=fingerprints.get(day, NO_ROWS).to_json()
            )
        kept = _unchanged_undated(step, table)
        undated = None
        if kept is None:
            fingerprint = (
                fingerprints.get(None, NO_ROWS) if changes.compares_undated(table) else None
            )
            undated = _extract_undated(step, reader, table, fingerprint)
        lake_counts = {k: p.rows for k, p in step.lake.staged(table).items()}
        read = {*days, *([None] if kept is None else [])}
        source_counts = {
            day.isoformat() if day else UNDATED: n for day, n in counts.items() if day in read
        }
        differences = changes.row_differences(step.lake, table, key, dated, undated)
        step.record(
            table,
            sum(lake_counts.values()),
            partitions=len(days),
            undated_rows=lake_counts[UNDATED] if kept is None else kept.rows,
            re_extracted=differences,
            **_new_columns(source_schema),
        )
        step.check(quality.row_count_matches_source(table, source_counts, lake_counts))
        step.check_schema(table)
        newest = max([*step.lake.committed_periods(table), *days], default=None)
        step.check(
            quality.freshness(table, newest, datetime.now(UTC), step.request.limits.freshness_hours)
        )

    map_concurrently(extract, _selected(step, tables.RAW_BOOKINGS, tables.RAW_USER_VIEWING))


def _unchanged_undated(step: _Step, table: Table) -> Partition | None:
    """The committed rows with no day, if the plan's comparison found them unchanged (its
    fingerprint of them is the one they were extracted with): the step keeps them rather than
    reading them again. A change since then shows at the next comparison."""
    seen = step.request.source_fingerprints.get(table.id, {}).get(UNDATED)
    committed = step.lake.partition(table, UNDATED)
    if seen is None or changes.recorded_fingerprint(committed) != Fingerprint.from_json(seen):
        return None
    return committed


def _extract_undated(
    step: _Step, reader: SourceReader, table: Table, fingerprint: Fingerprint | None
) -> DataFrame:
    """Stage the source's rows with no day, with their fingerprint and key range (which
    tell the next comparison whether they changed, and whether a moved key may be among
    them). A keyless table's have neither: every extraction reads them (changes.py)."""
    undated = step.land_undated(table, reader.undated(table))
    key = changes.DAILY_SOURCES[table]
    span = undated.agg(F.min(key), F.max(key)).collect()[0] if key else None
    step.add_facts(
        table,
        UNDATED,
        **({"fingerprint": fingerprint.to_json()} if fingerprint else {}),
        **({"min_key": span[0], "max_key": span[1]} if span else {}),
    )
    return undated


def _source_before_reading(
    step: _Step, reader: SourceReader, table: Table, days: list[date]
) -> tuple[dict[date | None, Fingerprint], dict[date | None, int]]:
    """Each day's fingerprint to record with its rows, and the source's row counts to check
    the extraction against, both read before the rows are (a row changed in between makes the
    next comparison differ, so the change is picked up then).

    Where the plan's comparison checksummed a day or the rows with no day (`seen`, by
    partition key), its fingerprint is kept, read earlier still, and they are only counted now
    (`SourceReader.counts_of_days`, through the date index alone). The other days are
    checksummed, by a scan if their estimated rows (`changes.estimated_rows`) are a large
    share of the table. The source finds the rows with no day through its index one by one:
    checksumming them again where the plan had made a 3-year source's checksum of a nightly's
    one new day take 2.2 s instead of 0.1 s (benchmarks/results/nightly.md). A keyless
    table's rows with no day are only counted: every extraction reads them (changes.py)."""
    seen = step.request.source_fingerprints.get(table.id, {})
    known = [day for day in days if day.isoformat() in seen]
    unknown = [day for day in days if day.isoformat() not in seen]
    fingerprints: dict[date | None, Fingerprint] = {
        day: Fingerprint.from_json(seen[day.isoformat()]) or NO_ROWS for day in known
    }
    if UNDATED in seen:
        fingerprints[None] = Fingerprint.from_json(seen[UNDATED]) or NO_ROWS
    checksum_undated = UNDATED not in seen and changes.compares_undated(table)
    # The counts cover the rows with no day too.
    counts = reader.counts_of_days(table, known) if known or not checksum_undated else {}
    if unknown or checksum_undated:
        estimate = changes.estimated_rows(step.lake, reader, table, unknown)
        checksummed = reader.fingerprints_of_days(
            table, unknown, estimate, undated=checksum_undated
        )
        fingerprints |= checksummed
        counts |= {day: f.rows for day, f in checksummed.items()}
    return fingerprints, counts


def detect_changes(step: _Step) -> None:
    """Compare the source with the lake over the window: the plan of what to re-extract and
    re-curate (changes.py). Writes nothing; it does collect the lake's garbage: versions
    superseded more than the grace period ago, and, when it compares every day (an audit),
    versions no commit names (left by writers that died)."""
    start, end = step.window
    first = step.request.first_day or _first_day(step, tables.RAW_BOOKINGS) or start
    plan = changes.detect(
        step.lake, _reader(step), max(start, first), end, step.request.force_from, first
    )
    collected = step.lake.log.collect_garbage()
    if start <= first:
        collected += step.lake.log.collect_orphans()
    step.report.plan = plan.to_json() | {"collected": len(collected)}


def _new_columns(source_schema: CheckResult) -> dict[str, Any]:
    """Source columns the catalogue does not read, for the raw asset's metadata."""
    new = source_schema.metadata["new_columns"]
    return {"source_columns_not_read": new} if new else {}


def _selected(step: _Step, *candidates: Table) -> list[Table]:
    return [table for table in candidates if step.selected(table)]


# --- curated -----------------------------------------------------------------------------------


def _account(
    step: _Step,
    curated_table: Table,
    quarantine_table: Table,
    raw_rows: int,
    curated_df: DataFrame,
    quarantine_df: DataFrame,
    rules: curate.Curated,
    undated: quality.Curation | None = None,
) -> None:
    """Record both tables of a curated pair, check that every raw row is accounted for, and
    check the curated rows. The window is its days (or the snapshot); `undated`: what the step
    made of the rows with no day, if it curated them."""
    curated_rows = _check_rows(step, curated_table, curated_df)
    quarantined = quality.quarantined_by_partition(quarantine_df, quarantine_table)
    window = quality.Curation(
        raw=raw_rows,
        curated=curated_rows,
        quarantined_by_reason=_summed(quarantined.values()),
        # After the row checks, which ran `curated` if the step did not write it.
        collapsed=rules.collapsed_rows(),
    )
    step.check(quality.rows_accounted_for(curated_table, window, undated))
    step.check(
        quality.quarantine_share(curated_table, window, step.request.limits.max_quarantine_share)
    )
    if step.selected(curated_table):
        step.record(curated_table, curated_rows, collapsed_rows=window.collapsed)
    if step.selected(quarantine_table):
        if undated is not None:
            quarantined[UNDATED] = undated.quarantined_by_reason
        for key in step.lake.staged(quarantine_table):
            step.add_facts(
                quarantine_table,
                key,
                **{figures.FIGURES: {"quarantined": quarantined.get(key, {})}},
            )
        step.record(
            quarantine_table,
            window.quarantined + (undated.quarantined if undated else 0),
            quarantined_by_reason=_summed(quarantined.values()),
        )


def _summed(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for each in counts:
        for name, count in each.items():
            total[name] = total.get(name, 0) + count
    return dict(sorted(total.items()))


def _check_rows(step: _Step, table: Table, landed: DataFrame) -> int:
    """The row-level checks of a curated or presentation table (keys and value ranges), in one
    pass that also counts its rows."""
    rows, results = quality.row_checks(landed, table)
    for result in results:
        step.check(result)
    return rows


def curate_listings(step: _Step) -> None:
    """Curate the latest raw listings snapshot and apply it to the listing history; nothing if
    the history has it (or a later one) already.

    A snapshot kept under a later stamp (its source unchanged, `extract_snapshot`) is the one
    the history was last applied from: applying it again under the same rules would start and
    close no version, so the history, the curated listings and their quarantine stay, and only
    the stamp moves. Under other rules (a deploy changed them) it is applied again."""
    stamp = _stamp(step.lake.table_facts(tables.RAW_APARTMENTS))
    history_facts = step.lake.table_facts(tables.CURATED_LISTINGS_HISTORY)
    recorded = _stamp(history_facts)
    if stamp is None:
        raise StepInputsMissing("no listings snapshot has been extracted yet (raw.apartments)")
    if recorded is not None and stamp <= recorded:
        step.skip(f"the listing history has the snapshot of {recorded} already")
        return
    snapshots = {
        table.id: partition.version if (partition := step.lake.partition(table, WHOLE)) else None
        for table in (tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES)
    }
    rules = code_version.rules_version()
    if (
        history_facts.get("snapshots") == snapshots
        and history_facts.get(code_version.RULES) == rules
    ):
        step.lake.set_table_facts(tables.CURATED_LISTINGS_HISTORY, stamp=stamp.isoformat())
        step.keep(
            f"the snapshot stamped {stamp} is the one of {recorded}, its source unchanged, "
            "curated under the same rules: no listing changed"
        )
        return
    raw = step.lake.read_snapshot(tables.RAW_APARTMENTS)
    result = curate.curate_listings(raw, step.lake.read_snapshot(tables.RAW_APARTMENT_ATTRIBUTES))
    update = history.apply_snapshot(
        step.lake.read_snapshot(tables.CURATED_LISTINGS_HISTORY), result.curated, stamp
    )

    def land_versions() -> tuple[DataFrame, DataFrame]:
        versions = step.land_snapshot(tables.CURATED_LISTINGS_HISTORY, update.history)
        return versions, step.land_snapshot(
            tables.CURATED_LISTINGS, history.current_versions(versions)
        )

    def land_quarantine() -> DataFrame:
        return step.land_snapshot(tables.QUARANTINE_LISTINGS, result.quarantine)

    (versions, curated_df), quarantine_df = side_by_side(land_versions, land_quarantine)
    seq = history_facts.get("seq", 0) + 1
    effects = changes.listing_effects(
        step.lake, stamp, update.new_ids, update.new_created_days, update.coverage_ids
    )
    pending = changes.still_pending(step.lake, history_facts.get("pending_effects", []))
    if effects:
        pending.append({"seq": seq, "stamp": stamp.isoformat(), "days": effects})
    step.lake.set_table_facts(
        tables.CURATED_LISTINGS_HISTORY,
        stamp=stamp.isoformat(),
        seq=seq,
        pending_effects=pending,
        snapshots=snapshots,
        **{code_version.RULES: rules},
    )
    for table in (
        tables.CURATED_LISTINGS,
        tables.QUARANTINE_LISTINGS,
        tables.CURATED_LISTINGS_HISTORY,
    ):
        step.check_schema(table)
    raw_rows = step.lake.partition(tables.RAW_APARTMENTS, WHOLE).rows

    def account() -> None:
        _account(
            step,
            tables.CURATED_LISTINGS,
            tables.QUARANTINE_LISTINGS,
            raw_rows,
            curated_df,
            quarantine_df,
            result,
        )

    def check_versions() -> int:
        step.check(quality.versions_disjoint(versions))
        return _check_rows(step, tables.CURATED_LISTINGS_HISTORY, versions)

    _, history_rows = side_by_side(account, check_versions)
    if step.selected(tables.CURATED_LISTINGS_HISTORY):
        step.record(
            tables.CURATED_LISTINGS_HISTORY,
            history_rows,
            stamp=stamp.isoformat(),
            new_listings=len(update.new_ids),
            changed_listings=update.changed,
            gone_or_back_listings=len(update.coverage_ids),
            booking_days_to_recurate=len(effects),
        )


# A fact of each curated bookings day: the last checkout date of its stays (ISO). Bookings are
# made ahead, so a month's occupancy reads every booking day before the month's end; a day
# whose stays all end by the month's first day holds none of its nights (`days_with_stays`).
LAST_CHECKOUT = "last_checkout"


@dataclass(frozen=True)
class _CuratedPair:
    """A raw table, the two tables its rules split it into, and the rules. `clustered`: the
    rules return the curated rows already gathered by day (see `Lake.stage_periods`);
    `per_period`: facts of each curated day (`Lake.stage_periods`)."""

    raw: Table
    curated: Table
    quarantine: Table
    rules: Callable[[DataFrame], curate.Curated]
    clustered: bool = False
    per_period: dict[str, Column] | None = None


def curate_daily(step: _Step) -> None:
    versions = step.lake.read_snapshot(tables.CURATED_LISTINGS_HISTORY)
    listings_seq = step.lake.table_facts(tables.CURATED_LISTINGS_HISTORY).get("seq", 0)
    pairs = [
        _CuratedPair(
            tables.RAW_BOOKINGS,
            tables.CURATED_BOOKINGS,
            tables.QUARANTINE_BOOKINGS,
            lambda df: curate.curate_bookings(df, versions),
            per_period={LAST_CHECKOUT: F.date_format(F.max("checkout_date"), "yyyy-MM-dd")},
        ),
        _CuratedPair(
            tables.RAW_USER_VIEWING,
            tables.CURATED_USER_VIEWING,
            tables.QUARANTINE_USER_VIEWING,
            lambda df: curate.curate_user_viewing(
                df, step.lake.write_partitions(len(step.days_of(tables.CURATED_USER_VIEWING)))
            ),
            clustered=True,
        ),
    ]

    def curate_pair(pair: _CuratedPair) -> None:
        raw_table, curated_table, quarantine_table = pair.raw, pair.curated, pair.quarantine
        days = step.days_of(curated_table)
        extracted = {day: step.lake.partition(raw_table, day.isoformat()) for day in days}
        missing = [day.isoformat() for day, partition in extracted.items() if partition is None]
        if missing:
            raise StepInputsMissing(
                f"{raw_table.id} has no committed extraction of {len(missing)} days "
                f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}): extract them "
                "before curating"
            )
        raw = step.lake.read(raw_table, [day.isoformat() for day in days])
        dated = pair.rules(raw)
        curated_df = step.land_periods(
            curated_table, dated.curated, days, pair.clustered, pair.per_period
        )
        step.check_schema(curated_table)
        if curated_table is tables.CURATED_BOOKINGS:
            step.check(quality.listings_exist(curated_df, versions, days))
        dated_quarantine = step.land_periods(quarantine_table, dated.quarantine, days)
        # What each day was curated from, and under which rules, so that a later run can
        # tell it is out of date.
        lineage: dict[str, Any] = {code_version.RULES: code_version.rules_version()}
        if curated_table is tables.CURATED_BOOKINGS:
            lineage["listings_seq"] = listings_seq
            unknown = changes.unknown_apartments(dated_quarantine)
        for day, partition in extracted.items():
            for table in (curated_table, quarantine_table):
                step.add_facts(table, day.isoformat(), raw_version=partition.version, **lineage)
            if curated_table is tables.CURATED_BOOKINGS and day.isoformat() in unknown:
                step.add_facts(
                    quarantine_table, day.isoformat(), unknown_apartments=unknown[day.isoformat()]
                )
        _account(
            step,
            curated_table,
            quarantine_table,
            step.lake.committed_rows(raw_table, days),
            curated_df,
            dated_quarantine,
            dated,
            _curate_undated(step, pair, lineage),
        )

    map_concurrently(
        curate_pair,
        [pair for pair in pairs if step.selected(pair.curated) or step.selected(pair.quarantine)],
    )


def _curate_undated(
    step: _Step, pair: _CuratedPair, lineage: dict[str, Any]
) -> quality.Curation | None:
    """Quarantine the raw rows with no day (they always break a rule: their date is null),
    unless the quarantine has them already: curated from the same extraction, with the same
    inputs. They belong to no window, so a window's run leaves them alone unless they were
    extracted again. None when nothing was curated."""
    if not step.selected(pair.quarantine):
        return None
    extracted = step.lake.partition(pair.raw, UNDATED)
    source = {"raw_version": extracted.version if extracted else None}
    source |= lineage
    done = step.lake.partition(pair.quarantine, UNDATED)
    if done is not None and all(done.facts.get(k) == v for k, v in source.items()):
        return None
    undated = pair.rules(step.lake.read_undated(pair.raw))
    quarantine = step.land_undated(pair.quarantine, undated.quarantine)
    step.add_facts(pair.quarantine, UNDATED, **source)
    return quality.Curation(
        raw=extracted.rows if extracted else 0,
        # Never landed: counting them runs their rules, which makes their merged rows known.
        curated=undated.curated.count(),
        quarantined_by_reason=quality.quarantined_by_partition(quarantine, pair.quarantine).get(
            UNDATED, {}
        ),
        collapsed=undated.collapsed_rows(),
    )


# --- presentation ------------------------------------------------------------------------------


def _computed(step: _Step, grain: Grain) -> tuple[list[date], list[date]]:
    """The window's periods, and those of them to compute: the ones that start on or before
    the latest day extracted (kpis.md, "Which periods are computed"). The others are written
    empty, so that nothing stays published for them."""
    start, end = step.window
    starts = layout.periods(grain, start, end)
    latest = latest_day_extracted(step.lake)
    computed = [s for s in starts if latest is not None and s <= latest]
    if step.request.only_days is None:
        return starts, computed
    # A run of the nightly cycle recomputes the stale periods of its range only; the others
    # keep their committed versions, which publishing the range republishes as they are.
    asked = {day for days in step.request.only_days.values() for day in days}
    return [s for s in starts if s in asked], [s for s in computed if s in asked]


def _publishable(
    step: _Step,
    grain: Grain,
    builders: dict[Table, Callable[[list[date]], DataFrame]],
) -> None:
    starts, computed = _computed(step, grain)
    kpis_version = code_version.kpis_version()

    def land(table: Table) -> None:
        rows = builders[table](computed) if computed else _empty(step, table)
        landed = step.land_periods(table, rows, starts, per_period=figures.kpi_figures(table))
        # Which definitions computed each period: a deploy that changes them makes the
        # nightly compute every period again (cycle.kpis_of_other_definitions).
        for start in starts:
            step.add_facts(table, start.isoformat(), **{code_version.KPIS: kpis_version})
        count, checks = quality.row_checks(landed, table)
        preview = figures.latest_preview(landed, table, computed[-1]) if computed else {}
        step.record(table, count, periods=len(computed), **preview)
        for check in [*checks, quality.schema_matches(table, step.lake.stored_schema(table))]:
            step.check(check)

    map_concurrently(land, _selected(step, *builders))


def _empty(step: _Step, table: Table) -> DataFrame:
    return step.lake.read(table, [])


# Which weekly KPIs read which curated days: the week's own, or, for repeat customers, from 23
# days before its Monday (its 30-day window ends on the week's Sunday).
READS_BOOKINGS = {
    tables.POPULAR_LOCATIONS,
    tables.TOP_LISTINGS,
    tables.BOOKINGS_PER_USER,
    tables.AVG_BOOKING_DURATION,
    tables.ENGAGEMENT_FUNNEL,
    tables.REPEAT_CUSTOMER_RATE,
    tables.OCCUPANCY_RATE,
}


def _require_inputs(step: _Step, grain: Grain, computed: list[date]) -> None:
    """Complete inputs or nothing: every curated day the selected KPIs of the computed periods
    read must be committed and current."""
    if not computed:
        return
    selected = {tables.TABLES[t] for t in step.request.tables}
    latest = latest_day_extracted(step.lake)
    last = min(layout.next_period(grain, computed[-1]) - timedelta(days=1), latest)
    first_bookings = _first_day(step, tables.RAW_BOOKINGS) or computed[0]
    if grain is Grain.WEEKLY:
        repeat = tables.REPEAT_CUSTOMER_RATE in selected
        reach = kpis.repeat_window_start(computed[0]) if repeat else computed[0]
        first_bookings = max(first_bookings, reach)
    if selected & READS_BOOKINGS:
        _require_curated_days(step, tables.CURATED_BOOKINGS, first_bookings, last)
    if tables.ENGAGEMENT_FUNNEL in selected:
        first_views = _first_day(step, tables.RAW_USER_VIEWING) or computed[0]
        _require_curated_days(
            step, tables.CURATED_USER_VIEWING, max(first_views, computed[0]), last
        )


def kpis_weekly(step: _Step) -> None:
    _, computed = _computed(step, Grain.WEEKLY)
    _require_inputs(step, Grain.WEEKLY, computed)
    lake = step.lake
    versions = lake.read_snapshot(tables.CURATED_LISTINGS_HISTORY)
    end = layout.next_period(Grain.WEEKLY, computed[-1]) if computed else None

    def bookings(first: date) -> DataFrame:
        return lake.read_periods(tables.CURATED_BOOKINGS, first, end)

    def week_bookings(weeks: list[date]) -> DataFrame:
        """The weeks' own days: only repeat customers reach back before the first Monday."""
        return kpis.weekly_confirmed(bookings(weeks[0]), weeks)

    _publishable(
        step,
        Grain.WEEKLY,
        {
            tables.AVG_LISTING_PRICE: lambda weeks: kpis.avg_listing_price(versions, weeks),
            tables.POPULAR_LOCATIONS: lambda weeks: kpis.popular_locations(
                week_bookings(weeks), versions
            ),
            tables.TOP_LISTINGS: lambda weeks: kpis.top_listings(week_bookings(weeks), versions),
            tables.BOOKINGS_PER_USER: lambda weeks: kpis.bookings_per_user(week_bookings(weeks)),
            tables.AVG_BOOKING_DURATION: lambda weeks: kpis.avg_booking_duration(
                week_bookings(weeks)
            ),
            tables.REPEAT_CUSTOMER_RATE: lambda weeks: kpis.repeat_customer_rate(
                step.spark, bookings(kpis.repeat_window_start(weeks[0])), weeks
            ),
            tables.ENGAGEMENT_FUNNEL: lambda weeks: kpis.engagement_funnel(
                lake.read_periods(tables.CURATED_USER_VIEWING, weeks[0], end),
                week_bookings(weeks),
                weeks,
            ),
        },
    )


def kpis_monthly(step: _Step) -> None:
    _, computed = _computed(step, Grain.MONTHLY)
    _require_inputs(step, Grain.MONTHLY, computed)
    versions = step.lake.read_snapshot(tables.CURATED_LISTINGS_HISTORY)

    def occupancy(months: list[date]) -> DataFrame:
        end = layout.next_period(Grain.MONTHLY, months[-1])
        days = days_with_stays(step.lake, months[0], end)
        return kpis.occupancy_rate(versions, step.lake.read(tables.CURATED_BOOKINGS, days), months)

    _publishable(step, Grain.MONTHLY, {tables.OCCUPANCY_RATE: occupancy})


def days_with_stays(lake: Lake, first: date, end: date) -> list[str]:
    """The committed curated booking days before `end` that may hold a night from `first` on:
    bookings are made ahead, so any earlier day may, unless its stays all end by `first` (its
    `LAST_CHECKOUT`). A day curated before that fact was recorded is read. Over 3 years of
    history, the months of a nightly read a few months of days instead of all of them."""
    partitions = lake.state.table(tables.CURATED_BOOKINGS.id).partitions
    keys = [day.isoformat() for day in lake.periods_in(tables.CURATED_BOOKINGS, None, end)]
    return [
        key
        for key in keys
        if (partitions[key].facts.get(LAST_CHECKOUT) or date.max.isoformat()) > first.isoformat()
    ]


STEPS: dict[str, Callable[[_Step], None]] = {
    "extract_snapshot": extract_snapshot,
    "extract_daily": extract_daily,
    "detect_changes": detect_changes,
    "curate_listings": curate_listings,
    "curate_daily": curate_daily,
    "kpis_weekly": kpis_weekly,
    "kpis_monthly": kpis_monthly,
}


def run_step(spark: SparkSession, request: StepRequest) -> StepReport:
    if request.step not in STEPS:
        raise ValueError(f"unknown step {request.step!r}; known: {', '.join(STEPS)}")
    started = time.monotonic()
    step = _Step(spark, request)
    STEPS[request.step](step)
    if not step.report.skipped:
        step.commit()
    step.report_partitions()
    step.report.in_catalogue_order()
    step.report.duration_seconds = round(time.monotonic() - started, 3)
    return step.report
