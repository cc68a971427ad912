"""Spark runners: where a step's Spark work happens. The assets cannot tell them apart: every
runner returns the same `StepReport`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import boto3
import dagster as dg
from dagster_aws.pipes import PipesGlueClient, PipesS3ContextInjector, PipesS3MessageReader

from rental_platform.settings import RunnerSettings
from rental_platform.spark.entrypoint import REQUEST_EXTRA, SECRET_ARN_ARGUMENT
from rental_platform.spark.session import get_or_create_session
from rental_platform.spark.steps import StepReport, StepRequest, run_step


class SparkRunner(dg.ConfigurableResource, ABC):
    """Runs one Spark step and returns its report."""

    @abstractmethod
    def run(self, context: dg.AssetExecutionContext, request: StepRequest) -> StepReport: ...


class LocalSparkRunner(SparkRunner):
    """An in-process SparkSession, created by the first step of a process and shared by the
    rest (the definitions use the in-process executor), so a run pays the JVM start once."""

    master: str = "local[*]"

    def run(self, context: dg.AssetExecutionContext, request: StepRequest) -> StepReport:
        return run_step(get_or_create_session(self.master), request)


def report_from(messages: list[Any], where: str) -> StepReport:
    """The StepReport a remote job sent back; a job that sent none has not succeeded."""
    reports = [m for m in messages if isinstance(m, dict) and "checks" in m and "tables" in m]
    if not reports:
        raise RuntimeError(f"{where} ended without reporting its step through Dagster Pipes")
    return StepReport.from_json(reports[-1])


class GlueSparkRunner(SparkRunner):
    """An AWS Glue job (`rental-platform deploy` creates it) running `spark/entrypoint.py`,
    through Dagster Pipes: context and messages go through `pipes_bucket`."""

    job_name: str
    pipes_bucket: str
    pipes_prefix: str = "dagster-pipes"
    worker_type: str = "G.1X"
    number_of_workers: int = 2
    # The ARN of the source password in Secrets Manager (an ARN, not the secret).
    mysql_secret_arn: str | None = None

    def run(self, context: dg.AssetExecutionContext, request: StepRequest) -> StepReport:
        s3 = boto3.client("s3")
        client = PipesGlueClient(
            context_injector=PipesS3ContextInjector(
                bucket=self.pipes_bucket, client=s3, key_prefix=self.pipes_prefix
            ),
            message_reader=PipesS3MessageReader(bucket=self.pipes_bucket, client=s3, interval=5),
            client=boto3.client("glue"),
        )
        arguments = {SECRET_ARN_ARGUMENT: self.mysql_secret_arn} if self.mysql_secret_arn else {}
        invocation = client.run(
            context=context,
            start_job_run_params={
                "JobName": self.job_name,
                "Arguments": arguments,
                "WorkerType": self.worker_type,
                "NumberOfWorkers": self.number_of_workers,
            },
            extras={REQUEST_EXTRA: request.to_json()},
        )
        return report_from(invocation.get_custom_messages(), f"Glue job {self.job_name}")


def spark_runner(settings: RunnerSettings) -> SparkRunner:
    if settings.kind == "glue":
        return GlueSparkRunner(
            job_name=settings.glue_job_name,
            pipes_bucket=settings.pipes_bucket,
            pipes_prefix=settings.pipes_prefix,
            worker_type=settings.glue_worker_type,
            number_of_workers=settings.glue_workers,
            mysql_secret_arn=settings.mysql_secret_arn,
        )
    return LocalSparkRunner()
