"""The Spark steps: what the local runner calls in-process and a remote job runs by entrypoint.

A step takes a `StepRequest` (which tables, which window, where the lake is), writes its
tables to the lake, computes its checks on what landed, and returns a `StepReport`. Nothing
here knows about Dagster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from pyspark.sql import DataFrame, SparkSession

from rental_platform import tables
from rental_platform.spark import curate, kpis, layout, quality
from rental_platform.spark.extract import SourceConnection, SourceReader
from rental_platform.spark.lake import Lake
from rental_platform.spark.quality import CheckLimits, CheckResult
from rental_platform.tables import Grain, Table


@dataclass(frozen=True)
class StepRequest:
    step: str
    tables: tuple[str, ...]
    lake_root: str
    # The window [start, end) in days; None for snapshot steps.
    window_start: date | None = None
    window_end: date | None = None
    source: SourceConnection | None = None
    limits: CheckLimits = field(default_factory=CheckLimits)

    @property
    def days(self) -> int | None:
        """The window's length in days; None for snapshot steps."""
        if self.window_start is None or self.window_end is None:
            return None
        return (self.window_end - self.window_start).days

    def to_json(self) -> dict[str, Any]:
        """The request as a remote job receives it: everything but the source password,
        which the job reads from the environment or a secret store itself."""
        return {
            "step": self.step,
            "tables": list(self.tables),
            "lake_root": self.lake_root,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "source": {"jdbc_url": self.source.jdbc_url, "user": self.source.user}
            if self.source
            else None,
            "limits": asdict(self.limits),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source_password: str = "") -> StepRequest:
        source = data.get("source")
        return cls(
            step=data["step"],
            tables=tuple(data["tables"]),
            lake_root=data["lake_root"],
            window_start=_date(data.get("window_start")),
            window_end=_date(data.get("window_end")),
            source=SourceConnection(source["jdbc_url"], source["user"], source_password)
            if source
            else None,
            limits=CheckLimits(**data.get("limits", {})),
        )


@dataclass
class TableReport:
    table: str
    row_count: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepReport:
    step: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    duration_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def in_catalogue_order(self) -> None:
        """Tables and checks in the catalogue's order, however the step's threads interleaved
        them (a table's own checks keep the order it made them in)."""
        self.tables = {t.id: self.tables[t.id] for t in tables.ALL_TABLES if t.id in self.tables}
        self.checks.sort(key=lambda check: CATALOGUE_ORDER[check.table])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepReport:
        """The same report a local run returns, rebuilt from what a remote job sent back."""
        return cls(
            step=data["step"],
            tables={key: TableReport(**value) for key, value in data["tables"].items()},
            checks=[CheckResult(**check) for check in data["checks"]],
            duration_seconds=data["duration_seconds"],
        )


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


CATALOGUE_ORDER = {table.id: index for index, table in enumerate(tables.ALL_TABLES)}
# Tables of a step landed at once (see `_Step.for_each`).
CONCURRENT_TABLES = 2
Item = TypeVar("Item")


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

    def for_each(self, items: list[Item], work: Callable[[Item], None]) -> None:
        """`work` on every item (a table, or a pair of them), `CONCURRENT_TABLES` at once: each
        is a chain of small Spark jobs whose driver-side work (planning, committing files)
        would leave the cores idle if the tables went one after the other. The first failure
        is raised once all have ended."""
        with ThreadPoolExecutor(CONCURRENT_TABLES, thread_name_prefix="table") as pool:
            for _ in pool.map(work, items):
                pass

    def record(self, table: Table, rows: int, **metadata: Any) -> None:
        self.report.tables[table.id] = TableReport(table.id, rows, metadata)

    def check(self, result: CheckResult) -> None:
        self.report.checks.append(result)

    def check_schema(self, table: Table, *paths: str) -> None:
        """Compare what the step wrote for `table` (under `paths`) with the catalogue."""
        if self.selected(table):
            self.check(quality.schema_matches(table, self.lake.stored_schema(list(paths))))

    def period_paths(self, table: Table, periods: list[date]) -> list[str]:
        return [layout.period_path(self.request.lake_root, table, period) for period in periods]

    def land_periods(
        self, table: Table, df: DataFrame, periods: list[date], clustered: bool = False
    ) -> DataFrame:
        """Write `df` if the table was asked for, and return what the lake now holds."""
        if not self.selected(table):
            return df
        self.lake.write_periods(df, table, periods, clustered)
        return self.lake.read_periods(
            table, periods[0], layout.next_period(table.grain, periods[-1])
        )

    def land_undated(self, table: Table, df: DataFrame) -> DataFrame:
        if not self.selected(table):
            return df
        self.lake.write_undated(df, table)
        return self.lake.read_undated(table)

    def land_snapshot(self, table: Table, df: DataFrame) -> DataFrame:
        if not self.selected(table):
            return df
        self.lake.write_snapshot(df, table)
        return self.lake.read_snapshot(table)


# --- raw ---------------------------------------------------------------------------------------


def _reader(step: _Step) -> SourceReader:
    if step.request.source is None:
        raise ValueError(f"step {step.request.step} needs a source connection")
    return SourceReader(step.spark, step.request.source, datetime.now(UTC))


def extract_snapshot(step: _Step) -> None:
    reader = _reader(step)

    def extract(table: Table) -> None:
        landed = step.land_snapshot(table, reader.snapshot(table)).count()
        step.record(table, landed)
        step.check_schema(table, layout.table_path(step.request.lake_root, table))
        step.check(
            quality.row_count_matches_source(
                table, {"all": reader.count_snapshot(table)}, {"all": landed}
            )
        )

    step.for_each(_selected(step, tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES), extract)


def extract_daily(step: _Step) -> None:
    reader = _reader(step)
    start, end = step.window
    days = layout.periods(Grain.DAILY, start, end)

    def extract(table: Table) -> None:
        # Counted first: how many rows the window holds decides how it is read.
        by_day = reader.count_by_day(table, start, end)
        window_rows = sum(n for day, n in by_day.items() if day is not None)
        # The read is split on day boundaries: each day's rows come from one JDBC query.
        dated = step.land_periods(
            table, reader.window(table, start, end, window_rows), days, clustered=True
        )
        undated = step.land_undated(table, reader.undated(table))
        lake_counts = quality.counts_by_day(dated, table.partition_column)
        lake_counts["undated"] = undated.count()
        source_counts = {day.isoformat() if day else "undated": n for day, n in by_day.items()}
        step.record(
            table,
            sum(lake_counts.values()),
            partitions=len(days),
            undated_rows=lake_counts["undated"],
        )
        step.check(quality.row_count_matches_source(table, source_counts, lake_counts))
        step.check_schema(
            table,
            *step.period_paths(table, days),
            layout.undated_path(step.request.lake_root, table),
        )
        newest = max(step.lake.existing_periods(table), default=None)
        step.check(
            quality.freshness(table, newest, datetime.now(UTC), step.request.limits.freshness_hours)
        )

    step.for_each(_selected(step, tables.RAW_BOOKINGS, tables.RAW_USER_VIEWING), extract)


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
    curations: list[curate.Curated],
    undated: tuple[int, int] = (0, 0),
) -> None:
    """Record both tables of a curated pair, check that every raw row is accounted for, and
    check the curated rows. `undated`: (raw, quarantined) rows with no day, left out of the
    quarantine share."""
    curated_rows = _check_rows(step, curated_table, curated_df)
    # After that check, which ran `curated` if the step did not write it.
    collapsed_rows = sum(curation.collapsed_rows() for curation in curations)
    accounting = quality.rows_accounted_for(
        curated_table, raw_rows, curated_rows, quarantine_df, collapsed_rows
    )
    step.check(accounting)
    step.check(
        quality.quarantine_share(
            curated_table, accounting, step.request.limits.max_quarantine_share, undated
        )
    )
    if step.selected(curated_table):
        step.record(curated_table, curated_rows, collapsed_rows=collapsed_rows)
    if step.selected(quarantine_table):
        step.record(
            quarantine_table,
            accounting.metadata["quarantined_rows"],
            quarantined_by_reason=accounting.metadata["quarantined_by_reason"],
        )


def _check_rows(step: _Step, table: Table, landed: DataFrame) -> int:
    """The row-level checks of a curated or presentation table (keys and value ranges), in one
    pass that also counts its rows."""
    rows, results = quality.row_checks(landed, table)
    for result in results:
        step.check(result)
    return rows


def curate_listings(step: _Step) -> None:
    raw = step.lake.read_snapshot(tables.RAW_APARTMENTS)
    result = curate.curate_listings(raw, step.lake.read_snapshot(tables.RAW_APARTMENT_ATTRIBUTES))
    curated_df = step.land_snapshot(tables.CURATED_LISTINGS, result.curated)
    step.check_schema(
        tables.CURATED_LISTINGS, layout.table_path(step.request.lake_root, tables.CURATED_LISTINGS)
    )
    quarantine_df = step.land_snapshot(tables.QUARANTINE_LISTINGS, result.quarantine)
    _account(
        step,
        tables.CURATED_LISTINGS,
        tables.QUARANTINE_LISTINGS,
        raw.count(),
        curated_df,
        quarantine_df,
        [result],
    )


@dataclass(frozen=True)
class _CuratedPair:
    """A raw table, the two tables its rules split it into, and the rules. `clustered`: the
    rules return the curated rows already gathered by day (see `Lake.write_periods`)."""

    raw: Table
    curated: Table
    quarantine: Table
    rules: Callable[[DataFrame], curate.Curated]
    clustered: bool = False


def curate_daily(step: _Step) -> None:
    start, end = step.window
    days = layout.periods(Grain.DAILY, start, end)
    listing_ids = step.lake.read_snapshot(tables.CURATED_LISTINGS).select("id")
    pairs = [
        _CuratedPair(
            tables.RAW_BOOKINGS,
            tables.CURATED_BOOKINGS,
            tables.QUARANTINE_BOOKINGS,
            lambda df: curate.curate_bookings(df, listing_ids),
        ),
        _CuratedPair(
            tables.RAW_USER_VIEWING,
            tables.CURATED_USER_VIEWING,
            tables.QUARANTINE_USER_VIEWING,
            lambda df: curate.curate_user_viewing(df, step.lake.write_partitions(len(days))),
            clustered=True,
        ),
    ]

    def curate_pair(pair: _CuratedPair) -> None:
        raw_table, curated_table, quarantine_table = pair.raw, pair.curated, pair.quarantine
        raw, raw_undated = (
            step.lake.read_periods(raw_table, start, end),
            step.lake.read_undated(raw_table),
        )
        dated, undated = pair.rules(raw), pair.rules(raw_undated)
        curated_df = step.land_periods(curated_table, dated.curated, days, pair.clustered)
        step.check_schema(curated_table, *step.period_paths(curated_table, days))
        if curated_table is tables.CURATED_BOOKINGS:
            step.check(quality.listings_exist(curated_df, listing_ids))
        # Undated rows always break a rule (their date is null): they land in quarantine only.
        undated_quarantine = step.land_undated(quarantine_table, undated.quarantine)
        quarantine_df = step.land_periods(quarantine_table, dated.quarantine, days).unionByName(
            undated_quarantine
        )
        # Undated rows are never curated (landed nowhere): counting them runs their rules,
        # which is what makes their merged rows known.
        undated.curated.count()
        undated_rows = raw_undated.count()
        _account(
            step,
            curated_table,
            quarantine_table,
            raw.count() + undated_rows,
            curated_df,
            quarantine_df,
            [dated, undated],
            undated=(undated_rows, undated_quarantine.count()),
        )

    step.for_each(
        [pair for pair in pairs if step.selected(pair.curated) or step.selected(pair.quarantine)],
        curate_pair,
    )


# --- presentation ------------------------------------------------------------------------------


def _publishable(step: _Step, grain: Grain, builders: dict[Table, Callable[[], DataFrame]]) -> None:
    start, end = step.window
    starts = layout.periods(grain, start, end)

    def land(table: Table) -> None:
        landed = step.land_periods(table, builders[table](), starts)
        rows, checks = quality.row_checks(landed, table)
        stored = step.lake.stored_schema(step.period_paths(table, starts))
        step.record(table, rows, periods=len(starts), preview=markdown_preview(landed, table))
        for check in [*checks, quality.schema_matches(table, stored)]:
            step.check(check)

    step.for_each(_selected(step, *builders), land)


def markdown_preview(df: DataFrame, table: Table, rows: int = 10) -> str:
    """The first rows of a KPI window, by key, as a Markdown table for the UI."""
    head = df.orderBy(*table.key).limit(rows).collect()
    lines = [
        "| " + " | ".join(table.column_names) + " |",
        "|" + "---|" * len(table.column_names),
        *("| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in head),
    ]
    return "\n".join(lines)


def kpis_weekly(step: _Step) -> None:
    start, end = step.window
    weeks = layout.periods(Grain.WEEKLY, start, end)
    lake = step.lake
    listings = lake.read_snapshot(tables.CURATED_LISTINGS)
    bookings = lake.read_periods(
        tables.CURATED_BOOKINGS, weeks[0] - timedelta(days=kpis.REPEAT_LOOKBACK_DAYS), end
    )
    week_bookings = kpis.weekly_confirmed(bookings, weeks)
    _publishable(
        step,
        Grain.WEEKLY,
        {
            tables.AVG_LISTING_PRICE: lambda: kpis.avg_listing_price(listings, weeks),
            tables.POPULAR_LOCATIONS: lambda: kpis.popular_locations(week_bookings, listings),
            tables.TOP_LISTINGS: lambda: kpis.top_listings(week_bookings, listings),
            tables.BOOKINGS_PER_USER: lambda: kpis.bookings_per_user(week_bookings),
            tables.AVG_BOOKING_DURATION: lambda: kpis.avg_booking_duration(week_bookings),
            tables.REPEAT_CUSTOMER_RATE: lambda: kpis.repeat_customer_rate(
                step.spark, bookings, weeks
            ),
            tables.ENGAGEMENT_FUNNEL: lambda: kpis.engagement_funnel(
                lake.read_periods(tables.CURATED_USER_VIEWING, start, end), week_bookings, weeks
            ),
        },
    )


def kpis_monthly(step: _Step) -> None:
    _, end = step.window
    months = layout.periods(Grain.MONTHLY, *step.window)
    listings = step.lake.read_snapshot(tables.CURATED_LISTINGS)
    # Bookings are made ahead: any booking made up to the month's end may hold its nights.
    bookings = step.lake.read_periods(tables.CURATED_BOOKINGS, None, end)
    _publishable(
        step,
        Grain.MONTHLY,
        {
            tables.OCCUPANCY_RATE: lambda: kpis.occupancy_rate(
                step.spark, listings, bookings, months
            )
        },
    )


STEPS: dict[str, Callable[[_Step], None]] = {
    "extract_snapshot": extract_snapshot,
    "extract_daily": extract_daily,
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
    step.report.in_catalogue_order()
    step.report.duration_seconds = round(time.monotonic() - started, 3)
    return step.report
