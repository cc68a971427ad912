"""Reading the source database over JDBC, only ever with SELECT.

Daily tables are read one window at a time, split into contiguous day ranges. A short window
(an increment) is read through the table's date index. A window holding a larger share of the
table is read by scanning it where the source keeps rows in no date order: fetching them
through the index reads its pages at random, which costs far more than reading them all in
order. Where it keeps them in date order, as a table its application appends to does, a
window's rows lie together and the index reaches them for a fraction of a scan; the first
rows the table stores tell which (`SourceReader.in_date_order`). Rows whose partition column
is null are read separately: they belong to no day, but must not be lost.

The source has no change timestamps, so what changed is found by fingerprints: per day, the
rows and the sum of a CRC32 of each row's values (a sum, not a XOR, so that two equal rows do
not cancel out, nor a change made to both of them). A fingerprint is read before the rows it
describes, and recorded with them: a row changed after the fingerprint was read makes the next
comparison differ, never the reverse, so no change is missed for having raced the extraction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from rental_platform.contract import SourceConnection
from rental_platform.spark.lake import conform
from rental_platform.tables import EXTRACTED_AT, Table

# Parallel JDBC reads per window: they overlap the source's and the driver's work; more than
# the cores can serve only adds load on the source.
MAX_READ_PARTITIONS = 4
# A window holding more than this share of a table's rows is read by scanning the table: past
# a few days, reading a large table's index pages at random costs more than reading it all in
# order (benchmarks/README.md, "Local machinery", has the measurements).
FULL_SCAN_SHARE = 0.02
# The same for a window's checksums, lower: they are one query, not parallel reads, and
# through the index their cost grows with the days, while a scan's does not (the measurements
# are in benchmarks/results/nightly.md).
CHECKSUM_SCAN_SHARE = 0.008
# A table keeps its rows in date order when the first `ORDER_SAMPLE_ROWS` it stores span at
# most `ORDERED_SPAN_SHARE` of its days; its windows are then read through the index up to
# `ORDERED_SCAN_SHARE` of it (benchmarks/results/nightly.md has the measurements).
ORDER_SAMPLE_ROWS = 10_000
ORDERED_SPAN_SHARE = 0.05
ORDERED_SCAN_SHARE = 0.12
# Parallel reads of a scanned window: each scans the whole table on the source, so no more
# than keep two cores busy.
SCAN_READ_PARTITIONS = 2
# Days counted to estimate the rows of days the lake has never held (a first backfill), for
# choosing between the index and a scan: the first, the middle and the last.
SAMPLED_DAYS = 3
# Keys looked up by primary key in one query, at most: a mass deletion can leave millions of
# keys gone from the compared days, more than one statement can list (max_allowed_packet).
KEYS_PER_LOOKUP = 50_000


def source_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.name != EXTRACTED_AT.name]


@dataclass(frozen=True)
class Fingerprint:
    """Rows in the source (a day's, or a snapshot's): how many, and the sum of their CRC32s."""

    rows: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "digest": self.digest}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Fingerprint | None:
        return cls(data["rows"], data["digest"]) if data else None


NO_ROWS = Fingerprint(0, "0")


@dataclass(frozen=True)
class SourceColumn:
    """A column of a source table: its MySQL type, and precision and scale for numbers."""

    data_type: str
    precision: int | None = None
    scale: int | None = None


def row_digest_sql(table: Table) -> str:
    """A CRC32 of a row's values. CONCAT_WS skips nulls, so a bitmask of which columns are null
    goes first: (NULL, 'a') and ('a', NULL) must differ."""
    columns = source_columns(table)
    nulls = " + ".join(f"(`{c}` IS NULL) * {1 << i}" for i, c in enumerate(columns))
    values = ", ".join(f"`{c}`" for c in columns)
    return f"CRC32(CONCAT_WS('|', {nulls}, {values}))"


def fingerprint_sql(table: Table) -> str:
    """The aggregates of a fingerprint (`Fingerprint`) of the rows a query selects: n, digest."""
    return f"COUNT(*) AS n, CAST(SUM({row_digest_sql(table)}) AS CHAR) AS digest"


def days_predicate(column: str, days: Iterable[date], scan: bool = False) -> str:
    """A predicate on `column` for a set of days: as few ranges as the days allow, each served
    by the date index. For a scan, which tests every row of the table, days in more than one
    range are listed instead (`DATE(column) IN`): the source tests a row against ranges one
    after another, and searches a list by halves (benchmarks/results/nightly.md)."""
    chosen = sorted(set(days))
    ranges: list[tuple[date, date]] = []
    for day in chosen:
        if ranges and ranges[-1][1] == day:
            ranges[-1] = (ranges[-1][0], day + timedelta(days=1))
        else:
            ranges.append((day, day + timedelta(days=1)))
    if scan and len(ranges) > 1:
        listed = ", ".join(f"'{day.isoformat()}'" for day in chosen)
        return f"DATE(`{column}`) IN ({listed})"
    return (
        " OR ".join(
            f"(`{column}` >= '{a.isoformat()}' AND `{column}` < '{b.isoformat()}')"
            for a, b in ranges
        )
        or "FALSE"
    )


class SourceReader:
    def __init__(self, spark: SparkSession, source: SourceConnection, extracted_at: datetime):
        self.spark = spark
        self.source = source
        self.extracted_at = extracted_at
        # Queries sent to the source (each JDBC read of a query, or of a partitioned window),
        # counted under a lock: a step reads tables from several threads.
        self.queries = 0
        self._counting = threading.Lock()
        # Each table's row estimate and order, asked once: a step's checksum and its read both
        # judge by them. A table in date order maps to its date index, else to None.
        self._table_rows: dict[str, int] = {}
        self._ordered_index: dict[str, str | None] = {}

    def snapshot(self, table: Table) -> DataFrame:
        return self._stamp(self._query(table, None), table)

    def days(self, table: Table, days: list[date], rows: int) -> DataFrame:
        """The rows of the given days, `rows` of them by the source's count: through the date
        index, or by scanning the table if they are more than `FULL_SCAN_SHARE` of it. The days
        are read in a few parallel queries, each of whole days (consecutive ones as ranges)."""
        column = table.partition_column
        scan = self._scans(table, rows, FULL_SCAN_SHARE)
        chosen = sorted(days)
        parts = max(1, min(len(chosen), SCAN_READ_PARTITIONS if scan else MAX_READ_PARTITIONS))
        bounds = [round(i * len(chosen) / parts) for i in range(parts + 1)]
        predicates = [
            days_predicate(column, chosen[a:b], scan) for a, b in pairwise(bounds) if b > a
        ] or ["FALSE"]
        return self._stamp(self._query(table, predicates, scan), table)

    def undated(self, table: Table) -> DataFrame:
        return self._stamp(self._query(table, [f"`{table.partition_column}` IS NULL"]), table)

    def fingerprint_of_snapshot(self, table: Table) -> Fingerprint:
        """The whole table's fingerprint, in one query: a snapshot reads it before its rows,
        to compare with the one the lake's snapshot was taken with, and to count them by."""
        row = self._sql(f"SELECT {fingerprint_sql(table)} FROM `{table.name}`").collect()[0]
        return Fingerprint(row["n"], row["digest"] or NO_ROWS.digest)

    def fingerprints(
        self, table: Table, start: date, end: date, rows: int, undated: bool = True
    ) -> dict[date | None, Fingerprint]:
        """The fingerprint of every day of [start, end) that has rows, and of the rows with no
        day (under None) if `undated`: one grouped query, which scans the table if the days
        hold more than `CHECKSUM_SCAN_SHARE` of it by `rows`, an estimate
        (`changes.estimated_rows`).

        Left to choose, the source's optimiser may read a tenth of the table through the date
        index, row by row at random where rows are in no date order: several times slower
        than scanning (benchmarks/results/nightly.md)."""
        days = [start + timedelta(days=n) for n in range((end - start).days)]
        return self.fingerprints_of_days(table, days, rows, undated)

    def fingerprints_of_days(
        self, table: Table, days: Iterable[date], rows: int, undated: bool = True
    ) -> dict[date | None, Fingerprint]:
        """As `fingerprints`, of the given days only (and of the rows with no day if
        `undated`): a nightly run extracts a few days of its window, and checksumming the
        others would read their rows for nothing. No query when there is nothing to checksum."""
        days = list(days)
        if not days and not undated:
            return {}
        scan = self._scans(table, rows, CHECKSUM_SCAN_SHARE)
        days_sql = days_predicate(table.partition_column, days, scan)
        return self._fingerprints(table, days_sql, scan, undated)

    def counts_of_days(self, table: Table, days: Iterable[date]) -> dict[date | None, int]:
        """The rows of each of the given days that has rows, and of the rows with no day (under
        None): counted through the date index alone, which costs the source far less than
        checksumming their rows (benchmarks/results/nightly.md)."""
        rows = self._by_day(table, "COUNT(*) AS n", days_predicate(table.partition_column, days))
        return {row["day"]: row["n"] for row in rows}

    def sampled_rows(self, table: Table, days: Iterable[date]) -> int:
        """The rows of the given days, estimated from `SAMPLED_DAYS` of them counted through
        the date index: a few index lookups, where counting them all reads as many index
        entries as they have rows."""
        chosen = sorted(days)
        if not chosen:
            return 0
        step = (len(chosen) - 1) / max(1, SAMPLED_DAYS - 1)
        sample = sorted({chosen[round(i * step)] for i in range(SAMPLED_DAYS)})
        counted = self.counts_of_days(table, sample)
        rows = sum(n for day, n in counted.items() if day is not None)
        return rows * len(chosen) // len(sample)

    def _fingerprints(
        self, table: Table, days_sql: str, scan: bool, undated: bool = True
    ) -> dict[date | None, Fingerprint]:
        rows = self._by_day(
            table,
            fingerprint_sql(table),
            days_sql,
            scan,
            undated,
        )
        return {row["day"]: Fingerprint(row["n"], row["digest"]) for row in rows}

    def _by_day(
        self,
        table: Table,
        aggregates: str,
        days_sql: str,
        scan: bool = False,
        undated: bool = True,
    ) -> list[Row]:
        """`aggregates` of the rows of `days_sql`'s days and, if `undated`, of those with no
        day, by day; by scanning the table if `scan`, else as the source's optimiser chooses."""
        column = table.partition_column
        where = f"{days_sql} OR `{column}` IS NULL" if undated else days_sql
        return self._sql(
            f"SELECT DATE(`{column}`) AS day, {aggregates} FROM {self._from(table, scan)} "
            f"WHERE {where} GROUP BY DATE(`{column}`)"
        ).collect()

    def keys_by_day(self, table: Table, key: str, days: Iterable[date], undated: bool) -> DataFrame:
        """(key, day) of the rows of the given days, and of the rows with no day if `undated`
        (day null): what the source holds there now, to compare with the lake's."""
        column = table.partition_column
        where = days_predicate(column, days) + (f" OR `{column}` IS NULL" if undated else "")
        return self._sql(
            f"SELECT `{key}` AS `key`, DATE(`{column}`) AS day FROM `{table.name}` WHERE {where}"
        )

    def days_of(self, table: Table, key: str, keys: list[int]) -> dict[int, date | None]:
        """The current day of each key that the source still has (by its primary key). The
        keys are integers read back from the lake's typed files, never text."""
        column = table.partition_column
        found: dict[int, date | None] = {}
        for first in range(0, len(keys), KEYS_PER_LOOKUP):
            listed = ", ".join(str(int(k)) for k in keys[first : first + KEYS_PER_LOOKUP])
            rows = self._sql(
                f"SELECT `{key}` AS `key`, DATE(`{column}`) AS day FROM `{table.name}` "
                f"WHERE `{key}` IN ({listed})"
            ).collect()
            found.update((row["key"], row["day"]) for row in rows)
        return found

    def columns(self, table: Table) -> dict[str, SourceColumn]:
        """The source table's columns as its information_schema describes them (no row read):
        what schema drift is judged on."""
        rows = self._sql(
            "SELECT COLUMN_NAME AS name, DATA_TYPE AS type, NUMERIC_PRECISION AS p, "
            "NUMERIC_SCALE AS s FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table.name}'"
        ).collect()
        return {
            row["name"]: SourceColumn(
                str(row["type"]).lower(),
                None if row["p"] is None else int(row["p"]),
                None if row["s"] is None else int(row["s"]),
            )
            for row in rows
        }

    def _scans(self, table: Table, rows: int, share: float) -> bool:
        """Whether a read of `rows` of the table scans it: when they are more than `share` of
        it or, where the table keeps its rows in date order, more than `ORDERED_SCAN_SHARE`.
        The order is asked only of a read that `share` alone would scan."""
        if rows <= 0 or rows <= share * self.table_rows(table):
            return False
        return rows > ORDERED_SCAN_SHARE * self.table_rows(table) or not self.in_date_order(table)

    def in_date_order(self, table: Table) -> bool:
        """Whether the table keeps its rows in date order: the first `ORDER_SAMPLE_ROWS` it
        stores (a scan's first rows, in the table's own order) span at most
        `ORDERED_SPAN_SHARE` of the days the whole table spans (its date index's two ends).
        Rows in no order span most of the table's days in any few thousand of them. Its reads
        that do not scan then go through the date index (`_from`): the source's optimiser,
        which does not know the order, would scan a window of a tenth of the table."""
        if table.name not in self._ordered_index:
            column = table.partition_column
            row = self._sql(
                f"SELECT (SELECT DATEDIFF(MAX(d), MIN(d)) FROM (SELECT `{column}` AS d "
                f"FROM `{table.name}` USE INDEX () LIMIT {ORDER_SAMPLE_ROWS}) AS head) AS head, "
                f"(SELECT DATEDIFF(MAX(`{column}`), MIN(`{column}`)) FROM `{table.name}`) AS days, "
                "(SELECT MIN(INDEX_NAME) FROM information_schema.STATISTICS "
                f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table.name}' "
                f"AND COLUMN_NAME = '{column}' AND SEQ_IN_INDEX = 1) AS date_index"
            ).collect()[0]
            ordered = (
                row["head"] is not None
                and row["days"]
                and (row["head"] <= ORDERED_SPAN_SHARE * row["days"])
            )
            self._ordered_index[table.name] = row["date_index"] if ordered else None
        return self._ordered_index[table.name] is not None

    def table_rows(self, table: Table) -> int:
        """The source's estimate of the table's rows, from its statistics: nothing is scanned.
        Asked once per reader (a step)."""
        if table.name not in self._table_rows:
            rows = self._sql(
                "SELECT TABLE_ROWS AS n FROM information_schema.TABLES "
                f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table.name}'"
            ).collect()
            self._table_rows[table.name] = int(rows[0]["n"] or 0) if rows else 0
        return self._table_rows[table.name]

    def _query(self, table: Table, predicates: list[str] | None, scan: bool = False) -> DataFrame:
        self._count(len(predicates) if predicates else 1)
        columns = ", ".join(f"`{name}`" for name in source_columns(table))
        relation = f"(SELECT {columns} FROM `{table.name}`) AS source"
        if predicates is None:
            return self.spark.read.jdbc(
                self.source.jdbc_url, relation, properties=self.source.properties()
            )
        return self.spark.read.jdbc(
            self.source.jdbc_url,
            self._from(table, scan),
            predicates=predicates,
            properties=self.source.properties(),
        ).select(*source_columns(table))

    def _from(self, table: Table, scan: bool) -> str:
        """The table in a FROM clause: with no index (`USE INDEX ()`) if `scan`; through its
        date index if it is in date order (`in_date_order`); else as the source's optimiser
        chooses."""
        if scan:
            return f"`{table.name}` USE INDEX ()"
        index = self._ordered_index.get(table.name)
        return f"`{table.name}` FORCE INDEX (`{index}`)" if index else f"`{table.name}`"

    def _count(self, queries: int) -> None:
        with self._counting:
            self.queries += queries

    def _sql(self, query: str) -> DataFrame:
        self._count(1)
        return self.spark.read.jdbc(
            self.source.jdbc_url, f"({query}) AS q", properties=self.source.properties()
        )

    def _stamp(self, df: DataFrame, table: Table) -> DataFrame:
        return conform(df.withColumn(EXTRACTED_AT.name, F.lit(self.extracted_at)), table)
