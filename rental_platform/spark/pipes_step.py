"""The step a remote job runs, once `entrypoint` has opened Dagster Pipes: it reads the
`StepRequest` from the Pipes context, runs the very step function the local runner runs, and
reports one materialisation per table (explicit asset keys), every check result, and the whole
`StepReport` (so the Dagster side gets exactly what a local run returns). Or, for
`rental-platform deploy --check`, the canary: what this runtime is and can reach."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from dagster_pipes import PipesContext
from pyspark.sql import SparkSession

import rental_platform
from rental_platform.spark.extract import SourceConnection
from rental_platform.spark.quality import checks_for
from rental_platform.spark.session import driver_time_zone, get_or_create_session
from rental_platform.spark.steps import StepReport, StepRequest, run_step
from rental_platform.tables import TABLES

BLOCKING_SEVERITY, WARNING_SEVERITY = "ERROR", "WARN"


def asset_key(table_id: str) -> str:
    table = TABLES[table_id]
    return f"{table.layer}/{table.name}"


def pipes_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Pipes takes plain values as they are; structures need their type named."""
    typed: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, dict | list):
            typed[key] = {"raw_value": value, "type": "json"}
        else:
            typed[key] = value
    return typed


def report(pipes: PipesContext, step_report: StepReport, blocking: dict[str, bool]) -> None:
    for table in step_report.tables.values():
        pipes.report_asset_materialization(
            asset_key=asset_key(table.table),
            metadata=pipes_metadata({"dagster/row_count": table.row_count, **table.metadata}),
        )
    for check in step_report.checks:
        pipes.report_asset_check(
            check_name=check.name,
            passed=check.passed,
            asset_key=asset_key(check.table),
            severity=BLOCKING_SEVERITY if blocking.get(check.name, True) else WARNING_SEVERITY,
            metadata=pipes_metadata(check.metadata),
        )
    pipes.report_custom_message(step_report.to_json())


def _session() -> SparkSession:
    """The job's session: the cluster's, or a local one where RENTAL_SPARK_MASTER says."""
    return get_or_create_session(os.environ.get("RENTAL_SPARK_MASTER"))


def run_requested_step(pipes: PipesContext, request_json: dict[str, Any], password: str) -> None:
    request = StepRequest.from_json(request_json, password)
    pipes.log.info(f"Spark step {request.step} for {', '.join(request.tables)}")
    step_report = run_step(_session(), request)
    blocking = {
        spec.name: spec.blocking for table in request.tables for spec in checks_for(TABLES[table])
    }
    report(pipes, step_report, blocking)


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
