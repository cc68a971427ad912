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
# Which upstream days a KPI partition reads. Offsets count downstream periods back; the first
# week or month may reach before the first day, which simply has no partitions.
# A week or month reads its own days.
OWN_DAYS = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
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


def _days(table: Table, mapping: dg.TimeWindowPartitionMapping = OWN_DAYS) -> dg.AssetDep:
    return dg.AssetDep(asset_key(table), partition_mapping=mapping)


# The curated inputs of each KPI.
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


# Dagster gives a multi-asset one partition mapping per upstream asset, so the KPI whose
# bookings window reaches back four weeks has a multi-asset of its own; it runs the same
# Spark step as the other weekly KPIs.
KPI_GROUPS: tuple[tuple[str, Grain, tuple[Table, ...]], ...] = (
    (
        "kpis_weekly",
        Grain.WEEKLY,
        tuple(
            t
            for t in tables.tables_of(Layer.PRESENTATION, Grain.WEEKLY)
            if t is not tables.REPEAT_CUSTOMER_RATE
        ),
    ),
    ("kpis_weekly_repeat_customers", Grain.WEEKLY, (tables.REPEAT_CUSTOMER_RATE,)),
    ("kpis_monthly", Grain.MONTHLY, tables.tables_of(Layer.PRESENTATION, Grain.MONTHLY)),
)


def build_presentation_assets(partitions: PlatformPartitions) -> list[dg.AssetsDefinition]:
    return [
        spark_multi_asset(
            LayerStep(
                name,
                f"kpis_{grain}",
                KINDS,
                f"{grain.capitalize()} KPI tables, computed in Spark, published to the warehouse.",
                publishes=True,
                automation=KPI_AUTOMATION,
            ),
            kpi_tables,
            partitions.of(grain),
            INPUTS,
        )
        for name, grain, kpi_tables in KPI_GROUPS
    ]
