"""A short account of what the warehouse holds, printed at the end of the demo."""

from __future__ import annotations

from pathlib import Path

import duckdb

from rental_platform.tables import Grain, Layer, tables_of

HEADLINES = {
    "confirmed bookings": "SELECT SUM(booking_count) FROM presentation.bookings_per_user",
    "busiest city (bookings)": (
        "SELECT state || ' ' || cityname || ' (' || SUM(booking_count) || ')' "
        "FROM presentation.popular_locations GROUP BY state, cityname "
        "ORDER BY SUM(booking_count) DESC, state, cityname LIMIT 1"
    ),
    "mean occupancy": "SELECT ROUND(AVG(occupancy_rate), 4) FROM presentation.occupancy_rate",
    "mean nights per stay": (
        "SELECT ROUND(SUM(avg_nights * booking_count) / SUM(booking_count), 2) "
        "FROM presentation.avg_booking_duration"
    ),
    "view-to-booking rate": (
        "SELECT ROUND(AVG(view_to_booking_rate), 4) FROM presentation.engagement_funnel"
    ),
}


def warehouse_summary(path: Path) -> str:
    kpi_tables = tables_of(Layer.PRESENTATION, Grain.WEEKLY) + tables_of(
        Layer.PRESENTATION, Grain.MONTHLY
    )
    lines = [f"Warehouse: {path}", "", f"{'table':<36}{'rows':>8}  periods"]
    with duckdb.connect(str(path), read_only=True) as connection:
        for table in kpi_tables:
            rows, first, last = connection.execute(
                f'SELECT COUNT(*), MIN("{table.partition_column}"), '
                f'MAX("{table.partition_column}") FROM presentation."{table.name}"'
            ).fetchone()
            lines.append(f"presentation.{table.name:<23}{rows:>8}  {first} .. {last}")
        lines += ["", "Headlines:"]
        for label, query in HEADLINES.items():
            lines.append(f"  {label:<26}{connection.execute(query).fetchone()[0]}")
    return "\n".join(lines)
