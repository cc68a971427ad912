"""`rental-platform deploy`: put the Spark code where the remote runners look for it, and make the
Glue job run it (or check the EMR Serverless application that will).

The code is named by a hash of its content, so deploying is safe to repeat: a second run with the
same code and settings uploads nothing and changes no job.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from rental_platform.lake_catalog import GlueCatalog
from rental_platform.remote_code import CodePackage, code_package
from rental_platform.remote_runtime import (
    RUNTIME_VERSION,
    Interpreter,
    build_runtime_archive,
    interpreter,
    is_runtime_version,
    runtime_archive_name,
)
from rental_platform.settings import (
    EmrServerlessApp,
    GlueJob,
    RunnerSettings,
    S3Location,
    Settings,
    SettingsError,
)

GLUE_VERSION = "5.0"
# The S3 object metadata that names the build of Python a runtime archive holds.
INTERPRETER_METADATA = "interpreter"
GLUE_TIMEOUT_MINUTES = 120
# Runs overlap (a backfill's, the two weekly KPI multi-assets), each its own run of the one job;
# runs beyond the limit wait in Glue's queue (JobRunQueuingEnabled) instead of failing to start.
# The timeout covers all the Spark steps of a multi-asset (up to three) together.
GLUE_MAX_CONCURRENT_RUNS = 10
# get_job reports these, but Glue refuses them beside WorkerType and NumberOfWorkers.
GLUE_CAPACITY_FIELDS = frozenset({"MaxCapacity", "AllocatedCapacity"})


@dataclass
class DeployReport:
    """What a deploy changed: nothing at all when this code is already deployed."""

    digest: str
    uploaded: list[str] = field(default_factory=list)
    job_change: str | None = None  # "created" or "updated"
    job: str | None = None  # the job deploy manages, e.g. "Glue job rental-step"
    # Things deploy cannot fix and the runner will meet (e.g. a runtime built for another OS).
    warnings: list[str] = field(default_factory=list)
    # What changed in the Glue Data Catalog, a line each.
    catalog: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"uploaded {uri}" for uri in self.uploaded]
        if self.job_change:
            lines.append(f"{self.job_change} {self.job}")
        lines = lines or [f"nothing to change: code {self.digest} is deployed"]
        return lines + self.catalog + [f"warning: {warning}" for warning in self.warnings]


def lake_catalog(settings: Settings) -> GlueCatalog | None:
    """The Glue Data Catalog database deploy keeps (RENTAL_GLUE_DATABASE), if one is set."""
    if settings.glue_database is None:
        return None
    return GlueCatalog(settings.glue_database, settings.lake_root)


def deploy(
    runner: RunnerSettings,
    s3: BaseClient | None = None,
    glue: BaseClient | None = None,
    emr_serverless: BaseClient | None = None,
    catalog: GlueCatalog | None = None,
) -> DeployReport:
    """Upload the code a remote runner needs, then create or update its Glue job, or check its
    EMR Serverless application; and make the Glue Data Catalog show the lake (`catalog`).
    Everything that can be refused is checked before any upload."""
    report = _deploy_code(runner, s3, glue, emr_serverless)
    if catalog is not None:
        with _aws(
            f"registering the lake in the Glue database {catalog.database} (RENTAL_GLUE_DATABASE)"
        ):
            report.catalog = catalog.sync().lines(catalog.database)
    return report


def _deploy_code(
    runner: RunnerSettings,
    s3: BaseClient | None,
    glue: BaseClient | None,
    emr_serverless: BaseClient | None,
) -> DeployReport:
    if not runner.remote:
        raise SettingsError(
            "RENTAL_SPARK_RUNNER: deploy is for the remote runners (glue, emr_serverless or "
            "emr); the local runner needs no deploy"
        )
    if runner.code is None:
        raise SettingsError(
            f"RENTAL_CODE_S3_PREFIX: required with RENTAL_SPARK_RUNNER={runner.kind}"
        )
    package, s3 = code_package(), s3 or boto3.client("s3")
    if runner.kind == "glue":
        if runner.glue is None:
            raise SettingsError("RENTAL_GLUE_JOB_NAME: required with RENTAL_SPARK_RUNNER=glue")
        return _deploy_glue(runner.glue, runner.code, package, s3, glue or boto3.client("glue"))
    python = _runtime_interpreter(runner)
    if runner.kind == "emr_serverless":
        if runner.emr_serverless is None:
            raise SettingsError(
                "RENTAL_EMR_SERVERLESS_APPLICATION_ID: required with "
                "RENTAL_SPARK_RUNNER=emr_serverless"
            )
        application = emr_serverless or boto3.client("emr-serverless")
        _check_application(runner.emr_serverless, application, python)
    elif runner.emr and _architecture(runner.emr.instance_type) != _architecture_of(python):
        raise SettingsError(
            f"RENTAL_EMR_INSTANCE_TYPE: {runner.emr.instance_type} runs "
            f"{_architecture(runner.emr.instance_type)}; the runtime's Python "
            f"(RENTAL_REMOTE_PYTHON) is built for {python.machine}"
        )
    report = DeployReport(package.digest, _upload(package, runner.code, s3))
    report.uploaded += _upload_runtime(python, runner.code, s3)
    if warning := python.system_warning():
        report.warnings.append(warning)
    return report


def _runtime_interpreter(runner: RunnerSettings) -> Interpreter:
    """The Python EMR and EMR Serverless run the code under: it must be the version every
    runner runs (what else it lacks, the report warns of: only the runner can prove it)."""
    python = interpreter(runner.remote_python)
    if not is_runtime_version(python.version):
        raise SettingsError(
            f"RENTAL_REMOTE_PYTHON: {runner.remote_python or sys.executable} is Python "
            f"{python.version}; the remote runners run Python {RUNTIME_VERSION}"
        )
    return python


def _architecture_of(python: Interpreter) -> str:
    return {"aarch64": "ARM64"}.get(python.machine, python.machine.upper())


def _architecture(instance_type: str) -> str:
    """EC2's Graviton families (m6g, c7gd, r8g ...) are ARM64; the others x86_64."""
    return "ARM64" if re.match(r"^[a-z]+\d+g", instance_type) else "X86_64"


def _upload_runtime(python: Interpreter, code: S3Location, s3: BaseClient) -> list[str]:
    """Put the runtime archive up unless there, built from this interpreter: its name says
    what it holds but not which build of Python, so a changed build replaces it."""
    key = code.key(runtime_archive_name())
    with _aws(f"uploading the Python runtime to {code.uri} (RENTAL_CODE_S3_PREFIX)"):
        try:
            metadata = s3.head_object(Bucket=code.bucket, Key=key)["Metadata"]
            if metadata.get(INTERPRETER_METADATA) == python.fingerprint:
                return []
        except ClientError as error:
            if _error_code(error) not in ("404", "NoSuchKey"):
                raise
        body = build_runtime_archive(python)
        s3.put_object(
            Bucket=code.bucket,
            Key=key,
            Body=body,
            Metadata={INTERPRETER_METADATA: python.fingerprint, "python": python.version},
        )
    return [f"{code.object_uri(runtime_archive_name())} (Python {python.version})"]


def _deploy_glue(
    job: GlueJob, code: S3Location, package: CodePackage, s3: BaseClient, glue: BaseClient
) -> DeployReport:
    current = _current_job(glue, job)
    if current is None and job.role_arn is None:
        raise SettingsError(
            f"RENTAL_GLUE_ROLE_ARN: the Glue job {job.name} does not exist yet; "
            "deploy creates it with this role"
        )
    report = DeployReport(package.digest, _upload(package, code, s3), job=f"Glue job {job.name}")
    report.job_change = _apply_job(glue, job, glue_job_definition(job, code, package), current)
    return report


@contextmanager
def _aws(action: str) -> Iterator[None]:
    """An AWS error as a RuntimeError that says what deploy was doing, for the CLI to print."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise RuntimeError(f"{action}: {error}") from error


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _upload(package: CodePackage, code: S3Location, s3: BaseClient) -> list[str]:
    """Put the package's files under their content-addressed keys, unless there."""
    uploaded = []
    with _aws(f"uploading the code to {code.uri} (RENTAL_CODE_S3_PREFIX)"):
        for name, body in package.files.items():
            key = code.key(name)
            try:
                s3.head_object(Bucket=code.bucket, Key=key)
                continue  # the same name means the same bytes
            except ClientError as error:
                # HEAD has no error body: a missing key (or bucket) is a bare 404, or a 403
                # without s3:ListBucket on the bucket, which deploy therefore needs.
                if _error_code(error) not in ("404", "NoSuchKey"):
                    raise
            s3.put_object(Bucket=code.bucket, Key=key, Body=body)
            uploaded.append(code.object_uri(name))
    return uploaded


def glue_job_definition(job: GlueJob, code: S3Location, package: CodePackage) -> dict[str, Any]:
    """The parts of the Glue job deploy manages: it runs this package's code with these
    settings. The role and connection only when the environment names them."""
    definition: dict[str, Any] = {
        "Command": {
            "Name": "glueetl",
            "ScriptLocation": package.entry_script_uri(code),
            "PythonVersion": "3",
        },
        "GlueVersion": GLUE_VERSION,
        "WorkerType": job.worker_type,
        "NumberOfWorkers": job.workers,
        "DefaultArguments": {
            "--extra-py-files": package.archive_uri(code),
            "--extra-jars": package.driver_jar_uri(code),
            "--job-language": "python",
            "--enable-metrics": "true",
        },
        "ExecutionProperty": {"MaxConcurrentRuns": GLUE_MAX_CONCURRENT_RUNS},
        "JobRunQueuingEnabled": True,
        "Timeout": GLUE_TIMEOUT_MINUTES,
        # Dagster retries a failed step; a Glue retry would run it behind Dagster's back.
        "MaxRetries": 0,
    }
    if job.role_arn:
        definition["Role"] = job.role_arn
    if job.connection:
        definition["Connections"] = {"Connections": [job.connection]}
    return definition


def _current_job(glue: BaseClient, job: GlueJob) -> dict[str, Any] | None:
    with _aws(f"reading the Glue job {job.name} (RENTAL_GLUE_JOB_NAME)"):
        try:
            return glue.get_job(JobName=job.name)["Job"]
        except ClientError as error:
            if _error_code(error) == "EntityNotFoundException":
                return None
            raise


def _apply_job(
    glue: BaseClient, job: GlueJob, definition: dict[str, Any], current: dict[str, Any] | None
) -> str | None:
    """Create the job, or update it if a managed part differs. An update replaces the whole
    definition, so it carries over what deploy does not manage (e.g. the stack's role and
    extra arguments); managed mappings are merged into the job's own."""
    with _aws(f"deploying the Glue job {job.name} (RENTAL_GLUE_JOB_NAME)"):
        if current is None:
            glue.create_job(Name=job.name, **definition)
            return "created"
        updatable = set(glue.meta.service_model.shape_for("JobUpdate").members)
        desired = {
            key: value
            for key, value in current.items()
            if key in updatable - GLUE_CAPACITY_FIELDS and value is not None
        }
        for key, value in definition.items():
            kept = current.get(key)
            desired[key] = {**kept, **value} if isinstance(kept, dict) else value
        if all(desired[key] == current.get(key) for key in definition):
            return None
        glue.update_job(JobName=job.name, JobUpdate=desired)
        return "updated"


def _check_application(
    app: EmrServerlessApp, emr_serverless: BaseClient, python: Interpreter
) -> None:
    """The application must exist, run Spark on the machines the runtime was built for; runs
    name the code by hash when they start, so there is nothing to change on it."""
    variable = "RENTAL_EMR_SERVERLESS_APPLICATION_ID"
    with _aws(f"{variable}: reading the EMR Serverless application {app.application_id}"):
        response = emr_serverless.get_application(applicationId=app.application_id)
    application = response["application"]
    if application["type"].lower() != "spark":
        raise RuntimeError(
            f"{variable}: the EMR Serverless application {app.application_id} runs "
            f"{application['type']}, not Spark"
        )
    architecture = application.get("architecture", "X86_64")
    if architecture != _architecture_of(python):
        raise RuntimeError(
            f"{variable}: the EMR Serverless application {app.application_id} runs on "
            f"{architecture}; the runtime's Python (RENTAL_REMOTE_PYTHON) is built for "
            f"{python.machine}"
        )
    if application["state"] == "TERMINATED":
        raise RuntimeError(
            f"{variable}: the EMR Serverless application {app.application_id} is terminated"
        )
