"""Daily, weekly (Monday) and monthly partitions, all starting from the configured first day.

A week or month that only partly overlaps the data still gets its partition: the weekly
partitions start on the Monday on or before the first day, the monthly on its first of month.
A day exists once it is over; the week and the month under way exist already, since kpis.md
computes the partial last period too (every period that starts on or before the latest day
extracted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import dagster as dg

from rental_platform.spark.layout import period_start
from rental_platform.tables import Grain


@dataclass(frozen=True)
class PlatformPartitions:
    first_day: date
    daily: dg.DailyPartitionsDefinition
    weekly: dg.WeeklyPartitionsDefinition
    monthly: dg.MonthlyPartitionsDefinition

    @classmethod
    def starting(cls, first_day: date) -> PlatformPartitions:
        return cls(
            first_day=first_day,
            daily=dg.DailyPartitionsDefinition(start_date=first_day.isoformat()),
            # Dagster's weeks start on Sunday unless told otherwise; ours are ISO weeks.
            weekly=dg.WeeklyPartitionsDefinition(
                start_date=period_start(Grain.WEEKLY, first_day).isoformat(),
                day_offset=1,
                end_offset=1,
            ),
            monthly=dg.MonthlyPartitionsDefinition(
                start_date=period_start(Grain.MONTHLY, first_day).isoformat(), end_offset=1
            ),
        )

    def of(self, grain: Grain) -> dg.PartitionsDefinition | None:
        return {
            Grain.SNAPSHOT: None,
            Grain.DAILY: self.daily,
            Grain.WEEKLY: self.weekly,
            Grain.MONTHLY: self.monthly,
        }[grain]
