"""`rental-platform deploy` against the AWS control plane on loopback (moto): real boto3 clients,
real S3 objects, a real Glue job definition. Deploying twice must change nothing the second time.

moto (5.2.1) has no Glue UpdateJob; the `aws` fixture teaches it to moto's server.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable

import boto3
import pytest

from rental_platform.cli import main
from rental_platform.deploy import deploy
from rental_platform.remote_code import code_package
from rental_platform.settings import (
    EmrCluster,
    EmrServerlessApp,
    GlueJob,
    RunnerSettings,
    S3Location,
    SettingsError,
)
from rental_platform_tests.aws import aws  # noqa: F401

STACK_ROLE = "arn:aws:iam::123456789012:role/rental-glue-stack"
DEPLOY_ROLE = "arn:aws:iam::123456789012:role/rental-glue"
EMR_ROLE = "arn:aws:iam::123456789012:role/rental-emr-serverless"
_names = itertools.count()

pytestmark = pytest.mark.usefixtures("aws")


def _unique(kind: str) -> str:
    return f"deploy-{kind}-{next(_names)}"


def _code_location() -> S3Location:
    """A fresh versioned bucket: its versions count every put, even of the same bytes."""
    bucket = _unique("code")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3Location(bucket, "spark/code")


def _puts(code: S3Location) -> Counter[str]:
    versions = boto3.client("s3").list_object_versions(Bucket=code.bucket).get("Versions", [])
    return Counter(version["Key"] for version in versions)


def _uris(code: S3Location) -> tuple[str, str, str]:
    package = code_package()
    return package.archive_uri(code), package.entry_script_uri(code), package.driver_jar_uri(code)


def _glue_runner(code: S3Location, job: GlueJob) -> RunnerSettings:
    return RunnerSettings(kind="glue", pipes=S3Location(code.bucket, "pipes"), code=code, glue=job)


def _stack_job(name: str) -> None:
    """The job as the CloudFormation stack leaves it: a placeholder script, the stack's role,
    and settings deploy does not manage (which it must keep)."""
    boto3.client("glue").create_job(
        Name=name,
        Role=STACK_ROLE,
        Description="Spark steps of the rental platform",
        Command={"Name": "glueetl", "ScriptLocation": "s3://stack-assets/placeholder.py"},
        GlueVersion="4.0",
        WorkerType="G.1X",
        NumberOfWorkers=2,
        MaxCapacity=2.0,  # Glue reports it for every worker-sized job
        DefaultArguments={"--TempDir": "s3://stack-assets/tmp"},
    )


def _job(name: str) -> dict:
    return boto3.client("glue").get_job(JobName=name)["Job"]


def test_deploy_points_the_stacks_job_at_the_code_and_repeating_it_changes_nothing() -> None:
    code, name, package = _code_location(), _unique("job"), code_package()
    _stack_job(name)
    runner = _glue_runner(code, GlueJob(name))
    archive, script, jar = _uris(code)

    first = deploy(runner)

    assert first.uploaded == [archive, script, jar]
    assert first.lines() == [
        f"uploaded {archive}",
        f"uploaded {script}",
        f"uploaded {jar}",
        f"updated Glue job {name}",
    ]
    s3 = boto3.client("s3")
    for name_, body in package.files.items():
        assert s3.get_object(Bucket=code.bucket, Key=code.key(name_))["Body"].read() == body
    job = _job(name)
    assert job["Command"] == {"Name": "glueetl", "ScriptLocation": script, "PythonVersion": "3"}
    assert job["DefaultArguments"] == {
        "--TempDir": "s3://stack-assets/tmp",
        "--extra-py-files": archive,
        "--extra-jars": jar,
        "--job-language": "python",
        "--enable-metrics": "true",
    }
    assert (job["GlueVersion"], job["WorkerType"], job["NumberOfWorkers"]) == ("5.0", "G.1X", 2)
    assert job["ExecutionProperty"] == {"MaxConcurrentRuns": 10}
    assert job["JobRunQueuingEnabled"] is True  # the 11th concurrent run waits, not fails
    assert (job["Timeout"], job["MaxRetries"]) == (120, 0)
    # RENTAL_GLUE_ROLE_ARN is unset: the stack's role and description stay.
    assert (job["Role"], job["Description"]) == (STACK_ROLE, "Spark steps of the rental platform")

    second = deploy(runner)

    assert (second.uploaded, second.job_change) == ([], None)
    assert second.lines() == [f"nothing to change: code {package.digest} is deployed"]
    assert _job(name) == job  # LastModifiedOn too: no UpdateJob
    assert _puts(code) == {code.key(name_): 1 for name_ in package.files}


def test_a_changed_setting_updates_the_job_and_uploads_nothing() -> None:
    code, name = _code_location(), _unique("job")
    _stack_job(name)
    deploy(_glue_runner(code, GlueJob(name)))
    bigger = GlueJob(name, worker_type="G.2X", workers=6, role_arn=DEPLOY_ROLE, connection="vpc")

    report = deploy(_glue_runner(code, bigger))

    assert (report.uploaded, report.job_change) == ([], "updated")
    job = _job(name)
    assert (job["WorkerType"], job["NumberOfWorkers"], job["Role"]) == ("G.2X", 6, DEPLOY_ROLE)
    assert job["Connections"] == {"Connections": ["vpc"]}
    assert job["Command"]["ScriptLocation"] == _uris(code)[1]


def test_a_missing_job_is_created_with_the_role() -> None:
    code, name = _code_location(), _unique("job")
    runner = _glue_runner(code, GlueJob(name, role_arn=DEPLOY_ROLE, connection="vpc"))
    archive, script, jar = _uris(code)

    report = deploy(runner)

    assert (report.uploaded, report.job_change) == ([archive, script, jar], "created")
    assert report.lines()[-1] == f"created Glue job {name}"
    job = _job(name)
    assert (job["Role"], job["GlueVersion"]) == (DEPLOY_ROLE, "5.0")
    assert job["Command"]["ScriptLocation"] == script
    assert job["DefaultArguments"]["--extra-py-files"] == archive
    assert job["Connections"] == {"Connections": ["vpc"]}
    assert job["ExecutionProperty"] == {"MaxConcurrentRuns": 10}
    assert job["JobRunQueuingEnabled"] is True
    assert deploy(runner).job_change is None


def test_a_missing_job_without_a_role_is_refused_before_any_upload() -> None:
    code, name = _code_location(), _unique("job")

    with pytest.raises(SettingsError, match="RENTAL_GLUE_ROLE_ARN") as error:
        deploy(_glue_runner(code, GlueJob(name)))

    assert name in str(error.value)
    assert _puts(code) == {}
    glue = boto3.client("glue")
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_job(JobName=name)


def _application(kind: str = "SPARK") -> str:
    return boto3.client("emr-serverless").create_application(
        name=_unique("app"), releaseLabel="emr-7.5.0", type=kind
    )["applicationId"]


def _terminated_application() -> str:
    emr = boto3.client("emr-serverless")
    application = _application()
    emr.stop_application(applicationId=application)
    emr.delete_application(applicationId=application)
    return application


def _emr_serverless_runner(code: S3Location, application: str) -> RunnerSettings:
    return RunnerSettings(
        kind="emr_serverless",
        pipes=S3Location(code.bucket, "pipes"),
        code=code,
        emr_serverless=EmrServerlessApp(application, EMR_ROLE),
    )


def test_emr_serverless_deploy_uploads_for_a_spark_application() -> None:
    code = _code_location()
    runner = _emr_serverless_runner(code, _application())
    archive, script, jar = _uris(code)

    report = deploy(runner)

    assert (report.uploaded, report.job_change) == ([archive, script, jar], None)
    assert report.lines() == [f"uploaded {archive}", f"uploaded {script}", f"uploaded {jar}"]
    assert deploy(runner).lines() == [
        f"nothing to change: code {code_package().digest} is deployed"
    ]


@pytest.mark.parametrize(
    ("application", "reason"),
    [
        (lambda: "00nosuchapplication", "ResourceNotFoundException"),
        (lambda: _application("HIVE"), "runs Hive, not Spark"),
        (_terminated_application, "is terminated"),
    ],
    ids=["missing", "hive", "terminated"],
)
def test_emr_serverless_deploy_refuses_an_application_that_cannot_run_the_steps(
    application: Callable[[], str], reason: str
) -> None:
    code, application_id = _code_location(), application()

    with pytest.raises(RuntimeError, match="RENTAL_EMR_SERVERLESS_APPLICATION_ID") as error:
        deploy(_emr_serverless_runner(code, application_id))

    assert application_id in str(error.value) and reason in str(error.value)
    assert _puts(code) == {}


def test_emr_deploy_only_uploads() -> None:
    code = _code_location()
    runner = RunnerSettings(
        kind="emr", pipes=S3Location(code.bucket, "pipes"), code=code, emr=EmrCluster()
    )

    report = deploy(runner)

    assert (report.uploaded, report.job_change) == (list(_uris(code)), None)


def test_the_local_runner_has_nothing_to_deploy() -> None:
    with pytest.raises(SettingsError, match="RENTAL_SPARK_RUNNER"):
        deploy(RunnerSettings())


def _environment(monkeypatch: pytest.MonkeyPatch, code: str, job: str) -> None:
    """Only the settings this test names: none of the test machine's RENTAL_ variables."""
    for name in [name for name in os.environ if name.startswith("RENTAL_")]:
        monkeypatch.delenv(name)
    for name, value in {
        "RENTAL_SPARK_RUNNER": "glue",
        "RENTAL_PIPES_S3_PREFIX": "s3://pipes-bucket/pipes",
        "RENTAL_CODE_S3_PREFIX": code,
        "RENTAL_GLUE_JOB_NAME": job,
        "RENTAL_GLUE_ROLE_ARN": DEPLOY_ROLE,
        "RENTAL_LAKE_ROOT": "s3://lake-bucket/lake",
    }.items():
        monkeypatch.setenv(name, value)


def test_the_cli_deploys_and_then_has_nothing_to_change(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, name = _code_location(), _unique("job")
    _environment(monkeypatch, code.uri, name)
    archive, script, jar = _uris(code)

    assert main(["deploy"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"uploaded {archive}",
        f"uploaded {script}",
        f"uploaded {jar}",
        f"created Glue job {name}",
    ]
    assert main(["deploy"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"nothing to change: code {code_package().digest} is deployed"
    ]


def test_the_cli_names_a_missing_bucket(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, name = _unique("missing"), _unique("job")
    _environment(monkeypatch, f"s3://{bucket}/code", name)

    assert main(["deploy"]) == 1

    error = capsys.readouterr().err
    assert f"s3://{bucket}/code" in error
    assert "RENTAL_CODE_S3_PREFIX" in error and "NoSuchBucket" in error
    glue = boto3.client("glue")
    with pytest.raises(glue.exceptions.EntityNotFoundException):
        glue.get_job(JobName=name)  # no job that points at code that is not there
