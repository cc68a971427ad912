"""A short account of what the warehouse holds, printed at the end of the demo."""

from __future__ import annotations

from rental_platform.resources.warehouse import Warehouse
from rental_platform.tables import Layer, tables_of

HEADLINES = {
    "confirmed bookings": "SELECT SUM(booking_count) FROM presentation.bookings_per_user",
    "busiest city (bookings)": (
        "SELECT state || ' ' || cityname || ' (' || SUM(booking_count) || ')' "
        "FROM presentation.popular_locations GROUP BY state, cityname "
        "ORDER BY SUM(booking_count) DESC, state, cityname LIMIT 1"
    ),
    "mean occupancy": (
        "SELECT ROUND(CAST(AVG(occupancy_rate) AS NUMERIC), 4) FROM presentation.occupancy_rate"
    ),
    "mean nights per stay": (
        "SELECT ROUND(CAST(SUM(avg_nights * booking_count) / SUM(booking_count) AS NUMERIC), 2)"
        " FROM presentation.avg_booking_duration"
    ),
    "view-to-booking rate": (
        "SELECT ROUND(CAST(AVG(view_to_booking_rate) AS NUMERIC), 4) "
        "FROM presentation.engagement_funnel"
    ),
}


def warehouse_summary(warehouse: Warehouse) -> str:
    lines = [f"Warehouse: {warehouse.target}", "", f"{'table':<36}{'rows':>8}  periods"]
    for table in tables_of(Layer.PRESENTATION):
        ((rows, first, last),) = warehouse.query(
            f'SELECT COUNT(*), MIN("{table.partition_column}"), '
            f'MAX("{table.partition_column}") FROM presentation."{table.name}"'
        )
        lines.append(f"presentation.{table.name:<23}{rows:>8}  {first} .. {last}")
    lines += ["", "Headlines:"]
    for label, query in HEADLINES.items():
        lines.append(f"  {label:<26}{warehouse.query(query)[0][0]}")
    return "\n".join(lines)
