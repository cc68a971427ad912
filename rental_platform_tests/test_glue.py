"""The Glue runner against the AWS control plane on loopback (`moto_server`): S3, Glue and
Secrets Manager are moto's. moto runs no job, so the test plays the remote side: it reads each
job run's arguments back from moto and runs `spark/entrypoint.py` locally with exactly those
arguments, against a local lake, so real Spark output and real Pipes messages (through moto's
S3) flow back to Dagster."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import dagster as dg
import pytest
import requests

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.definitions import build_definitions
from rental_platform.runs import RangeRunError, materialize_range
from rental_platform.settings import RunnerSettings, parse_mysql_url
from rental_platform.tables import Grain
from rental_platform_tests import worked_example as example
from rental_platform_tests.conftest import Platform

BIN = Path(sys.executable).parent
JOB = "rental-platform-step"
BUCKET = "rental-pipes"
READER, READER_PASSWORD = "rental_reader", "Gl0e-reader-pw"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    """A moto_server on loopback, and this process's AWS settings pointing at it."""
    port = _free_port()
    server = subprocess.Popen(
        [BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        yield endpoint
    finally:
        server.kill()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _job_state(endpoint: str, progression: dict) -> None:
    requests.post(
        f"{endpoint}/moto-api/state-manager/set-transition",
        json={"model_name": "glue::job_run", "transition": progression},
        timeout=5,
    ).raise_for_status()


class RemoteSide(threading.Thread):
    """Plays AWS Glue: runs each new job run's entrypoint locally, then lets the run succeed."""

    def __init__(self, endpoint: str, run_entrypoint: bool = True) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.run_entrypoint = endpoint, run_entrypoint
        self.arguments: list[dict[str, str]] = []
        self.output: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        glue, seen = boto3.client("glue"), set()
        while not self.stopped.is_set():
            for job_run in glue.get_job_runs(JobName=JOB)["JobRuns"]:
                if job_run["Id"] in seen:
                    continue
                seen.add(job_run["Id"])
                self.arguments.append(job_run.get("Arguments", {}))
                if self.run_entrypoint:
                    self._entrypoint(job_run.get("Arguments", {}))
                _job_state(self.endpoint, {"progression": "immediate"})
                glue.get_job_run(JobName=JOB, RunId=job_run["Id"])  # now SUCCEEDED, for good
                _job_state(self.endpoint, {"progression": "manual", "times": 10**9})
            time.sleep(0.3)

    def _entrypoint(self, arguments: dict[str, str]) -> None:
        argv = [item for pair in arguments.items() for item in pair]
        done = subprocess.run(
            [sys.executable, "-m", "rental_platform.spark.entrypoint", *argv],
            env={**os.environ, "RENTAL_SPARK_MASTER": "local[1]"},
            capture_output=True,
            text=True,
            check=False,
        )
        self.output.append(done.stdout + done.stderr)


@pytest.fixture(scope="module")
def glue_platform(platform: Platform, aws: str) -> Platform:
    """The worked example's source, read by a user that has only SELECT and a password that
    lives in Secrets Manager; Spark steps run as Glue jobs."""
    database = platform.settings.mysql.database
    platform.execute(f"DROP USER IF EXISTS '{READER}'@'%'")
    platform.execute(f"CREATE USER '{READER}'@'%' IDENTIFIED BY '{READER_PASSWORD}'")
    platform.execute(f"GRANT SELECT ON `{database}`.* TO '{READER}'@'%'")
    platform.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", example.APARTMENTS)
    platform.execute(
        "INSERT INTO apartment_attributes (id, cityname, state) VALUES (%s,%s,%s)",
        example.APARTMENT_ATTRIBUTES,
    )
    platform.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", example.BOOKINGS)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("glue").create_job(
        Name=JOB,
        Role="arn:aws:iam::123456789012:role/rental-glue",
        Command={"Name": "glueetl", "ScriptLocation": f"s3://{BUCKET}/entrypoint.py"},
    )
    secret = boto3.client("secretsmanager").create_secret(
        Name="rental/mysql", SecretString=json.dumps({"password": READER_PASSWORD})
    )
    platform.settings = dataclasses.replace(
        platform.settings,
        mysql=parse_mysql_url(f"mysql://{READER}@127.0.0.1:3306/{database}"),
        runner=RunnerSettings(
            kind="glue",
            glue_job_name=JOB,
            pipes_bucket=BUCKET,
            pipes_prefix="pipes",
            mysql_secret_arn=secret["ARN"],
        ),
    )
    _job_state(aws, {"progression": "manual", "times": 10**9})
    remote = RemoteSide(aws)
    remote.start()
    try:
        platform.outcomes = materialize_range(
            build_definitions(platform.settings),
            platform.instance,
            date(2025, 1, 1),
            date(2025, 1, 12),
            grains=(Grain.SNAPSHOT, Grain.DAILY),
        )
    finally:
        remote.stopped.set()
        remote.join()
    platform.remote = remote
    return platform


def test_each_step_ran_as_a_glue_job(glue_platform: Platform) -> None:
    assert len(glue_platform.remote.arguments) == 4  # raw and curated, snapshot and daily
    for arguments in glue_platform.remote.arguments:
        assert {"--dagster-pipes-context", "--dagster-pipes-messages"} <= set(arguments)


def test_materialisations_and_checks_came_back_through_pipes(glue_platform: Platform) -> None:
    instance = glue_platform.instance
    rows = {
        table: instance.get_latest_materialization_event(asset_key(table))
        .asset_materialization.metadata["dagster/row_count"]
        .value
        for table in (tables.RAW_APARTMENTS, tables.CURATED_LISTINGS, tables.CURATED_BOOKINGS)
    }
    assert rows == {
        tables.RAW_APARTMENTS: 3,
        tables.CURATED_LISTINGS: 3,
        tables.CURATED_BOOKINGS: 4,
    }
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(asset_key(tables.RAW_BOOKINGS), "row_count_matches_source")
    )
    assert record.event.dagster_event.event_specific_data.passed
    assert glue_platform.lake(tables.CURATED_BOOKINGS, "SELECT COUNT(*) FROM t") == [(4,)]


def test_the_source_password_never_leaves_secrets_manager(glue_platform: Platform) -> None:
    assert READER_PASSWORD not in json.dumps(glue_platform.remote.arguments)
    for outcome in glue_platform.outcomes:
        for record in glue_platform.instance.all_logs(outcome.run_id):
            assert READER_PASSWORD not in str(record)
    assert all(READER_PASSWORD not in output for output in glue_platform.remote.output)


def test_a_job_that_reports_nothing_fails_its_assets(platform: Platform, aws: str) -> None:
    """A Glue run that ends SUCCEEDED without any Pipes message is not a success."""
    quiet = RemoteSide(aws, run_entrypoint=False)
    quiet.start()
    try:
        with pytest.raises(RangeRunError) as error:
            materialize_range(
                build_definitions(platform.settings),
                platform.instance,
                date(2025, 1, 1),
                date(2025, 1, 2),
                grains=(Grain.SNAPSHOT,),
            )
    finally:
        quiet.stopped.set()
        quiet.join()
    assert "without reporting its step through Dagster Pipes" in str(error.value)
