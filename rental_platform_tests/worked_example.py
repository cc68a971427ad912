"""The worked example of spec/kpis.md as source rows, and the figures it must produce."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

APARTMENTS = [
    # id, title, source, price, currency, listing_created_on, is_active, last_modified
    (1, "L1", "web", "100.00", "USD", "2025-01-01 09:00:00", 1, "2025-01-01 09:00:00"),
    (2, "L2", "web", "300.00", "USD", "2025-01-02 10:00:00", 1, "2025-01-02 10:00:00"),
    (3, "L3", "web", "200.00", "EUR", "2025-01-03 11:00:00", 0, "2025-01-03 11:00:00"),
]
APARTMENT_ATTRIBUTES = [
    # id, cityname, state
    (1, "Austin", "TX"),
    (2, "Austin", "TX"),
    (3, "Boston", "MA"),
]
BOOKINGS = [
    # booking_id, user_id, apartment_id, booking_date, checkin, checkout, total, currency, status
    (1, 1, 1, "2025-01-06 08:00:00", "2025-01-30", "2025-02-02", "300.00", "USD", "Confirmed "),
    (2, 1, 2, "2025-01-06 09:00:00", "2025-01-10", "2025-01-12", "600.00", "USD", "confirmed"),
    (3, 2, 1, "2025-01-06 10:00:00", "2025-01-31", "2025-02-01", "100.00", "USD", "cancelled"),
    (4, 2, 3, "2025-01-06 11:00:00", "2025-01-10", "2025-01-11", "200.00", "EUR", "confirmed"),
]

WEEK = date(2025, 1, 6)
# Each table's rows in the order of its key columns.
EXPECTED = {
    "avg_listing_price": [(date(2024, 12, 30), "USD", Decimal("200.00"), 2)],
    "occupancy_rate": [
        (date(2025, 1, 1), 61, 4, 4 / 61),
        (date(2025, 2, 1), 56, 1, 1 / 56),
    ],
    "popular_locations": [(WEEK, "MA", "Boston", 1, 2), (WEEK, "TX", "Austin", 2, 1)],
    "top_listings": [
        (WEEK, "EUR", 3, "L3", "MA", "Boston", Decimal("200.00"), 1, 1),
        (WEEK, "USD", 1, "L1", "TX", "Austin", Decimal("300.00"), 1, 2),
        (WEEK, "USD", 2, "L2", "TX", "Austin", Decimal("600.00"), 1, 1),
    ],
    "bookings_per_user": [(WEEK, 1, 2), (WEEK, 2, 1)],
    "avg_booking_duration": [(WEEK, 2.0, 2, 3)],
}
# repeat_customer_rate has a row for every week of the range; the example states this one.
REPEAT_WEEK = (WEEK, 2, 1, 0.5)
