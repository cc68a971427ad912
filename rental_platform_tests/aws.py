"""The AWS control plane on loopback: moto's server (S3, Glue, EMR Serverless, EMR, Secrets
Manager, CloudWatch Logs), and this process's AWS settings pointing at it.

The server is the one `moto_server` starts, run in a thread of the test process so that tests
can do what moto's HTTP API cannot: teach it Glue's UpdateJob, EMR Serverless's
GetDashboardForJobRun and EMR's CancelSteps and GetAutoTerminationPolicy (moto 5.2.1 has none
of them), JobRunQueuingEnabled, an EMR Serverless application's architecture and an EMR
cluster's AutoTerminationPolicy (it drops all three), and move job states (moto's EMR
Serverless jobs are born SUCCESS, its Glue runs end on their own, its EMR clusters never finish
a step; `remote_side.RemoteSide` ends them as the test says).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import requests
from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.core.utils import camelcase_to_underscores, utcnow
from moto.emr.responses import ElasticMapReduceResponse
from moto.emrserverless import urls as emr_serverless_urls
from moto.emrserverless.responses import EMRServerlessResponse
from moto.glue.exceptions import InvalidInputException
from moto.glue.models import FakeJob
from moto.glue.responses import GlueResponse
from moto.moto_api import state_manager
from moto.server import ThreadedMotoServer

ACCOUNT, REGION = "123456789012", "us-east-1"


def backend(service: str):
    """moto's state of one service, in the test account and region."""
    return get_backend(service)[ACCOUNT][REGION]


def _update_job(self: GlueResponse) -> ActionResult:
    """Glue's UpdateJob, as documented: every field the JobUpdate leaves out is reset."""
    job = self.glue_backend.get_job(self._get_param("JobName"))
    update = self._get_param("JobUpdate")
    if "MaxCapacity" in update and "WorkerType" in update:
        raise InvalidInputException("UpdateJob", "do not set MaxCapacity with WorkerType")
    for key in job.as_dict().keys() - {"Name", "CreatedOn", "LastModifiedOn"}:
        attribute = camelcase_to_underscores(key)
        assert hasattr(job, attribute), attribute
        setattr(job, attribute, update.get(key))
    job.last_modified_on = utcnow()
    return ActionResult({"JobName": job.name})


def _create_job(self: GlueResponse) -> ActionResult:
    """Glue's CreateJob, keeping JobRunQueuingEnabled (moto 5.2.1 drops it)."""
    result = CREATE_JOB(self)
    job = self.glue_backend.get_job(self._get_param("Name"))
    job.job_run_queuing_enabled = self._get_param("JobRunQueuingEnabled")
    return result


def _job_as_dict(self: FakeJob) -> dict:
    return {
        **JOB_AS_DICT(self),
        "JobRunQueuingEnabled": getattr(self, "job_run_queuing_enabled", None),
    }


def _create_application(self: EMRServerlessResponse) -> ActionResult:
    """EMR Serverless's CreateApplication, keeping the architecture (moto 5.2.1 drops it;
    X86_64 is AWS's default)."""
    result = CREATE_APPLICATION(self)
    application = self.emrserverless_backend.get_application(result.result["applicationId"])  # type: ignore[index]
    application.architecture = self._get_param("architecture") or "X86_64"
    return result


def _get_dashboard_for_job_run(self: EMRServerlessResponse) -> ActionResult:
    """EMR Serverless's GetDashboardForJobRun: dagster-aws asks for a job run's Spark UI when
    it runs and when it ends. A URL of the shape AWS gives; nothing serves it."""
    job_run = self.emrserverless_backend.get_job_run(
        application_id=self._get_param("applicationId"), job_run_id=self._get_param("jobRunId")
    )
    return ActionResult({"url": f"https://{job_run.id}.dashboard.emr-serverless.example/"})


def _run_job_flow(self: ElasticMapReduceResponse) -> ActionResult:
    """EMR's RunJobFlow, keeping the cluster's AutoTerminationPolicy (moto 5.2.1 drops it)."""
    result = RUN_JOB_FLOW(self)
    cluster = self.backend.describe_cluster(result.result["JobFlowId"])  # type: ignore[index]
    cluster.auto_termination_policy = self._get_param("AutoTerminationPolicy")
    return result


def _get_auto_termination_policy(self: ElasticMapReduceResponse) -> ActionResult:
    """EMR's GetAutoTerminationPolicy: what RunJobFlow was given."""
    cluster = self.backend.describe_cluster(self._get_param("ClusterId"))
    return ActionResult(
        {"AutoTerminationPolicy": getattr(cluster, "auto_termination_policy", None) or {}}
    )


def _cancel_steps(self: ElasticMapReduceResponse) -> ActionResult:
    """EMR's CancelSteps: each pending or running step ends CANCELLED (AWS passes through
    CANCEL_PENDING while the interrupt reaches the step); an ended one cannot be."""
    cluster = self.backend.describe_cluster(self._get_param("ClusterId"))
    steps = {step.id: step for step in cluster.steps}
    infos = []
    for step_id in self._get_param("StepIds", []):
        step = steps[step_id]
        cancelled = step.state in ("PENDING", "RUNNING")
        if cancelled:
            step.state = "CANCELLED"
        infos.append({"StepId": step_id, "Status": "SUBMITTED" if cancelled else "FAILED"})
    return ActionResult({"CancelStepsInfoList": infos})


DASHBOARD_PATH = "{0}/applications/(?P<applicationId>[^/]+)/jobruns/(?P<jobRunId>[^/]+)/dashboard$"
CREATE_JOB, JOB_AS_DICT = GlueResponse.create_job, FakeJob.as_dict
CREATE_APPLICATION = EMRServerlessResponse.create_application
RUN_JOB_FLOW = ElasticMapReduceResponse.run_job_flow


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    """A fresh moto server for the test module; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GlueResponse, "update_job", _update_job, raising=False)
        patch.setattr(GlueResponse, "create_job", _create_job)
        patch.setattr(FakeJob, "as_dict", _job_as_dict)
        patch.setattr(EMRServerlessResponse, "create_application", _create_application)
        patch.setattr(
            EMRServerlessResponse,
            "get_dashboard_for_job_run",
            _get_dashboard_for_job_run,
            raising=False,
        )
        patch.setattr(ElasticMapReduceResponse, "run_job_flow", _run_job_flow)
        for name, action in (
            ("get_auto_termination_policy", _get_auto_termination_policy),
            ("cancel_steps", _cancel_steps),
        ):
            patch.setattr(ElasticMapReduceResponse, name, action, raising=False)
        patch.setitem(emr_serverless_urls.url_paths, DASHBOARD_PATH, EMRServerlessResponse.dispatch)
        # Glue runs stay STARTING, EMR Serverless ones PENDING, until a test ends them.
        patch.setattr("moto.emrserverless.models.JOB_STATUS", "PENDING")
        state_manager.set_transition("glue::job_run", {"progression": "manual", "times": 10**9})
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }.items():
            patch.setenv(key, value)
        try:
            yield endpoint
        finally:
            requests.post(f"{endpoint}/moto-api/reset", timeout=10)  # the next module starts empty
            server.stop()
            state_manager.unset_transition("glue::job_run")
