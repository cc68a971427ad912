"""The figures a partition carries into Dagster's per-partition metadata: a KPI period's
headline values, a quarantine day's rows by reason (`quarantined_<reason>`); and the preview of
a KPI table's latest period.

They are kept in the lake as a fact of the partition (`FIGURES`), computed in the same pass that
counts its rows, so a partition that a run did not rewrite still shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from rental_platform import tables
from rental_platform.spark.manifest import Partition
from rental_platform.tables import Table

FIGURES = "figures"


def _value(column: str) -> Column:
    """The value of a KPI that has one row per period."""
    return F.max(column).cast("double")


def _total(column: str) -> Column:
    return F.sum(column).cast("double")


def _top_by_currency() -> Column:
    """The highest revenue of the period in each currency (rank 1; ties share it)."""
    top = F.when(F.col("rank") == 1, F.struct("currency", F.col("revenue").cast("double")))
    return F.map_from_entries(F.collect_set(top))


# Per KPI table: the figures of one period, as aggregates over its rows (built on demand: a
# Column needs a running Spark session).
KPI_FIGURES: dict[Table, Callable[[], dict[str, Column]]] = {
    tables.AVG_LISTING_PRICE: lambda: {"new_listings": _total("listing_count")},
    tables.POPULAR_LOCATIONS: lambda: {
        "confirmed_bookings": _total("booking_count"),
        "cities": F.count(F.lit(1)).cast("double"),
    },
    tables.TOP_LISTINGS: lambda: {"top_revenue": _top_by_currency()},
    tables.BOOKINGS_PER_USER: lambda: {
        "customers": F.count(F.lit(1)).cast("double"),
        "confirmed_bookings": _total("booking_count"),
    },
    tables.AVG_BOOKING_DURATION: lambda: {
        "avg_nights": _value("avg_nights"),
        "median_nights": _value("median_nights"),
        "confirmed_bookings": _value("booking_count"),
    },
    tables.REPEAT_CUSTOMER_RATE: lambda: {
        "repeat_rate": _value("repeat_rate"),
        "customers": _value("customers"),
        "repeat_customers": _value("repeat_customers"),
    },
    tables.ENGAGEMENT_FUNNEL: lambda: {
        "views": _value("views"),
        "view_to_booking_rate": _value("view_to_booking_rate"),
        "wishlist_rate": _value("wishlist_rate"),
    },
    tables.OCCUPANCY_RATE: lambda: {
        "occupancy_rate": _value("occupancy_rate"),
        "booked_nights": _value("booked_nights"),
        "available_nights": _value("available_nights"),
    },
}


def kpi_figures(table: Table) -> dict[str, Column]:
    """The aggregate to keep with each period of a KPI table (see `Lake.stage_periods`)."""
    figures = KPI_FIGURES[table]()
    return {FIGURES: F.struct(*[column.alias(name) for name, column in figures.items()])}


def of_partition(partition: Partition) -> dict[str, Any]:
    """A partition's rows and figures, flat and without the ones that have no value (a rate
    of a period with nothing to divide by): numbers that Dagster can plot by partition."""
    figures: dict[str, Any] = {"rows": partition.rows}
    for name, value in (partition.facts.get(FIGURES) or {}).items():
        if isinstance(value, dict):  # per currency, per reason
            figures |= {f"{name}_{key}": v for key, v in sorted(value.items()) if v is not None}
        elif value is not None:
            figures[name] = value
    return figures


PREVIEW_ROWS = 20
# Rates and means shown to four decimals: enough to compare, short enough to read.
PREVIEW_DIGITS = 4


def latest_preview(df: DataFrame, table: Table, period: date) -> dict[str, Any]:
    """The rows of a KPI table's latest period, best first (by rank where the KPI ranks, else
    by key), as plain values: `preview` (records) and `preview_period`."""
    order = ["rank", *table.key] if "rank" in table.column_names else list(table.key)
    head = (
        df.where(F.col(table.partition_column) == F.lit(period))
        .orderBy(*order)
        .limit(PREVIEW_ROWS)
        .collect()
    )
    return {
        "preview": [{name: _shown(row[name]) for name in table.column_names} for row in head],
        "preview_period": period.isoformat(),
    }


def _shown(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float):
        return round(value, PREVIEW_DIGITS)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value
