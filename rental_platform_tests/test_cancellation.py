"""Cancelling from the UI, in the production layout of docs/aws.md: a code server, a webserver
and a daemon, each its own process, sharing deploy/dagster.yaml's instance (PostgreSQL, compute
logs in S3) and loading the code through deploy/workspace.yaml. A run the daemon launched is
terminated through the webserver's GraphQL API (what the UI's Terminate button sends), and its
remote EMR Serverless job is cancelled."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from rental_platform_tests.aws import aws  # noqa: F401
from rental_platform_tests.harness import (
    BIN,
    PRODUCTION_INSTANCE,
    REPO,
    free_port,
    running_services,
)
from rental_platform_tests.remote_side import RemoteSide
from rental_platform_tests.test_deploy_template import dagster_database  # noqa: F401
from rental_platform_tests.test_remote_runners import (  # noqa: F401
    BUCKET,
    AwsSetup,
    aws_setup,
    cli_env,
)

WORKSPACE = REPO / "deploy" / "workspace.yaml"


def _wait_until(ready, what: str, processes: list[subprocess.Popen], seconds: float = 120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, f"{process.args[0]} exited while waiting for {what}"
        value = ready()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
    name locationOrLoadError { __typename } } } } }"""


def _code_loaded(web_port: int) -> bool:
    """Whether the webserver answers and has loaded the code location from the code server."""
    try:
        response = requests.post(
            f"http://127.0.0.1:{web_port}/graphql", json={"query": LOCATION_QUERY}, timeout=5
        )
    except requests.ConnectionError:
        return False
    entries = response.json()["data"]["workspaceOrError"].get("locationEntries", [])
    return any(
        (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation" for e in entries
    )


@pytest.fixture
def dagster_services(
    aws_setup: AwsSetup,  # noqa: F811
    dagster_database: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[DagsterGraphQLClient]:
    """The three processes, the emr_serverless runner configured; yields a GraphQL client of
    the webserver."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")
    code_port, web_port = free_port(), free_port()
    env = {
        **cli_env(aws_setup, "emr_serverless", tmp_path),
        **dagster_database,
        "DAGSTER_HOME": str(home),
        "DAGSTER_COMPUTE_LOGS_BUCKET": BUCKET,
        "DAGSTER_COMPUTE_LOGS_PREFIX": "compute-logs",
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(code_port),
    }
    code = ["-h", "127.0.0.1", "-p", str(code_port)]
    commands = [
        [BIN / "dagster", "code-server", "start", "-m", "rental_platform.definitions", *code],
        [BIN / "dagster-webserver", "-h", "127.0.0.1", "-p", str(web_port), "-w", WORKSPACE],
        [BIN / "dagster-daemon", "run", "-w", WORKSPACE],
    ]
    with running_services(commands, env, tmp_path, tmp_path / "services.log") as processes:
        _wait_until(lambda: _code_loaded(web_port), "the webserver to load the code", processes)
        yield DagsterGraphQLClient("127.0.0.1", port_number=web_port)


def _run_status(client: DagsterGraphQLClient, run_id: str) -> DagsterRunStatus | None:
    status = client.get_run_status(run_id)
    ended = (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS)
    return status if status in ended else None


def test_terminate_in_the_ui_cancels_the_runs_remote_job(
    dagster_services: DagsterGraphQLClient,
) -> None:
    client = dagster_services
    with RemoteSide("emr_serverless", hold=True) as remote:
        run_id = client.submit_job_execution(
            "snapshots", repository_location_name="rental_platform"
        )
        _wait_until(lambda: remote.jobs, "the run's EMR Serverless job", [])
        (job,) = remote.jobs
        assert remote.state(job) == "PENDING"
        # dagster-aws forwards an interrupt once it waits on the job (it polls every 0.2 s).
        time.sleep(2)
        client.terminate_run(run_id)
        _wait_until(lambda: remote.state(job) == "CANCELLED", "the job's cancellation", [])
    status = _wait_until(lambda: _run_status(client, run_id), "the run to end", [])
    assert status == DagsterRunStatus.CANCELED


def test_a_steps_output_is_kept_in_s3(dagster_services: DagsterGraphQLClient) -> None:
    """A run the daemon launched (its remote job fails here): the step's stdout and stderr
    are in S3 under the compute-logs prefix, where the webserver reads them."""
    client = dagster_services
    with RemoteSide("emr_serverless", fail=True):
        run_id = client.submit_job_execution(
            "snapshots", repository_location_name="rental_platform"
        )
        status = _wait_until(lambda: _run_status(client, run_id), "the run to end", [])
    assert status == DagsterRunStatus.FAILURE
    listing = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="compute-logs/")
    keys = [item["Key"] for item in listing.get("Contents", []) if run_id in item["Key"]]
    assert keys, listing.get("Contents")
