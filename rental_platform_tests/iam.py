"""IAM as the tests see it: every AWS API call the platform's own code makes, recorded through
botocore's event hooks, turned into the IAM requests AWS would authorise (action, resource ARN,
condition keys), and evaluated against the statements of the CloudFormation template's roles.

moto checks no identity policy by resource, so this is a small evaluator of the template's
policy documents: Allow statements only (the roles have no Deny), `Action` and `Resource` with
IAM's wildcards, and the condition operators the template uses (StringEquals, StringLike); any
other operator fails loudly. A call it has no IAM mapping for fails loudly too.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session

from rental_platform_tests.aws import ACCOUNT

PLATFORM = str(Path(__file__).resolve().parent.parent / "rental_platform") + "/"
TESTS = str(Path(__file__).resolve().parent) + "/"


# --- recording ------------------------------------------------------------------------------------


def _made_by_the_platform() -> bool:
    """Whether the innermost frame of ours on the stack is the platform's, not a test's (the
    tests' own calls, e.g. creating buckets, are not the platform's to be allowed). A thread
    with neither (a Pipes reader polling S3) works for the platform."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename == __file__:  # the recorder itself
            continue
        if frame.filename.startswith(PLATFORM):
            return True
        if frame.filename.startswith(TESTS):
            return False
    return True


def _plain(value: Any) -> Any:
    """The parameter as JSON can hold it (bodies and streams left out)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if isinstance(v, str | int | dict | list)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@contextmanager
def recording_calls(path: Path) -> Iterator[None]:
    """While open, every client created in this process appends each call the platform makes
    to `path`: {"service", "operation", "region", "params"}, one JSON object a line."""
    lock = threading.Lock()
    create_client = botocore.session.Session.create_client

    def create_recording_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        service, region = client.meta.service_model.service_name, client.meta.region_name

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            if _made_by_the_platform():
                call = {"service": service, "operation": model.name, "region": region}
                line = json.dumps({**call, "params": _plain(params)})
                with lock, path.open("a") as calls:
                    calls.write(line + "\n")

        client.meta.events.register("before-parameter-build", record)
        return client

    botocore.session.Session.create_client = create_recording_client
    try:
        yield
    finally:
        botocore.session.Session.create_client = create_client


def read_calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- what IAM authorises for a call -----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One authorisation IAM makes for a call."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    call: str = field(default="", compare=False)


def _pass_role(role: str, service: str, call: str) -> Request:
    arn = role if role.startswith("arn:") else f"arn:aws:iam::{ACCOUNT}:role/{role}"
    return Request("iam:PassRole", arn, (("iam:PassedToService", service),), call)


def requests_for(call: dict[str, Any]) -> list[Request]:
    """What IAM checks for a recorded call (AWS's Service Authorization Reference)."""
    service, operation, params = call["service"], call["operation"], call["params"]
    where = f"{service}.{operation}"
    region = call["region"]
    if service == "s3":
        bucket = f"arn:aws:s3:::{params['Bucket']}"
        objects = {
            "GetObject": "s3:GetObject",
            "HeadObject": "s3:GetObject",
            "PutObject": "s3:PutObject",
            "CreateMultipartUpload": "s3:PutObject",
            "UploadPart": "s3:PutObject",
            "CompleteMultipartUpload": "s3:PutObject",
            "DeleteObject": "s3:DeleteObject",
        }
        if operation in objects:
            return [Request(objects[operation], f"{bucket}/{params['Key']}", (), where)]
        if operation == "DeleteObjects":
            keys = [item["Key"] for item in params["Delete"]["Objects"]]
            return [Request("s3:DeleteObject", f"{bucket}/{key}", (), where) for key in keys]
        if operation in ("ListObjectsV2", "ListObjects"):
            prefix = (("s3:prefix", params["Prefix"]),) if "Prefix" in params else ()
            return [Request("s3:ListBucket", bucket, prefix, where)]
    if service == "glue" and "DatabaseName" in params:  # the Data Catalog: three ARNs each
        table = params.get("TableName") or params.get("Name") or params["TableInput"]["Name"]
        arn = f"arn:aws:glue:{region}:{ACCOUNT}:"
        database = params["DatabaseName"]
        resources = ("catalog", f"database/{database}", f"table/{database}/{table}")
        return [Request(f"glue:{operation}", arn + r, (), where) for r in resources]
    if service == "glue":
        job = params.get("JobName") or params.get("Name")
        requests = [Request(f"glue:{operation}", f"arn:aws:glue:{region}:{ACCOUNT}:job/{job}")]
        role = params.get("Role") or params.get("JobUpdate", {}).get("Role")
        if operation in ("CreateJob", "UpdateJob") and role:
            requests.append(_pass_role(role, "glue.amazonaws.com", where))
        return [Request(r.action, r.resource, r.context, where) for r in requests]
    if service == "emr-serverless":
        application = f"arn:aws:emr-serverless:{region}:{ACCOUNT}:/applications/"
        application += params["applicationId"]
        resource = f"{application}/jobruns/{params['jobRunId']}" if "jobRunId" in params else None
        requests = [Request(f"emr-serverless:{operation}", resource or application, (), where)]
        if operation == "StartJobRun":
            requests.append(
                _pass_role(params["executionRoleArn"], "emr-serverless.amazonaws.com", where)
            )
            if params.get("tags"):  # tagging on create: the run's id is not known yet
                requests.append(
                    Request("emr-serverless:TagResource", f"{application}/jobruns/new", (), where)
                )
        return requests
    if service == "emr":
        if operation == "RunJobFlow":
            requests = [Request("elasticmapreduce:RunJobFlow", "*", (), where)]
            for role in (params["ServiceRole"], params["JobFlowRole"]):
                requests.append(_pass_role(role, "elasticmapreduce.amazonaws.com", where))
            if params.get("Tags"):
                cluster = f"arn:aws:elasticmapreduce:{region}:{ACCOUNT}:cluster/new"
                requests.append(Request("elasticmapreduce:AddTags", cluster, (), where))
            return requests
        if operation == "ListClusters":  # no resource type: any cluster it may list
            return [Request("elasticmapreduce:ListClusters", "*", (), where)]
        cluster = f"arn:aws:elasticmapreduce:{region}:{ACCOUNT}:cluster/"
        ids = params.get("JobFlowIds") or [params.get("ClusterId") or params["JobFlowId"]]
        return [Request(f"elasticmapreduce:{operation}", cluster + i, (), where) for i in ids]
    if service == "secretsmanager" and operation == "GetSecretValue":
        return [Request("secretsmanager:GetSecretValue", params["SecretId"], (), where)]
    raise AssertionError(f"no IAM mapping for the call {where}: add it to iam.requests_for")


# --- the template's policies --------------------------------------------------------------------


def resolve(node: Any, values: dict[str, str]) -> Any:
    """The template's intrinsic functions (Ref, Fn::GetAtt, Fn::Sub) with `values` for the
    parameters, pseudo-parameters and resource attributes; a missing value raises KeyError."""
    if isinstance(node, list):
        return [resolve(item, values) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((function, argument),) = node.items()
        if function == "Ref":
            return values[argument]
        if function == "Fn::GetAtt":
            return values[argument if isinstance(argument, str) else ".".join(argument)]
        if function == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], argument)
        if function.startswith("Fn::"):
            raise AssertionError(f"{function} in a policy: teach iam.resolve it")
    return {key: resolve(value, values) for key, value in node.items()}


@dataclass(frozen=True)
class Statement:
    policy: str
    sid: str
    body: dict[str, Any]


def role_statements(template: dict[str, Any], role: str, values: dict[str, str]) -> list[Statement]:
    """Every statement of a role's policies: its managed policies' and its inline ones."""
    resources = template["Resources"]
    properties = resources[role]["Properties"]
    documents = [
        (ref["Ref"], resources[ref["Ref"]]["Properties"]["PolicyDocument"])
        for ref in properties.get("ManagedPolicyArns", [])
    ]
    documents += [
        (f"{role}/{p['PolicyName']}", p["PolicyDocument"]) for p in properties.get("Policies", [])
    ]
    return [
        Statement(name, statement["Sid"], resolve(statement, values))
        for name, document in documents
        for statement in document["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _conditions_hold(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            if key not in context:
                return False
            if operator == "StringEquals":
                if context[key] not in _as_list(expected):
                    return False
            elif operator == "StringLike":
                if not any(fnmatch.fnmatchcase(context[key], p) for p in _as_list(expected)):
                    return False
            else:
                raise AssertionError(f"condition operator {operator}: teach iam.allows it")
    return True


def allows(statement: Statement, request: Request) -> bool:
    body = statement.body
    if body["Effect"] != "Allow":
        raise AssertionError(f"{statement.sid}: the roles hold no Deny; teach iam.allows it")
    actions = [a.lower() for a in _as_list(body["Action"])]
    if not any(fnmatch.fnmatchcase(request.action.lower(), a) for a in actions):
        return False
    if not any(fnmatch.fnmatchcase(request.resource, r) for r in _as_list(body["Resource"])):
        return False
    return _conditions_hold(body.get("Condition", {}), dict(request.context))
