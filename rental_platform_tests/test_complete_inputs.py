"""Complete inputs or nothing (design.md, "What the platform promises"): a KPI period is computed
and published only when every day it reads is committed; otherwise its step fails naming the
missing days, whoever launched it (here the CLI's range run)."""

from __future__ import annotations

from datetime import date

import pytest

from rental_platform.runs import RangeRunError
from rental_platform_tests.harness import Platform


@pytest.fixture(scope="module")
def gapped(platform: Platform) -> Platform:
    """The worked example with 2025-01-01..03 extracted; a run of 01-06..07 then leaves a gap:
    the repeat customers of the week of 01-06 (every earlier booking counts) and the month of
    January read 01-04 and 01-05, which were never extracted."""
    platform.load_worked_example()
    platform.run(date(2025, 1, 1), date(2025, 1, 3))
    return platform


def test_a_period_with_days_missing_fails_naming_them(gapped: Platform) -> None:
    published = gapped.warehouse("SELECT * FROM presentation.occupancy_rate ORDER BY 1")
    with pytest.raises(RangeRunError) as error:
        gapped.run(date(2025, 1, 6), date(2025, 1, 7))
    message = str(error.value)
    assert "step kpis_weekly_repeat_customers" in message
    assert "2 days not committed: 2025-01-04, 2025-01-05" in message
    repeat = "SELECT * FROM presentation.repeat_customer_rate WHERE week_start = DATE '2025-01-06'"
    assert gapped.warehouse(repeat) == []
    # January's row is the one published before, not one computed over the gap.
    assert gapped.warehouse("SELECT * FROM presentation.occupancy_rate ORDER BY 1") == published


def test_once_the_days_are_extracted_the_period_is_published(gapped: Platform) -> None:
    gapped.run(date(2025, 1, 1), date(2025, 1, 7))
    repeat = "SELECT * FROM presentation.repeat_customer_rate WHERE week_start = DATE '2025-01-06'"
    assert len(gapped.warehouse(repeat)) == 1
