"""One remote Spark job serving the launches of many multi-assets, runs and processes, so that
a command (a nightly, a range run) pays one job's start-up and minimum billing, not one per
multi-asset (`benchmarks/results/aws_cost.md`).

The job runs `spark/entrypoint.py` in serving mode. Each launch opens its own Dagster Pipes
session, as a job of its own would, and posts the session's bootstrap parameters as the next
numbered ticket in the job's inbox on S3; the job runs the tickets in order and marks each done.
Which job serves, and the next ticket's number, are kept in a small record beside the Dagster
instance, under a file lock: the run workers of one instance (a process per multi-asset under
the multiprocess executor) share it. `close_shared_jobs` ends the jobs when a command ends;
otherwise a job ends once it has waited `idle_seconds` for a ticket. A job an hour old takes no
more tickets: a command longer than that runs on several, one after another.

A job that ended successfully never took a ticket it did not mark done (it ends only between
tickets): such a ticket goes to a new job. A job that failed or was stopped fails the tickets it
had not done. Interrupting a launch stops the job, and with it the launches of other runs it
was serving, which fail naming it.
"""

from __future__ import annotations

import fcntl
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
import dagster as dg
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

from rental_platform.settings import S3Location, parse_s3_location
from rental_platform.spark.entrypoint import close_key, done_key, read_json, ticket_key

# Beside the instance's own files: one record per serving job's settings.
RECORDS_FOLDER = "shared-remote-jobs"
# A shared job this old takes no more tickets (it runs those it has, then ends): every ticket
# keeps an hour at least of the job run's timeout (the Glue job's 120 minutes the template
# sets; EMR Serverless's default is 12 hours).
RETIRE_AFTER_SECONDS = 3600


@dataclass(frozen=True)
class JobState:
    """A job run's state as its service names it, and what it means here."""

    name: str
    ended: bool
    succeeded: bool


class ServingService(Protocol):
    """What the shared job needs of a runner: where tickets go and how often to look, which
    settings share a job, and of its service: start the serving job, look at it, stop it, and
    name it in each materialisation."""

    poll_seconds: float

    @property
    def pipes(self) -> S3Location:
        """Where the Pipes context and messages go; each job's inbox is under it."""
        ...

    def describe(self) -> str: ...

    def shared_job_key(self) -> str:
        """What tells one shared job's settings from another's."""
        ...

    def start_serving(self, inbox: str) -> str:
        """Start a job serving the tickets under `inbox`; its job run's id."""
        ...

    def serving_state(self, run_id: str) -> JobState: ...

    def stop_serving(self, run_id: str) -> None: ...

    def serving_metadata(self, run_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SharedJob:
    """A serving job: its job run and the inbox of its tickets."""

    run_id: str
    inbox: S3Location

    @classmethod
    def from_record(cls, record: dict[str, str]) -> SharedJob:
        return cls(record["run_id"], parse_s3_location("inbox", record["inbox"]))

    def to_record(self) -> dict[str, str]:
        return {"run_id": self.run_id, "inbox": self.inbox.uri}


def launch_on_shared_job(
    service: ServingService,
    *,
    context: dg.OpExecutionContext,
    injector: PipesS3ContextInjector,
    reader: PipesS3MessageReader,
    extras: dict[str, Any],
    job_metadata: dict[str, Any],
) -> dg.PipesClientCompletedInvocation:
    """One launch as a ticket on the shared job of the service's settings (started if none is
    live), waited for; what names the job goes into `job_metadata` once the ticket is posted."""
    s3 = boto3.client("s3")
    records = Path(context.instance.root_directory) / RECORDS_FOLDER
    with dg.open_pipes_session(
        context=context, context_injector=injector, message_reader=reader, extras=extras
    ) as session:
        ticket = {"params": session.get_bootstrap_env_vars()}
        done = None
        # A job that ended between its last look for a ticket and this one's posting leaves it
        # to the next job; a second such ending is no race.
        for _attempt in range(2):
            job, number = _post(service, s3, records, ticket)
            job_metadata.update(service.serving_metadata(job.run_id))
            context.log.info(f"[pipes] ticket {number} on {service.describe()} run {job.run_id}")
            try:
                done = _wait(service, s3, job, number)
            except dg.DagsterExecutionInterruptedError:
                context.log.warning(f"[pipes] interrupted: stopping job run {job.run_id}")
                service.stop_serving(job.run_id)
                raise
            if done is not None:
                break
            context.log.info(f"[pipes] job run {job.run_id} ended before ticket {number}")
        if done is None:
            raise RuntimeError(
                f"{service.describe()} run {job.run_id} ended successfully without running "
                f"ticket {number}, as the run before it did"
            )
        if not done["ok"]:
            raise RuntimeError(
                f"{service.describe()} run {job.run_id} failed its ticket {number} "
                "(the traceback is in the step's logs)"
            )
        return dg.PipesClientCompletedInvocation(session, metadata=job_metadata)


def _post(
    service: ServingService,
    s3: Any,
    records: Path,
    ticket: dict[str, Any],
) -> tuple[SharedJob, int]:
    """Post `ticket` as the next one of the live shared job, starting one if there is none."""
    records.mkdir(parents=True, exist_ok=True)
    with _locked(records / f"{service.shared_job_key()}.json") as record:
        job = record.get("job") and SharedJob.from_record(record["job"])
        if job and time.time() - record["started"] > RETIRE_AFTER_SECONDS:
            _close(s3, job)
            job = None
        if not job or service.serving_state(job.run_id).ended:
            inbox = S3Location(
                service.pipes.bucket, service.pipes.key(f"shared/{uuid.uuid4().hex}")
            )
            job = SharedJob(service.start_serving(inbox.uri), inbox)
            record.clear()
            record.update(job=job.to_record(), next=0, started=time.time())
        number = record["next"]
        record["next"] = number + 1
        body = json.dumps(ticket).encode()
        s3.put_object(Bucket=job.inbox.bucket, Key=ticket_key(job.inbox.prefix, number), Body=body)
    return job, number


def _wait(service: ServingService, s3: Any, job: SharedJob, number: int) -> dict[str, Any] | None:
    """The ticket's done mark; None if the job ended successfully without taking it."""
    mark = done_key(job.inbox.prefix, number)
    while True:
        done = read_json(s3, job.inbox.bucket, mark)
        if done is not None:
            return done
        state = service.serving_state(job.run_id)
        if state.ended:
            # It may have marked the ticket done just before it ended.
            done = read_json(s3, job.inbox.bucket, mark)
            if done is not None or state.succeeded:
                return done
            raise RuntimeError(
                f"{service.describe()} run {job.run_id} ended {state.name} "
                f"before it finished ticket {number}"
            )
        time.sleep(service.poll_seconds)


@contextmanager
def _locked(path: Path) -> Iterator[dict[str, Any]]:
    """The record at `path`, read and written back under an exclusive lock (the kernel's: a
    process that dies lets go of it)."""
    with path.open("a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        text = file.read()
        record: dict[str, Any] = json.loads(text) if text.strip() else {}
        yield record
        file.seek(0)
        file.truncate()
        file.write(json.dumps(record))


def close_shared_jobs(instance_root: str) -> None:
    """Tell every shared job of this instance that no ticket follows: each ends once it has
    run the tickets it was given (a command's end; the jobs of runs still going end idle)."""
    records = Path(instance_root) / RECORDS_FOLDER
    if not records.is_dir():
        return
    s3 = boto3.client("s3")
    for path in sorted(records.glob("*.json")):
        with _locked(path) as record:
            if record.get("job"):
                _close(s3, SharedJob.from_record(record["job"]))
            record.clear()


def _close(s3: Any, job: SharedJob) -> None:
    """No ticket follows: the job ends once it has run those it was given."""
    s3.put_object(Bucket=job.inbox.bucket, Key=close_key(job.inbox.prefix), Body=b"{}")
