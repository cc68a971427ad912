"""Presentation: the KPI tables of kpis.md, staged in the lake and published to the warehouse."""

from __future__ import annotations

import dagster as dg

from rental_platform import tables
from rental_platform.assets.layer import LayerStep, spark_multi_asset
from rental_platform.partitions import PlatformPartitions
from rental_platform.tables import Grain, Layer, Table

KINDS = frozenset({"spark", "parquet", "duckdb"})

LISTINGS, BOOKINGS, VIEWS = (
    tables.CURATED_LISTINGS,
    tables.CURATED_BOOKINGS,
    tables.CURATED_USER_VIEWING,
)
# The curated inputs of each KPI.
INPUTS: dict[str, tuple[Table, ...]] = {
    "avg_listing_price": (LISTINGS,),
    "popular_locations": (BOOKINGS, LISTINGS),
    "top_listings": (BOOKINGS, LISTINGS),
    "bookings_per_user": (BOOKINGS,),
    "avg_booking_duration": (BOOKINGS,),
    "repeat_customer_rate": (BOOKINGS,),
    "engagement_funnel": (VIEWS, BOOKINGS),
    "occupancy_rate": (LISTINGS, BOOKINGS),
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
            ),
            tables.tables_of(Layer.PRESENTATION, grain),
            partitions.of(grain),
            INPUTS,
        )
        for grain in (Grain.WEEKLY, Grain.MONTHLY)
    ]
