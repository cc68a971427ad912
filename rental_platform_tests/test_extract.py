"""Reading a window from the source: through the date index when it is a small share of the
table, by a scan when it is a large one; the same rows either way, and fingerprints that say
how many there are before they are read."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import DataFrame

from rental_platform import tables
from rental_platform.contract import SourceConnection, StepRequest
from rental_platform.local.session import local_session
from rental_platform.seed import SCALES, seed_source
from rental_platform.spark import changes, extract
from rental_platform.spark.extract import SourceReader
from rental_platform.spark.lake import Lake
from rental_platform.spark.steps import run_step
from rental_platform_tests.harness import Platform, queries_sent

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
    fingerprints = reader.fingerprints(VIEWS, start, end, rows=0)
    assert fingerprints[None].rows == _count(platform, "viewed_at IS NULL") > 0
    in_window = _count(platform, f"viewed_at >= '{start}' AND viewed_at < '{end}'")
    assert sum(f.rows for day, f in fingerprints.items() if day is not None) == in_window
    assert all(isinstance(day, date) for day in fingerprints if day is not None)
    assert reader.fingerprints(VIEWS, start, end, rows=0) == fingerprints


def test_fingerprints_of_a_large_share_are_read_by_scanning_the_same_either_way(
    reader: SourceReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Days said to hold a large share of the table are checksummed by a scan, a small share
    as the source's optimiser chooses; the fingerprints are the same."""
    sent = queries_sent(monkeypatch)
    table_rows = reader.table_rows(VIEWS)
    start, end = SCALE.start, SCALE.start + timedelta(days=SCALE.days)
    days = [start + timedelta(days=n) for n in range(0, SCALE.days, 2)]
    answers = []
    for rows, scans in [(1, False), (table_rows, True)]:
        sent.clear()
        answers.append(
            (
                reader.fingerprints(VIEWS, start, end, rows),
                reader.fingerprints_of_days(VIEWS, days, rows),
            )
        )
        checksums = [query for query in sent if "CRC32" in query]
        assert len(checksums) == 2
        assert all(("USE INDEX ()" in query) == scans for query in checksums)
    assert answers[0] == answers[1]
    assert set(answers[0][1]) == {*days, None}


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


def _store_views_in_order(platform: Platform, order: str) -> None:
    """Store the source's views again, the same rows, in the order `order` sorts them: the
    order a scan of the table meets them in."""
    platform.execute("CREATE TEMPORARY TABLE views_kept AS SELECT * FROM user_viewing")
    platform.execute("DELETE FROM user_viewing")
    platform.execute(f"INSERT INTO user_viewing SELECT * FROM views_kept ORDER BY {order}")
    platform.execute("DROP TEMPORARY TABLE views_kept")


def test_a_table_in_date_order_is_read_through_its_index_up_to_a_larger_share(
    reader: SourceReader, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window of a few percent of the table is scanned where the table keeps its rows in no
    date order, and read through the date index where it keeps them in date order, as a table
    an application appends to does: there its rows lie together. The same rows either way."""
    # 100 of the tiny table's 6,000 views: in date order, less than a day of its 21.
    monkeypatch.setattr(extract, "ORDER_SAMPLE_ROWS", 100)
    days = [SCALE.start + timedelta(days=n) for n in range(5, 7)]
    rows = _count(platform, f"viewed_at >= '{days[0]}' AND viewed_at < '{days[0] + timedelta(2)}'")
    read = {}
    try:
        for order, ordered in [
            ("viewed_at", True),
            ("CRC32(CONCAT_WS('|', user_id, apartment_id, viewed_at, call_to_action))", False),
        ]:
            _store_views_in_order(platform, order)
            fresh = SourceReader(reader.spark, reader.source, reader.extracted_at)
            table_rows = fresh.table_rows(VIEWS)
            assert (
                extract.FULL_SCAN_SHARE * table_rows
                < rows
                < extract.ORDERED_SCAN_SHARE * table_rows
            )
            assert fresh.in_date_order(VIEWS) == ordered
            read[ordered] = fresh.days(VIEWS, days, rows)
            plan = read[ordered]._jdf.queryExecution().logical().toString()
            assert ("FORCE INDEX (`idx_user_viewing_viewed_at`)" in plan) == ordered
            assert _scans(read[ordered]) != ordered
            assert _scans(fresh.days(VIEWS, days, table_rows))
    finally:
        _store_views_in_order(platform, "viewed_at")
    assert _rows(read[True]) == _rows(read[False])
    assert sum(_rows(read[True]).values()) == rows


def test_a_step_s_checksum_and_read_of_a_table_ask_its_statistics_once(
    reader: SourceReader, platform: Platform
) -> None:
    """The checksum of an extraction's days and their read each judge by the table's row
    estimate: one statistics query between them, not one each."""
    fresh = SourceReader(reader.spark, reader.source, reader.extracted_at)
    days = [SCALE.start + timedelta(days=n) for n in range(3)]
    fresh.fingerprints_of_days(VIEWS, days, rows=1)
    after_checksum = fresh.queries
    fresh.days(VIEWS, days, rows=1)
    assert fresh.queries - after_checksum == min(len(days), extract.MAX_READ_PARTITIONS)
    assert fresh.table_rows(VIEWS) == reader.table_rows(VIEWS) > 0


def test_a_scan_lists_scattered_days_and_selects_the_same_rows(platform: Platform) -> None:
    """Through the index, days are ranges; a scan tests each row, and gets scattered days as a
    list of dates instead, consecutive ones still as a range. The source selects the same rows
    either way."""
    days = [SCALE.start + timedelta(days=n) for n in (0, 1, 3, 6)]
    ranges = extract.days_predicate("viewed_at", days)
    listed = extract.days_predicate("viewed_at", days, scan=True)
    assert ranges.count(" OR ") == 2
    assert listed == "DATE(`viewed_at`) IN (" + ", ".join(f"'{day}'" for day in days) + ")"
    assert extract.days_predicate("viewed_at", days[:2], scan=True) == (
        extract.days_predicate("viewed_at", days[:2])
    )
    assert _count(platform, listed) == _count(platform, ranges) > 0


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


def test_a_first_extraction_estimates_its_days_from_a_sample_and_checksums_them_by_a_scan(
    reader: SourceReader, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lake holds no day of the table yet: the rows of the days to checksum are estimated
    from a few of them counted through the index (one query), and, as the whole window is a
    large share of the table, checksummed by a scan, not as the source's optimiser would
    choose (through the index, at random, on a large source). Once the lake holds days, it
    estimates them itself: its count of the days it holds, its mean per day for the others."""
    days = [SCALE.start + timedelta(days=n) for n in range(SCALE.days)]
    exact = _count(platform, f"viewed_at >= '{days[0]}' AND viewed_at < '{SCALE.end}'")
    empty = Lake(reader.spark, str(tmp_path / "empty"))
    queries = reader.queries
    sampled = changes.estimated_rows(empty, reader, VIEWS, days)
    assert reader.queries - queries == 1
    assert exact / 2 < sampled < exact * 2

    sent = queries_sent(monkeypatch)
    lake_root = str(tmp_path / "lake")
    held = days[: SCALE.days // 2]
    run_step(
        reader.spark,
        StepRequest(
            "extract_daily",
            (VIEWS.id,),
            lake_root,
            held[0],
            held[-1] + timedelta(days=1),
            source=reader.source,
        ),
    )
    (checksum,) = [query for query in sent if "CRC32" in query]
    assert "USE INDEX ()" in checksum

    lake = Lake(reader.spark, lake_root)
    per_day = {day: lake.partition(VIEWS, day.isoformat()).rows for day in held}
    queries = reader.queries
    asked = days[len(held) - 3 : len(held) + 2]  # 3 held, 2 not
    expected = sum(per_day[day] for day in asked[:3]) + 2 * sum(per_day.values()) // len(held)
    assert changes.estimated_rows(lake, reader, VIEWS, asked) == expected
    assert reader.queries == queries
