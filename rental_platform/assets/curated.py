"""Curated: the rules of kpis.md applied to raw; every rejected row kept in quarantine; the
listing history that every period reads its listings from."""

from __future__ import annotations

from rental_platform import tables
from rental_platform.assets.layer import LayerAssets, LayerStep
from rental_platform.partitions import PlatformPartitions
from rental_platform.tables import Table

KINDS = frozenset({"spark", "parquet"})
SNAPSHOT = (tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES)

# The tables each curated (and quarantine) table is made from.
SOURCES: dict[str, tuple[Table, ...]] = {
    "listings": SNAPSHOT,
    "listings_history": SNAPSHOT,
    # A booking of a listing with no version valid on its day is rejected: the history is an
    # input.
    "bookings": (tables.RAW_BOOKINGS, tables.CURATED_LISTINGS_HISTORY),
    "user_viewing": (tables.RAW_USER_VIEWING,),
}


def build_curated_steps(partitions: PlatformPartitions) -> list[LayerAssets]:
    return [
        LayerAssets(
            LayerStep(
                "curated_listings",
                "curate_listings",
                KINDS,
                "Listings (apartments with their attributes), their quarantine, and the listing "
                "history the snapshot is applied to.",
            ),
            (tables.CURATED_LISTINGS, tables.QUARANTINE_LISTINGS, tables.CURATED_LISTINGS_HISTORY),
            None,
            SOURCES,
        ),
        LayerAssets(
            LayerStep(
                "curated_daily",
                "curate_daily",
                KINDS,
                "Each day's bookings and page views by the curated rules, and their quarantines.",
                first_day=partitions.first_day,
            ),
            (
                tables.CURATED_BOOKINGS,
                tables.QUARANTINE_BOOKINGS,
                tables.CURATED_USER_VIEWING,
                tables.QUARANTINE_USER_VIEWING,
            ),
            partitions.daily,
            SOURCES,
        ),
    ]
