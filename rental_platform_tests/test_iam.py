"""Least privilege, checked call by call: the platform deploys and runs a day on each remote
runner against moto, every AWS call it makes is recorded (the Dagster process's here, the Spark
job's in the stand-in driver), and each must be allowed by the template's policy of the role
that makes it. Every statement no recorded call uses must say why it is there (what Glue or EMR
itself does with the role, or which flow the tests cannot record), or go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from cfnlint.decode import cfn_yaml

from rental_platform.deploy import deploy
from rental_platform.lake_catalog import GlueCatalog
from rental_platform.runs import materialize_range
from rental_platform_tests.aws import ACCOUNT, REGION, aws  # noqa: F401
from rental_platform_tests.iam import (
    Request,
    Statement,
    allows,
    read_calls,
    recording_calls,
    requests_for,
    role_statements,
)
from rental_platform_tests.remote_side import RemoteSide, Worker
from rental_platform_tests.test_remote_runners import (
    BUCKET,
    GLUE_DATABASE,
    JOB,
    LAKE_BUCKET,
    RUNNERS,
    START,
    AwsSetup,
    aws_setup,  # noqa: F401
    remote_settings,
    runner_settings,
)

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "rental-platform.yaml"
JOB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/rental-platform-job"
# Statements no recorded call uses, and why each is needed all the same.
NEEDED_WITHOUT_A_RECORDED_CALL = {
    ("DagsterProcessPolicy", "GlueRuns", "glue:GetJobRuns"): "listing a job's runs, for "
    "whoever looks at the job from the Dagster host (dagster-aws does not call it)",
    ("DagsterProcessPolicy", "GlueRuns", "glue:BatchStopJobRun"): "cancelling a run stops "
    "its Glue run",
    ("DagsterProcessPolicy", "EmrServerlessRuns", "emr-serverless:CancelJobRun"): "cancelling "
    "a run cancels its job run (test_remote_runners' interrupt test, in another process)",
    ("DagsterProcessPolicy", "EmrServerlessRuns", "emr-serverless:GetDashboardForJobRun"): (
        "dagster-aws links the job run's Spark UI in the run's log on real EMR Serverless"
    ),
    ("DagsterProcessPolicy", "EmrClusters", "elasticmapreduce:CancelSteps"): "cancelling a "
    "run cancels its step (test_remote_runners' interrupt test, in another process)",
    ("DagsterProcessPolicy", "ComputeLogs"): "S3ComputeLogManager (deploy/dagster.yaml) "
    "uploads and reads the steps' stdout and stderr; test_cancellation.py runs it in the "
    "processes of the production layout",
    ("DagsterProcessPolicy", "LakeCatalog", "glue:BatchDeletePartition"): "a commit that "
    "removes a partition, and deploy's sync of a partition the lake no longer has "
    "(test_lake_catalog.py); a day's run adds and replaces partitions only",
    ("DagsterProcessPolicy", "EmrLogsRead"): "reading a failed cluster's logs under LogUri",
    ("DagsterProcessPolicy", "RedshiftServerlessIam"): "IAM authentication to Redshift "
    "Serverless (redshift_connector); the tests publish to DuckDB and PostgreSQL",
    ("SparkJobPolicy", "LakeReadWrite"): "the steps read and write the lake through Spark's "
    "S3 file system and the commit log; the stand-in driver maps the lake to a local folder",
    ("SparkJobPolicy", "LakeList"): "Spark lists the lake's folders (see LakeReadWrite)",
    ("SparkJobPolicy", "CodeRead"): "Glue and EMR fetch the entry script, the archive and the "
    "jar with the job's role",
    ("GlueJobRole/glue-runtime", "Logs"): "Glue 5.0 writes every job's driver and executor "
    "logs to CloudWatch under /aws-glue/",
    ("GlueJobRole/glue-runtime", "Metrics"): "--enable-metrics: Glue publishes job metrics",
    ("GlueJobRole/glue-runtime", "ConnectionRead"): "Glue reads the job's NETWORK connection "
    "to place it in the database's VPC",
    ("GlueJobRole/glue-runtime", "VpcNetworkInterfaces"): "Glue creates the job's network "
    "interfaces in the connection's subnet",
    ("GlueJobRole/glue-runtime", "VpcNetworkInterfaceTags"): "Glue tags the network "
    "interfaces it creates (aws-glue-service-resource)",
    ("EmrInstanceRole/emr-node", "ClusterLogs"): "the cluster's nodes write their logs to LogUri",
    ("EmrInstanceRole/emr-node", "EmrToolBuckets"): "the nodes fetch EMR's own step tools "
    "(command-runner.jar) and bootstrap files",
    ("EmrInstanceRole/emr-node", "EmrToolBucketsList"): "see EmrToolBuckets",
}


@dataclasses.dataclass
class Recorded:
    dagster: list[Request]
    job: list[Request]
    policies: dict[str, list[Statement]]


def _values(secret_arn: str, application_id: str) -> dict[str, str]:
    """What the template's references stand for in the tests' account."""
    application = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/"
    return {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "LakeBucket.Arn": f"arn:aws:s3:::{LAKE_BUCKET}",
        "ArtifactsBucket.Arn": f"arn:aws:s3:::{BUCKET}",
        "LakePrefix": "lake",
        "PipesPrefix": "pipes",
        "CodePrefix": "code",
        "EmrLogPrefix": "emr-logs",
        "ComputeLogPrefix": "compute-logs",
        "GlueJobName": JOB,
        "LakeDatabase": GLUE_DATABASE,
        "SourcePasswordSecret": secret_arn,
        "EmrServerlessApplication.Arn": application + application_id,
        "GlueJobRole.Arn": JOB_ROLE,
        "EmrServerlessJobRole.Arn": JOB_ROLE,
        "EmrServiceRoleName": "EMR_DefaultRole",
        # The instance profile the runner passes by default, named like its role.
        "EmrInstanceRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/EMR_EC2_DefaultRole",
        "RedshiftWorkgroup.Workgroup.WorkgroupArn": "arn:aws:redshift-serverless:workgroup",
    }


@pytest.fixture(scope="module")
def recorded(aws_setup: AwsSetup, tmp_path_factory) -> Iterator[Recorded]:  # noqa: F811
    """Deploy for Glue and EMR Serverless, then the first day on each runner, recording."""
    folder = tmp_path_factory.mktemp("iam")
    dagster_calls, job_calls = folder / "dagster.jsonl", folder / "job.jsonl"
    worker = Worker(folder / "worker.log", env={"RENTAL_TEST_AWS_CALLS": str(job_calls)})
    try:
        # deploy uploads the code again, creates the job (passing its role), then updates it.
        boto3.client("glue").delete_job(JobName=JOB)
        s3 = boto3.client("s3")
        for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="code/")["Contents"]:
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        with recording_calls(dagster_calls):
            glue = runner_settings(aws_setup, "glue")
            job = dataclasses.replace(glue.glue, role_arn=JOB_ROLE)
            deploy(dataclasses.replace(glue, glue=job))
            deploy(dataclasses.replace(glue, glue=dataclasses.replace(job, workers=3)))
            # The lake under the prefix the template's values give it, in its Glue database.
            lake_root = f"s3://{LAKE_BUCKET}/lake"
            catalog = GlueCatalog(GLUE_DATABASE, lake_root)
            deploy(runner_settings(aws_setup, "emr_serverless"), catalog=catalog)
            for kind in RUNNERS:
                settings = remote_settings(aws_setup, kind, folder / kind)
                settings = dataclasses.replace(
                    settings, lake_root=lake_root, glue_database=GLUE_DATABASE
                )
                with RemoteSide(kind, worker, folder / "lake"):
                    materialize_range(settings, aws_setup.platform.instance, START, START)
            # And a shared job's calls: its tickets, their marks, its start, watch and close.
            shared = remote_settings(aws_setup, "glue", folder / "shared")
            runner = dataclasses.replace(shared.runner, shared_idle_seconds=60)
            shared = dataclasses.replace(
                shared, lake_root=lake_root, glue_database=GLUE_DATABASE, runner=runner
            )
            with RemoteSide("glue", worker, folder / "lake"):
                materialize_range(shared, aws_setup.platform.instance, START, START)
    finally:
        worker.close()
    template = cfn_yaml.load(str(TEMPLATE))
    values = _values(aws_setup.secret_arn, aws_setup.application_id)
    policies = {
        role: role_statements(template, role, values)
        for role in ("DagsterProcessRole", "GlueJobRole", "EmrServerlessJobRole", "EmrInstanceRole")
    }
    dagster = [r for call in read_calls(dagster_calls) for r in requests_for(call)]
    job = [r for call in read_calls(job_calls) for r in requests_for(call)]
    yield Recorded(dagster, job, policies)


def _denied(requests: list[Request], statements: list[Statement]) -> list[Request]:
    return sorted(
        {r for r in requests if not any(allows(s, r) for s in statements)},
        key=lambda r: (r.action, r.resource),
    )


def test_every_call_of_the_dagster_process_is_allowed(recorded: Recorded) -> None:
    assert {r.action.split(":")[0] for r in recorded.dagster} >= {
        "s3",
        "glue",
        "emr-serverless",
        "elasticmapreduce",
        "iam",
    }
    assert _denied(recorded.dagster, recorded.policies["DagsterProcessRole"]) == []


@pytest.mark.parametrize("role", ["GlueJobRole", "EmrServerlessJobRole", "EmrInstanceRole"])
def test_every_call_of_the_spark_job_is_allowed_on_each_runner(
    recorded: Recorded, role: str
) -> None:
    assert {r.action for r in recorded.job} >= {
        "secretsmanager:GetSecretValue",
        "s3:GetObject",
        "s3:PutObject",
    }
    assert _denied(recorded.job, recorded.policies[role]) == []


def _grants(statement: Statement) -> list[str]:
    actions = statement.body["Action"]
    return actions if isinstance(actions, list) else [actions]


def test_every_grant_is_used_or_says_why_it_is_needed(recorded: Recorded) -> None:
    """Least privilege, action by action: a grant no recorded call uses and no service needs
    is removed. The job's calls are the same on every runner (the shared SparkJobPolicy)."""
    requests = {
        "DagsterProcessRole": recorded.dagster,
        "GlueJobRole": recorded.job,
        "EmrServerlessJobRole": recorded.job,
        "EmrInstanceRole": recorded.job,
    }
    used, every = set(), set()
    for role, statements in recorded.policies.items():
        for statement in statements:
            for action in _grants(statement):
                grant = (statement.policy, statement.sid, action)
                every.add(grant)
                single = dataclasses.replace(statement, body={**statement.body, "Action": action})
                if any(allows(single, r) for r in requests[role]):
                    used.add(grant)
    unused = every - used
    reasons = NEEDED_WITHOUT_A_RECORDED_CALL
    without_reason = sorted(g for g in unused if g not in reasons and g[:2] not in reasons)
    # A reason for what calls now use is stale.
    stale = sorted(g for g in reasons if any(u[: len(g)] == g for u in used))
    assert (without_reason, stale) == ([], [])


def test_the_evaluator_denies_what_the_policies_do_not_grant() -> None:
    """The checks above can fail: requests just outside each grant are denied."""
    template = cfn_yaml.load(str(TEMPLATE))
    values = _values(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rental/mysql", "app")
    dagster = role_statements(template, "DagsterProcessRole", values)
    job = role_statements(template, "GlueJobRole", values)
    pipes = f"arn:aws:s3:::{BUCKET}/pipes/run/1.json"

    def allowed(statements: list[Statement], request: Request) -> bool:
        return any(allows(s, request) for s in statements)

    assert allowed(job, Request("s3:PutObject", pipes))
    assert not allowed(job, Request("s3:PutObject", f"arn:aws:s3:::{BUCKET}/pipes-other/1.json"))
    assert not allowed(job, Request("s3:DeleteObject", pipes))
    assert allowed(
        dagster,
        Request("s3:ListBucket", f"arn:aws:s3:::{LAKE_BUCKET}", (("s3:prefix", "lake/raw/"),)),
    )
    assert not allowed(dagster, Request("s3:ListBucket", f"arn:aws:s3:::{LAKE_BUCKET}"))
    assert not allowed(dagster, Request("s3:PutObject", f"arn:aws:s3:::{LAKE_BUCKET}/lake/x"))
    glue_role = (("iam:PassedToService", "glue.amazonaws.com"),)
    assert allowed(dagster, Request("iam:PassRole", JOB_ROLE, glue_role))
    assert not allowed(
        dagster, Request("iam:PassRole", JOB_ROLE, (("iam:PassedToService", "ec2.amazonaws.com"),))
    )
    assert not allowed(
        job, Request("secretsmanager:GetSecretValue", values["SourcePasswordSecret"] + "-other")
    )
