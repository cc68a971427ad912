"""The Glue, EMR Serverless and EMR runners, against moto's server on loopback, with an S3 lake.

The control-plane calls (S3, Glue, EMR Serverless, EMR, Secrets Manager) go to moto. moto runs
no job, so `RemoteSide` plays each job: it runs the real `spark/entrypoint.py` locally with
exactly the arguments and environment moto recorded for the job, so real Spark output and real
Pipes messages (through moto's S3) flow back to Dagster, and the KPIs are published from the S3
lake.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.cycle import SOURCE_CHANGES
from rental_platform.deploy import deploy
from rental_platform.lake_catalog import catalog_table_name
from rental_platform.remote_code import code_package
from rental_platform.resources import shared_job
from rental_platform.resources.remote_spark import LIVE_CLUSTER_STATES, remote_spark_runner
from rental_platform.runs import RangeRunError, RunOutcome, materialize_range
from rental_platform.settings import (
    EmrCluster,
    EmrServerlessApp,
    GlueJob,
    RunnerSettings,
    S3Location,
    Settings,
    parse_mysql_url,
    parse_warehouse_url,
)
from rental_platform.spark import code_version
from rental_platform.spark.entrypoint import SECRET_ARN_ARGUMENT, source_password
from rental_platform.spark.manifest import CommitLog, S3Store
from rental_platform_tests import chaos
from rental_platform_tests import worked_example as example
from rental_platform_tests.aws import aws  # noqa: F401
from rental_platform_tests.harness import Platform, kpi_digests
from rental_platform_tests.remote_side import (
    GlueJobs,
    Job,
    RemoteSide,
    ShippedCodeWorker,
    Worker,
)

JOB, BUCKET, LAKE_BUCKET = "rental-platform-step", "rental-platform", "rental-lake"
# A user of its own per test process: two suites on one MariaDB must not drop each other's.
READER, READER_PASSWORD = f"rental_reader_{os.getpid()}", "Gl0e-reader-pw"
START, END = date(2025, 1, 1), date(2025, 1, 12)
RUNNERS = ("glue", "emr_serverless", "emr")
# The Glue database of the template's lake; each runner's test lake has one of its own.
GLUE_DATABASE = "rental_lake"
# EMR 7's and EMR Serverless 7's own Python, which cannot run the code.
EMR_PYTHON = "/root/.pyenv/versions/3.9.18/bin/python3.9"


@dataclasses.dataclass
class AwsSetup:
    platform: Platform
    secret_arn: str
    application_id: str


@pytest.fixture(scope="module")
def aws_setup(platform: Platform, aws: str) -> Iterator[AwsSetup]:  # noqa: F811
    """The worked example's source, read by a user that has only SELECT and whose password
    lives in Secrets Manager; the buckets, the Glue job and the EMR Serverless application."""
    database = platform.settings.mysql.database
    platform.execute(f"DROP USER IF EXISTS '{READER}'@'%'")
    platform.execute(f"CREATE USER '{READER}'@'%' IDENTIFIED BY '{READER_PASSWORD}'")
    platform.execute(f"GRANT SELECT ON `{database}`.* TO '{READER}'@'%'")
    platform.load_worked_example()
    s3 = boto3.client("s3")
    for bucket in (BUCKET, LAKE_BUCKET):
        s3.create_bucket(Bucket=bucket)
    secret = boto3.client("secretsmanager").create_secret(
        Name="rental/mysql", SecretString=json.dumps({"password": READER_PASSWORD})
    )
    for database in (GLUE_DATABASE, *(f"{GLUE_DATABASE}_{kind}" for kind in RUNNERS)):
        boto3.client("glue").create_database(DatabaseInput={"Name": database})
    application = boto3.client("emr-serverless").create_application(
        name="rental-platform", releaseLabel="emr-7.5.0", type="SPARK"
    )
    setup = AwsSetup(platform, secret["ARN"], application["applicationId"])
    runner = runner_settings(setup, "glue")
    deploy(dataclasses.replace(runner, glue=dataclasses.replace(runner.glue, role_arn=ROLE)))
    deploy(runner_settings(setup, "emr_serverless"))  # and the Python runtime EMR runs
    yield setup
    platform.execute(f"DROP USER IF EXISTS '{READER}'@'%'")


ROLE = "arn:aws:iam::123456789012:role/rental-platform-job"


def runner_settings(setup: AwsSetup, kind: str) -> RunnerSettings:
    return RunnerSettings(
        kind=kind,
        pipes=S3Location(BUCKET, "pipes"),
        code=S3Location(BUCKET, "code"),
        mysql_secret_arn=setup.secret_arn,
        glue=GlueJob(JOB) if kind == "glue" else None,
        emr_serverless=EmrServerlessApp(setup.application_id, ROLE)
        if kind == "emr_serverless"
        else None,
        emr=EmrCluster(log_uri=f"s3://{BUCKET}/emr-logs/") if kind == "emr" else None,
    )


def remote_settings(setup: AwsSetup, kind: str, folder: Path) -> Settings:
    settings = setup.platform.settings
    return dataclasses.replace(
        settings,
        mysql=parse_mysql_url(f"mysql://{READER}@127.0.0.1:3306/{settings.mysql.database}"),
        lake_root=f"s3://{LAKE_BUCKET}/{kind}",
        warehouse=parse_warehouse_url(f"duckdb:///{folder / 'warehouse.duckdb'}"),
        runner=dataclasses.replace(runner_settings(setup, kind), poll_seconds=0.2),
        glue_database=f"{GLUE_DATABASE}_{kind}",
    )


@dataclasses.dataclass
class RemoteRun:
    kind: str
    settings: Settings
    instance: dg.DagsterInstance
    outcomes: list[RunOutcome]
    jobs: list[Job]
    # Each job's launch, as the service names it: the Glue or EMR Serverless job run, the EMR
    # cluster its step ran on.
    launches: list[str]
    worker_log: Path


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Iterator[Worker]:
    """One driver process for every runner's jobs: one JVM start, not one per runner."""
    worker = Worker(tmp_path_factory.mktemp("worker") / "remote.log")
    yield worker
    worker.close()


@pytest.fixture(scope="module", params=RUNNERS)
def remote_run(request, aws_setup: AwsSetup, worker: Worker, tmp_path_factory) -> RemoteRun:
    """Every layer of the example's first twelve days, each Spark step a job on `kind`."""
    kind = request.param
    folder = tmp_path_factory.mktemp(kind)
    settings = remote_settings(aws_setup, kind, folder)
    with RemoteSide(kind, worker, folder / "lake") as remote:
        outcomes = materialize_range(settings, aws_setup.platform.instance, START, END)
    launches = [remote.run_id(job) for job in remote.jobs]
    instance = aws_setup.platform.instance
    return RemoteRun(kind, settings, instance, outcomes, remote.jobs, launches, worker.log)


def test_every_layer_ran_as_remote_jobs(remote_run: RemoteRun) -> None:
    # materialize_range raises on a failed run: every job ran, with no failed blocking check
    assert [o.job for o in remote_run.outcomes] == [
        "snapshots",
        "daily",
        "weekly_kpis",
        "monthly_kpis",
    ]
    # One remote job per Dagster run's multi-asset: the snapshots (raw, curated and the
    # comparison with the source: three steps), the days (raw and curated), the weekly KPIs in
    # two (one multi-asset cannot read bookings through two partition mappings), the monthly.
    assert len(remote_run.jobs) == 5
    # A launch each on Glue and EMR Serverless; on EMR, the first job's cluster takes the
    # others' steps, each run's job after the one before.
    assert len(set(remote_run.launches)) == (1 if remote_run.kind == "emr" else 5)
    for job in remote_run.jobs:
        pipes = " ".join(job.argv) + " ".join(job.env)
        assert "dagster-pipes-context" in pipes or "DAGSTER_PIPES_CONTEXT" in pipes


# How each service's failed job shows in the run's error.
FAILED_STATE = {
    "glue": "FAILED",
    "emr_serverless": "EMR Serverless job failed",
    "emr": "ended FAILED",
}
JOB_RUN_METADATA = {
    "glue": "AWS Glue Job Run ID",
    "emr_serverless": "AWS EMR Serverless Job Run ID",
    "emr": "AWS EMR Cluster ID",
}


def test_materialisations_and_checks_came_back_through_pipes(remote_run: RemoteRun) -> None:
    instance = remote_run.instance
    metadata = {
        table: instance.get_latest_materialization_event(
            asset_key(table)
        ).asset_materialization.metadata
        for table in (tables.RAW_APARTMENTS, tables.CURATED_BOOKINGS, tables.TOP_LISTINGS)
    }
    # A snapshot's rows; a partitioned table's whole window (each partition has its own).
    rows = {
        table: values[
            "dagster/row_count" if table.grain is tables.Grain.SNAPSHOT else "window_rows"
        ].value
        for table, values in metadata.items()
    }
    assert rows == {tables.RAW_APARTMENTS: 3, tables.CURATED_BOOKINGS: 4, tables.TOP_LISTINGS: 3}
    assert metadata[tables.TOP_LISTINGS]["dagster/row_count"].value <= 3
    # Each materialisation names the remote job that made it, as dagster-aws describes it.
    job_run = JOB_RUN_METADATA[remote_run.kind]
    assert {table: job_run in values for table, values in metadata.items()} == dict.fromkeys(
        metadata, True
    )
    for table, check in [
        (tables.RAW_BOOKINGS, "row_count_matches_source"),
        (tables.CURATED_BOOKINGS, "primary_key_unique"),
    ]:
        record = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(asset_key(table), check)
        )
        assert record.event.dagster_event.event_specific_data.passed
        assert record.run_id == remote_run.outcomes[1].run_id


def test_kpis_were_published_from_the_s3_lake(remote_run: RemoteRun) -> None:
    committed = CommitLog(S3Store(remote_run.settings.lake_root)).head()
    (file,) = committed.files(tables.TOP_LISTINGS.id, ["2025-01-06"])
    assert file.startswith(f"s3://{LAKE_BUCKET}/{remote_run.kind}/presentation/top_listings/")
    assert file.endswith(".parquet")
    warehouse = remote_run.settings.warehouse.database
    with duckdb.connect(warehouse, read_only=True) as connection:
        top = connection.execute("SELECT * FROM presentation.top_listings ORDER BY ALL").fetchall()
    assert top == example.EXPECTED["top_listings"]
    # Computed under the definitions the Dagster side sees deployed, though the remote job read
    # them from its archive: otherwise every nightly would compute every period again.
    assert kpi_digests(committed) == {code_version.kpis_version()}


def test_the_source_password_never_leaves_secrets_manager(remote_run: RemoteRun) -> None:
    sent = json.dumps([dataclasses.asdict(job) | {"handle": None} for job in remote_run.jobs])
    assert remote_run.settings.runner.mysql_secret_arn in sent
    assert READER_PASSWORD not in sent
    for outcome in remote_run.outcomes:
        for record in remote_run.instance.all_logs(outcome.run_id):
            assert READER_PASSWORD not in str(record)
    assert READER_PASSWORD not in remote_run.worker_log.read_text()


GLUE_TYPES = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
}


def _arrow_type_matches(glue_type: str, arrow: pa.DataType) -> bool:
    """Whether Athena reads a Parquet column of `arrow` type as the catalog's `glue_type`."""
    if glue_type.startswith("decimal("):
        precision, scale = map(int, glue_type[len("decimal(") : -1].split(","))
        return arrow == pa.decimal128(precision, scale)
    if glue_type == "timestamp":
        return pa.types.is_timestamp(arrow)
    return arrow == GLUE_TYPES[glue_type]


def test_the_glue_data_catalog_shows_the_committed_lake(remote_run: RemoteRun) -> None:
    """After the run, each table's catalog partitions are exactly the lake's committed ones, at
    their version folders, and each table's columns are those of its Parquet files."""
    glue, s3 = boto3.client("glue"), boto3.client("s3")
    database = remote_run.settings.glue_database
    head = CommitLog(S3Store(remote_run.settings.lake_root)).head()
    registered_tables, layers_read = 0, set()
    for table in tables.ALL_TABLES:
        committed = head.table(table.id).partitions
        if not committed:
            continue
        name = catalog_table_name(table)
        definition = glue.get_table(DatabaseName=database, Name=name)["Table"]
        locations = {
            key: f"{remote_run.settings.lake_root}/{partition.folder}/"
            for key, partition in committed.items()
        }
        if table.grain is tables.Grain.SNAPSHOT:
            assert definition["StorageDescriptor"]["Location"] == locations["all"], name
        else:
            pages = glue.get_paginator("get_partitions").paginate(
                DatabaseName=database, TableName=name
            )
            registered = {
                p["Values"][0]: p["StorageDescriptor"]["Location"]
                for page in pages
                for p in page["Partitions"]
            }
            assert registered == locations, name
        registered_tables += 1
        # The columns of a committed file, as Athena would read them through the catalog (an
        # empty partition has no file).
        for uri in head.files(table.id)[:1]:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            schema = pq.read_schema(io.BytesIO(body))
            for column in definition["StorageDescriptor"]["Columns"]:
                arrow = schema.field(column["Name"]).type
                assert _arrow_type_matches(column["Type"], arrow), (name, column, arrow)
            layers_read.add(table.layer)
    assert registered_tables == len(tables.ALL_TABLES)
    assert layers_read == set(tables.Layer)
    metadata = remote_run.instance.get_latest_materialization_event(
        asset_key(tables.TABLES["curated.bookings"])
    ).asset_materialization.metadata
    assert metadata["glue_table"].value == f"{database}.curated_bookings"


def test_pipes_objects_stay_under_the_pipes_prefix(remote_run: RemoteRun) -> None:
    """The roles allow Pipes only `${PipesPrefix}/*`: the context and every message chunk
    are written there, none at the bucket's root."""
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    pipes = [key for key in keys if not key.startswith(("code/", "emr-logs/"))]
    assert pipes, keys  # the message chunks stay after the run
    assert [key for key in pipes if not key.startswith("pipes/")] == []


def test_the_secret_is_read_in_its_own_region(
    aws_setup: AwsSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver on EMR on EC2 has no default region: the secret's ARN names its region."""
    arn = boto3.client("secretsmanager", region_name="eu-west-1").create_secret(
        Name="rental/elsewhere", SecretString=json.dumps({"password": "eu-west-1 password"})
    )["ARN"]
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert source_password([SECRET_ARN_ARGUMENT, arn]) == "eu-west-1 password"


def test_an_expired_glue_run_fails_its_step(aws_setup: AwsSetup, tmp_path: Path) -> None:
    """EXPIRED (a run that waited past its timeout) never changes again: the step fails naming
    it rather than waiting for ever."""
    settings = remote_settings(aws_setup, "glue", tmp_path)
    seen: set[str] = set()
    GlueJobs().new_jobs(seen)  # earlier tests' runs
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            _snapshots(aws_setup, settings)
            outcome.append(None)
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while runner.is_alive() and time.monotonic() < deadline:
        for job in GlueJobs().new_jobs(seen):
            job.handle.status = "EXPIRED"
        time.sleep(0.2)
    runner.join(timeout=30)
    assert outcome, "the run still waits on an EXPIRED Glue run"
    (error,) = outcome
    assert isinstance(error, RangeRunError) and "EXPIRED" in str(error)


def _snapshots(setup: AwsSetup, settings: Settings) -> None:
    """A run of the first day, which these tests make fail in its first step (a snapshot)."""
    materialize_range(settings, setup.platform.instance, START, START)


def _committed(settings: Settings) -> dict[str, list[str]]:
    head = CommitLog(S3Store(settings.lake_root)).head()
    return {table.id: sorted(head.files(table.id)) for table in tables.ALL_TABLES}


def _record(
    request: pytest.FixtureRequest,
    fault: str,
    before: dict[str, list[str]],
    after: dict[str, list[str]],
    started: float,
) -> None:
    """For `make chaos`: the committed files are compared (a remote fault leaves no rows to
    count locally), and the time is until the run has failed naming the cause."""
    fault = f"{fault} (committed files compared)"
    chaos.record_recovery(request.node.nodeid, fault, before, after, started)


@pytest.mark.parametrize("kind", ["glue", "emr"])
def test_a_failed_job_fails_its_assets(
    aws_setup: AwsSetup, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The remote job dies before reporting anything: the run fails naming the job's state,
    and the lake's committed files are the ones committed before."""
    settings = remote_settings(aws_setup, kind, tmp_path)
    before = _committed(settings)
    started = time.monotonic()
    with RemoteSide(kind, fail=True), pytest.raises(RangeRunError) as error:
        _snapshots(aws_setup, settings)
    after = _committed(settings)
    _record(request, f"remote {kind} job dies before reporting", before, after, started)
    assert FAILED_STATE[kind] in str(error.value)
    assert after == before


def test_a_job_that_reports_nothing_fails_its_assets(
    aws_setup: AwsSetup, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A job that ends SUCCEEDED without any Pipes message is not a success."""
    settings = remote_settings(aws_setup, "emr_serverless", tmp_path)
    before = _committed(settings)
    started = time.monotonic()
    with RemoteSide("emr_serverless"), pytest.raises(RangeRunError) as error:
        _snapshots(aws_setup, settings)
    after = _committed(settings)
    _record(request, "remote emr_serverless job ends without reporting", before, after, started)
    assert "without reporting its step extract_snapshot through Dagster Pipes" in str(error.value)
    assert after == before


def test_a_step_failing_after_others_keeps_what_they_committed(
    aws_setup: AwsSetup, worker: Worker, tmp_path: Path
) -> None:
    """The snapshots run is one remote job of three steps. The second, the curated listings,
    fails for real: the lake's folder of the curated listings refuses writes. The job fails
    and the run fails naming the cause; the raw snapshot before it, committed to the lake, is
    recorded as the run's materialisations, as a local run would have recorded it."""
    settings = _on_a_lake_of_its_own(aws_setup, tmp_path, "partial")
    lake, refusing = tmp_path / "lake", "curated/listings"
    with (
        chaos.refusing_writes(lake / refusing),
        RemoteSide("glue", worker, lake) as remote,
        pytest.raises(RangeRunError) as error,
    ):
        _snapshots(aws_setup, settings)
    assert refusing in str(error.value)
    (job,) = remote.jobs
    assert remote.state(job) == "FAILED"
    materialised = set(_materialised(aws_setup, error.value))
    raw = (tables.RAW_APARTMENTS, tables.RAW_APARTMENT_ATTRIBUTES)
    assert materialised == {asset_key(t) for t in raw}
    committed = _committed_tables(settings)
    assert committed == {t.id for t in raw}


@pytest.mark.parametrize("kind", RUNNERS)
def test_a_job_failing_after_every_step_reported_fails_the_run(
    aws_setup: AwsSetup, worker: Worker, tmp_path: Path, kind: str
) -> None:
    """All three steps of the snapshots job ran and reported, and then the service ended the
    job as failed (its driver died on the way out, say): the run fails on the job's state,
    after recording what the steps committed, each materialisation naming the job run as a
    successful job's do."""
    settings = _on_a_lake_of_its_own(aws_setup, tmp_path, f"late_{kind}", kind)
    with (
        RemoteSide(kind, worker, tmp_path / "lake", fail=True) as remote,
        pytest.raises(RangeRunError) as error,
    ):
        _snapshots(aws_setup, settings)
    assert FAILED_STATE[kind] in str(error.value)
    materialised = _materialisations(aws_setup, error.value)
    snapshots = [t for t in tables.ALL_TABLES if t.grain is tables.Grain.SNAPSHOT]
    assert {m.asset_key for m in materialised} == {SOURCE_CHANGES} | {
        asset_key(t) for t in snapshots
    }
    (job,) = remote.jobs
    job_run = JOB_RUN_METADATA[kind]
    assert [m.metadata[job_run].value for m in materialised] == [remote.run_id(job)] * len(
        materialised
    )


def test_a_rejected_table_ends_the_job_before_the_steps_that_read_it(
    aws_setup: AwsSetup, worker: Worker, tmp_path: Path
) -> None:
    """The source's apartments lose their price column (renamed, for real): the first step of
    the snapshots job, the raw snapshot, fails its blocking schema check. The job stops there:
    the curated listings and the comparison with the source never run, the apartments are not
    committed, and the run fails naming the check."""
    platform = aws_setup.platform
    settings = _on_a_lake_of_its_own(aws_setup, tmp_path, "drift")
    platform.execute("ALTER TABLE apartments CHANGE price asking_price DECIMAL(10,2) NULL")
    try:
        with (
            RemoteSide("glue", worker, tmp_path / "lake") as remote,
            pytest.raises(RangeRunError) as error,
        ):
            _snapshots(aws_setup, settings)
    finally:
        platform.execute("ALTER TABLE apartments CHANGE asking_price price DECIMAL(10,2) NULL")
    (job,) = remote.jobs
    assert remote.state(job) == "SUCCEEDED"  # it ran what it could, and said so
    assert "raw/apartments:source_schema_unchanged" in str(error.value)
    assert "column price is gone" in str(error.value)
    # The other table of the step passed its checks: it alone is committed and materialised.
    assert _materialised(aws_setup, error.value) == [asset_key(tables.RAW_APARTMENT_ATTRIBUTES)]
    committed = _committed_tables(settings)
    assert committed == {tables.RAW_APARTMENT_ATTRIBUTES.id}


def _materialised(setup: AwsSetup, error: RangeRunError) -> list[dg.AssetKey]:
    """What the failed run `error` names materialised, in order."""
    return [m.asset_key for m in _materialisations(setup, error)]


def _materialisations(setup: AwsSetup, error: RangeRunError) -> list[dg.AssetMaterialization]:
    """The materialisations of the failed run `error` names, in order."""
    run_id = str(error).split()[1]
    events = setup.platform.instance.all_logs(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    return [event.asset_materialization for event in events]


def _committed_tables(settings: Settings) -> set[str]:
    """The tables the lake has committed files of."""
    return {table for table, files in _committed(settings).items() if files}


def _on_a_lake_of_its_own(setup: AwsSetup, folder: Path, name: str, kind: str = "glue") -> Settings:
    """Runner settings whose S3 lake and Glue database no other test writes."""
    boto3.client("glue").create_database(DatabaseInput={"Name": f"{GLUE_DATABASE}_{name}"})
    return dataclasses.replace(
        remote_settings(setup, kind, folder),
        lake_root=f"s3://{LAKE_BUCKET}/{name}",
        glue_database=f"{GLUE_DATABASE}_{name}",
    )


BROKEN_PYSPARK = """
import sys

print("driver: loading this runtime's pyspark", file=sys.stderr, flush=True)
raise ImportError("pyspark of this runtime was built for another Python")
"""


def test_a_job_that_cannot_import_its_code_sends_its_traceback_to_the_run(
    aws_setup: AwsSetup, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The shipped code, run as Glue runs it, on a runtime whose pyspark does not import: the
    run fails naming the import error, its event log holds the remote traceback, and what the
    driver printed before it reached the step's output."""
    broken = tmp_path / "runtime"
    (broken / "pyspark").mkdir(parents=True)
    (broken / "pyspark" / "__init__.py").write_text(BROKEN_PYSPARK)
    python = tmp_path / "python"  # the runtime's interpreter, which finds that pyspark first
    python.write_text(
        f'#!/bin/sh\nPYTHONPATH="{broken}:$PYTHONPATH" exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    (tmp_path / "job").mkdir()
    worker = ShippedCodeWorker(tmp_path / "job", python=str(python))
    settings = remote_settings(aws_setup, "glue", tmp_path)
    with RemoteSide("glue", worker), pytest.raises(RangeRunError) as error:
        _snapshots(aws_setup, settings)
    assert "ImportError: pyspark of this runtime was built for another Python" in worker.output
    assert "ImportError: pyspark of this runtime was built for another Python" in str(error.value)
    # The remote traceback, through the uploaded archive.
    assert f"{code_package().archive_name}/rental_platform/spark/pipes_step.py" in str(error.value)
    run_id = str(error.value).split()[1]
    errors = [
        event.dagster_event.engine_event_data.error
        for event in aws_setup.platform.instance.all_logs(run_id)
        if event.dagster_event
        and event.dagster_event.is_engine_event
        and event.dagster_event.engine_event_data.error
    ]
    assert any("built for another Python" in e.to_string() for e in errors), errors
    output = capfd.readouterr().err
    assert "driver: loading this runtime's pyspark" in output
    assert "after closed" not in output  # the driver's output came before Pipes closed


def test_code_that_was_not_deployed_does_not_run(aws_setup: AwsSetup, tmp_path: Path) -> None:
    settings = remote_settings(aws_setup, "emr", tmp_path)
    settings = dataclasses.replace(
        settings, runner=dataclasses.replace(settings.runner, code=S3Location(BUCKET, "elsewhere"))
    )
    with pytest.raises(RangeRunError) as error:
        _snapshots(aws_setup, settings)
    assert "run `rental-platform deploy`" in str(error.value)


def _clusters_of_a_run(setup: AwsSetup, settings: Settings) -> set[str]:
    """The EMR clusters a run's steps went to (no worker plays them: they end without a
    report, which fails the run)."""
    with RemoteSide("emr") as remote, pytest.raises(RangeRunError):
        _snapshots(setup, settings)
    return {remote.run_id(job) for job in remote.jobs}


def test_an_emr_step_goes_to_a_live_cluster_of_its_settings(
    aws_setup: AwsSetup, tmp_path: Path
) -> None:
    """A job adds its step to the cluster that jobs of the same settings started, while it is
    up; it starts one when that cluster has ended, or was started with other settings. The
    cluster it starts waits for the next step, and EMR ends it after the idle time."""
    emr = boto3.client("emr")
    live = emr.list_clusters(ClusterStates=LIVE_CLUSTER_STATES)
    if live["Clusters"]:  # earlier tests' clusters
        emr.terminate_job_flows(JobFlowIds=[c["Id"] for c in live["Clusters"]])
    settings = remote_settings(aws_setup, "emr", tmp_path)
    (first,) = _clusters_of_a_run(aws_setup, settings)
    assert _clusters_of_a_run(aws_setup, settings) == {first}
    bigger = dataclasses.replace(settings.runner.emr, instance_type="m5.2xlarge")
    other = dataclasses.replace(settings, runner=dataclasses.replace(settings.runner, emr=bigger))
    (second,) = _clusters_of_a_run(aws_setup, other)
    emr.terminate_job_flows(JobFlowIds=[first])
    (third,) = _clusters_of_a_run(aws_setup, settings)
    assert len({first, second, third}) == 3
    cluster = emr.describe_cluster(ClusterId=third)["Cluster"]
    assert (cluster["Status"]["State"], cluster["AutoTerminate"]) == ("WAITING", False)
    policy = emr.get_auto_termination_policy(ClusterId=third)["AutoTerminationPolicy"]
    assert policy == {"IdleTimeout": EmrCluster.idle_minutes * 60}
    steps = emr.list_steps(ClusterId=first)["Steps"]
    assert [s["ActionOnFailure"] for s in steps] == ["CONTINUE"] * len(steps) != []


def cli_env(setup: AwsSetup, kind: str, folder: Path) -> dict[str, str]:
    """The environment of `rental-platform` with the `kind` runner on moto, its instance in
    `folder`."""
    settings = remote_settings(setup, kind, folder)
    runner = {
        "glue": {"RENTAL_GLUE_JOB_NAME": JOB},
        "emr_serverless": {
            "RENTAL_EMR_SERVERLESS_APPLICATION_ID": setup.application_id,
            "RENTAL_EMR_SERVERLESS_ROLE_ARN": ROLE,
        },
        "emr": {"RENTAL_EMR_LOG_URI": f"s3://{BUCKET}/emr-logs/"},
    }[kind]
    (folder / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(folder),
        "RENTAL_MYSQL_URL": settings.mysql.redacted_url,
        "RENTAL_LAKE_ROOT": settings.lake_root,
        "RENTAL_WAREHOUSE_URL": settings.warehouse.public_url,
        "RENTAL_SPARK_RUNNER": kind,
        "RENTAL_PIPES_S3_PREFIX": f"s3://{BUCKET}/pipes",
        "RENTAL_CODE_S3_PREFIX": f"s3://{BUCKET}/code",
        "RENTAL_MYSQL_SECRET_ARN": setup.secret_arn,
        **runner,
    }


# The runners whose service runs a shared job, and how each names a job run that succeeded.
SHARED = {"glue": "SUCCEEDED", "emr_serverless": "SUCCESS"}


def _shared(settings: Settings, idle_seconds: float = 60) -> Settings:
    """`settings` with RENTAL_SHARED_JOB_IDLE_SECONDS set."""
    runner = dataclasses.replace(settings.runner, shared_idle_seconds=idle_seconds)
    return dataclasses.replace(settings, runner=runner)


def _shared_objects() -> list[str]:
    """The inbox objects of the shared jobs, tickets and marks alike, in key order."""
    s3 = boto3.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="pipes/shared/")
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _wait_for_state(remote: RemoteSide, job: Job, state: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while remote.state(job) != state:
        assert time.monotonic() < deadline, f"the job is {remote.state(job)}, not {state}"
        time.sleep(0.2)


@pytest.mark.parametrize("kind", SHARED)
def test_a_shared_job_serves_every_launch_of_a_command(
    aws_setup: AwsSetup, worker: Worker, tmp_path: Path, kind: str
) -> None:
    """RENTAL_SHARED_JOB_IDLE_SECONDS: the range run's four Dagster runs launch five times,
    and one remote job serves all five, one after another. It ends when the command ends, well
    before its 60 s of idleness; the KPIs are the worked example's; every materialisation names
    that one job run."""
    settings = _shared(_on_a_lake_of_its_own(aws_setup, tmp_path, f"shared_{kind}", kind))
    before = set(_shared_objects())
    with RemoteSide(kind, worker, tmp_path / "lake") as remote:
        outcomes = materialize_range(settings, aws_setup.platform.instance, START, END)
        (job,) = remote.jobs
        _wait_for_state(remote, job, SHARED[kind], 20)
    assert [o.job for o in outcomes] == ["snapshots", "daily", "weekly_kpis", "monthly_kpis"]
    assert job.argv[job.argv.index("--rental-idle-seconds") + 1] == "60"
    new = sorted(set(_shared_objects()) - before)
    assert len({key.split("/")[2] for key in new}) == 1  # pipes/shared/<one inbox>/...
    numbers = range(5)
    assert [key.split("/", 3)[3] for key in new] == [
        "close",
        *(f"done/{n:06d}.json" for n in numbers),
        *(f"tickets/{n:06d}.json" for n in numbers),
    ]
    with duckdb.connect(settings.warehouse.database, read_only=True) as connection:
        top = connection.execute("SELECT * FROM presentation.top_listings ORDER BY ALL").fetchall()
    assert top == example.EXPECTED["top_listings"]
    named = {
        event.asset_materialization.metadata[JOB_RUN_METADATA[kind]].value
        for outcome in outcomes
        for event in aws_setup.platform.instance.all_logs(
            outcome.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
    }
    assert named == {remote.run_id(job)}


@pytest.mark.parametrize("kind", SHARED)
def test_a_shared_job_that_dies_fails_the_launch_it_was_serving(
    aws_setup: AwsSetup, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The shared job ends FAILED before it marked its ticket done: the run fails naming the
    job run and its state, and the lake's committed files are the ones committed before."""
    settings = _shared(_on_a_lake_of_its_own(aws_setup, tmp_path, f"shared_dies_{kind}", kind))
    before = _committed(settings)
    started = time.monotonic()
    with RemoteSide(kind, fail=True) as remote, pytest.raises(RangeRunError) as error:
        _snapshots(aws_setup, settings)
    after = _committed(settings)
    _record(request, f"shared {kind} job dies before reporting", before, after, started)
    (job,) = remote.jobs
    assert f"run {remote.run_id(job)} ended FAILED before it finished ticket 0" in str(error.value)
    assert after == before


def test_a_shared_job_that_ended_unasked_leaves_its_ticket_to_another(
    aws_setup: AwsSetup, tmp_path: Path
) -> None:
    """A shared job that ends well never ends inside a ticket: one that ended without running
    the ticket posted to it (its idle time ran out meanwhile) leaves it to a new job. Here no
    job runs anything: the second job's ending too fails the run, after two launches."""
    settings = _shared(remote_settings(aws_setup, "emr_serverless", tmp_path))
    with RemoteSide("emr_serverless") as remote, pytest.raises(RangeRunError) as error:
        _snapshots(aws_setup, settings)
    first, second = remote.jobs
    assert remote.run_id(first) != remote.run_id(second)
    assert f"run {remote.run_id(second)} ended successfully without running ticket 0" in str(
        error.value
    )


def test_a_step_failing_on_a_shared_job_fails_its_run_and_not_the_job(
    aws_setup: AwsSetup, worker: Worker, tmp_path: Path
) -> None:
    """The curated listings' folder refuses writes (for real): that ticket fails and the run
    fails naming the cause; the shared job goes on, and ends with the command, successfully.
    The next command, the folder writable again, runs on a new shared job and commits."""
    settings = _shared(_on_a_lake_of_its_own(aws_setup, tmp_path, "shared_partial"))
    lake, refusing = tmp_path / "lake", "curated/listings"
    with RemoteSide("glue", worker, lake) as remote:
        with chaos.refusing_writes(lake / refusing), pytest.raises(RangeRunError) as error:
            _snapshots(aws_setup, settings)
        assert refusing in str(error.value)
        assert "failed its ticket 0" in str(error.value)
        (failed,) = remote.jobs
        _wait_for_state(remote, failed, "SUCCEEDED", 20)
        _snapshots(aws_setup, settings)
        first, second = remote.jobs
        _wait_for_state(remote, second, "SUCCEEDED", 20)
    assert remote.run_id(first) != remote.run_id(second)
    assert tables.CURATED_LISTINGS.id in _committed_tables(settings)


def test_a_shared_job_an_hour_old_takes_no_more_tickets(
    aws_setup: AwsSetup, worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared job keeps the job run's timeout for its tickets by taking none once it is
    RETIRE_AFTER_SECONDS old (an hour; here at once): each launch of a day's run then goes to
    a new job, told to close, which runs its one ticket and ends successfully."""
    monkeypatch.setattr(shared_job, "RETIRE_AFTER_SECONDS", 0)
    settings = _shared(_on_a_lake_of_its_own(aws_setup, tmp_path, "shared_retired"))
    before = set(_shared_objects())
    with RemoteSide("glue", worker, tmp_path / "lake") as remote:
        materialize_range(settings, aws_setup.platform.instance, START, START)
        for job in remote.jobs:
            _wait_for_state(remote, job, "SUCCEEDED", 20)
    new = sorted(set(_shared_objects()) - before)
    inboxes = {key.split("/")[2] for key in new}
    assert len(remote.jobs) == len(inboxes) > 1
    for inbox in inboxes:
        assert [key.split("/", 3)[3] for key in new if key.split("/")[2] == inbox] == [
            "close",
            "done/000000.json",
            "tickets/000000.json",
        ]


def _deploy_check(
    env: dict[str, str], worker: ShippedCodeWorker, kind: str
) -> subprocess.CompletedProcess[str]:
    """`rental-platform deploy --check`, its jobs played by `worker`."""
    command = [Path(sys.executable).parent / "rental-platform", "deploy", "--check"]
    with RemoteSide(kind, worker):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return result


@pytest.mark.parametrize("kind", RUNNERS)
def test_deploy_check_runs_a_canary_that_proves_what_a_step_needs(
    aws_setup: AwsSetup, kind: str, tmp_path: Path
) -> None:
    """The canary runs the uploaded code as the service would, reads the password from the
    secret, connects to the source as the SELECT-only user, and reports through Pipes. On EMR
    and EMR Serverless, whose own Python is 3.9, it runs under the Python 3.11 deploy shipped."""
    job = tmp_path / "job"
    job.mkdir()
    service_python = sys.executable if kind == "glue" else EMR_PYTHON
    result = _deploy_check(
        cli_env(aws_setup, kind, tmp_path), ShippedCodeWorker(job, python=service_python), kind
    )
    assert result.returncode == 0, result.stdout + result.stderr
    digest = code_package().digest
    database = aws_setup.platform.settings.mysql.database
    python = ".".join(map(str, sys.version_info[:3]))
    prefix = sys.prefix if kind == "glue" else str(job / "environment")
    runner = remote_spark_runner(remote_settings(aws_setup, kind, tmp_path).runner)
    assert result.stdout.splitlines()[-6:] == [
        f"canary on {runner.describe()}:",
        f"  ran the deployed code {digest} under Python {python} ({prefix})",
        f"  started Spark {pyspark.__version__}; the driver reads DATETIMEs in UTC",
        f"  took the source password from Secrets Manager secret {aws_setup.secret_arn}",
        f"  connected to the source jdbc:mysql://127.0.0.1:3306/{database}?permitMysqlScheme "
        f"as {READER}",
        f"  Dagster Pipes: context and messages under s3://{BUCKET}/pipes",
    ]
    assert READER_PASSWORD not in result.stdout + result.stderr


class ServicePythonOnly(ShippedCodeWorker):
    """Runs the job as its service would, but leaves the runtime archive out: what EMR did
    before deploy shipped one."""

    def run(self, job: Job, lake_folder: Path | None) -> bool:
        return super().run(dataclasses.replace(job, runtime=None, env={}), lake_folder)


@pytest.mark.parametrize("kind", ["emr_serverless", "emr"])
def test_without_the_shipped_runtime_emr_cannot_run_the_code(
    aws_setup: AwsSetup, kind: str, tmp_path: Path
) -> None:
    """The control for the test above: under EMR's own Python 3.9 the code does not import."""
    (tmp_path / "job").mkdir()
    worker = ServicePythonOnly(tmp_path / "job", python=EMR_PYTHON)
    result = _deploy_check(cli_env(aws_setup, kind, tmp_path), worker, kind)
    assert result.returncode == 1, result.stdout
    assert "the canary job failed" in result.stderr
    # dagster_pipes, the entry script's first import, needs Python 3.10 or later.
    assert "ImportError: cannot import name 'TypeAlias' from 'typing'" in worker.output
    assert "python3.9/typing.py" in worker.output


def test_deploy_check_fails_with_the_jobs_own_error(aws_setup: AwsSetup, tmp_path: Path) -> None:
    """A secret holding the wrong password: the canary fails, and says what the job met."""
    wrong = boto3.client("secretsmanager").create_secret(
        Name="rental/mysql-wrong", SecretString=json.dumps({"password": "not-the-password"})
    )
    env = {**cli_env(aws_setup, "glue", tmp_path), "RENTAL_MYSQL_SECRET_ARN": wrong["ARN"]}
    (tmp_path / "job").mkdir()
    result = _deploy_check(env, ShippedCodeWorker(tmp_path / "job"), "glue")
    assert result.returncode == 1, result.stdout
    assert "the canary job failed on Glue job rental-platform-step" in result.stderr
    assert f"Access denied for user '{READER}'" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("kind", "shared_idle_seconds"),
    [("emr_serverless", "0"), ("emr", "0"), ("emr_serverless", "60")],
)
def test_interrupting_a_run_cancels_its_remote_job(
    aws_setup: AwsSetup, tmp_path: Path, kind: str, shared_idle_seconds: str
) -> None:
    """What the UI's Terminate does to a run worker (an interrupt), done to `rental-platform
    run`: the EMR Serverless job it started is cancelled, its own or the shared one; on EMR,
    its step (the cluster stays for the steps of other runs)."""
    env = cli_env(aws_setup, kind, tmp_path)
    env["RENTAL_SHARED_JOB_IDLE_SECONDS"] = shared_idle_seconds
    with RemoteSide(kind, hold=True) as remote:
        run = subprocess.Popen(
            [
                Path(sys.executable).parent / "rental-platform",
                "run",
                "--start",
                "2025-01-01",
                "--end",
                "2025-01-01",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not remote.jobs:
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "no job was started"
            time.sleep(0.2)
        (job,) = remote.jobs
        assert remote.state(job) in ("PENDING", "RUNNING")
        # The clients forward an interrupt once they wait on the job, not while they are still
        # starting it (they poll every 0.2 s here).
        time.sleep(2)
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=120)
    assert run.returncode != 0, output
    assert remote.state(job) == "CANCELLED", output
