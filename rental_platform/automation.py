"""What keeps the platform up to date by itself: the nightly extraction schedules and the
declarative automation that materialises the KPIs once their upstream days are in."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from rental_platform.jobs import GRAIN_JOBS
from rental_platform.tables import Grain, Layer

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"

# A KPI partition runs once its upstream days are all there, none is being written, and every
# blocking check upstream passed; a day re-materialised upstream makes it run again.
KPI_AUTOMATION = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
)


def lookback_window(today: date, lookback_days: int, first_day: date) -> tuple[date, date]:
    """Yesterday, plus the `lookback_days` before it (re-extracted to catch status changes)."""
    yesterday = today - timedelta(days=1)
    return max(first_day, yesterday - timedelta(days=lookback_days)), yesterday


def build_schedules(lookback_days: int, first_day: date) -> list[dg.ScheduleDefinition]:
    jobs = {job.grain: job.name for job in GRAIN_JOBS}

    @dg.schedule(
        name="nightly_listings",
        cron_schedule="30 1 * * *",
        execution_timezone="UTC",
        job_name=jobs[Grain.SNAPSHOT],
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="01:30 UTC: refresh the listing snapshot before the day's bookings.",
    )
    def nightly_listings(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key=context.scheduled_execution_time.date().isoformat())

    @dg.schedule(
        name="nightly_days",
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        job_name=jobs[Grain.DAILY],
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"02:00 UTC: extract and curate yesterday and the {lookback_days} days "
        "before it (RENTAL_LOOKBACK_DAYS), in one run.",
    )
    def nightly_days(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        start, end = lookback_window(
            context.scheduled_execution_time.date(), lookback_days, first_day
        )
        return dg.RunRequest(
            run_key=end.isoformat(),
            tags={RANGE_START: start.isoformat(), RANGE_END: end.isoformat()},
        )

    return [nightly_listings, nightly_days]


KPI_SENSOR = dg.AutomationConditionSensorDefinition(
    "kpi_automation",
    target=dg.AssetSelection.groups(str(Layer.PRESENTATION)),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Materialises weekly and monthly KPI partitions once their days are done.",
)
