"""The soak, short: nights of a changing source (every kind of change of
`rental_platform.seed.changes`) and a night on which it did not change, each followed by
`rental-platform nightly`'s own code path.
After every night, every KPI table equals the DuckDB reference's full recompute over the
source as it is then, and the listing history the reference's own: zero differences. A last
night also changes rows older than the mutable horizon, which the audit then finds. The long
version is `make soak` (benchmarks/soak.py)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from benchmarks.soak import NightResult, Soak, soak
from rental_platform.seed import SCALES, seed_source
from rental_platform.seed.changes import NIGHT_SCALES
from rental_platform_tests.harness import Platform

SCALE = SCALES["tiny"]
HORIZON = 10
SEED = 5


@pytest.fixture(scope="module")
def nights(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> list[NightResult]:
    seed_source(platform.admin.pymysql_kwargs(), SCALE, seed=SEED)
    platform.settings = dataclasses.replace(
        platform.settings,
        partitions_start=SCALE.start,
        mutable_days=HORIZON,
        max_quarantine_share=0.2,
    )
    platform.run(SCALE.start, SCALE.end - timedelta(days=1))
    soaked = Soak(
        platform.settings.mysql,
        platform.admin,
        platform.settings.lake_root,
        Path(platform.settings.warehouse.database),
        SCALE.start,
        platform.nightly,
        platform.audit,
        tmp_path_factory.mktemp("soak"),
    )
    return soak(
        soaked,
        SCALE.end,
        5,
        seed=SEED,
        horizon=HORIZON,
        scale=NIGHT_SCALES["small"],
        beyond_horizon_every=5,
        quiet_every=3,
    )


def test_every_night_equals_a_full_recompute(nights: list[NightResult]) -> None:
    """Every run but the nightly one after changes older than its horizon, which the audit
    then repairs."""
    assert [night.kind for night in nights] == [
        "backfill",
        "night",
        "night",
        "quiet night",
        "night",
        "beyond horizon",
        "audit",
    ]
    for night in nights:
        if night.promised:
            assert night.exact, (night.day, night.differences, night.history_differences)
    assert not nights[-2].exact, "the changes older than the horizon must show before the audit"


def test_every_kind_of_change_happened(nights: list[NightResult]) -> None:
    kinds = {kind for night in nights for kind in night.changes}
    assert {
        "booking_confirmed",
        "booking_cancelled",
        "booking_moved_earlier",
        "booking_moved_later",
        "booking_undated",
        "booking_dated",
        "booking_deleted",
        "view_late",
        "view_deleted",
        "view_duplicate_deleted",
        "listing_price",
        "listing_active",
        "listing_title",
        "listing_city",
        "listing_appeared",
        "listing_returned",
        "old_booking_confirmed",
        "booking_moved_into_horizon",
        "booking_moved_out_of_horizon",
    } <= kinds
