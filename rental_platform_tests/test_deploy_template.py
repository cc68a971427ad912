"""The production deployment files: the CloudFormation template lints clean, holds no secret and
grants no more than docs/aws.md says; the production dagster.yaml opens a real instance on
PostgreSQL, configured from the environment only."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import psycopg
import pytest
import yaml
from cfnlint.decode import cfn_yaml
from dagster._core.events import DagsterEventType

from rental_platform.deploy import glue_job_definition
from rental_platform.event_batching import BATCH_SIZE, BATCH_SIZE_VARIABLE
from rental_platform.postgres_storage import BatchingPostgresEventLogStorage
from rental_platform.remote_code import code_package
from rental_platform.settings import GlueJob, S3Location, parse_warehouse_url
from rental_platform_tests.aws import aws  # noqa: F401
from rental_platform_tests.harness import (
    LOCAL_INSTANCE,
    POSTGRES_SERVER,
    PRODUCTION_INSTANCE,
    REPO,
    dagster_postgres_database,
    postgres_instance_config,
)
from rental_platform_tests.test_event_log import DAYS, _run, _stored

pytestmark = pytest.mark.fast

TEMPLATE = REPO / "deploy" / "rental-platform.yaml"
GUIDE = REPO / "docs" / "aws.md"

# Parameters and properties that hold, or are, a secret.
SECRET_PARAMETER = re.compile(r"(?i)password|secret|token|credential")
# (Not the switches and generators: ManageAdminPassword, GenerateSecretString.)
SECRET_PROPERTY = re.compile(r"(?i)^(?!manage|generate).*(password|secretstring)$")
DYNAMIC_SECRET = re.compile(r"^\{\{resolve:(secretsmanager|ssm-secure):")
# Actions that cannot be scoped to a resource (AWS offers no resource ARN for them).
UNSCOPABLE_ACTIONS = {
    "cloudwatch:PutMetricData",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeRouteTables",
    # No resource type: the cluster it starts does not exist yet; the clusters it lists.
    "elasticmapreduce:RunJobFlow",
    "elasticmapreduce:ListClusters",
}
# Job arguments Glue 5.0 no longer takes (it logs every job to CloudWatch as it runs).
GLUE_4_ONLY_ARGUMENTS = {
    "--enable-continuous-cloudwatch-log",
    "--enable-continuous-log-filter",
    "--continuous-log-logGroup",
    "--continuous-log-logStreamPrefix",
    "--continuous-log-conversionPattern",
}
# What the template's outputs must give (docs/aws.md's environment, without the defaults).
OUTPUT_VARIABLES = {
    "RENTAL_LAKE_ROOT",
    "RENTAL_PIPES_S3_PREFIX",
    "RENTAL_CODE_S3_PREFIX",
    "RENTAL_MYSQL_SECRET_ARN",
    "RENTAL_GLUE_JOB_NAME",
    "RENTAL_GLUE_ROLE_ARN",
    "RENTAL_EMR_SERVERLESS_APPLICATION_ID",
    "RENTAL_EMR_SERVERLESS_ROLE_ARN",
    "RENTAL_EMR_INSTANCE_PROFILE",
    "RENTAL_EMR_LOG_URI",
    "RENTAL_REDSHIFT_COPY_ROLE_ARN",
    "RENTAL_WAREHOUSE_URL",
}


def _template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


# ---- cfn-lint ----------------------------------------------------------------------------------


def test_template_passes_cfn_lint() -> None:
    """cfn-lint knows every resource type used (Glue, EMR Serverless, Redshift Serverless) and
    validates properties, references and policies: no error, no warning."""
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, f"cfn-lint:\n{lint.stdout}{lint.stderr}"


# ---- no secret in the template -----------------------------------------------------------------


def _no_echo(parameter: dict[str, Any]) -> bool:
    return str(parameter.get("NoEcho", "false")).lower() == "true"


def _secret_is_safe(value: Any, hidden: set[str]) -> bool:
    """A secret-holding value may only come from a NoEcho parameter, a dynamic reference to a
    secret store, or be absent (AWS::NoValue), on every branch of an Fn::If."""
    if isinstance(value, bool):
        return True  # a switch (e.g. ManageAdminPassword), not a secret
    if isinstance(value, str):
        return bool(DYNAMIC_SECRET.match(value))
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return argument in hidden or argument == "AWS::NoValue"
        if function == "Fn::If":
            return all(_secret_is_safe(branch, hidden) for branch in argument[1:])
    return False


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every (path, key, value) of a nested structure."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, str(key), value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for number, value in enumerate(node):
            yield from _walk(value, f"{path}[{number}]")


def secret_problems(template: dict[str, Any]) -> list[str]:
    """Every place a secret could be written in clear, or leak out, in a template."""
    parameters = template.get("Parameters", {})
    problems = [
        f"parameter {name} must be NoEcho with no default"
        for name, parameter in parameters.items()
        if SECRET_PARAMETER.search(name)
        and (not _no_echo(parameter) or parameter.get("Default", "") != "")
    ]
    hidden = {name for name, parameter in parameters.items() if _no_echo(parameter)}
    problems += [
        f"{path}.{key} is not from a NoEcho parameter or a secret store"
        for name, resource in template.get("Resources", {}).items()
        for path, key, value in _walk(resource.get("Properties", {}), name)
        if SECRET_PROPERTY.search(key) and not _secret_is_safe(value, hidden)
    ]
    problems += [
        f"{path}.{key} puts the NoEcho parameter {value} in an output"
        for path, key, value in _walk(template.get("Outputs", {}), "Outputs")
        if key == "Ref" and value in hidden
    ]
    problems += [
        f"{path}.{key} puts the NoEcho parameter {name} in an output"
        for path, key, value in _walk(template.get("Outputs", {}), "Outputs")
        if key == "Fn::Sub"
        for name in hidden
        if f"${{{name}}}" in str(value)
    ]
    return problems


def test_template_holds_no_secret() -> None:
    """The source password is generated by Secrets Manager or given as a NoEcho parameter, the
    Redshift admin password is AWS-managed: no secret is written in the template or shown."""
    template = _template()
    assert secret_problems(template) == []
    secret = template["Resources"]["SourcePasswordSecret"]["Properties"]
    generated = secret["GenerateSecretString"]["Fn::If"][2]
    assert generated["GenerateStringKey"] == "password"  # {"password": ...}, as the job reads it
    namespace = template["Resources"]["RedshiftNamespace"]["Properties"]
    assert namespace["ManageAdminPassword"] is True
    assert "AdminUserPassword" not in namespace


# The condition keys each service documents sending when it assumes a role (AWS's own trust
# policy examples; docs/aws.md, IAM section). A trust condition on a key the service does not send
# is false: the role could never be assumed.
DOCUMENTED_TRUST_KEYS = {
    "emr-serverless.amazonaws.com": {"aws:SourceAccount", "aws:SourceArn"},
}
# IAM actions that carry the s3:prefix condition key (the Service Authorization Reference).
ACTIONS_WITH_S3_PREFIX = {"s3:ListBucket", "s3:ListBucketVersions"}


def _policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of every policy and trust policy: (where, statement)."""
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = [("trust", properties.get("AssumeRolePolicyDocument"))]
        documents.append(("policy", properties.get("PolicyDocument")))
        documents += [
            (p["PolicyName"], p["PolicyDocument"]) for p in properties.get("Policies", [])
        ]
        for kind, document in documents:
            for statement in (document or {}).get("Statement", []):
                yield f"{name} {kind} {statement.get('Sid', '')}".strip(), statement


def _condition_keys(statement: dict[str, Any]) -> set[str]:
    return {key for test in statement.get("Condition", {}).values() for key in test}


def policy_condition_problems(template: dict[str, Any]) -> list[str]:
    """Conditions that can never hold: a trust condition on a key its service does not
    document sending, an s3:prefix condition on an action whose requests have no prefix."""
    problems = []
    for where, statement in _policy_statements(template):
        keys = _condition_keys(statement)
        principal = statement.get("Principal", {})
        services = principal.get("Service", []) if isinstance(principal, dict) else []
        for service in [services] if isinstance(services, str) else services:
            if keys - DOCUMENTED_TRUST_KEYS.get(service, set()):
                problems.append(f"{where}: {service} does not document sending {sorted(keys)}")
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if "s3:prefix" in keys and set(actions) - ACTIONS_WITH_S3_PREFIX:
            problems.append(
                f"{where}: {sorted(set(actions) - ACTIONS_WITH_S3_PREFIX)} has no "
                "s3:prefix, so the statement never grants it"
            )
    return problems


def test_every_policy_condition_can_hold() -> None:
    assert policy_condition_problems(_template()) == []


@pytest.mark.parametrize(
    ("resource", "statement", "change", "problem"),
    [
        (
            "GlueJobRole",
            ("AssumeRolePolicyDocument", 0),
            {"Condition": {"StringEquals": {"aws:SourceAccount": "1"}}},
            "glue.amazonaws.com does not document sending ['aws:SourceAccount']",
        ),
        (
            "RedshiftCopyRole",
            ("copy-presentation", 1),
            {"Action": ["s3:ListBucket", "s3:GetBucketLocation"]},
            "['s3:GetBucketLocation'] has no s3:prefix",
        ),
    ],
    ids=["glue-trust-source-account", "get-bucket-location-under-prefix"],
)
def test_the_condition_check_catches_what_the_template_had(
    resource: str, statement: tuple[str, int], change: dict[str, Any], problem: str
) -> None:
    """The check above is not vacuous: it refuses the conditions the template used to have."""
    template = copy.deepcopy(_template())
    properties = template["Resources"][resource]["Properties"]
    document, index = statement
    if document != "AssumeRolePolicyDocument":
        policy = next(p for p in properties["Policies"] if p["PolicyName"] == document)
        properties = {"doc": policy["PolicyDocument"]}
        document = "doc"
    properties[document]["Statement"][index].update(change)
    assert any(problem in found for found in policy_condition_problems(template))


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("a literal SecretString", ("SourcePasswordSecret", "SecretString", "hunter2")),
        ("a literal admin password", ("RedshiftNamespace", "AdminUserPassword", "Hunter2!x")),
        ("a password built by Fn::Sub", ("SourcePasswordSecret", "SecretString", {"Fn::Sub": "x"})),
    ],
)
def test_the_secret_check_catches_a_literal(where: str, change: tuple[str, str, Any]) -> None:
    """The check above is not vacuous: a template with a secret written in it is refused."""
    template = copy.deepcopy(_template())
    resource, key, value = change
    template["Resources"][resource]["Properties"][key] = value
    assert secret_problems(template), where


def test_the_secret_check_catches_an_echoed_password_parameter() -> None:
    template = copy.deepcopy(_template())
    del template["Parameters"]["SourcePassword"]["NoEcho"]
    problems = secret_problems(template)
    assert any("parameter SourcePassword" in problem for problem in problems)


# ---- least privilege -----------------------------------------------------------------------------


def _statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = [properties.get("PolicyDocument")]
        documents += [p["PolicyDocument"] for p in properties.get("Policies", [])]
        for document in filter(None, documents):
            for statement in document["Statement"]:
                yield name, statement


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_policies_grant_no_wildcard_action_or_resource() -> None:
    """Every Allow names its actions; `Resource: "*"` only for actions that cannot be scoped;
    no AWS-managed policy (they are broad) is attached."""
    template = _template()
    allows = [(name, s) for name, s in _statements(template) if s["Effect"] == "Allow"]
    assert len(allows) > 20
    for name, statement in allows:
        actions = _as_list(statement["Action"])
        assert not [a for a in actions if "*" in a], (name, statement.get("Sid"))
        if "*" in _as_list(statement["Resource"]):
            assert set(actions) <= UNSCOPABLE_ACTIONS, (name, statement.get("Sid"))
    for name, resource in template["Resources"].items():
        for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
            assert "iam::aws:policy" not in str(arn), name


def test_actions_without_a_resource_type_are_granted_on_every_resource() -> None:
    """IAM ignores a resource ARN for an action that supports no resource type, so such a
    grant allows nothing: RunJobFlow scoped to `cluster/*` denied every EMR step."""
    without = {"elasticmapreduce:RunJobFlow", "elasticmapreduce:ListClusters"}
    statements = [
        statement
        for _, statement in _statements(_template())
        if without & set(_as_list(statement["Action"]))
    ]
    assert {action for s in statements for action in _as_list(s["Action"])} >= without
    assert all(_as_list(s["Resource"]) == ["*"] for s in statements)


def test_the_glue_job_takes_only_glue_5_arguments() -> None:
    job = _template()["Resources"]["GlueJob"]["Properties"]
    assert job["GlueVersion"] == "5.0"
    assert not set(job["DefaultArguments"]) & GLUE_4_ONLY_ARGUMENTS


def test_the_stacks_glue_job_runs_as_deploy_leaves_it() -> None:
    """Until the first deploy the stack's job is the one that runs: the same limits, and runs
    past the concurrency limit queue rather than fail (a backfill starts many at once)."""
    stack = _template()["Resources"]["GlueJob"]["Properties"]
    managed = glue_job_definition(GlueJob("job"), S3Location("bucket", "code"), code_package())
    for key in (
        "GlueVersion",
        "ExecutionProperty",
        "JobRunQueuingEnabled",
        "MaxRetries",
        "Timeout",
    ):
        assert stack[key] == managed[key], key


def test_only_the_spark_jobs_read_the_secret_and_redshift_reads_only_presentation() -> None:
    template = _template()
    readers = {
        name
        for name, statement in _statements(template)
        if "secretsmanager:GetSecretValue" in _as_list(statement["Action"])
    }
    assert readers == {"SparkJobPolicy"}
    copy_resources = [
        str(resource)
        for name, statement in _statements(template)
        if name == "RedshiftCopyRole" and "s3:GetObject" in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
    ]
    assert copy_resources and all("/presentation/" in r for r in copy_resources)


# ---- outputs and the guide -------------------------------------------------------------------


def test_outputs_give_the_variables_the_guide_documents() -> None:
    """`describe-stacks` turns the outputs into RENTAL_* variables (docs/aws.md): each is one
    the guide's table explains, and the warehouse URL is one the platform parses."""
    template = _template()
    outputs = {
        output["Description"]: output["Value"]
        for output in template["Outputs"].values()
        if str(output["Description"]).startswith("RENTAL_")
    }
    assert OUTPUT_VARIABLES - set(outputs) == set()
    guide = GUIDE.read_text()
    assert [v for v in outputs if f"| `{v}` |" not in guide] == []

    url_template, _ = outputs["RENTAL_WAREHOUSE_URL"]["Fn::Sub"]
    values = {name: p.get("Default") for name, p in template["Parameters"].items()}
    values["Host"] = "wg.123456789012.eu-west-1.redshift-serverless.amazonaws.com"
    url = re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], url_template)
    target = parse_warehouse_url(url)
    assert (target.kind, target.iam, target.workgroup) == ("redshift", True, "rental-platform")


# ---- the production Dagster instance -------------------------------------------------------


@pytest.fixture
def dagster_database() -> Iterator[dict[str, str]]:
    with dagster_postgres_database(f"dagster_deploy_test_{os.getpid()}") as settings:
        yield settings


def test_production_dagster_yaml_opens_a_postgres_instance(
    dagster_database: dict[str, str],
    aws: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/dagster.yaml, with nothing but the DAGSTER_PG_* and DAGSTER_COMPUTE_LOGS_*
    variables, gives an instance whose runs, events and schedules live in PostgreSQL and whose
    compute logs go to S3, with the local pool limit and no telemetry, and that stores the
    events of a run."""
    for variable, value in dagster_database.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv(BATCH_SIZE_VARIABLE, raising=False)
    boto3.client("s3").create_bucket(Bucket="rental-artifacts")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_BUCKET", "rental-artifacts")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_PREFIX", "compute-logs")
    shutil.copy(PRODUCTION_INSTANCE, tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "BatchingPostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert instance.telemetry_enabled is False
        assert os.environ[BATCH_SIZE_VARIABLE] == str(BATCH_SIZE)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).job_name == "__ephemeral_asset_job__"
    finally:
        instance.dispose()
    with psycopg.connect(
        f"{POSTGRES_SERVER}/{dagster_database['DAGSTER_PG_DB']}", autocommit=True
    ) as database:
        stored = database.execute("SELECT run_id FROM runs").fetchall()
        events = database.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).fetchone()[0]
    assert stored == [(result.run_id,)]
    assert events == 1


@dg.asset
def probe() -> None:
    """An asset whose materialisation event the production instance must store."""


def test_production_and_local_instances_share_the_pool_limits() -> None:
    """Both instances let one run at a time publish to the warehouse."""
    production = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    local = yaml.safe_load(LOCAL_INSTANCE.read_text())
    assert production["concurrency"] == local["concurrency"]
    assert production["telemetry"] == {"enabled": False}
    # Only environment references: no host, user or password written in the file.
    assert production["storage"]["custom"]["config"]["postgres_db"] == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        "scheme": "postgresql+psycopg2",
    }


def test_the_production_instance_stores_a_backfills_events_in_batches(
    dagster_database: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/dagster.yaml's event log stores a range run's events in batches, check
    evaluations included; what the UI reads back (events, partitions' status, latest
    materialisation, check executions) is what dagster-postgres stores one event at a time."""
    instances = {
        "one by one": postgres_instance_config(batching=False),
        "batched": postgres_instance_config(batching=True),
    }
    batches: list[Counter] = []
    store_together = BatchingPostgresEventLogStorage._store_together

    def counting(storage, events):
        batches.append(Counter(event.dagster_event_type for event in events))
        store_together(storage, events)

    monkeypatch.setattr(BatchingPostgresEventLogStorage, "_store_together", counting)
    monkeypatch.delenv(BATCH_SIZE_VARIABLE, raising=False)
    stored = {}
    with dagster_postgres_database(f"dagster_deploy_one_by_one_{os.getpid()}") as one_by_one:
        for label, config in instances.items():
            home = tmp_path / label.replace(" ", "_")
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump(config))
            database = one_by_one if label == "one by one" else dagster_database
            for variable, value in database.items():
                monkeypatch.setenv(variable, value)
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                stored[label] = _stored(instance, [_run(instance, True), _run(instance, False)])
            finally:
                instance.dispose()
            if label == "one by one":
                assert batches == []
    assert stored["batched"] == stored["one by one"]
    # Each table's planned events, its materialisations, and each check's evaluations went over
    # in a batch of every day, not one by one.
    days = len(DAYS.get_partition_keys())
    for kind, least in (
        (DagsterEventType.ASSET_MATERIALIZATION_PLANNED, days),
        (DagsterEventType.ASSET_MATERIALIZATION, days),
        (DagsterEventType.ASSET_CHECK_EVALUATION, days),
    ):
        assert max(batch[kind] for batch in batches) >= least, (kind, batches)
