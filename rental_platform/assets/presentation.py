"""Presentation: the KPI tables of kpis.md, staged in the lake and published to the warehouse."""

from __future__ import annotations

import dagster as dg

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.layer import LayerStep, spark_multi_asset
from rental_platform.automation import KPI_AUTOMATION
from rental_platform.partitions import PlatformPartitions
from rental_platform.tables import Grain, Layer, Table

KINDS = frozenset({"spark", "parquet", "duckdb"})

LISTINGS, BOOKINGS, VIEWS = (
    tables.CURATED_LISTINGS,
    tables.CURATED_BOOKINGS,
    tables.CURATED_USER_VIEWING,
)
# Which upstream days a KPI partition reads. Offsets count downstream periods back.
# A week reads its own seven days (the default mapping).
# repeat_customer_rate: the 30 days ending on the week's Sunday start 23 days before its
# Monday; four weeks back covers them (and five days more, which only over-marks staleness).
REPEAT_WINDOW = dg.TimeWindowPartitionMapping(
    start_offset=-4, allow_nonexistent_upstream_partitions=True
)
# occupancy_rate: bookings are made ahead, so a month reads every booking day up to its end.
# Staleness is tracked for bookings made up to two years ahead of the stay.
BOOKED_AHEAD = dg.TimeWindowPartitionMapping(
    start_offset=-24, allow_nonexistent_upstream_partitions=True
)

# The curated inputs of each KPI.
INPUTS: dict[str, tuple[Table | dg.AssetDep, ...]] = {
    "avg_listing_price": (LISTINGS,),
    "popular_locations": (BOOKINGS, LISTINGS),
    "top_listings": (BOOKINGS, LISTINGS),
    "bookings_per_user": (BOOKINGS,),
    "avg_booking_duration": (BOOKINGS,),
    "repeat_customer_rate": (dg.AssetDep(asset_key(BOOKINGS), partition_mapping=REPEAT_WINDOW),),
    "engagement_funnel": (VIEWS, BOOKINGS),
    "occupancy_rate": (
        LISTINGS,
        dg.AssetDep(asset_key(BOOKINGS), partition_mapping=BOOKED_AHEAD),
    ),
}


def build_presentation_assets(partitions: PlatformPartitions) -> list[dg.AssetsDefinition]:
    return [
        spark_multi_asset(
            LayerStep(
                f"kpis_{grain}",
                f"kpis_{grain}",
                KINDS,
                f"The {grain} KPI tables, computed in Spark and published to the warehouse.",
                publishes=True,
                automation=KPI_AUTOMATION,
            ),
            tables.tables_of(Layer.PRESENTATION, grain),
            partitions.of(grain),
            INPUTS,
        )
        for grain in (Grain.WEEKLY, Grain.MONTHLY)
    ]
