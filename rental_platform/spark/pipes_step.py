"""The steps a remote job runs, once `entrypoint` has opened Dagster Pipes: it reads the
`StepRequest`s from the Pipes context and runs each with the very step function the local
runner runs, in one SparkSession, sending back each `StepReport`, whole, as one message as soon
as it is made: the Dagster side gets exactly what a local run returns. Or, for
`rental-platform deploy --check`, the canary: what this runtime is and can reach."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from dagster_pipes import PipesContext
from pyspark.sql import SparkSession

import rental_platform
from rental_platform.contract import SourceConnection, StepRequest
from rental_platform.spark.session import driver_time_zone, get_or_create_session
from rental_platform.spark.steps import run_step


def _session() -> SparkSession:
    """The job's session: the cluster's, or a local one where RENTAL_SPARK_MASTER says."""
    return get_or_create_session(os.environ.get("RENTAL_SPARK_MASTER"))


def run_requested_steps(
    pipes: PipesContext, requests_json: list[dict[str, Any]], password: str
) -> None:
    """Each step in order. After a report that rejects a table the job ends: the steps after
    it would read the rejected table. A step that fails fails the job, after the reports of
    the steps before it went back."""
    session = _session()
    for index, request_json in enumerate(requests_json):
        request = StepRequest.from_json(request_json, password)
        pipes.log.info(f"Spark step {request.step} for {', '.join(request.tables)}")
        report = run_step(session, request)
        # One message, the whole report: the Dagster side makes of it what a local run's
        # report makes, materialisations and check results alike.
        pipes.report_custom_message(report.as_message(index))
        if report.rejected:
            pipes.log.warning(f"{request.step} rejected {', '.join(report.rejected)}: stopping")
            return


def runtime_facts(canary: dict[str, Any], password: str, password_origin: str) -> dict[str, str]:
    """The canary: the package imported (this code running says so), Spark started, the
    source reached with the password from its secret; what it found."""
    spark = _session()
    facts = {
        "python": platform.python_version(),
        "python_prefix": sys.prefix,
        "package": os.path.dirname(rental_platform.__file__),
        "spark": spark.version,
        "driver_time_zone": driver_time_zone(spark),
        "password_from": password_origin,
    }
    if canary.get("source"):
        source = SourceConnection(canary["source"]["jdbc_url"], canary["source"]["user"], password)
        query = "(SELECT 1 AS ok) AS q"
        spark.read.jdbc(source.jdbc_url, query, properties=source.properties()).collect()
        facts["source"] = f"{source.jdbc_url} as {source.user}"
    return facts
