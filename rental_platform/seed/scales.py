"""How much sample data to seed: one named size per use (tests, demo, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class SeedScale:
    """Row counts and the date range the generated activity falls in.

    `users` is the size of the user-id space (there is no users table in the source);
    bookings and views fall in [start, start + days).
    """

    listings: int
    users: int
    bookings: int
    views: int
    start: date
    days: int

    @property
    def end(self) -> date:
        """First day after the range (exclusive)."""
        return self.start + timedelta(days=self.days)


SCALES: dict[str, SeedScale] = {
    # for tests
    "tiny": SeedScale(
        listings=60, users=200, bookings=1_500, views=6_000, start=date(2025, 1, 1), days=21
    ),
    "demo": SeedScale(
        listings=400, users=3_000, bookings=20_000, views=100_000, start=date(2025, 1, 1), days=90
    ),
    "small": SeedScale(
        listings=2_000,
        users=20_000,
        bookings=100_000,
        views=500_000,
        start=date(2025, 1, 1),
        days=90,
    ),
    "large": SeedScale(
        listings=20_000,
        users=150_000,
        bookings=1_000_000,
        views=5_000_000,
        start=date(2025, 1, 1),
        days=365,
    ),
    # Ten times `large`, over three years: how the platform grows (make bench SCALE=xlarge).
    "xlarge": SeedScale(
        listings=200_000,
        users=1_500_000,
        bookings=10_000_000,
        views=50_000_000,
        start=date(2023, 1, 1),
        days=3 * 365,
    ),
}
