"""A deploy that changes the curated rules: the next nightly curates every day and the listings
again under them, though no source row changed, and leaves the lake and the KPI tables as a
full recompute under the new rules would (kpis.md, "Always equal to a full recompute")."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import date, timedelta

import pytest
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.definitions import build_definitions
from rental_platform.runs import step_errors
from rental_platform.spark import code_version, curate
from rental_platform.spark.manifest import UNDATED, CommitLog, store_for
from rental_platform_tests.harness import Platform

START, DAY = date(2025, 1, 1), date(2025, 1, 6)
DEPLOYED = "a digest of the deployed rules"


def _deploy_stricter_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a deploy with one more booking rule and one more listing rule would run."""
    bookings, listings = curate.booking_rules, curate.listing_rules
    monkeypatch.setattr(
        curate,
        "booking_rules",
        lambda: [*bookings(), ("total_price_above_500", F.col("total_price") > 500)],
    )
    monkeypatch.setattr(
        curate, "listing_rules", lambda: [*listings(), ("price_above_250", F.col("price") > 250)]
    )
    monkeypatch.setattr(code_version, "rules_version", lambda: DEPLOYED)


@pytest.fixture(scope="module")
def curated(platform: Platform) -> Platform:
    """The worked example extracted and curated, 2025-01-01..06, under the rules as they are.
    One row of its few breaks each new rule: a share no check allows."""
    platform.settings = dataclasses.replace(platform.settings, max_quarantine_share=1.0)
    platform.load_worked_example()
    platform.run(START, DAY)
    return platform


def _rules_of_curated_days(platform: Platform) -> set[str]:
    head = CommitLog(store_for(platform.settings.lake_root)).head()
    return {
        partition.facts.get(code_version.RULES)
        for table in (tables.CURATED_BOOKINGS, tables.QUARANTINE_USER_VIEWING)
        for key, partition in head.table(table.id).partitions.items()
        if key != UNDATED
    }


def test_a_kpi_run_before_the_days_are_curated_again_fails_naming_them(
    curated: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Complete inputs or nothing: a KPI partition launched on its own (from the UI) after
    such a deploy, before the nightly curated its days again, would compute from what the old
    rules made. Its step refuses, naming the days, and publishes nothing."""
    platform = curated
    published = platform.kpis()
    _deploy_stricter_rules(monkeypatch)
    defs = build_definitions(platform.settings)
    defs.resources["spark"].start_session({})

    result = defs.resolve_job_def("weekly_kpis").execute_in_process(
        instance=platform.instance, partition_key=DAY.isoformat(), raise_on_error=False
    )

    assert not result.success
    errors = "\n".join(step_errors(result, platform.instance))
    assert "curated.bookings is incomplete for [2025-01-06, 2025-01-06]" in errors
    assert "1 days curated under other rules: 2025-01-06" in errors
    assert platform.kpis() == published


def test_a_deploy_that_changes_the_rules_curates_every_day_again(
    curated: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = curated
    before = platform.kpis()
    assert _rules_of_curated_days(platform) == {code_version.rules_version()}

    _deploy_stricter_rules(monkeypatch)
    deployed = DAY + timedelta(days=1)
    outcomes = platform.nightly(deployed)

    assert all(not o.failed_checks for o in outcomes)
    assert _rules_of_curated_days(platform) == {DEPLOYED}
    assert platform.lake(tables.QUARANTINE_BOOKINGS, "SELECT booking_id, reject_reason FROM t") == [
        (2, "total_price_above_500")
    ]
    assert platform.lake(tables.QUARANTINE_LISTINGS, "SELECT id, reject_reason FROM t") == [
        (2, "price_above_250")
    ]
    assert platform.lake(tables.CURATED_LISTINGS, "SELECT id FROM t ORDER BY id") == [(1,), (3,)]
    # Booking 2 (600.00 USD, confirmed) no longer counts: its week's KPIs changed.
    after = platform.kpis()
    assert after["bookings_per_user"] != before["bookings_per_user"]
    assert after["top_listings"] != before["top_listings"]

    # A full recompute under the deployed rules finds nothing to change.
    state = platform.state()
    platform.run(START, deployed)
    assert platform.state() == state


def test_the_rules_digest_follows_the_code_not_its_comments() -> None:
    source = inspect.getsource(curate)
    commented = source.replace("def viewing_rules", "# A comment.\n\n\ndef viewing_rules", 1)
    assert commented != source
    assert code_version.code_digest(commented) == code_version.code_digest(source)
    rule = 'F.col("viewed_at").isNull()'
    assert rule in source
    changed = source.replace(rule, f"{rule} | F.col('apartment_id').isNull()", 1)
    assert code_version.code_digest(changed) != code_version.code_digest(source)
    # Indentation is code: a line moved out of its block changes it.
    inside, after = "if a:\n    b()\n    c()\n", "if a:\n    b()\nc()\n"
    assert code_version.code_digest(inside) != code_version.code_digest(after)
