"""The nightly run on a source that changed under the lake (kpis.md, "Always equal to a full
recompute"), with a mutable horizon of 7 days: every kind of change is found, re-extracted,
re-curated and recomputed, so that after the night every KPI table equals the DuckDB reference
computed from scratch, except for the one change older than the horizon, which the audit then
finds. Real MariaDB, Spark and DuckDB; the CLI's own code path (`runs.run_cycle`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from benchmarks.reference import compare, history_differences, run_reference, snapshot_listings
from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.layer import FINGERPRINTS_FRESH_FOR, fresh_fingerprints
from rental_platform.contract import ROW_COUNT, SourceConnection, StepRequest, checks_for
from rental_platform.cycle import RANGE_END, RANGE_START, SOURCE_CHANGES
from rental_platform.local.session import local_session
from rental_platform.runs import RunOutcome
from rental_platform.spark.changes import _may_hold, row_differences
from rental_platform.spark.extract import NO_ROWS, SourceReader
from rental_platform.spark.lake import Lake, spark_schema
from rental_platform.spark.manifest import UNDATED, Partition, committed_files
from rental_platform.spark.steps import LAST_CHECKOUT, days_with_stays, run_step
from rental_platform.tables import Table
from rental_platform_tests.harness import Platform, queries_sent

FIRST, BACKFILLED, NIGHT = date(2025, 1, 1), date(2025, 1, 20), date(2025, 1, 21)
HORIZON = 7  # days compared by the nightly run: Jan 14 .. Jan 21
BOOKINGS_RAW, VIEWS_RAW = tables.RAW_BOOKINGS, tables.RAW_USER_VIEWING
LISTINGS = [
    # id, title, source, price, currency, listing_created_on, is_active, last_modified
    (1, "Loft", "web", "100.00", "USD", "2024-12-01 09:00:00", 1, None),
    (2, "Flat", "web", "300.00", "USD", "2024-12-02 09:00:00", 1, None),
    (3, "Room", "web", "200.00", "EUR", "2024-12-03 09:00:00", 0, None),
]
CITIES = [(1, "Austin", "TX"), (2, "Austin", "TX"), (3, "Boston", "MA")]
# Listing 9 exists all along, but the source only gets it tonight: its bookings were rejected.
LATE_LISTING = (9, "Late", "web", "150.00", "USD", "2024-12-15 09:00:00", 1, None)


def booking(booking_id: int, user: int, listing: int, day: date, status: str = "confirmed"):
    checkin = day + timedelta(days=2)
    return (
        booking_id,
        user,
        listing,
        f"{day} 10:00:00",
        str(checkin),
        str(checkin + timedelta(days=3)),
        "300.00",
        "USD",
        status,
    )


# One booking a day, booking_id 100 + day of January, users cycling through four.
BOOKINGS = [
    booking(100 + n, 1 + n % 4, 1 + n % 3, FIRST + timedelta(days=n - 1))
    for n in range(1, BACKFILLED.day + 1)
]
BOOKINGS[4] = booking(105, 2, 3, date(2025, 1, 5), "pending")  # confirmed late, in the horizon
BOOKINGS[14] = booking(115, 4, 1, date(2025, 1, 15), "pending")
BOOKINGS[5] = booking(106, 3, 9, date(2025, 1, 6))  # a booking of the late listing
VIEWS = [
    (1, 1, f"{FIRST + timedelta(days=n)} 08:00:00", 0, None if n % 2 else "book_now")
    for n in range(BACKFILLED.day)
] + [(3, 2, None, 0, "book_now")]  # no day: quarantined, and unchanged tonight


@dataclass
class Night:
    platform: Platform
    outcomes: list[RunOutcome]
    backfill_plan: dict
    plan: dict
    differences: dict[str, list[tuple]]
    reference: Path
    history: Path
    undated_before: dict[str, Partition | None]  # per raw table, before the night


def _reference(platform: Platform, folder: Path, as_of: date, history: Path) -> Path:
    """The reference over the source as it is now, with its own listing history."""
    snapshot_listings(history, platform.settings.mysql, as_of)
    database = folder / f"reference-{as_of}.duckdb"
    run_reference(platform.settings.mysql, FIRST, as_of, database, history)
    return database


def _differences(platform: Platform, reference: Path) -> dict[str, list[tuple]]:
    warehouse = Path(platform.settings.warehouse.database)
    return {table: rows for table, rows in compare(warehouse, reference).items() if rows}


@pytest.fixture(scope="module")
def night(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Night:
    folder = tmp_path_factory.mktemp("change_detection")
    history = folder / "listing_history.duckdb"
    platform.settings = dataclasses.replace(
        platform.settings, mutable_days=HORIZON, max_quarantine_share=0.5
    )
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", LISTINGS)
    platform.execute(
        "INSERT INTO apartment_attributes (id, cityname, state) VALUES (%s,%s,%s)", CITIES
    )
    platform.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", BOOKINGS)
    platform.execute("INSERT INTO user_viewing VALUES (%s,%s,%s,%s,%s)", VIEWS)
    platform.run(FIRST, BACKFILLED)
    assert not _differences(platform, _reference(platform, folder, BACKFILLED, history))
    backfill_plan = _latest_plan(platform)

    # The day that ends tonight, and what changed under the lake meanwhile.
    platform.execute(
        "INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        [booking(201, 1, 2, NIGHT), booking(202, 3, 1, NIGHT, "cancelled")],
    )
    platform.execute("UPDATE bookings SET booking_status = 'confirmed' WHERE booking_id = 115")
    platform.execute("UPDATE bookings SET booking_status = 'confirmed' WHERE booking_id = 105")
    # Moved into the horizon from a day before it, and out of it to a day before it.
    platform.execute(
        "UPDATE bookings SET booking_date = '2025-01-16 11:00:00', checkin_date = '2025-01-17', "
        "checkout_date = '2025-01-19' WHERE booking_id = 103"
    )
    platform.execute(
        "UPDATE bookings SET booking_date = '2025-01-02 12:00:00' WHERE booking_id = 119"
    )
    platform.execute("UPDATE bookings SET booking_date = NULL WHERE booking_id = 118")
    platform.execute("DELETE FROM bookings WHERE booking_id = 117")
    # Late views: one on a day in the horizon; and one deleted.
    platform.execute(
        "INSERT INTO user_viewing VALUES (2, 2, '2025-01-15 09:00:00', 1, 'contact_owner')"
    )
    platform.execute("DELETE FROM user_viewing WHERE viewed_at = '2025-01-14 08:00:00'")
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", [LATE_LISTING])
    platform.execute("UPDATE apartments SET price = 120.00 WHERE id = 1")
    # Older than the horizon: the nightly run cannot see it, the audit will.
    platform.execute("UPDATE bookings SET booking_status = 'cancelled' WHERE booking_id = 104")

    lake = Lake(local_session(), platform.settings.lake_root)
    undated_before = {t.id: lake.partition(t, UNDATED) for t in (BOOKINGS_RAW, VIEWS_RAW)}
    outcomes = platform.nightly(NIGHT)
    (snapshots,) = [o for o in outcomes if o.job == "snapshots"]
    plan = _latest_plan(platform)
    assert platform.instance.get_latest_materialization_event(SOURCE_CHANGES).run_id == (
        snapshots.run_id
    )
    reference = _reference(platform, folder, NIGHT, history)
    return Night(
        platform,
        outcomes,
        backfill_plan,
        plan,
        _differences(platform, reference),
        reference,
        history,
        undated_before,
    )


def _latest_plan(platform: Platform) -> dict:
    event = platform.instance.get_latest_materialization_event(SOURCE_CHANGES)
    return event.asset_materialization.metadata["plan"].value


def test_a_first_backfill_reads_nothing_from_the_source_it_extracts_anyway(night: Night) -> None:
    """Every day of a range run is extracted whatever its fingerprint says, and an empty lake
    holds no copy a moved key could have left: no day is checksummed, no key is read. What
    remains: each table's columns (for schema drift) and the checksum of the bookings' rows
    with no day (none yet). The views' are read again whatever they are: never checksummed."""
    assert night.backfill_plan["cost"] == {"source_queries": 3, "source_rows_checksummed": 0}
    days = (BACKFILLED - FIRST).days + 1
    for extracted in night.backfill_plan["extract"].values():
        assert len(extracted) == days + 1  # and the undated


def test_the_plan_names_every_changed_day_and_why(night: Night) -> None:
    extract = night.plan["extract"]
    bookings = extract["raw.bookings"]
    assert bookings.pop("2025-01-21") == "new"
    assert bookings.pop("undated") == "rows with no day changed"
    assert set(bookings) == {
        "2025-01-02",  # 119 moved here from the horizon
        "2025-01-03",  # 103 moved away into the horizon
        "2025-01-15",  # 115 confirmed
        "2025-01-16",  # 103 moved here
        "2025-01-17",  # 117 deleted
        "2025-01-18",  # 118 lost its date
        "2025-01-19",  # 119 moved away
    }
    assert bookings["2025-01-17"] == "changed: 1 rows removed (net)"
    assert bookings["2025-01-15"] == "changed: rows changed (1 rows)"
    assert bookings["2025-01-02"].startswith("a row moved here (booking_id 119)")
    assert bookings["2025-01-03"].startswith("a row moved away (booking_id 103)")
    views = extract["raw.user_viewing"]
    assert views.pop("undated") == "rows with no day: read every time"  # no key to compare
    assert set(views) == {"2025-01-14", "2025-01-15", "2025-01-21"}
    # Booking 105 of Jan 5 was confirmed too, but Jan 5 is older than the horizon.
    assert "2025-01-05" not in bookings
    # The late listing's bookings (Jan 6) are re-curated, and so is the first day, which the
    # listing's creation (before it) marks for the periods that now see it.
    curate = night.plan["curate"]["curated.bookings"]
    assert set(curate) == {"2025-01-06", "2025-01-01"}
    assert curate["2025-01-06"] == "listings learnt: 9"


def test_the_plan_carries_the_fingerprints_its_comparison_read(night: Night) -> None:
    """The days the comparison checksummed (those of the horizon), not the as-of day (never
    checksummed: extracted whatever) nor the days moved keys reached before the horizon; and
    the extraction recorded them with the days' rows."""
    fingerprints = night.plan["fingerprints"]["raw.bookings"]
    assert set(fingerprints) == {
        "2025-01-15",
        "2025-01-16",
        "2025-01-17",
        "2025-01-18",
        "2025-01-19",
        "undated",
    }
    assert fingerprints["2025-01-17"]["rows"] == 0  # its one booking was deleted
    # The views' rows with no day are read again, not compared: the plan has no fingerprint.
    assert set(night.plan["fingerprints"]["raw.user_viewing"]) == {"2025-01-14", "2025-01-15"}
    lake = Lake(local_session(), night.platform.settings.lake_root)
    for key, seen in fingerprints.items():
        assert lake.partition(tables.RAW_BOOKINGS, key).facts["fingerprint"] == seen


def test_a_plan_s_fingerprints_stand_in_only_while_fresh(night: Night) -> None:
    """A daily run that carries out its plan later than FINGERPRINTS_FRESH_FOR after the
    comparison (re-executed the next morning) checksums the days itself."""
    raw = [tables.RAW_BOOKINGS, tables.RAW_USER_VIEWING, tables.CURATED_BOOKINGS]
    compared = datetime.fromisoformat(night.plan["compared_at"])
    fresh = fresh_fingerprints(night.plan, raw, compared + FINGERPRINTS_FRESH_FOR)
    assert fresh == {t: night.plan["fingerprints"][t] for t in ("raw.bookings", "raw.user_viewing")}
    later = compared + FINGERPRINTS_FRESH_FOR + timedelta(seconds=1)
    assert fresh_fingerprints(night.plan, raw, later) == {}


def _extraction_of(
    night: Night, tmp_path: Path, table: Table, fingerprints: dict[str, dict]
) -> StepRequest:
    """The table's rows of 2025-01-15 and of the night extracted into a lake of their own, with
    the plan's `fingerprints`."""
    mysql = night.platform.settings.mysql
    return StepRequest(
        "extract_daily",
        (table.id,),
        str(tmp_path / "lake"),
        date(2025, 1, 14),
        NIGHT + timedelta(days=1),
        source=SourceConnection(mysql.jdbc_url, mysql.user, mysql.password),
        only_days={table.id: (date(2025, 1, 15), NIGHT)},
        source_fingerprints={table.id: fingerprints},
    )


def _checksum(sent: list[str]) -> str:
    """The WHERE clause of the one checksum query among `sent`."""
    (checksum,) = [query for query in sent if "CRC32" in query]
    return checksum.split(" WHERE ")[1]


def test_an_extraction_records_the_plan_s_fingerprints_and_counts_the_source_now(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day the plan's comparison checksummed keeps that fingerprint (read before its rows,
    so a change since shows at the next comparison) and is only counted; the row count check
    judges the rows against the source's count now. A day the plan has none for is
    checksummed as ever. The views' rows with no day are read and counted, never checksummed:
    they have no fingerprint. The plan's fingerprint here is made up, so that it shows."""
    views = tables.RAW_USER_VIEWING
    made_up = {"rows": 99, "digest": "42"}
    sent = queries_sent(monkeypatch)
    request = _extraction_of(night, tmp_path, views, {"2025-01-15": made_up})
    spark = local_session()
    report = run_step(spark, request)
    (counted,) = [c for c in report.checks if c.name == ROW_COUNT.name]
    assert counted.passed, counted.description
    assert counted.partitions["2025-01-15"]["metadata"] == {"source_rows": 2, "lake_rows": 2}
    # The two views of the 15th, none on the night, and the one with no day.
    assert (counted.metadata["source_rows"], counted.metadata["lake_rows"]) == (3, 3)
    assert "IS NULL" not in _checksum(sent)
    lake = Lake(spark, request.lake_root)
    assert lake.partition(views, "2025-01-15").facts["fingerprint"] == made_up
    undated = lake.partition(views, UNDATED)
    assert undated is not None and undated.rows == 1
    assert "fingerprint" not in undated.facts
    monkeypatch.undo()
    reader = SourceReader(spark, request.source, datetime.now())
    checksummed = reader.fingerprints_of_days(views, [NIGHT], rows=0)
    assert lake.partition(views, NIGHT.isoformat()).facts["fingerprint"] == (
        checksummed.get(NIGHT, NO_ROWS).to_json()
    )


def test_an_extraction_checksums_no_rows_the_plan_fingerprinted(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the plan fingerprinted the bookings' rows with no day, the extraction's checksum
    of the days the plan has none for leaves them out (the source finds them through its index
    one by one): they are recorded with the plan's fingerprint and counted with the known days.
    Made-up fingerprints show which were recorded."""
    bookings = tables.RAW_BOOKINGS
    made_up = {"2025-01-15": {"rows": 99, "digest": "42"}, UNDATED: {"rows": 7, "digest": "43"}}
    sent = queries_sent(monkeypatch)
    request = _extraction_of(night, tmp_path, bookings, made_up)
    spark = local_session()
    report = run_step(spark, request)
    (counted,) = [c for c in report.checks if c.name == ROW_COUNT.name]
    assert counted.passed, counted.description
    assert "IS NULL" not in _checksum(sent)
    lake = Lake(spark, request.lake_root)
    undated = lake.partition(bookings, UNDATED)
    assert undated is not None and undated.rows == 1  # 118, its date set to null
    assert undated.facts["fingerprint"] == made_up[UNDATED]
    assert lake.partition(bookings, "2025-01-15").facts["fingerprint"] == made_up["2025-01-15"]
    monkeypatch.undo()
    reader = SourceReader(spark, request.source, datetime.now())
    checksummed = reader.fingerprints_of_days(bookings, [NIGHT], rows=0, undated=False)
    assert None not in checksummed
    assert lake.partition(bookings, NIGHT.isoformat()).facts["fingerprint"] == (
        checksummed.get(NIGHT, NO_ROWS).to_json()
    )


def test_rows_with_no_day_are_read_again_when_they_changed_or_have_no_key(
    night: Night,
) -> None:
    """The bookings' rows with no day changed (118 lost its date): read again. The views' did
    not, but views have no key: the plan does not compare them, and every extraction reads
    them again, which the quarantine's copy follows."""
    lake = Lake(local_session(), night.platform.settings.lake_root)
    before = night.undated_before[BOOKINGS_RAW.id]
    read = lake.partition(BOOKINGS_RAW, UNDATED)
    assert before is not None and read is not None
    assert (before.rows, read.rows) == (0, 1)
    assert read.version != before.version
    before = night.undated_before[VIEWS_RAW.id]
    read = lake.partition(VIEWS_RAW, UNDATED)
    assert before is not None and read is not None
    assert (before.rows, read.rows) == (1, 1)
    assert read.version != before.version
    quarantined = lake.partition(tables.QUARANTINE_USER_VIEWING, UNDATED)
    assert quarantined is not None and quarantined.facts["raw_version"] == read.version
    metadata = _daily_metadata(night, VIEWS_RAW)
    assert metadata["undated_rows"] == 1
    assert metadata["re_extracted"]["changed_days"] == {
        "2025-01-14": {"removed": 1},
        "2025-01-15": {"added": 1},
    }


def _daily_metadata(night: Night, table: Table) -> dict:
    """The raw asset's metadata from the night's daily run (the run's, on each partition)."""
    (daily,) = [o for o in night.outcomes if o.job == "daily"]
    records = [
        r
        for r in night.platform.instance.all_logs(
            daily.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        if r.asset_materialization.asset_key == asset_key(table)
    ]
    assert records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_every_check_answers_for_every_day_of_the_nightly_run(night: Night) -> None:
    """No check is left "skipped" on a day of the run: a day the plan left alone answers each
    blocking check as unchanged, and the freshness warning with the run's result."""
    instance = night.platform.instance
    (daily,) = [o for o in night.outcomes if o.job == "daily"]
    tags = instance.get_run_by_id(daily.run_id).tags
    first, last = (date.fromisoformat(tags[tag]) for tag in (RANGE_START, RANGE_END))
    days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    raw = asset_key(tables.RAW_BOOKINGS)
    evaluations = [
        record.dagster_event.event_specific_data
        for record in instance.all_logs(
            daily.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        if record.dagster_event.event_specific_data.asset_key == raw
    ]
    names = [spec.name for spec in checks_for(tables.RAW_BOOKINGS)]
    assert {(e.check_name, e.partition) for e in evaluations} == {
        (name, day) for name in names for day in days
    }
    left_alone = sorted(set(days) - set(night.plan["extract"]["raw.bookings"]))
    assert left_alone, "the run's range has a day the plan left alone"
    on_left_alone = {e.check_name: e for e in evaluations if e.partition == left_alone[0]}
    assert on_left_alone["freshness"].metadata["judged"].value == "the run's window"
    assert "unchanged" in on_left_alone["row_count_matches_source"].metadata


def test_every_booking_is_curated_once_in_its_current_day(night: Night) -> None:
    curated = dict(
        night.platform.lake(
            tables.CURATED_BOOKINGS, "SELECT booking_id, CAST(booking_date AS DATE) FROM t"
        )
    )
    assert curated[103] == date(2025, 1, 16)
    assert curated[119] == date(2025, 1, 2)
    assert curated[106] == date(2025, 1, 6)  # its listing is known now
    assert 117 not in curated and 118 not in curated
    counted = night.platform.lake(
        tables.CURATED_BOOKINGS, "SELECT COUNT(*), COUNT(DISTINCT booking_id) FROM t"
    )
    assert counted == [(len(curated), len(curated))]
    quarantined = night.platform.lake(
        tables.QUARANTINE_BOOKINGS, "SELECT booking_id, reject_reason FROM t"
    )
    assert quarantined == [(118, "booking_date_null")]


def test_the_raw_asset_says_what_was_re_extracted(night: Night) -> None:
    changed: dict[str, dict] = {tables.RAW_BOOKINGS.id: {}, tables.RAW_USER_VIEWING.id: {}}
    for outcome in night.outcomes:
        for record in night.platform.instance.all_logs(
            outcome.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ):
            materialization = record.asset_materialization
            for table in (tables.RAW_BOOKINGS, tables.RAW_USER_VIEWING):
                if materialization.asset_key == asset_key(table):
                    changed[table.id] |= materialization.metadata["re_extracted"].value[
                        "changed_days"
                    ]
    assert changed[tables.RAW_BOOKINGS.id] == {
        "2025-01-15": {"changed": 1},  # confirmed late
        "2025-01-16": {"added": 1},  # 103, moved in from before the horizon
        "2025-01-17": {"removed": 1},  # 117, deleted
        "2025-01-19": {"removed": 1},  # 119, moved out of the horizon
        "2025-01-02": {"added": 1},  # 119, moved to a day before the horizon
        "2025-01-03": {"removed": 1},  # 103, moved from
        "undated": {"added": 1},  # 118, its date set to null
        "2025-01-18": {"removed": 1},  # 118, moved from
    }
    # Views have no key: a row is only added or removed.
    assert changed[tables.RAW_USER_VIEWING.id] == {
        "2025-01-14": {"removed": 1},
        "2025-01-15": {"added": 1},
    }


def test_only_the_changes_older_than_the_horizon_are_left(night: Night) -> None:
    """Booking 105 (Jan 5, confirmed late) and 104 (Jan 4, cancelled late) are older than the
    7-day horizon: only the periods that read those days differ from a full recompute."""
    assert night.differences, "the two old changes must show before the audit"
    reading = {
        "repeat_customer_rate": {date(2024, 12, 30) + timedelta(weeks=n) for n in range(4)},
        "occupancy_rate": {date(2025, 1, 1)},
    }
    for table, rows in night.differences.items():
        periods = {row[0] for _, row in rows}
        assert periods <= reading.get(table, {date(2024, 12, 30)}), table


def test_a_month_reads_only_the_booking_days_whose_stays_reach_it(night: Night) -> None:
    """Each curated bookings day records its stays' last checkout. The occupancy of the
    months from a day on reads the booking days whose stays reach that day, and days with no
    booking (no fact); not those whose stays all end before."""
    lake = Lake(local_session(), night.platform.settings.lake_root)
    curated = tables.CURATED_BOOKINGS
    partitions = lake.state.table(curated.id).partitions
    rows = lake.read(curated, [k for k in partitions if k != UNDATED])
    last = {
        row["day"].isoformat(): row["last"].isoformat()
        for row in rows.groupBy(F.to_date("booking_date").alias("day"))
        .agg(F.max("checkout_date").alias("last"))
        .collect()
    }
    assert {k: partitions[k].facts[LAST_CHECKOUT] for k in last} == last
    # Booked on the 10th, in on the 12th, out on the 15th; the 2nd also holds booking 119,
    # moved there from the 19th with its stay (out on the 24th).
    assert last["2025-01-10"] == "2025-01-15"
    assert last["2025-01-02"] == "2025-01-24"
    first = date(2025, 1, 12)
    read = days_with_stays(lake, first, date(2025, 2, 1))
    assert read == [
        k for k in sorted(partitions) if k != UNDATED and (k not in last or last[k] > "2025-01-12")
    ]
    assert {"2025-01-02", "2025-01-08", "2025-01-17"} <= set(read)  # the 17th: deleted, empty
    assert not {"2025-01-05", "2025-01-07"} & set(read)


def test_the_listing_history_matches_the_reference(night: Night) -> None:
    files = committed_files(night.platform.settings.lake_root, tables.CURATED_LISTINGS_HISTORY.id)
    assert history_differences(files, night.history) == []


def test_the_audit_finds_what_the_night_could_not(night: Night, tmp_path: Path) -> None:
    lake = Lake(local_session(), night.platform.settings.lake_root)
    undated = lake.partition(BOOKINGS_RAW, UNDATED)
    outcomes = night.platform.audit(NIGHT)
    plan = (
        night.platform.instance.get_latest_materialization_event(SOURCE_CHANGES)
        .asset_materialization.metadata["plan"]
        .value
    )
    assert set(plan["extract"]["raw.bookings"]) == {
        "2025-01-04",
        "2025-01-05",
        "2025-01-21",  # the as-of day is always extracted
    }
    # The bookings' rows with no day did not change since the night: kept, not read again.
    assert (
        Lake(local_session(), night.platform.settings.lake_root).partition(BOOKINGS_RAW, UNDATED)
        == undated
    )
    assert outcomes[0].job == "snapshots"
    reference = _reference(night.platform, tmp_path, NIGHT, night.history)
    assert _differences(night.platform, reference) == {}


@pytest.mark.parametrize(
    ("keys", "may_hold"),
    [
        ([], False),  # nothing arrived: no partition is read
        ([5, 40], False),  # below its keys and above them
        ([5, 20], True),  # one of them on its lowest key
        (None, True),  # too many to list: every partition with rows is read
    ],
)
def test_a_partition_is_read_for_moved_keys_only_if_its_key_range_may_hold_one(
    keys: list[int] | None, may_hold: bool
) -> None:
    facts = {"min_key": 10, "max_key": 30, "fingerprint": {"rows": 3}}
    assert _may_hold(facts, keys) is may_hold


def test_the_re_extraction_figures_find_every_row_that_changed(tmp_path: Path) -> None:
    """Among many rows that stayed, a row whose values only swapped which of them is null
    counts as removed and added, and a second copy of a row gone as removed (a comparison by
    hashes, which skip nulls, or by distinct rows would miss each)."""
    spark = local_session()
    view, day = tables.RAW_USER_VIEWING, date(2025, 1, 15)
    at = datetime(2025, 1, 15, 10, 0)
    stayed = [(n, n, at, False, "none", at) for n in range(1, 3001)]
    before = [*stayed, (7, None, at, True, "book_now", at), (5, 5, at, False, "none", at)]
    after = [*stayed, (None, 7, at, True, "book_now", at)]  # 5 had two copies: one is gone

    def extraction(rows: list[tuple], fingerprint: str) -> tuple[Lake, DataFrame]:
        lake = Lake(spark, str(tmp_path / "lake"))
        written = lake.stage_periods(spark.createDataFrame(rows, spark_schema(view)), view, [day])
        lake.add_facts(view, day.isoformat(), fingerprint=fingerprint)
        return lake, written

    first, _ = extraction(before, "before")
    first.commit([view], "first")
    second, written = extraction(after, "after")
    figures = row_differences(second, view, None, written, second.read(view, []))
    assert figures["changed_days"] == {day.isoformat(): {"added": 1, "removed": 2}}
