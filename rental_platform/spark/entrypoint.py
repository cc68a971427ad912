"""The remote side of a Spark step: what a Glue or EMR job runs, through Dagster Pipes.

It opens Pipes before it imports anything else of the platform (Spark, the steps), so that a
job whose runtime cannot import them (another Python, a missing library) still sends its
traceback, and its driver's output, to the Dagster run. Hence only the standard library and
dagster_pipes here. `pipes_step` then runs the steps the Pipes context asks for, in one
SparkSession: a job's steps are one launch, not one each.

A shared job (`--rental-serve`) runs many Pipes sessions, one after another, in one
SparkSession: the Dagster side posts each session's bootstrap parameters as a numbered ticket
under the job's inbox on S3; the job runs each ticket as a job of its own would, marks it done,
and ends when told to (`close`) or once no ticket came for `--rental-idle-seconds` (a ticket
posted as it ended goes to another job): a command's runs pay one launch, not one per
multi-asset.

The source password never travels with the request: it comes from RENTAL_MYSQL_PASSWORD or
from AWS Secrets Manager (the secret's ARN in the job argument `--rental-mysql-secret-arn`, or
RENTAL_MYSQL_SECRET_ARN).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from dagster_pipes import (
    PipesCliArgsParamsLoader,
    PipesContext,
    PipesDefaultLogWriter,
    PipesEnvVarParamsLoader,
    PipesLogWriter,
    PipesMappingParamsLoader,
    PipesMessage,
    PipesMessageWriterChannel,
    PipesParams,
    PipesParamsLoader,
    PipesS3ContextLoader,
    PipesS3MessageWriter,
    open_dagster_pipes,
)

# The StepRequests to run, in order.
REQUESTS_EXTRA = "step_requests"
# Instead of a step: `rental-platform deploy --check`'s canary, with the source to reach.
CANARY_EXTRA = "canary"
# A job argument naming the Secrets Manager secret that holds the source password.
SECRET_ARN_ARGUMENT = "--rental-mysql-secret-arn"
# Glue jobs receive the Pipes bootstrap parameters as job arguments, not environment.
PIPES_CONTEXT_ARGUMENT = "--dagster-pipes-context"
# A shared job: the s3:// inbox of its tickets, and how long it waits for one before it ends.
SERVE_ARGUMENT = "--rental-serve"
IDLE_ARGUMENT = "--rental-idle-seconds"
# How often a shared job looks for its next ticket.
TICKET_POLL_SECONDS = 0.5


def ticket_key(inbox_prefix: str, number: int) -> str:
    """Ticket `number`: the bootstrap parameters of one Pipes session ({"params": {...}})."""
    return f"{inbox_prefix}/tickets/{number:06d}.json"


def done_key(inbox_prefix: str, number: int) -> str:
    """Written once ticket `number` ran: {"ok": whether it raised nothing}."""
    return f"{inbox_prefix}/done/{number:06d}.json"


def close_key(inbox_prefix: str) -> str:
    """Written by the Dagster side: no ticket will follow."""
    return f"{inbox_prefix}/close"


def _argument(name: str, argv: list[str]) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _secret_arn(argv: list[str]) -> str | None:
    return _argument(SECRET_ARN_ARGUMENT, argv) or os.environ.get("RENTAL_MYSQL_SECRET_ARN")


def password_origin(argv: list[str]) -> str:
    """Where `source_password` takes the password from, for the canary to say."""
    secret_arn = _secret_arn(argv)
    if secret_arn:
        return f"Secrets Manager secret {secret_arn}"
    return "RENTAL_MYSQL_PASSWORD" if os.environ.get("RENTAL_MYSQL_PASSWORD") else "nowhere (empty)"


def source_password(argv: list[str]) -> str:
    secret_arn = _secret_arn(argv)
    if not secret_arn:
        return os.environ.get("RENTAL_MYSQL_PASSWORD", "")
    import boto3

    # The secret's own region (arn:aws:secretsmanager:REGION:...): a driver on EMR on EC2 has
    # no default region to fall back on.
    client = boto3.client("secretsmanager", region_name=secret_arn.split(":")[3])
    secret = client.get_secret_value(SecretId=secret_arn)["SecretString"]
    try:
        return json.loads(secret)["password"]
    except (ValueError, KeyError, TypeError):
        return secret


class _ClosedLast(PipesMessageWriterChannel):
    """A channel that holds the "closed" message back until `release`."""

    def __init__(self, channel: PipesMessageWriterChannel) -> None:
        self._channel, self._closed = channel, None

    def write_message(self, message: PipesMessage) -> None:
        if message["method"] == "closed":
            self._closed = message
        else:
            self._channel.write_message(message)

    def release(self) -> None:
        if self._closed is not None:
            self._channel.write_message(self._closed)


class OutputFirstS3MessageWriter(PipesS3MessageWriter):
    """dagster-pipes' S3 message writer, sending the driver's last output before "closed"
    rather than after it (Dagster warns of every message after "closed", so each job would
    warn once)."""

    @contextmanager
    def open(self, params: PipesParams) -> Iterator[PipesMessageWriterChannel]:
        channel = self.make_channel(params)
        held = _ClosedLast(channel)
        with channel.buffered_upload_loop():
            stdio: AbstractContextManager[Any] = nullcontext()
            if params.get(self.INCLUDE_STDIO_IN_MESSAGES_KEY):
                stdio = PipesDefaultLogWriter(message_channel=channel).open(
                    params.get(PipesLogWriter.LOG_WRITER_KEY, {})
                )
            with stdio:
                yield held
            held.release()


def read_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The JSON object at `key`, or None while there is none. Listed first: S3 answers a
    missing object with AccessDenied, not NoSuchKey, to a caller it does not let list the key,
    and the roles may list only by prefix."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    if not any(item["Key"] == key for item in listed.get("Contents", [])):
        return None
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _pipes_channels(argv: list[str], params: PipesParamsLoader | None = None) -> dict[str, Any]:
    """Where the Pipes bootstrap parameters are (Glue: job arguments; EMR Serverless and EMR:
    the driver's environment; a shared job: the ticket), and, when they point at S3, context
    and messages on S3. A local subprocess keeps Dagster Pipes' defaults (environment and
    files)."""
    if params is None:
        params = (
            PipesCliArgsParamsLoader()
            if PIPES_CONTEXT_ARGUMENT in argv
            else PipesEnvVarParamsLoader()
        )
    if not params.is_dagster_pipes_process() or "bucket" not in params.load_context_params():
        return {"params_loader": params}
    import boto3

    s3 = boto3.client("s3")
    return {
        "params_loader": params,
        "context_loader": PipesS3ContextLoader(client=s3),
        "message_writer": OutputFirstS3MessageWriter(client=s3),
    }


def _run(pipes: PipesContext, argv: list[str]) -> None:
    """What the Pipes context asks for: the canary, or the steps."""
    # Imported inside Pipes: an import that fails is reported to Dagster with its traceback.
    from rental_platform.spark.pipes_step import run_requested_steps, runtime_facts

    if CANARY_EXTRA in pipes.extras:
        canary = pipes.get_extra(CANARY_EXTRA)
        facts = runtime_facts(canary, source_password(argv), password_origin(argv))
        pipes.report_custom_message({CANARY_EXTRA: facts})
    else:
        run_requested_steps(pipes, pipes.get_extra(REQUESTS_EXTRA), source_password(argv))


def run_ticket(params: Mapping[str, str], argv: list[str]) -> None:
    """One ticket of a shared job: a Pipes session of its own (not the process's singleton,
    which a job opens once), run as a job of its own would run it."""
    with PipesContext(**_pipes_channels(argv, PipesMappingParamsLoader(params))) as pipes:
        _run(pipes, argv)


def serve(inbox: str, idle_seconds: float, argv: list[str]) -> None:
    """Run the tickets posted under `inbox` in order, each marked done whether or not it
    raised (its error went to its own run through Pipes), until told to close or idle."""
    import boto3

    s3 = boto3.client("s3")
    bucket, _, prefix = inbox.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")

    def read(key: str) -> dict[str, Any] | None:
        return read_json(s3, bucket, key)

    number, idle_since = 0, time.monotonic()
    while True:
        ticket = read(ticket_key(prefix, number))
        if ticket is None and read(close_key(prefix)) is not None:
            return
        if ticket is None and time.monotonic() - idle_since > idle_seconds:
            return
        if ticket is None:
            time.sleep(TICKET_POLL_SECONDS)
            continue
        ok = True
        try:
            run_ticket(ticket["params"], argv)
        except Exception:
            ok = False
        done = json.dumps({"ok": ok}).encode()
        s3.put_object(Bucket=bucket, Key=done_key(prefix, number), Body=done)
        number, idle_since = number + 1, time.monotonic()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    inbox = _argument(SERVE_ARGUMENT, argv)
    if inbox is not None:
        serve(inbox, float(_argument(IDLE_ARGUMENT, argv) or 0), argv)
        return
    with open_dagster_pipes(**_pipes_channels(argv)) as pipes:
        _run(pipes, argv)


if __name__ == "__main__":
    main()
