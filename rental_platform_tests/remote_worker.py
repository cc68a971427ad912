"""The remote side of a Spark job, played locally: a long-lived process that runs
`spark/entrypoint.py`'s `main` for each job it is handed, with exactly the job's arguments and
environment, in one JVM (a real cluster keeps its JVMs too; a JVM per job would cost seconds).

The lake: Glue and EMR read and write `s3://` natively, local Spark cannot (no hadoop-aws
here). So this stand-in maps the job's S3 lake to a local folder: it points the step requests in
the Pipes context (on S3) at the folder, runs the steps, and then, however they ended, mirrors
the folder to the S3 lake, so the Dagster side reads exactly what the steps wrote, from S3.

A shared job (`entrypoint.serve`) runs many Pipes sessions: each ticket's requests are pointed
at the folder, and the folder mirrored after it, as a job's are.

Protocol: one JSON object per line on stdin ({"argv": [...], "env": {...}, "lake": folder});
one line back, {"ok": bool}. Output goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from dagster_pipes import (
    PipesContext,
    PipesEnvVarParamsLoader,
    PipesMappingParamsLoader,
    PipesParams,
    decode_param,
)

from rental_platform.settings import parse_s3_location
from rental_platform.spark import entrypoint
from rental_platform_tests.iam import recording_calls

PIPES_CONTEXT_ARGUMENT = entrypoint.PIPES_CONTEXT_ARGUMENT


def _context_params(argv: list[str]) -> PipesParams:
    """Where a job's Pipes context is: its arguments (Glue) or its environment."""
    if PIPES_CONTEXT_ARGUMENT in argv:
        return decode_param(argv[argv.index(PIPES_CONTEXT_ARGUMENT) + 1])
    return PipesEnvVarParamsLoader().load_context_params()


def _point_request_at(local_root: str, params: PipesParams) -> str:
    """Rewrite the step requests' lake root in the Pipes context; the S3 root they had."""
    s3 = boto3.client("s3")
    bucket, key = params["bucket"], params["key"]
    context = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    requests = context["extras"][entrypoint.REQUESTS_EXTRA]
    (s3_root,) = {request["lake_root"] for request in requests}
    for request in requests:
        request["lake_root"] = local_root
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(context).encode())
    return s3_root


def _mirror(local_root: str, s3_root: str) -> None:
    """Make the S3 lake hold exactly the local folder's files."""
    s3, lake = boto3.client("s3"), parse_s3_location("lake", s3_root)
    local = {
        lake.key(str(path.relative_to(local_root))): path
        for path in Path(local_root).rglob("*")
        if path.is_file() and not path.name.endswith(".crc")
    }
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=lake.bucket, Prefix=lake.prefix)
    remote = {item["Key"] for page in pages for item in page.get("Contents", [])}
    for key in remote - set(local):
        s3.delete_object(Bucket=lake.bucket, Key=key)
    # In this thread: the stand-in's own calls are not the job's (see iam.recording_calls).
    in_this_thread = TransferConfig(use_threads=False)
    for key, path in local.items():
        s3.upload_file(str(path), lake.bucket, key, Config=in_this_thread)


def _tickets_on(local_root: str) -> None:
    """A shared job's tickets, each run on the folder and mirrored after, as a job is."""
    run_ticket = entrypoint.run_ticket

    def on_local_lake(params: dict[str, str], argv: list[str]) -> None:
        s3_root = _point_request_at(
            local_root, PipesMappingParamsLoader(params).load_context_params()
        )
        try:
            run_ticket(params, argv)
        finally:
            _mirror(local_root, s3_root)

    entrypoint.run_ticket = on_local_lake


def serve() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        local_root = job["lake"]
        saved = dict(os.environ)
        os.environ.update(job["env"])
        argv = ["entrypoint.py", *job["argv"]]
        sys.argv = argv
        ok, s3_root, run_ticket = True, None, entrypoint.run_ticket
        try:
            if entrypoint.SERVE_ARGUMENT in argv:
                _tickets_on(local_root)
            else:
                s3_root = _point_request_at(local_root, _context_params(argv))
            entrypoint.main(argv)
        except BaseException:
            traceback.print_exc()
            ok = False
        finally:
            # What the job wrote stays, as on S3, whether the job ended well or not.
            if s3_root is not None:
                _mirror(local_root, s3_root)
            entrypoint.run_ticket = run_ticket
            os.environ.clear()
            os.environ.update(saved)
            # A job process opens Pipes once; this one opens it per job, so forget the last.
            PipesContext._instance = None
        print(json.dumps({"ok": ok}), flush=True)


if __name__ == "__main__":
    sys.stdout = os.fdopen(os.dup(1), "w")  # replies only; everything else goes to stderr
    os.dup2(2, 1)
    # test_iam: the AWS calls the jobs make, for the job role's policy to allow.
    calls = os.environ.get("RENTAL_TEST_AWS_CALLS")
    with recording_calls(Path(calls)) if calls else nullcontext():
        serve()
