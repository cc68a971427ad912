"""Schema drift in the source, for real (ALTER TABLE on MariaDB): a new column is ignored and
reported; a column dropped or retyped fails a blocking check that names the table and the
column, before any row is read, and nothing is committed or published."""

from __future__ import annotations

from datetime import date

import pytest

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.runs import RangeRunError
from rental_platform_tests import worked_example as example
from rental_platform_tests.harness import Platform

START, END = date(2025, 1, 1), date(2025, 1, 12)


@pytest.fixture(scope="module")
def drifting(platform: Platform) -> Platform:
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", example.APARTMENTS)
    platform.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", example.BOOKINGS)
    platform.run(START, END)
    return platform


def _published(platform: Platform) -> list[tuple]:
    return platform.warehouse(
        "SELECT table_name, row_count, run_id FROM presentation._publish_log ORDER BY ALL"
    )


def test_a_new_column_is_ignored_and_reported(drifting: Platform) -> None:
    drifting.execute("ALTER TABLE bookings ADD COLUMN note VARCHAR(20) NULL")
    try:
        drifting.run(START, END)
        metadata = drifting.instance.get_latest_materialization_event(
            asset_key(tables.RAW_BOOKINGS)
        ).asset_materialization.metadata
        assert metadata["source_columns_not_read"].value == ["note"]
        assert "note" not in [c[0] for c in drifting.lake(tables.RAW_BOOKINGS, "DESCRIBE t")]
    finally:
        drifting.execute("ALTER TABLE bookings DROP COLUMN note")


@pytest.mark.parametrize(
    ("night", "change", "undo", "says"),
    [
        (
            date(2025, 1, 13),
            "ALTER TABLE bookings DROP COLUMN currency",
            "ALTER TABLE bookings ADD COLUMN currency VARCHAR(10) NULL AFTER total_price; "
            "UPDATE bookings SET currency = IF(booking_id = 4, 'EUR', 'USD')",
            "source table bookings: column currency is gone",
        ),
        (
            date(2025, 1, 14),
            "ALTER TABLE bookings MODIFY total_price VARCHAR(20) NULL",
            "ALTER TABLE bookings MODIFY total_price DECIMAL(10,2) NULL",
            "column total_price: varchar, the contract has decimal(10,2)",
        ),
        (
            date(2025, 1, 15),
            "ALTER TABLE apartments CHANGE price asking_price DECIMAL(10,2) NULL",
            "ALTER TABLE apartments CHANGE asking_price price DECIMAL(10,2) NULL",
            "source table apartments: column price is gone; new columns not read: asking_price",
        ),
    ],
    ids=["dropped", "retyped", "renamed"],
)
def test_a_dropped_or_retyped_column_stops_the_night(
    drifting: Platform, night: date, change: str, undo: str, says: str
) -> None:
    """Each a night of its own: its listings snapshot is taken (a re-run of a night whose
    snapshot is recorded reads no listings)."""
    published = _published(drifting)
    committed = drifting.lake(tables.CURATED_BOOKINGS, "SELECT count(*) FROM t")
    drifting.execute(change)
    try:
        with pytest.raises(RangeRunError) as error:
            drifting.nightly(night)
        message = str(error.value)
        assert ":source_schema_unchanged" in message
        assert says in message
        # Nothing was committed, so nothing downstream ran and nothing was published.
        assert _published(drifting) == published
        assert drifting.lake(tables.CURATED_BOOKINGS, "SELECT count(*) FROM t") == committed
    finally:
        for statement in undo.split("; "):
            drifting.execute(statement)
    drifting.nightly(night)  # the source as the contract has it again: all is well
