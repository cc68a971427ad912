"""The part of AWS that moto does not play: the jobs themselves.

`RemoteSide` watches moto for each job the platform starts, hands its arguments and environment,
as moto recorded them, to the local worker (`remote_worker.py`, which runs the real entrypoint),
then ends the job the way the test says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rental_platform_tests.aws import backend


@dataclass
class Job:
    """A job the platform started: what the remote program receives, and how to end it."""

    argv: list[str]
    env: dict[str, str]
    handle: Any


class GlueJobs:
    name = "glue"

    def new_jobs(self, seen: set[str]) -> list[Job]:
        jobs = []
        for job in backend("glue").jobs.values():
            for run in job.job_runs:
                if run.job_run_id not in seen:
                    seen.add(run.job_run_id)
                    argv = [item for pair in (run.arguments or {}).items() for item in pair]
                    jobs.append(Job(argv, {}, run))
        return jobs

    def end(self, job: Job, succeeded: bool) -> None:
        job.handle.status = "SUCCEEDED" if succeeded else "FAILED"

    def state(self, job: Job) -> str:
        return job.handle.status


def spark_submit_env(parameters: str) -> dict[str, str]:
    """The driver environment `--conf spark.emr-serverless.driverEnv.NAME=value` sets."""
    prefix, env = "spark.emr-serverless.driverEnv.", {}
    for word in parameters.split():
        if word.startswith(prefix):
            name, _, value = word.removeprefix(prefix).partition("=")
            env[name] = value
    return env


class EmrServerlessJobs:
    name = "emr_serverless"

    def new_jobs(self, seen: set[str]) -> list[Job]:
        jobs = []
        for runs in backend("emr-serverless").job_runs.values():
            for run in runs:
                if run.id not in seen:
                    seen.add(run.id)
                    submit = run.job_driver["sparkSubmit"]
                    env = spark_submit_env(submit.get("sparkSubmitParameters", ""))
                    jobs.append(Job(list(submit.get("entryPointArguments", [])), env, run))
        return jobs

    def end(self, job: Job, succeeded: bool) -> None:
        job.handle.state = "SUCCESS" if succeeded else "FAILED"

    def state(self, job: Job) -> str:
        return job.handle.state


class EmrClusters:
    name = "emr"

    def new_jobs(self, seen: set[str]) -> list[Job]:
        jobs = []
        for cluster in list(backend("emr").clusters.values()):
            if cluster.id not in seen and cluster.steps:
                seen.add(cluster.id)
                env = {}
                for configuration in cluster.configurations:
                    if configuration.get("Classification") == "spark-defaults":
                        for name, value in configuration.get("Properties", {}).items():
                            env[name.removeprefix("spark.yarn.appMasterEnv.")] = value
                (step,) = cluster.steps
                # spark-submit [options] <entry script> <its arguments>
                args = step.args
                script = next(i for i, a in enumerate(args) if a.endswith(".py"))
                jobs.append(Job(args[script + 1 :], env, cluster))
        return jobs

    def end(self, job: Job, succeeded: bool) -> None:
        cluster = job.handle
        (step,) = cluster.steps
        step.state = "COMPLETED" if succeeded else "FAILED"
        cluster.terminate()
        if not succeeded:
            cluster.state = "TERMINATED_WITH_ERRORS"

    def state(self, job: Job) -> str:
        return job.handle.state


SERVICES = {service.name: service for service in (GlueJobs(), EmrServerlessJobs(), EmrClusters())}


class Worker:
    """The local stand-in for the cluster's driver: `remote_worker.py` in one process."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._log_file = log.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rental_platform_tests.remote_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env={**os.environ, "RENTAL_SPARK_MASTER": "local[1]"},
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


class RemoteSide(threading.Thread):
    """Plays AWS for one service: each new job runs on the worker, its lake in `lake_folder`
    (with no worker, it runs nothing), and then ends SUCCEEDED, or FAILED if `fail` is set;
    with `hold`, jobs are left running."""

    def __init__(
        self,
        service: str,
        worker: Worker | None = None,
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
