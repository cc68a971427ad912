"""The remote side of a Spark step: what a Glue or EMR job runs, through Dagster Pipes.

It reads the `StepRequest` from the Pipes context, runs the very step function the local
runner runs, and reports one materialisation per table (explicit asset keys), every check
result, and the whole `StepReport` (so the Dagster side gets exactly what a local run returns).
The source password never travels with the request: it comes from RENTAL_MYSQL_PASSWORD or
from AWS Secrets Manager (the secret's ARN in the job argument `--rental-mysql-secret-arn`, or
RENTAL_MYSQL_SECRET_ARN).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from dagster_pipes import (
    PipesCliArgsParamsLoader,
    PipesContext,
    PipesEnvVarParamsLoader,
    PipesParamsLoader,
    PipesS3ContextLoader,
    PipesS3MessageWriter,
    open_dagster_pipes,
)

from rental_platform.spark.quality import checks_for
from rental_platform.spark.session import get_or_create_session
from rental_platform.spark.steps import StepReport, StepRequest, run_step
from rental_platform.tables import TABLES

REQUEST_EXTRA = "step_request"
# A job argument naming the Secrets Manager secret that holds the source password.
SECRET_ARN_ARGUMENT = "--rental-mysql-secret-arn"
# Glue jobs receive the Pipes bootstrap parameters as job arguments, not environment.
PIPES_CONTEXT_ARGUMENT = "--dagster-pipes-context"
BLOCKING_SEVERITY, WARNING_SEVERITY = "ERROR", "WARN"


def _argument(name: str, argv: list[str]) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def source_password(argv: list[str]) -> str:
    secret_arn = _argument(SECRET_ARN_ARGUMENT, argv) or os.environ.get("RENTAL_MYSQL_SECRET_ARN")
    if not secret_arn:
        return os.environ.get("RENTAL_MYSQL_PASSWORD", "")
    import boto3

    # The secret's own region (arn:aws:secretsmanager:REGION:...): a driver on EMR on EC2 has
    # no default region to fall back on.
    client = boto3.client("secretsmanager", region_name=secret_arn.split(":")[3])
    secret = client.get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        return json.loads(secret)["password"]
    except (ValueError, KeyError, TypeError):
        return secret


def asset_key(table_id: str) -> str:
    table = TABLES[table_id]
    return f"{table.layer}/{table.name}"


def pipes_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Pipes takes plain values as they are; structures and Markdown need their type named."""
    typed: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, dict | list):
            typed[key] = {"raw_value": value, "type": "json"}
        elif key == "preview":
            typed[key] = {"raw_value": value, "type": "md"}
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


def _pipes_channels(argv: list[str]) -> dict[str, Any]:
    """Where the Pipes bootstrap parameters are (Glue: job arguments; EMR Serverless and EMR:
    the driver's environment), and, when they point at S3, context and messages on S3. A local
    subprocess keeps Dagster Pipes' defaults (environment and files)."""
    params: PipesParamsLoader = (
        PipesCliArgsParamsLoader() if PIPES_CONTEXT_ARGUMENT in argv else PipesEnvVarParamsLoader()
    )
    if not params.is_dagster_pipes_process() or "bucket" not in params.load_context_params():
        return {"params_loader": params}
    import boto3

    s3 = boto3.client("s3")
    return {
        "params_loader": params,
        "context_loader": PipesS3ContextLoader(client=s3),
        "message_writer": PipesS3MessageWriter(client=s3),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    with open_dagster_pipes(**_pipes_channels(argv)) as pipes:
        request = StepRequest.from_json(pipes.get_extra(REQUEST_EXTRA), source_password(argv))
        pipes.log.info(f"Spark step {request.step} for {', '.join(request.tables)}")
        master = os.environ.get("RENTAL_SPARK_MASTER")  # set for local runs; unset on a cluster
        step_report = run_step(get_or_create_session(master), request)
        blocking = {
            spec.name: spec.blocking
            for table in request.tables
            for spec in checks_for(TABLES[table])
        }
        report(pipes, step_report, blocking)


if __name__ == "__main__":
    main()
