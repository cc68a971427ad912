"""What keeps the platform up to date by itself when the daemon runs: the nightly and weekly
schedules, the sensor that carries out each snapshots run's plan, and the automation sensor
that recomputes every KPI partition a re-materialised day makes stale (see `cycle.py`)."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from rental_platform.cycle import DAILY_JOB, daily_runs, plan_of_run
from rental_platform.cycle_tags import Cycle
from rental_platform.jobs import JOB_DEFINITIONS, SNAPSHOTS_JOB
from rental_platform.tables import Layer


def build_schedules(mutable_days: int, first_day: date) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="nightly",
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        job_name=SNAPSHOTS_JOB.name,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="02:00 UTC: the nightly run for yesterday: the listings snapshot, then a "
        f"comparison of the source with the lake over the last {mutable_days} days "
        "(RENTAL_MUTABLE_DAYS); the `changed_days` sensor re-extracts what differs.",
    )
    def nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        as_of = context.scheduled_execution_time.date() - timedelta(days=1)
        cycle = Cycle.nightly(as_of, mutable_days, first_day)
        return dg.RunRequest(run_key=f"nightly-{as_of.isoformat()}", tags=cycle.tags())

    @dg.schedule(
        name="weekly_audit",
        cron_schedule="0 4 * * 0",
        execution_timezone="UTC",
        job_name=SNAPSHOTS_JOB.name,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Sundays 04:00 UTC: the nightly run's comparison over every day since "
        "RENTAL_PARTITIONS_START, so that changes older than the mutable horizon are found too.",
    )
    def weekly_audit(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        as_of = context.scheduled_execution_time.date() - timedelta(days=1)
        return dg.RunRequest(
            run_key=f"audit-{as_of.isoformat()}", tags=Cycle.audit(as_of, first_day).tags()
        )

    return [nightly, weekly_audit]


@dg.run_status_sensor(
    name="changed_days",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[JOB_DEFINITIONS[SNAPSHOTS_JOB.name]],
    request_job=JOB_DEFINITIONS[DAILY_JOB],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful snapshots run, launches the daily runs its plan asks "
    "for (raw/source_changes): the days whose source differs from the lake, and those to "
    "re-curate.",
)
def changed_days(context: dg.RunStatusSensorContext) -> list[dg.RunRequest]:
    run_id = context.dagster_run.run_id
    plan = plan_of_run(context.instance, run_id)
    if plan is None:
        return []
    return [
        dg.RunRequest(
            run_key=f"{run_id}-{run.first}",
            asset_selection=list(run.assets),
            tags=run.tags(),
        )
        for run in daily_runs(plan, run_id)
    ]


KPI_SENSOR = dg.AutomationConditionSensorDefinition(
    "kpi_automation",
    target=dg.AssetSelection.groups(str(Layer.PRESENTATION)),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Recomputes every weekly and monthly KPI partition whose days were "
    "re-materialised, of any age, once they are all done.",
)
