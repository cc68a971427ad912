"""The remote Spark runners: `spark/entrypoint.py` run on AWS through Dagster Pipes
(dagster-aws's clients), with the Pipes context and messages on S3 and the code
`rental-platform deploy` uploaded; cancelling the Dagster run stops the remote job (the
clients forward the termination). Glue and EMR Serverless can run a command's launches on
one shared job instead (`shared_job.py`, RENTAL_SHARED_JOB_IDLE_SECONDS).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import boto3
import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster_aws.pipes import (
    PipesEMRServerlessClient,
    PipesGlueClient,
    PipesS3ContextInjector,
    PipesS3MessageReader,
)
from dagster_pipes import PipesMessage, PipesParams

from rental_platform.contract import StepReport, StepRequest
from rental_platform.remote_code import code_package
from rental_platform.remote_runtime import ENVIRONMENT, PYTHON, runtime_archive_name
from rental_platform.resources.shared_job import JobState, ServingService, launch_on_shared_job
from rental_platform.resources.spark import SparkRunner, StepRun
from rental_platform.settings import RunnerSettings, S3Location
from rental_platform.spark.entrypoint import (
    CANARY_EXTRA,
    IDLE_ARGUMENT,
    REQUESTS_EXTRA,
    SECRET_ARN_ARGUMENT,
    SERVE_ARGUMENT,
)


class RemoteSparkRunner(SparkRunner, ABC):
    """A Spark job on AWS running `spark/entrypoint.py` through Dagster Pipes: context and
    messages go through `pipes_bucket`; the code is the archive `deploy` put under
    `code_bucket`, named by the hash of this machine's code."""

    pipes_bucket: str
    pipes_prefix: str = "dagster-pipes"
    code_bucket: str
    code_prefix: str = ""
    # The ARN of the source password in Secrets Manager (an ARN, not the secret).
    mysql_secret_arn: str | None = None
    poll_seconds: float = 5.0
    # Whether the jobs run under the Python runtime `deploy` ships (the service's is too old).
    ships_python: ClassVar[bool] = False

    def run_steps(
        self, context: dg.AssetExecutionContext, requests: Sequence[StepRequest]
    ) -> Iterator[StepRun]:
        """All the steps in one remote job. The reports of the steps that ended come back
        even when a later one failed the job, naming the job like the others; then the job's
        error is raised."""
        kept: list[Any] = []
        # dagster-aws's: the job run's id and console URL, for each materialisation.
        job_metadata: dict[str, Any] = {}
        try:
            extras = {REQUESTS_EXTRA: [r.to_json() for r in requests]}
            invocation = self._run_remote(context, extras, kept, job_metadata, shared=True)
        except Exception as error:
            failure = error
        else:
            failure, job_metadata = None, dict(invocation.metadata)
        reports = StepReport.from_messages(kept)
        for report in reports:
            yield StepRun(report, job_metadata)
        if failure is not None:
            raise failure
        if len(reports) < len(requests) and not (reports and reports[-1].rejected):
            missing = requests[len(reports)].step
            raise RuntimeError(
                f"{self.describe()} ended without reporting its step {missing} through "
                "Dagster Pipes"
            )

    def check_runtime(
        self, context: dg.OpExecutionContext, source: dict[str, str] | None
    ) -> dict[str, str]:
        """Run the canary job (`rental-platform deploy --check`): what the remote runtime is,
        and that it reached `source` (its JDBC URL and user) with the password in its secret."""
        messages: list[Any] = []
        self._run_remote(context, {CANARY_EXTRA: {"source": source}}, messages, {})
        facts = [m[CANARY_EXTRA] for m in messages if isinstance(m, dict) and CANARY_EXTRA in m]
        if not facts:
            raise RuntimeError(f"{self.describe()} ended without reporting through Dagster Pipes")
        return facts[-1]

    def _run_remote(
        self,
        context: dg.OpExecutionContext,
        extras: dict[str, Any],
        kept: list[Any],
        job_metadata: dict[str, Any],
        shared: bool = False,
    ) -> dg.PipesClientCompletedInvocation:
        """Start the job with `extras` in its Pipes context, and wait for it. The job's custom
        messages go into `kept` as they arrive, and what names the job run into
        `job_metadata` once it started, so both are there when the job fails too. `shared`:
        on the shared job, where the runner has one."""
        s3 = boto3.client("s3")
        self._check_deployed(s3)
        # dagster-aws appends a random name to the injector's prefix with no slash between,
        # and its reader writes at the bucket's root: the roles allow only `pipes_prefix/*`.
        injector = PipesS3ContextInjector(
            bucket=self.pipes_bucket, client=s3, key_prefix=f"{self.pipes_prefix.strip('/')}/"
        )
        # The driver's stdout and stderr (Spark's own log included) come back as Pipes messages
        # into the step's logs: on every runner, and before anything of the platform imports.
        reader = PrefixedS3MessageReader(
            prefix=self.pipes_prefix,
            kept=kept,
            bucket=self.pipes_bucket,
            client=s3,
            interval=min(self.poll_seconds, 5.0),
            include_stdio_in_messages=True,
        )
        service = self.shared_job_service() if shared else None
        if service is None:
            return self._invoke(context, injector, reader, extras, job_metadata)
        return launch_on_shared_job(
            service,
            context=context,
            injector=injector,
            reader=reader,
            extras=extras,
            job_metadata=job_metadata,
        )

    def shared_job_service(self) -> ServingService | None:
        """What runs the steps' launches on one shared job (`shared_job.py`); None: a job each."""
        return None

    @abstractmethod
    def _invoke(
        self,
        context: dg.OpExecutionContext,
        injector: PipesS3ContextInjector,
        reader: PipesS3MessageReader,
        extras: dict[str, Any],
        job_metadata: dict[str, Any],
    ) -> dg.PipesClientCompletedInvocation:
        """Start the job through a Pipes client (a `JobRunRecorder`, or on EMR a Pipes session
        of the runner's own), and wait for it; what names the job run goes into
        `job_metadata` as soon as it is known."""

    @abstractmethod
    def describe(self) -> str:
        """The job, for error messages."""

    @property
    def pipes(self) -> S3Location:
        return S3Location(self.pipes_bucket, self.pipes_prefix)

    @property
    def pipes_uri(self) -> str:
        return self.pipes.uri

    @property
    def code(self) -> S3Location:
        return S3Location(self.code_bucket, self.code_prefix)

    @property
    def entry_script_uri(self) -> str:
        return code_package().entry_script_uri(self.code)

    @property
    def archive_uri(self) -> str:
        return code_package().archive_uri(self.code)

    @property
    def driver_jar_uri(self) -> str:
        return code_package().driver_jar_uri(self.code)

    @property
    def runtime_uri(self) -> str:
        """The Python runtime archive, as `spark.archives` names it: unpacked as ENVIRONMENT."""
        return f"{self.code.object_uri(runtime_archive_name())}#{ENVIRONMENT}"

    def shipped_names(self) -> list[str]:
        """What `deploy` put under the code prefix that this runner's jobs run."""
        runtime = [runtime_archive_name()] if self.ships_python else []
        return [code_package().archive_name, *runtime]

    def secret_arguments(self) -> list[str]:
        return [SECRET_ARN_ARGUMENT, self.mysql_secret_arn] if self.mysql_secret_arn else []

    def _check_deployed(self, s3: Any) -> None:
        """A job must not run other code than this process's: it must have been deployed."""
        for name in self.shipped_names():
            try:
                s3.head_object(Bucket=self.code_bucket, Key=self.code.key(name))
            except s3.exceptions.ClientError:
                raise RuntimeError(
                    f"the Spark code of this version is not deployed "
                    f"({self.code.object_uri(name)} not found): run `rental-platform deploy`"
                ) from None


class ServingRunner(RemoteSparkRunner, ABC):
    """A runner whose service can run a shared job (`shared_job.py`): with
    `shared_idle_seconds` above 0, the steps' launches go to it."""

    # RENTAL_SHARED_JOB_IDLE_SECONDS: how long the shared job waits for a launch before it ends.
    shared_idle_seconds: float = 0.0

    def shared_job_service(self) -> ServingService | None:
        return self if self.shared_idle_seconds > 0 else None

    def shared_job_key(self) -> str:
        """What tells one shared job's settings from another's: the job, the code, the secret."""
        settings = (self.describe(), self.pipes_uri, self.archive_uri, self.mysql_secret_arn or "")
        return hashlib.sha256("\n".join(settings).encode()).hexdigest()[:16]

    def serving_arguments(self, inbox: str) -> list[str]:
        """The entry script's arguments of a shared job serving `inbox`."""
        serving = [SERVE_ARGUMENT, inbox, IDLE_ARGUMENT, f"{self.shared_idle_seconds:g}"]
        return [*self.secret_arguments(), *serving]

    @abstractmethod
    def start_serving(self, inbox: str) -> str:
        """Start a shared job serving the tickets under `inbox`; its job run's id."""

    @abstractmethod
    def serving_state(self, run_id: str) -> JobState: ...

    @abstractmethod
    def stop_serving(self, run_id: str) -> None: ...

    @abstractmethod
    def serving_metadata(self, run_id: str) -> dict[str, Any]:
        """What names the job run in each materialisation (as dagster-aws's clients name it)."""


class PrefixedS3MessageReader(PipesS3MessageReader):
    """dagster-aws's S3 message reader, with each run's messages under `prefix/`, and each
    custom message also kept in `kept` (Dagster's client returns them only from a job that
    succeeded; a job's steps that ended before one failed have reports to record)."""

    def __init__(self, *, prefix: str, kept: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix.strip("/")
        self.kept = kept

    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[PipesParams]:
        with super().read_messages(_KeepingCustomMessages(handler, self.kept)) as params:
            yield params

    @contextmanager
    def get_params(self) -> Iterator[PipesParams]:
        with super().get_params() as params:
            yield {**params, "key_prefix": f"{self.prefix}/{params['key_prefix']}"}


class _KeepingCustomMessages:
    """A Pipes message handler that also keeps each custom message's payload in `kept`: it
    wraps Dagster's, as Dagster's own composite reader wraps it (`_ChildMessageHandler`)."""

    def __init__(self, handler: dg.PipesMessageHandler, kept: list[Any]) -> None:
        self._handler, self._kept = handler, kept

    def handle_message(self, message: PipesMessage) -> None:
        self._handler.handle_message(message)
        if message.get("method") == "report_custom_message":
            self._kept.append((message.get("params") or {}).get("payload"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


class JobRunRecorder:
    """For dagster-aws's Pipes clients, which describe the job run (its id, its console URL)
    only in the invocation a successful job returns: the same description, kept in
    `job_metadata` each time the client looks at the job, so that the materialisations of a
    job that then fails name it too."""

    def __init__(self, *, job_metadata: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_metadata = job_metadata

    def _record(self, response: Any) -> None:
        # The client's own description (a private method: test_remote_runners pins it).
        self.job_metadata.update(self._extract_dagster_metadata(response))  # type: ignore[attr-defined]


class PollingGlueClient(JobRunRecorder, PipesGlueClient):
    """dagster-aws's Glue client, looking at the job run every `poll_seconds` (it waits a fixed
    5 s), so short jobs end when they end."""

    # Glue's JobRunState values that never change again (EXPIRED: waited past its timeout).
    TERMINAL_STATES = ("FAILED", "SUCCEEDED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED")

    def __init__(self, *, poll_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poll_seconds = poll_seconds

    def _wait_for_job_run_completion(self, job_name: str, run_id: str) -> Any:
        while True:
            response = self._client.get_job_run(JobName=job_name, RunId=run_id)
            self._record(response)
            if response["JobRun"]["JobRunState"] in self.TERMINAL_STATES:
                return response
            time.sleep(self.poll_seconds)


class GlueSparkRunner(ServingRunner):
    """An AWS Glue job (`rental-platform deploy` creates it and points it at the code)."""

    job_name: str
    worker_type: str = "G.1X"
    number_of_workers: int = 2

    def describe(self) -> str:
        return f"Glue job {self.job_name}"

    def _start_params(self, arguments: list[str]) -> dict[str, Any]:
        """The job run: the code, and `arguments` (name, value, ...) for the entry script."""
        code = {"--extra-py-files": self.archive_uri, "--extra-jars": self.driver_jar_uri}
        return {
            "JobName": self.job_name,
            "Arguments": code | dict(zip(arguments[::2], arguments[1::2], strict=True)),
            "WorkerType": self.worker_type,
            "NumberOfWorkers": self.number_of_workers,
        }

    def _invoke(
        self, context, injector, reader, extras, job_metadata
    ) -> dg.PipesClientCompletedInvocation:
        client = PollingGlueClient(
            context_injector=injector,
            message_reader=reader,
            client=boto3.client("glue"),
            poll_seconds=self.poll_seconds,
            job_metadata=job_metadata,
        )
        return client.run(
            context=context,
            start_job_run_params=self._start_params(self.secret_arguments()),
            extras=extras,
        )

    def start_serving(self, inbox: str) -> str:
        params = self._start_params(self.serving_arguments(inbox))
        return boto3.client("glue").start_job_run(**params)["JobRunId"]

    def serving_state(self, run_id: str) -> JobState:
        run = boto3.client("glue").get_job_run(JobName=self.job_name, RunId=run_id)["JobRun"]
        state = run["JobRunState"]
        ended = state in PollingGlueClient.TERMINAL_STATES
        return JobState(state, ended, state == "SUCCEEDED")

    def stop_serving(self, run_id: str) -> None:
        boto3.client("glue").batch_stop_job_run(JobName=self.job_name, JobRunIds=[run_id])

    def serving_metadata(self, run_id: str) -> dict[str, Any]:
        return {"AWS Glue Job Run ID": run_id, "AWS Glue Job Name": self.job_name}


class RecordingEMRServerlessClient(JobRunRecorder, PipesEMRServerlessClient):
    """dagster-aws's EMR Serverless client, describing a job run that failed too."""

    def _wait_for_completion(self, context, start_response) -> Any:
        try:
            response = super()._wait_for_completion(context, start_response)
        except Exception:
            # The job's own error is the one to raise, whether or not AWS describes the run.
            with contextlib.suppress(BotoCoreError, ClientError):
                self._record(
                    self.client.get_job_run(
                        applicationId=start_response["applicationId"],
                        jobRunId=start_response["jobRunId"],
                    )
                )
            raise
        self._record(response)
        return response


# EMR Serverless's job run states that never change again.
EMR_SERVERLESS_ENDED = ("SUCCESS", "FAILED", "CANCELLED")


class EmrServerlessSparkRunner(ServingRunner):
    """A job run on an EMR Serverless Spark application."""

    application_id: str
    execution_role_arn: str

    ships_python: ClassVar[bool] = True

    def describe(self) -> str:
        return f"EMR Serverless application {self.application_id}"

    def spark_submit_parameters(self) -> str:
        """The code, and the Python it runs under (EMR Serverless 7 runs Python 3.9): the
        runtime archive, which driver and executors unpack in their working folders."""
        conf = {
            "spark.submit.pyFiles": self.archive_uri,
            "spark.jars": self.driver_jar_uri,
            "spark.archives": self.runtime_uri,
            "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": PYTHON,
            "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": PYTHON,
            "spark.executorEnv.PYSPARK_PYTHON": PYTHON,
        }
        return " ".join(f"--conf {name}={value}" for name, value in conf.items())

    def _start_params(self, name: str, arguments: list[str]) -> dict[str, Any]:
        return {
            "applicationId": self.application_id,
            "executionRoleArn": self.execution_role_arn,
            "name": name,
            "jobDriver": {
                "sparkSubmit": {
                    "entryPoint": self.entry_script_uri,
                    "entryPointArguments": arguments,
                    "sparkSubmitParameters": self.spark_submit_parameters(),
                }
            },
        }

    def _invoke(
        self, context, injector, reader, extras, job_metadata
    ) -> dg.PipesClientCompletedInvocation:
        client = RecordingEMRServerlessClient(
            client=boto3.client("emr-serverless"),
            context_injector=injector,
            message_reader=reader,
            poll_interval=self.poll_seconds,
            job_metadata=job_metadata,
        )
        name = f"rental-platform {context.op_execution_context.op_handle}"
        return client.run(
            context=context,
            start_job_run_params=self._start_params(name, self.secret_arguments()),
            extras=extras,
        )

    def start_serving(self, inbox: str) -> str:
        params = self._start_params("rental-platform shared", self.serving_arguments(inbox))
        return boto3.client("emr-serverless").start_job_run(**params)["jobRunId"]

    def serving_state(self, run_id: str) -> JobState:
        run = boto3.client("emr-serverless").get_job_run(
            applicationId=self.application_id, jobRunId=run_id
        )["jobRun"]
        state = run["state"]
        return JobState(state, state in EMR_SERVERLESS_ENDED, state == "SUCCESS")

    def stop_serving(self, run_id: str) -> None:
        boto3.client("emr-serverless").cancel_job_run(
            applicationId=self.application_id, jobRunId=run_id
        )

    def serving_metadata(self, run_id: str) -> dict[str, Any]:
        return {
            "AWS EMR Serverless Application ID": self.application_id,
            "AWS EMR Serverless Job Run ID": run_id,
        }


# The runner's clusters: its name, and a tag naming their settings.
CLUSTER_NAME = "rental-platform"
CLUSTER_TAG = "rental-platform:cluster-settings"
LIVE_CLUSTER_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
ENDED_STEP_STATES = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")


class EmrSparkRunner(RemoteSparkRunner):
    """A multi-asset's Spark steps as one EMR step (the entrypoint runs them in turn) on a
    cluster the night's jobs share: a cluster takes minutes to start and bills them, so a job
    adds its step to a live cluster of the same settings, and starts one only when there is
    none. The cluster stays up between steps and EMR ends it once idle for `idle_minutes`."""

    # Defaults live in settings.EmrCluster; spark_runner passes every field.
    release_label: str
    instance_type: str
    core_instances: int
    service_role: str
    instance_profile: str
    idle_minutes: int
    subnet_id: str | None = None
    log_uri: str | None = None

    ships_python: ClassVar[bool] = True

    def describe(self) -> str:
        return f"EMR cluster ({self.release_label})"

    def spark_submit(self, driver_env: dict[str, str]) -> list[str]:
        """spark-submit with the code, and the Python it runs under (EMR 7 runs Python 3.9):
        the runtime archive, which YARN unpacks in each container's working folder. The
        driver's environment (the Pipes bootstrap) is the step's own: the cluster is shared."""
        submit = ["spark-submit", "--deploy-mode", "cluster", "--py-files", self.archive_uri]
        submit += ["--jars", self.driver_jar_uri, "--archives", self.runtime_uri]
        conf = {
            "spark.yarn.appMasterEnv.PYSPARK_PYTHON": PYTHON,
            "spark.executorEnv.PYSPARK_PYTHON": PYTHON,
        }
        conf |= {f"spark.yarn.appMasterEnv.{name}": value for name, value in driver_env.items()}
        for name, value in conf.items():
            submit += ["--conf", f"{name}={value}"]
        return submit

    def cluster_tag(self) -> dict[str, str]:
        """What marks a cluster started with these settings: the one a later job may reuse."""
        settings = (
            self.release_label,
            self.instance_type,
            str(self.core_instances),
            self.service_role,
            self.instance_profile,
            self.subnet_id or "",
            self.log_uri or "",
        )
        digest = hashlib.sha256("\n".join(settings).encode()).hexdigest()[:16]
        return {"Key": CLUSTER_TAG, "Value": digest}

    def _invoke(
        self, context, injector, reader, extras, job_metadata
    ) -> dg.PipesClientCompletedInvocation:
        emr = boto3.client("emr")
        with dg.open_pipes_session(
            context=context, context_injector=injector, message_reader=reader, extras=extras
        ) as session:
            step = {
                "Name": f"rental-platform {context.run.run_id[:8]} "
                f"{context.op_execution_context.op_handle}",
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {
                    "Jar": "command-runner.jar",
                    "Args": [
                        *self.spark_submit(session.get_bootstrap_env_vars()),
                        self.entry_script_uri,
                        *self.secret_arguments(),
                    ],
                },
            }
            cluster_id, step_id = self._add_step(context, emr, step)
            job_metadata.update(_emr_step_metadata(emr, cluster_id, step_id))
            try:
                self._wait_for_step(context, emr, cluster_id, step_id)
            except dg.DagsterExecutionInterruptedError:
                context.log.warning(f"[pipes] interrupted: cancelling EMR step {step_id}")
                try:
                    emr.cancel_steps(
                        ClusterId=cluster_id,
                        StepIds=[step_id],
                        StepCancellationOption="SEND_INTERRUPT",
                    )
                except (BotoCoreError, ClientError) as error:  # the interrupt is what to raise
                    context.log.error(f"[pipes] EMR step {step_id} not cancelled: {error}")
                raise
            return dg.PipesClientCompletedInvocation(session, metadata=job_metadata)

    def _add_step(
        self, context: dg.OpExecutionContext, emr: Any, step: dict[str, Any]
    ) -> tuple[str, str]:
        """The step on a live cluster of these settings, else on a cluster started for it:
        its cluster's id and its own."""
        cluster_id = self._live_cluster(emr)
        if cluster_id is not None:
            try:
                added = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])
            except ClientError as error:  # it ended between the look and the step
                context.log.info(f"[pipes] EMR cluster {cluster_id} took no step: {error}")
            else:
                context.log.info(f"[pipes] EMR step added to the running cluster {cluster_id}")
                return cluster_id, added["StepIds"][0]
        cluster_id = emr.run_job_flow(**self._cluster_params(), Steps=[step])["JobFlowId"]
        context.log.info(f"[pipes] EMR cluster {cluster_id} started for the step")
        (started,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
        return cluster_id, started["Id"]

    def _live_cluster(self, emr: Any) -> str | None:
        """A cluster that is starting, running or waiting, and bears this runner's tag."""
        tag = self.cluster_tag()
        for page in emr.get_paginator("list_clusters").paginate(ClusterStates=LIVE_CLUSTER_STATES):
            for summary in page["Clusters"]:
                if summary["Name"] != CLUSTER_NAME:
                    continue
                cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
                if tag in cluster.get("Tags", []):
                    return summary["Id"]
        return None

    def _cluster_params(self) -> dict[str, Any]:
        instances: dict[str, Any] = {
            "InstanceGroups": [
                {"InstanceRole": "MASTER", "InstanceType": self.instance_type, "InstanceCount": 1},
                {
                    "InstanceRole": "CORE",
                    "InstanceType": self.instance_type,
                    "InstanceCount": self.core_instances,
                },
            ],
            "KeepJobFlowAliveWhenNoSteps": True,
        }
        if self.subnet_id:
            instances["Ec2SubnetId"] = self.subnet_id
        params: dict[str, Any] = {
            "Name": CLUSTER_NAME,
            "ReleaseLabel": self.release_label,
            "Applications": [{"Name": "Spark"}],
            "Instances": instances,
            "AutoTerminationPolicy": {"IdleTimeout": self.idle_minutes * 60},
            "Tags": [self.cluster_tag()],
            "ServiceRole": self.service_role,
            "JobFlowRole": self.instance_profile,
            "VisibleToAllUsers": True,
        }
        if self.log_uri:
            params["LogUri"] = self.log_uri
        return params

    def _wait_for_step(
        self, context: dg.OpExecutionContext, emr: Any, cluster_id: str, step_id: str
    ) -> None:
        """Poll the step every `poll_seconds` until it ends; fail unless it completed."""
        while True:
            step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
            status = step["Status"]
            if status["State"] in ENDED_STEP_STATES:
                break
            time.sleep(self.poll_seconds)
        if status["State"] != "COMPLETED":
            failure = status.get("FailureDetails", {})
            reason = (
                failure.get("Message")
                or status.get("StateChangeReason", {}).get("Message")
                or "no reason given"
            )
            raise RuntimeError(
                f"EMR step {step_id} on cluster {cluster_id} ended {status['State']}: {reason}"
                + (f" (log: {failure['LogFile']})" if failure.get("LogFile") else "")
            )
        context.log.info(f"[pipes] EMR step {step_id} on cluster {cluster_id} completed")


def _emr_step_metadata(emr: Any, cluster_id: str, step_id: str) -> dict[str, Any]:
    """What names the step in each materialisation: the cluster (as dagster-aws names it) and
    the step, with the console's page of the cluster."""
    region = emr.meta.region_name
    console = f"https://{region}.console.aws.amazon.com/emr/home?region={region}"
    return {
        "AWS EMR Cluster ID": cluster_id,
        "AWS EMR Step ID": step_id,
        "AWS EMR Cluster": dg.MetadataValue.url(f"{console}#/clusterDetails/{cluster_id}"),
    }


def remote_spark_runner(settings: RunnerSettings) -> RemoteSparkRunner:
    assert settings.pipes and settings.code  # parse_runner requires both for remote runners
    common = {
        "pipes_bucket": settings.pipes.bucket,
        "pipes_prefix": settings.pipes.prefix or "dagster-pipes",
        "code_bucket": settings.code.bucket,
        "code_prefix": settings.code.prefix,
        "mysql_secret_arn": settings.mysql_secret_arn,
        "poll_seconds": settings.poll_seconds,
    }
    shared = {"shared_idle_seconds": settings.shared_idle_seconds}
    if settings.glue:
        return GlueSparkRunner(
            job_name=settings.glue.name,
            worker_type=settings.glue.worker_type,
            number_of_workers=settings.glue.workers,
            **common,
            **shared,
        )
    if settings.emr_serverless:
        return EmrServerlessSparkRunner(
            application_id=settings.emr_serverless.application_id,
            execution_role_arn=settings.emr_serverless.role_arn,
            **common,
            **shared,
        )
    assert settings.emr
    cluster = settings.emr
    return EmrSparkRunner(
        release_label=cluster.release_label,
        instance_type=cluster.instance_type,
        core_instances=cluster.core_instances,
        service_role=cluster.service_role,
        instance_profile=cluster.instance_profile,
        subnet_id=cluster.subnet_id,
        log_uri=cluster.log_uri,
        idle_minutes=cluster.idle_minutes,
        **common,
    )
