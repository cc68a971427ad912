"""The part of AWS that moto does not play: the jobs themselves.

`RemoteSide` watches moto for each job the platform starts, hands its arguments and environment,
as moto recorded them, to the local worker (`remote_worker.py`, which runs the real entrypoint),
then ends the job the way the test says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pyspark

from rental_platform_tests.aws import backend


@dataclass
class Job:
    """A job the platform started: what the remote program receives, and how to end it."""

    argv: list[str]
    env: dict[str, str]
    handle: Any
    # The code the service would run: the s3:// addresses of the entry script, the archive
    # and the JDBC driver's jar.
    script: str
    archive: str
    jar: str
    # The Python runtime archive (`spark.archives`, "s3://...#folder"), where the job ships one.
    runtime: str | None = None


class GlueJobs:
    name = "glue"

    def new_jobs(self, seen: set[str]) -> list[Job]:
        jobs = []
        for job in backend("glue").jobs.values():
            for run in job.job_runs:
                if run.job_run_id not in seen:
                    seen.add(run.job_run_id)
                    arguments = run.arguments or {}
                    argv = [item for pair in arguments.items() for item in pair]
                    script = job.command["ScriptLocation"]
                    archive, jar = arguments["--extra-py-files"], arguments["--extra-jars"]
                    jobs.append(Job(argv, {}, run, script, archive, jar))
        return jobs

    def end(self, job: Job, succeeded: bool) -> None:
        job.handle.status = "SUCCEEDED" if succeeded else "FAILED"

    def state(self, job: Job) -> str:
        return job.handle.status

    def run_id(self, job: Job) -> str:
        return job.handle.job_run_id


def spark_submit_conf(parameters: str) -> dict[str, str]:
    """The settings of spark-submit parameters (`--conf NAME=value ...`)."""
    words = parameters.split()
    pairs = (words[i + 1] for i, word in enumerate(words[:-1]) if word == "--conf")
    return dict(pair.partition("=")[::2] for pair in pairs)


def spark_submit_env(parameters: str) -> dict[str, str]:
    """The driver environment `--conf spark.emr-serverless.driverEnv.NAME=value` sets."""
    prefix = "spark.emr-serverless.driverEnv."
    return {
        name.removeprefix(prefix): value
        for name, value in spark_submit_conf(parameters).items()
        if name.startswith(prefix)
    }


class EmrServerlessJobs:
    name = "emr_serverless"

    def new_jobs(self, seen: set[str]) -> list[Job]:
        jobs = []
        for runs in backend("emr-serverless").job_runs.values():
            for run in runs:
                if run.id not in seen:
                    seen.add(run.id)
                    submit = run.job_driver["sparkSubmit"]
                    parameters = submit.get("sparkSubmitParameters", "")
                    conf = spark_submit_conf(parameters)
                    argv = list(submit.get("entryPointArguments", []))
                    env = spark_submit_env(parameters)
                    code = (submit["entryPoint"], conf["spark.submit.pyFiles"], conf["spark.jars"])
                    jobs.append(Job(argv, env, run, *code, conf.get("spark.archives")))
        return jobs

    def end(self, job: Job, succeeded: bool) -> None:
        job.handle.state = "SUCCESS" if succeeded else "FAILED"

    def state(self, job: Job) -> str:
        return job.handle.state

    def run_id(self, job: Job) -> str:
        return job.handle.id


class EmrClusters:
    """Steps on EMR clusters: a step is the job. Like EMR, a cluster runs its steps one at a
    time (its first pending one starts when the one before ends) and waits once none is
    left."""

    name = "emr"

    def new_jobs(self, seen: set[str]) -> list[Job]:
        jobs = []
        for cluster in list(backend("emr").clusters.values()):
            for step in list(cluster.steps):
                if step.id in seen:
                    continue
                seen.add(step.id)
                # spark-submit [options] <entry script> <its arguments>
                args = step.args
                script = next(i for i, a in enumerate(args) if a.endswith(".py"))
                archive, jar = args[args.index("--py-files") + 1], args[args.index("--jars") + 1]
                runtime = args[args.index("--archives") + 1] if "--archives" in args else None
                master_env = "spark.yarn.appMasterEnv."
                env = {
                    name.removeprefix(master_env): value
                    for name, value in spark_submit_conf(" ".join(args[:script])).items()
                    if name.startswith(master_env)
                }
                command = (args[script], archive, jar, runtime)
                jobs.append(Job(args[script + 1 :], env, (cluster, step), *command))
        return jobs

    def end(self, job: Job, succeeded: bool) -> None:
        cluster, step = job.handle
        if step.state in ("PENDING", "RUNNING"):  # not cancelled meanwhile
            step.state = "COMPLETED" if succeeded else "FAILED"
        pending = [s for s in cluster.steps if s.state == "PENDING"]
        if pending:
            pending[0].state = "RUNNING"
        elif cluster.state == "RUNNING" and not any(s.state == "RUNNING" for s in cluster.steps):
            cluster.state = "WAITING"  # not one the test terminated meanwhile

    def state(self, job: Job) -> str:
        return job.handle[1].state

    def run_id(self, job: Job) -> str:
        return job.handle[0].id


SERVICES = {service.name: service for service in (GlueJobs(), EmrServerlessJobs(), EmrClusters())}


class Worker:
    """The local stand-in for the cluster's driver: `remote_worker.py` in one process."""

    def __init__(self, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = log.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rental_platform_tests.remote_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env={**os.environ, "RENTAL_SPARK_MASTER": "local[1]", **(env or {})},
        )

    def run(self, job: Job, lake_folder: Path) -> bool:
        """Run the job with its S3 lake mapped to `lake_folder`; whether it succeeded."""
        assert self.process.stdin and self.process.stdout
        message = {"argv": job.argv, "env": job.env, "lake": str(lake_folder)}
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["ok"]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self._log_file.close()


class ShippedCodeWorker:
    """Runs a job as its service would, from what `deploy` uploaded: the entry script, the
    archive and the jar fetched from S3 and handed to `spark-submit`, which starts the driver
    JVM first and then the entry script with the archive on its path (as Glue and EMR do), with
    the job's arguments and environment. `python` is the service's own interpreter; a job that
    ships a runtime archive has it unpacked in the driver's working folder, as YARN and EMR
    Serverless do with `spark.archives`, and its environment points Python there. It maps no
    lake, so it plays jobs that touch none: the canary, a job that cannot import its code."""

    def __init__(self, folder: Path, python: str = sys.executable) -> None:
        self.folder, self.python = folder, python
        self.output = ""

    def _fetch(self, uri: str) -> str:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        path = self.folder / Path(key).name
        boto3.client("s3").download_file(bucket, key, str(path))
        return str(path)

    def _unpack(self, runtime: str) -> None:
        uri, _, folder = runtime.partition("#")
        target = self.folder / folder
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(self._fetch(uri)) as archive:
            archive.extractall(target, filter="tar")

    def run(self, job: Job, lake_folder: Path | None) -> bool:
        if job.runtime:
            self._unpack(job.runtime)
        spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
        command = [spark_submit, "--master", "local[1]"]
        command += ["--py-files", self._fetch(job.archive), "--jars", self._fetch(job.jar)]
        env = {**os.environ, "PYSPARK_PYTHON": self.python, **job.env}
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        env.pop("RENTAL_SPARK_MASTER", None)  # a cluster's driver: Spark's master is given
        result = subprocess.run(
            [*command, self._fetch(job.script), *job.argv],
            env=env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.output += result.stdout + result.stderr
        return result.returncode == 0


class RemoteSide(threading.Thread):
    """Plays AWS for one service: each new job runs on the worker, its lake in `lake_folder`
    (with no worker, it runs nothing), and then ends SUCCEEDED, or FAILED if `fail` is set;
    with `hold`, jobs are left running."""

    def __init__(
        self,
        service: str,
        worker: Worker | ShippedCodeWorker | None = None,
        lake_folder: Path | None = None,
        fail: bool = False,
        hold: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.service = SERVICES[service]
        self.worker, self.lake_folder, self.fail, self.hold = worker, lake_folder, fail, hold
        self.jobs: list[Job] = []
        self.stopped = threading.Event()
        self.seen: set[str] = set()
        self.service.new_jobs(self.seen)  # earlier tests' jobs are not this one's to play

    def run(self) -> None:
        while not self.stopped.is_set():
            for job in self.service.new_jobs(self.seen):
                self.jobs.append(job)
                if self.hold:
                    continue
                ok = self.worker.run(job, self.lake_folder) if self.worker else True
                self.service.end(job, ok and not self.fail)
            time.sleep(0.2)

    def __enter__(self) -> RemoteSide:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join()

    def state(self, job: Job) -> str:
        return self.service.state(job)

    def run_id(self, job: Job) -> str:
        """The job's id as the service gives it (the Glue job run's, the cluster's, ...)."""
        return self.service.run_id(job)
