"""The remote Spark runners: `spark/entrypoint.py` run on AWS through Dagster Pipes
(dagster-aws's clients), with the Pipes context and messages on S3 and the code
`rental-platform deploy` uploaded; cancelling the Dagster run stops the remote job (the
clients forward the termination).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import boto3
import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster_aws.pipes import (
    PipesEMRClient,
    PipesEMRServerlessClient,
    PipesGlueClient,
    PipesS3ContextInjector,
    PipesS3MessageReader,
)
from dagster_pipes import PipesMessage, PipesParams

from rental_platform.contract import StepReport, StepRequest
from rental_platform.remote_code import code_package
from rental_platform.remote_runtime import ENVIRONMENT, PYTHON, runtime_archive_name
from rental_platform.resources.spark import SparkRunner, StepRun
from rental_platform.settings import RunnerSettings, S3Location
from rental_platform.spark.entrypoint import CANARY_EXTRA, REQUESTS_EXTRA, SECRET_ARN_ARGUMENT


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
            invocation = self._run_remote(
                context, {REQUESTS_EXTRA: [r.to_json() for r in requests]}, kept, job_metadata
            )
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
    ) -> dg.PipesClientCompletedInvocation:
        """Start the job with `extras` in its Pipes context, and wait for it. The job's custom
        messages go into `kept` as they arrive, and what names the job run into
        `job_metadata` once it started, so both are there when the job fails too."""
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
        return self._invoke(context, injector, reader, extras, job_metadata)

    @abstractmethod
    def _invoke(
        self,
        context: dg.OpExecutionContext,
        injector: PipesS3ContextInjector,
        reader: PipesS3MessageReader,
        extras: dict[str, Any],
        job_metadata: dict[str, Any],
    ) -> dg.PipesClientCompletedInvocation:
        """Start the job through its Pipes client (a `JobRunRecorder`), and wait for it."""

    @abstractmethod
    def describe(self) -> str:
        """The job, for error messages."""

    @property
    def pipes_uri(self) -> str:
        return S3Location(self.pipes_bucket, self.pipes_prefix).uri

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


class GlueSparkRunner(RemoteSparkRunner):
    """An AWS Glue job (`rental-platform deploy` creates it and points it at the code)."""

    job_name: str
    worker_type: str = "G.1X"
    number_of_workers: int = 2

    def describe(self) -> str:
        return f"Glue job {self.job_name}"

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
        arguments = {"--extra-py-files": self.archive_uri, "--extra-jars": self.driver_jar_uri}
        if self.mysql_secret_arn:
            arguments[SECRET_ARN_ARGUMENT] = self.mysql_secret_arn
        invocation = client.run(
            context=context,
            start_job_run_params={
                "JobName": self.job_name,
                "Arguments": arguments,
                "WorkerType": self.worker_type,
                "NumberOfWorkers": self.number_of_workers,
            },
            extras=extras,
        )
        return invocation


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


class EmrServerlessSparkRunner(RemoteSparkRunner):
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
        invocation = client.run(
            context=context,
            start_job_run_params={
                "applicationId": self.application_id,
                "executionRoleArn": self.execution_role_arn,
                "name": f"rental-platform {context.op_execution_context.op_handle}",
                "jobDriver": {
                    "sparkSubmit": {
                        "entryPoint": self.entry_script_uri,
                        "entryPointArguments": self.secret_arguments(),
                        "sparkSubmitParameters": self.spark_submit_parameters(),
                    }
                },
            },
            extras=extras,
        )
        return invocation


class PollingEMRClient(JobRunRecorder, PipesEMRClient):
    """dagster-aws's EMR client, waiting by polling every `poll_seconds` (its boto3 waiter
    sleeps 30 s between looks) and failing unless the step completed: its own check lets a
    cluster that ended without finishing its step pass. It does not wait for EMR's logs on S3:
    EMR writes them to LogUri minutes after the cluster ends; they stay there to read."""

    def __init__(self, *, poll_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poll_seconds = poll_seconds

    def _add_log_readers(self, context, response) -> None:
        pass

    def _read_application_logs(self, context, session, response) -> None:
        pass

    def _wait_for_completion(self, context, response) -> Any:
        cluster_id = response["JobFlowId"]
        while True:
            cluster = self._client.describe_cluster(ClusterId=cluster_id)
            self._record(cluster)
            status = cluster["Cluster"]["Status"]
            if status["State"] in ("TERMINATED", "TERMINATED_WITH_ERRORS"):
                break
            time.sleep(self.poll_seconds)
        steps = self._client.list_steps(ClusterId=cluster_id)["Steps"]
        unfinished = [s["Name"] for s in steps if s["Status"]["State"] != "COMPLETED"]
        if status["State"] != "TERMINATED" or unfinished:
            reason = status.get("StateChangeReason", {}).get("Message", "")
            raise RuntimeError(
                f"EMR cluster {cluster_id} ended {status['State']} with steps {unfinished} "
                f"not completed: {reason}"
            )
        context.log.info(f"[pipes] EMR cluster {cluster_id} completed its step")
        return cluster


class EmrSparkRunner(RemoteSparkRunner):
    """An EMR cluster started for a multi-asset's Spark steps, running them as its only EMR
    step (the entrypoint runs them in turn), then terminated."""

    # Defaults live in settings.EmrCluster; spark_runner passes every field.
    release_label: str
    instance_type: str
    core_instances: int
    service_role: str
    instance_profile: str
    subnet_id: str | None = None
    log_uri: str | None = None

    ships_python: ClassVar[bool] = True

    def describe(self) -> str:
        return f"EMR cluster ({self.release_label})"

    def spark_submit(self) -> list[str]:
        """spark-submit with the code, and the Python it runs under (EMR 7 runs Python 3.9):
        the runtime archive, which YARN unpacks in each container's working folder."""
        submit = ["spark-submit", "--deploy-mode", "cluster", "--py-files", self.archive_uri]
        submit += ["--jars", self.driver_jar_uri, "--archives", self.runtime_uri]
        for name in ("spark.yarn.appMasterEnv.PYSPARK_PYTHON", "spark.executorEnv.PYSPARK_PYTHON"):
            submit += ["--conf", f"{name}={PYTHON}"]
        return submit

    def _invoke(
        self, context, injector, reader, extras, job_metadata
    ) -> dg.PipesClientCompletedInvocation:
        client = PollingEMRClient(
            client=boto3.client("emr"),
            context_injector=injector,
            message_reader=reader,
            poll_seconds=self.poll_seconds,
            job_metadata=job_metadata,
        )
        instances: dict[str, Any] = {
            "InstanceGroups": [
                {"InstanceRole": "MASTER", "InstanceType": self.instance_type, "InstanceCount": 1},
                {
                    "InstanceRole": "CORE",
                    "InstanceType": self.instance_type,
                    "InstanceCount": self.core_instances,
                },
            ],
            "KeepJobFlowAliveWhenNoSteps": False,
        }
        if self.subnet_id:
            instances["Ec2SubnetId"] = self.subnet_id
        params: dict[str, Any] = {
            "Name": f"rental-platform {context.op_execution_context.op_handle}",
            "ReleaseLabel": self.release_label,
            "Applications": [{"Name": "Spark"}],
            "Instances": instances,
            "Steps": [
                {
                    "Name": str(context.op_execution_context.op_handle),
                    "ActionOnFailure": "TERMINATE_CLUSTER",
                    "HadoopJarStep": {
                        "Jar": "command-runner.jar",
                        "Args": [
                            *self.spark_submit(),
                            self.entry_script_uri,
                            *self.secret_arguments(),
                        ],
                    },
                }
            ],
            "ServiceRole": self.service_role,
            "JobFlowRole": self.instance_profile,
            "VisibleToAllUsers": True,
        }
        if self.log_uri:
            params["LogUri"] = self.log_uri
        invocation = client.run(context=context, run_job_flow_params=params, extras=extras)
        return invocation


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
    if settings.glue:
        return GlueSparkRunner(
            job_name=settings.glue.name,
            worker_type=settings.glue.worker_type,
            number_of_workers=settings.glue.workers,
            **common,
        )
    if settings.emr_serverless:
        return EmrServerlessSparkRunner(
            application_id=settings.emr_serverless.application_id,
            execution_role_arn=settings.emr_serverless.role_arn,
            **common,
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
        **common,
    )
