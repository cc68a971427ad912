"""Reading a window from the source: through the date index when it is a small share of the
table, by a scan when it is a large one; the same rows either way, and fingerprints that say
how many there are before they are read."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.contract import SourceConnection, StepRequest
from rental_platform.local.session import local_session
from rental_platform.seed import SCALES, seed_source
from rental_platform.spark import extract
from rental_platform.spark.extract import SourceReader
from rental_platform.spark.lake import Lake
from rental_platform.spark.steps import run_step
from rental_platform_tests.harness import Platform

SCALE = SCALES["tiny"]
VIEWS = tables.RAW_USER_VIEWING


@pytest.fixture(scope="module")
def reader(platform: Platform) -> SourceReader:
    seed_source(platform.admin.pymysql_kwargs(), SCALE, seed=3)
    platform.execute("ANALYZE TABLE user_viewing")
    mysql = platform.settings.mysql
    source = SourceConnection(mysql.jdbc_url, mysql.user, mysql.password)
    return SourceReader(local_session(), source, datetime(2025, 1, 1, tzinfo=UTC))


def _count(platform: Platform, where: str) -> int:
    with platform.source.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM user_viewing WHERE {where}")
        return cursor.fetchone()[0]


def _scans(df: DataFrame) -> bool:
    return "USE INDEX ()" in df._jdf.queryExecution().logical().toString()


def _rows(df: DataFrame) -> Counter[tuple]:
    return Counter(tuple(row) for row in df.drop("_extracted_at").collect())


def test_fingerprints_count_every_day_and_the_undated_rows(
    reader: SourceReader, platform: Platform
) -> None:
    start, end = SCALE.start, date(2100, 1, 1)
    fingerprints = reader.fingerprints(VIEWS, start, end)
    assert fingerprints[None].rows == _count(platform, "viewed_at IS NULL") > 0
    in_window = _count(platform, f"viewed_at >= '{start}' AND viewed_at < '{end}'")
    assert sum(f.rows for day, f in fingerprints.items() if day is not None) == in_window
    assert all(isinstance(day, date) for day in fingerprints if day is not None)
    assert reader.fingerprints(VIEWS, start, end) == fingerprints


def test_a_small_share_is_read_through_the_index_a_large_one_by_scanning(
    reader: SourceReader,
) -> None:
    days = [SCALE.start + timedelta(days=n) for n in range(SCALE.days) if n != 3]
    table_rows = reader.table_rows(VIEWS)
    assert table_rows > 0
    through_index = reader.days(VIEWS, days, rows=1)
    scanned = reader.days(VIEWS, days, rows=table_rows)
    assert not _scans(through_index)
    assert _scans(scanned)
    assert _rows(through_index) == _rows(scanned)
    read_days = {row[0] for row in scanned.selectExpr("to_date(viewed_at)").distinct().collect()}
    assert read_days == set(days)  # every day asked for, and no other (not the fourth)


def test_keys_are_looked_up_in_batches_each_found_once(
    reader: SourceReader, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many keys a night finds gone, each query lists at most KEYS_PER_LOOKUP of them;
    a key the source no longer has is simply not in the answer."""
    with platform.source.cursor() as cursor:
        cursor.execute(
            "SELECT booking_id, DATE(booking_date) FROM bookings ORDER BY booking_id LIMIT 23"
        )
        expected = dict(cursor.fetchall())
    missing = max(expected) + 10**9
    monkeypatch.setattr(extract, "KEYS_PER_LOOKUP", 5)
    queries = reader.queries
    found = reader.days_of(tables.RAW_BOOKINGS, "booking_id", [*expected, missing])
    assert found == expected
    assert reader.queries - queries == 5  # 24 keys, 5 to a query
    assert reader.days_of(tables.RAW_BOOKINGS, "booking_id", []) == {}
    assert reader.queries - queries == 5


def test_a_day_s_buckets_add_up_to_its_fingerprint_and_read_back_their_rows(
    reader: SourceReader,
) -> None:
    """A re-extraction compares a day bucket by bucket and reads only the buckets that differ:
    the buckets must add up to the day, and reading some must return exactly their rows, each
    with the digest its bucket was summed from."""
    days = [SCALE.start + timedelta(days=n) for n in (1, 2)]
    whole = reader.fingerprints_of_days(VIEWS, days)
    buckets = reader.bucket_fingerprints(VIEWS, days)
    assert set(buckets) == set(days)
    for day in days:
        assert len(buckets[day]) > 3
        assert sum(f.rows for f in buckets[day].values()) == whole[day].rows
        assert sum(int(f.digest) for f in buckets[day].values()) == int(whole[day].digest)
    chosen = sorted(buckets[days[0]])[:3]
    rows = reader.buckets_of_days(VIEWS, {days[0]: chosen, days[1]: []}).select(
        F.to_date("viewed_at").alias("day"),
        (F.col("_source_digest") % extract.DIGEST_BUCKETS).alias("bucket"),
    )
    assert Counter(tuple(row) for row in rows.collect()) == {
        (days[0], bucket): buckets[days[0]][bucket].rows for bucket in chosen
    }
    digests = reader.days(VIEWS, [days[1]], rows=1).agg(F.sum("_source_digest"))
    assert str(digests.collect()[0][0]) == whole[days[1]].digest


def test_a_day_kept_without_digests_is_read_again_whole(
    reader: SourceReader, platform: Platform, tmp_path: Path
) -> None:
    """A lake written before rows kept their digest: its rows fall in no bucket, so the day is
    read from the source again, whole, and kept with digests; a day that has them and did not
    change reads nothing."""
    days = [SCALE.start + timedelta(days=n) for n in (1, 2)]
    request = StepRequest(
        "extract_daily",
        (VIEWS.id,),
        str(tmp_path / "lake"),
        days[0],
        days[1] + timedelta(days=1),
        source=reader.source,
    )
    assert run_step(reader.spark, request).tables[VIEWS.id].metadata["rows_read_again"] == 0
    older = Lake(reader.spark, request.lake_root)
    key = days[0].isoformat()
    facts = older.partition(VIEWS, key).facts
    without = older.read(VIEWS, [key]).withColumn("_source_digest", F.lit(None))
    older.stage_periods(without.localCheckpoint(), VIEWS, [days[0]])
    older.add_facts(VIEWS, key, **facts)
    older.commit([VIEWS], "an older release")

    report = run_step(reader.spark, request)
    day_rows = _count(platform, f"DATE(viewed_at) = '{days[0]}'")
    assert report.tables[VIEWS.id].metadata["rows_read_again"] == day_rows > 0
    lake = Lake(reader.spark, request.lake_root)
    assert _rows(lake.read(VIEWS, [key])) == _rows(reader.days(VIEWS, [days[0]], rows=1))
    assert run_step(reader.spark, request).tables[VIEWS.id].metadata["rows_read_again"] == 0
