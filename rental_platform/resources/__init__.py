"""The platform's edges: the source database, the lake, the warehouse and the Spark runner,
each built once from the settings."""

from __future__ import annotations

from typing import Any

import dagster as dg

from rental_platform.resources.catalog import LakeCatalog
from rental_platform.resources.lake import LakeResource, LocalLakeResource
from rental_platform.resources.limits import CheckLimitsResource
from rental_platform.resources.mysql import SourceDatabase
from rental_platform.resources.spark import LocalSparkRunner, SparkRunner
from rental_platform.resources.warehouse import warehouse_for
from rental_platform.settings import RunnerSettings, Settings


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources the assets use, by key."""
    # A URL with a password can only have come from the environment: hand the resource the
    # variable, so the UI shows its name and never the password.
    mysql_url = (
        dg.EnvVar("RENTAL_MYSQL_URL") if settings.mysql.password else settings.mysql.redacted_url
    )
    return {
        "source": SourceDatabase(url=mysql_url),
        "lake": lake_for(settings.lake_root),
        "catalog": LakeCatalog(lake_root=settings.lake_root, database=settings.glue_database),
        "warehouse": warehouse_for(settings.warehouse, settings.redshift_copy_role_arn),
        "spark": spark_runner(settings.runner),
        "limits": CheckLimitsResource(
            max_quarantine_share=settings.max_quarantine_share,
            freshness_hours=settings.freshness_hours,
        ),
    }


def lake_for(root: str) -> LakeResource:
    if not root.startswith("s3://"):
        return LocalLakeResource(root=root)
    # dagster-aws is imported only for an S3 lake: it takes about a second.
    from dagster_aws.s3 import S3Resource

    from rental_platform.resources.s3_lake import S3LakeResource

    return S3LakeResource(root=root, s3=S3Resource())


def spark_runner(settings: RunnerSettings) -> SparkRunner:
    if not settings.remote:
        return LocalSparkRunner(
            conf=dict(settings.spark_conf), local_off=sorted(settings.local_off)
        )
    # Likewise dagster-aws and boto3, for the remote runners.
    from rental_platform.resources.remote_spark import remote_spark_runner

    return remote_spark_runner(settings)
