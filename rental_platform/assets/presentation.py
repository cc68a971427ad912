"""Presentation: the KPI tables of kpis.md, staged in the lake and published to the warehouse."""

from __future__ import annotations

import dagster as dg

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.assets.layer import LayerAssets, LayerStep
from rental_platform.assets.reads import INPUTS, LISTINGS
from rental_platform.partitions import PlatformPartitions
from rental_platform.spark import code_version
from rental_platform.tables import Grain, Layer, Table

KINDS = frozenset({"spark", "parquet", "duckdb"})

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


# A KPI partition is recomputed when a day it reads was re-materialised, of any age (not only
# in the latest week or month), when it appears, or when a deploy changed the KPI definitions
# (the assets' code version, a digest of their code: every partition); once all those days
# are there, none is being written, and every blocking check upstream passed. A new listings
# snapshot is not a trigger by itself: what it changes for a period reaches it through the days
# the nightly run re-curates for it (the day it is stamped with, the days of the bookings it
# re-judges, the creation day of a listing learnt late).
KPI_AUTOMATION = (
    (
        dg.AutomationCondition.newly_missing()
        | dg.AutomationCondition.any_deps_updated().ignore(
            dg.AssetSelection.assets(asset_key(LISTINGS))
        )
        | dg.AutomationCondition.code_version_changed()
    ).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("a day it reads or its definition changed")


def build_presentation_steps(partitions: PlatformPartitions) -> list[LayerAssets]:
    return [
        LayerAssets(
            LayerStep(
                name,
                f"kpis_{grain}",
                KINDS,
                f"{grain.capitalize()} KPI tables, computed in Spark, published to the warehouse.",
                publishes=True,
                automation=KPI_AUTOMATION,
                first_day=partitions.first_day,
                code_version=code_version.kpis_version(),
            ),
            kpi_tables,
            partitions.of(grain),
            INPUTS,
            # A KPI step computes all its tables at once: the automation runs them together.
            can_subset=False,
        )
        for name, grain, kpi_tables in KPI_GROUPS
    ]
