"""The Definitions of the platform, built from the settings of the environment."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from rental_platform.assets.curated import build_curated_assets
from rental_platform.assets.presentation import build_presentation_assets
from rental_platform.assets.raw import build_raw_assets
from rental_platform.automation import KPI_SENSOR, build_schedules, changed_days
from rental_platform.jobs import JOB_DEFINITIONS
from rental_platform.partitions import PlatformPartitions
from rental_platform.resources.catalog import LakeCatalog
from rental_platform.resources.lake import lake_for
from rental_platform.resources.limits import CheckLimitsResource
from rental_platform.resources.mysql import SourceDatabase
from rental_platform.resources.spark import spark_runner
from rental_platform.resources.warehouse import warehouse_for
from rental_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = PlatformPartitions.starting(settings.partitions_start)
    # A URL with a password can only have come from the environment: hand the resource the
    # variable, so the UI shows its name and never the password.
    mysql_url = (
        dg.EnvVar("RENTAL_MYSQL_URL") if settings.mysql.password else settings.mysql.redacted_url
    )
    # The nightly cycle rewrites every asset: one not materialised for longer is overdue.
    freshness = dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=settings.freshness_hours)
    )
    assets = [
        *build_raw_assets(partitions, settings.mutable_days),
        *build_curated_assets(partitions),
        *build_presentation_assets(partitions),
    ]
    return dg.Definitions(
        assets=dg.map_asset_specs(
            lambda spec: spec.replace_attributes(freshness_policy=freshness), assets
        ),
        jobs=list(JOB_DEFINITIONS.values()),
        schedules=build_schedules(settings.mutable_days, settings.partitions_start),
        sensors=[KPI_SENSOR, changed_days],
        resources={
            "source": SourceDatabase(url=mysql_url),
            "lake": lake_for(settings.lake_root),
            "catalog": LakeCatalog(lake_root=settings.lake_root, database=settings.glue_database),
            "warehouse": warehouse_for(settings.warehouse, settings.redshift_copy_role_arn),
            "spark": spark_runner(settings.runner),
            "limits": CheckLimitsResource(
                max_quarantine_share=settings.max_quarantine_share,
                freshness_hours=settings.freshness_hours,
            ),
        },
        # One process per run, so its steps share one SparkSession (and one JVM start).
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
