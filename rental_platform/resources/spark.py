"""Spark runners: where a step's Spark work happens. The assets cannot tell them apart: every
runner returns the same `StepReport`.

`local` runs the step in this process. `glue`, `emr_serverless` and `emr` run it on AWS
(`remote_spark.py`), imported only when configured: dagster-aws and boto3 take about a second
to import, which every local run would pay before its first step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import dagster as dg
from pydantic import Field

from rental_platform.settings import RunnerSettings
from rental_platform.spark.session import LOCAL_MASTER, get_or_create_session
from rental_platform.spark.steps import StepReport, StepRequest, run_step


class SparkRunner(dg.ConfigurableResource, ABC):
    """Runs one Spark step and returns its report."""

    @abstractmethod
    def run(self, context: dg.AssetExecutionContext, request: StepRequest) -> StepReport: ...


class LocalSparkRunner(SparkRunner):
    """An in-process SparkSession, created by the first step of a process and shared by the
    rest (the definitions use the in-process executor), so a run pays the JVM start once."""

    master: str = LOCAL_MASTER
    # RENTAL_SPARK_CONF: e.g. the hadoop-aws jars for an S3 lake.
    conf: dict[str, str] = Field(default_factory=dict)

    def run(self, context: dg.AssetExecutionContext, request: StepRequest) -> StepReport:
        return run_step(get_or_create_session(self.master, self.conf, request.days), request)


def spark_runner(settings: RunnerSettings) -> SparkRunner:
    if not settings.remote:
        return LocalSparkRunner(conf=dict(settings.spark_conf))
    from rental_platform.resources.remote_spark import remote_spark_runner

    return remote_spark_runner(settings)
