"""Which upstream partitions each KPI reads: the partition mappings the automation sensor
follows, and the nightly cycle (`cycle.py`) follows too, to find the KPI partitions a
re-materialised day makes stale."""

from __future__ import annotations

import warnings

import dagster as dg

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.tables import Table

LISTINGS, BOOKINGS, VIEWS = (
    tables.CURATED_LISTINGS_HISTORY,
    tables.CURATED_BOOKINGS,
    tables.CURATED_USER_VIEWING,
)


def _reaching_back(periods: int = 0) -> dg.TimeWindowPartitionMapping:
    """A KPI period's own days and those of `periods` periods before it. The first week or
    month may reach before the first day, which simply has no partitions: Dagster allows that
    with a beta parameter, and warns on every construction (so on every start of every process
    that loads the definitions); that one warning is silenced here, where it arises."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*allow_nonexistent_upstream_partitions", category=dg.BetaWarning
        )
        return dg.TimeWindowPartitionMapping(
            start_offset=-periods, allow_nonexistent_upstream_partitions=True
        )


# Which upstream days a KPI partition reads. A week or month reads its own days.
OWN_DAYS = _reaching_back()
# repeat_customer_rate: the 30 days ending on the week's Sunday start 23 days before its
# Monday; four weeks back covers them (and five days more, which only over-marks staleness).
REPEAT_WINDOW = _reaching_back(4)
# occupancy_rate: bookings are made ahead, so a month reads every booking day up to its end,
# however far back (a century of months stands for all of them).
BOOKED_AHEAD = _reaching_back(1200)


def _days(table: Table, mapping: dg.TimeWindowPartitionMapping = OWN_DAYS) -> dg.AssetDep:
    return dg.AssetDep(asset_key(table), partition_mapping=mapping)


# The curated inputs of each KPI. Every KPI also sees the listings (their versions valid on the
# period's last day): the automation leaves those out (see KPI_AUTOMATION).
INPUTS: dict[str, tuple[Table | dg.AssetDep, ...]] = {
    "avg_listing_price": (LISTINGS,),
    "popular_locations": (_days(BOOKINGS), LISTINGS),
    "top_listings": (_days(BOOKINGS), LISTINGS),
    "bookings_per_user": (_days(BOOKINGS),),
    "avg_booking_duration": (_days(BOOKINGS),),
    "repeat_customer_rate": (_days(BOOKINGS, REPEAT_WINDOW),),
    "engagement_funnel": (_days(VIEWS), _days(BOOKINGS)),
    "occupancy_rate": (LISTINGS, _days(BOOKINGS, BOOKED_AHEAD)),
}
