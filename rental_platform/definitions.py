"""The Definitions of the platform, built from the settings of the environment."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from rental_platform.assets.curated import build_curated_steps
from rental_platform.assets.layer import SparkAssets, spark_multi_assets
from rental_platform.assets.presentation import build_presentation_steps
from rental_platform.assets.raw import build_raw_steps
from rental_platform.automation import KPI_SENSOR, build_schedules, changed_days
from rental_platform.jobs import JOB_DEFINITIONS
from rental_platform.partitions import PlatformPartitions
from rental_platform.resources import build_resources
from rental_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = PlatformPartitions.starting(settings.partitions_start)
    # The nightly cycle rewrites every asset: one not materialised for longer is overdue.
    freshness = dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=settings.freshness_hours)
    )
    steps = spark_steps(partitions, settings.mutable_days)
    # A remote launch is billed a minute at least: a remote runner runs a job's steps in one.
    assets = spark_multi_assets(steps, one_launch_per_job=settings.runner.remote)
    return dg.Definitions(
        assets=dg.map_asset_specs(
            lambda spec: spec.replace_attributes(freshness_policy=freshness), assets
        ),
        jobs=list(JOB_DEFINITIONS.values()),
        schedules=build_schedules(settings.mutable_days, settings.partitions_start),
        sensors=[KPI_SENSOR, changed_days],
        resources=build_resources(settings),
        # Local Spark: one process per run, so its steps share one SparkSession (and one JVM
        # start). Remote Spark: a process per multi-asset (a job's steps, one remote launch), so a
        # run's independent multi-assets (the two weekly ones) wait on their jobs side by side.
        executor=dg.multiprocess_executor if settings.runner.remote else dg.in_process_executor,
    )


def spark_steps(partitions: PlatformPartitions, mutable_days: int) -> list[SparkAssets]:
    """Every Spark step of the platform, with the assets it writes."""
    return [
        *build_raw_steps(partitions, mutable_days),
        *build_curated_steps(partitions),
        *build_presentation_steps(partitions),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
