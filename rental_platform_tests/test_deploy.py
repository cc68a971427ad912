"""`rental-platform deploy` against the AWS control plane on loopback (moto): real boto3 clients,
real S3 objects, a real Glue job definition. Deploying twice must change nothing the second time.

moto (5.2.1) has no Glue UpdateJob; the `aws` fixture teaches it to moto's server.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from rental_platform.cli import main
from rental_platform.deploy import deploy
from rental_platform.remote_code import code_package
from rental_platform.remote_runtime import Interpreter, interpreter, runtime_archive_name
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


def _runtime(code: S3Location, python: str | None = None) -> str:
    """How deploy reports the runtime it uploaded."""
    return f"{code.object_uri(runtime_archive_name())} (Python {interpreter(python).version})"


def _warnings() -> list[str]:
    """This machine's Python needs a newer C library than Amazon Linux 2023's: deploy says so."""
    warning = interpreter().system_warning()
    return [f"warning: {warning}"] if warning else []


def test_emr_serverless_deploy_uploads_for_a_spark_application() -> None:
    code = _code_location()
    runner = _emr_serverless_runner(code, _application())
    archive, script, jar = _uris(code)

    report = deploy(runner)

    assert (report.uploaded, report.job_change) == ([archive, script, jar, _runtime(code)], None)
    assert report.lines() == [
        f"uploaded {archive}",
        f"uploaded {script}",
        f"uploaded {jar}",
        f"uploaded {_runtime(code)}",
        *_warnings(),
    ]
    assert deploy(runner).lines() == [
        f"nothing to change: code {code_package().digest} is deployed",
        *_warnings(),
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

    assert (report.uploaded, report.job_change) == ([*_uris(code), _runtime(code)], None)


# Debian's own build of Python 3.11 (its own layout, no shared library), beside this
# machine's pyenv one.
OTHER_PYTHON_311 = "/usr/bin/python3.11"
PYTHON_39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"


def _run_shipped_runtime(code: S3Location, folder: Path) -> list[str]:
    """Unpack the deployed runtime as Spark does (`#environment` in the working folder) and
    import what the entry script needs with its `bin/python`, in an empty environment; what it
    printed: its version and where its Python and boto3 live."""
    folder.mkdir()
    archive = folder / "runtime.tar.gz"
    boto3.client("s3").download_file(code.bucket, code.key(runtime_archive_name()), str(archive))
    with tarfile.open(archive) as packed:
        packed.extractall(folder / "environment", filter="tar")
    check = "import sys, boto3, dagster_pipes, enum; enum.StrEnum; "
    check += "print(sys.version.split()[0], sys.prefix, boto3.__file__)"
    result = subprocess.run(
        ["./environment/bin/python", "-c", check],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_a_runtime_built_from_another_python_replaces_the_deployed_one(tmp_path: Path) -> None:
    """The runtime's name says what it holds, not which build of Python 3.11: deploying from
    another build uploads it again, and repeating that uploads nothing. Each build's runtime
    runs from wherever it is unpacked, on no Python of this machine's."""
    code = _code_location()
    runner = RunnerSettings(
        kind="emr", pipes=S3Location(code.bucket, "pipes"), code=code, emr=EmrCluster()
    )
    other = dataclasses.replace(runner, remote_python=OTHER_PYTHON_311)
    key = code.key(runtime_archive_name())

    assert deploy(runner).uploaded[-1] == _runtime(code)
    version, prefix, boto = _run_shipped_runtime(code, tmp_path / "first")
    assert (version, prefix) == (interpreter().version, str(tmp_path / "first" / "environment"))
    assert boto.startswith(f"{prefix}/lib/python3.11/site-packages/")

    assert deploy(other).uploaded == [_runtime(code, OTHER_PYTHON_311)]
    assert deploy(other).uploaded == []
    assert _puts(code)[key] == 2
    metadata = boto3.client("s3").head_object(Bucket=code.bucket, Key=key)["Metadata"]
    assert metadata["python"] == interpreter(OTHER_PYTHON_311).version
    version, prefix, boto = _run_shipped_runtime(code, tmp_path / "other")
    assert (version, prefix) == (metadata["python"], str(tmp_path / "other" / "environment"))
    assert boto.startswith(f"{prefix}/local/lib/python3.11/dist-packages/")  # Debian's layout


def test_a_python_of_another_version_is_refused_before_any_upload() -> None:
    code = _code_location()
    runner = _emr_serverless_runner(code, _application())

    with pytest.raises(SettingsError, match="RENTAL_REMOTE_PYTHON") as error:
        deploy(dataclasses.replace(runner, remote_python=PYTHON_39))

    assert "is Python 3.9.18; the remote runners run Python 3.11" in str(error.value)
    assert _puts(code) == {}


def test_machines_of_another_architecture_are_refused_before_any_upload() -> None:
    """The runtime holds this machine's x86_64 binaries: Graviton machines cannot run them."""
    code = _code_location()
    arm = boto3.client("emr-serverless").create_application(
        name=_unique("app"), releaseLabel="emr-7.5.0", type="SPARK", architecture="ARM64"
    )["applicationId"]
    with pytest.raises(RuntimeError, match="RENTAL_EMR_SERVERLESS_APPLICATION_ID") as error:
        deploy(_emr_serverless_runner(code, arm))
    assert "runs on ARM64; the runtime's Python (RENTAL_REMOTE_PYTHON) is built for x86_64" in str(
        error.value
    )
    graviton = RunnerSettings(
        kind="emr",
        pipes=S3Location(code.bucket, "pipes"),
        code=code,
        emr=EmrCluster(instance_type="m7g.xlarge"),
    )
    with pytest.raises(SettingsError, match=r"RENTAL_EMR_INSTANCE_TYPE: m7g\.xlarge runs ARM64"):
        deploy(graviton)
    assert _puts(code) == {}


@pytest.mark.parametrize(
    ("symbols", "warned"),
    [(b"GLIBC_2.2.5\0GLIBC_2.34\0", False), (b"GLIBC_2.17\0GLIBC_2.35\0", True)],
    ids=["amazon-linux-2023", "newer"],
)
def test_a_python_that_needs_a_newer_c_library_than_amazon_linux_2023_is_named(
    tmp_path: Path, symbols: bytes, warned: bool
) -> None:
    binary = tmp_path / "python3.11"
    binary.write_bytes(b"\x7fELF" + symbols)
    folder = tmp_path / "lib" / "python3.11"
    python = Interpreter("3.11.9", "x86_64", tmp_path, binary, folder, folder, folder / "site")

    warning = python.system_warning()

    assert (warning is not None) == warned
    if warned:
        assert f"({binary}) needs GNU C library 2.35; EMR 7's Amazon Linux 2023 has 2.34" in warning


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
