"""Raw: a faithful, typed copy of the source, plus when each row was extracted."""

from __future__ import annotations

import dagster as dg

from rental_platform import tables
from rental_platform.assets.layer import LayerStep, spark_multi_asset
from rental_platform.partitions import PlatformPartitions
from rental_platform.tables import Grain, Layer

KINDS = frozenset({"spark", "mysql", "parquet"})


def build_raw_assets(partitions: PlatformPartitions) -> list[dg.AssetsDefinition]:
    return [
        spark_multi_asset(
            LayerStep(
                "raw_snapshots",
                "extract_snapshot",
                KINDS,
                "Full snapshots of the small source tables, replaced on every run.",
                reads_source=True,
            ),
            tables.tables_of(Layer.RAW, Grain.SNAPSHOT),
            None,
        ),
        spark_multi_asset(
            LayerStep(
                "raw_daily",
                "extract_daily",
                KINDS,
                "Each day's bookings and page views, read over JDBC with the date index.",
                reads_source=True,
            ),
            tables.tables_of(Layer.RAW, Grain.DAILY),
            partitions.daily,
        ),
    ]
