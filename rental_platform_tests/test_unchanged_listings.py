"""A night whose source listings have not changed since the last snapshot: the snapshot step
compares their fingerprints and keeps the snapshot it has, the listing history and curated
listings stay as they are, and only the stamp moves (kpis.md, "Listing history": a snapshot
with no curated change starts and closes no version). A change to either listing table is
snapshotted and applied as ever."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from rental_platform import tables
from rental_platform.spark.manifest import WHOLE, CommitLog, store_for
from rental_platform_tests.harness import Platform

START, DAY = date(2025, 1, 1), date(2025, 1, 6)
LISTING_TABLES = (
    tables.RAW_APARTMENTS,
    tables.RAW_APARTMENT_ATTRIBUTES,
    tables.CURATED_LISTINGS,
    tables.CURATED_LISTINGS_HISTORY,
    tables.QUARANTINE_LISTINGS,
)
HISTORY = "SELECT id, price, cityname, valid_from, valid_to FROM t ORDER BY id, valid_from"


def _versions(platform: Platform) -> dict[str, str]:
    """The committed version of each listing table's snapshot."""
    head = CommitLog(store_for(platform.settings.lake_root)).head()
    return {t.id: head.table(t.id).partitions[WHOLE].version for t in LISTING_TABLES}


def _stamps(platform: Platform) -> set[str]:
    head = CommitLog(store_for(platform.settings.lake_root)).head()
    return {
        head.table(t.id).facts["stamp"]
        for t in (tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES)
    } | {head.table(tables.CURATED_LISTINGS_HISTORY.id).facts["stamp"]}


def _snapshot_checks(platform: Platform, run_id: str) -> dict[tuple[str, str], dict]:
    evaluations = [
        record.dagster_event.event_specific_data
        for record in platform.instance.all_logs(
            run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    ]
    return {
        (e.asset_key.to_user_string(), e.check_name): {
            "passed": e.passed,
            **{k: v.value for k, v in e.metadata.items()},
        }
        for e in evaluations
    }


def test_an_unchanged_source_keeps_the_listing_tables_and_moves_their_stamp(
    platform: Platform,
) -> None:
    platform.load_worked_example()
    platform.run(START, DAY)
    first, history = _versions(platform), platform.lake(tables.CURATED_LISTINGS_HISTORY, HISTORY)
    quiet = DAY + timedelta(days=1)

    outcomes = platform.nightly(quiet)

    assert all(not o.failed_checks for o in outcomes)
    assert _versions(platform) == first
    assert _stamps(platform) == {quiet.isoformat()}
    assert platform.lake(tables.CURATED_LISTINGS_HISTORY, HISTORY) == history
    (snapshots,) = [o for o in outcomes if o.job == "snapshots"]
    checks = _snapshot_checks(platform, snapshots.run_id)
    listing_checks = {k: v for k, v in checks.items() if "listing" in k[0] or "apart" in k[0]}
    assert listing_checks and all(v["passed"] for v in listing_checks.values())
    kept = checks[("raw/apartments", "row_count_matches_source")]["unchanged"]
    assert kept.startswith(f"the source's listings are as the snapshot of {DAY} read them")
    assert checks[("raw/apartments", "source_schema_unchanged")].get("unchanged") is None

    # A price changes: the snapshot is taken and the history starts a version on its stamp.
    platform.execute("UPDATE apartments SET price = 350.00 WHERE id = 2")
    priced = quiet + timedelta(days=1)
    platform.nightly(priced)
    second = _versions(platform)
    assert all(second[t] != first[t] for t in second)
    assert _stamps(platform) == {priced.isoformat()}
    rows = platform.lake(tables.CURATED_LISTINGS_HISTORY, HISTORY)
    assert [r for r in rows if r[0] == 2] == [
        (2, history[1][1], "Austin", date(1, 1, 1), priced),
        (2, 350, "Austin", priced, None),
    ]

    # Only an attribute changes: both tables are snapshotted again, and the history sees it.
    platform.execute("UPDATE apartment_attributes SET cityname = 'Dallas' WHERE id = 1")
    moved = priced + timedelta(days=1)
    platform.nightly(moved)
    assert _versions(platform)[tables.RAW_APARTMENTS.id] != second[tables.RAW_APARTMENTS.id]
    rows = platform.lake(tables.CURATED_LISTINGS_HISTORY, HISTORY)
    assert [r[2:] for r in rows if r[0] == 1] == [
        ("Austin", date(1, 1, 1), moved),
        ("Dallas", moved, None),
    ]
