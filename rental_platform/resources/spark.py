"""Spark runners: where a step's Spark work happens. The assets cannot tell them apart: every
runner returns the same `StepReport`.

`local` runs the step in this process. `glue`, `emr_serverless` and `emr` run it on AWS
(`remote_spark.py`), imported only when configured: dagster-aws and boto3 take about a second
to import, which every local run would pay before its first step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field

from rental_platform.contract import StepReport, StepRequest
from rental_platform.cycle_tags import extracted_days


@dataclass(frozen=True)
class StepRun:
    """A step as a runner ran it: its report, and where it ran (a remote job's id and console
    URL), which each materialisation of the step carries."""

    report: StepReport
    job_metadata: Mapping[str, Any] = field(default_factory=dict)


class SparkRunner(dg.ConfigurableResource, ABC):
    """Runs Spark steps."""

    @abstractmethod
    def run_steps(
        self, context: dg.AssetExecutionContext, requests: Sequence[StepRequest]
    ) -> Iterator[StepRun]:
        """Run `requests` in order, yielding each step's run (the local runner as each step
        ends, a remote one when its job ends). The caller stops at a report that rejects a
        table (the steps after it read it); a step that fails raises, after the runs of the
        steps before it."""

    def start_session(self, cycle_tags: Mapping[str, str]) -> None:
        """Get ready for a cycle's runs (`cycle_tags`: the cycle's), ahead of their first
        step: nothing, unless the runner has something to start."""


class LocalSparkRunner(SparkRunner):
    """An in-process SparkSession, created by the first step of a process and shared by the
    rest (the definitions use the in-process executor), so a run pays the JVM start once.
    pyspark is imported by the first step, not by the definitions: a deployment whose steps
    run remotely loads them without it."""

    # RENTAL_SPARK_CONF: e.g. the hadoop-aws jars for an S3 lake.
    conf: dict[str, str] = Field(default_factory=dict)
    # RENTAL_LOCAL_OFF: the parts of rental_platform.local switched off.
    local_off: list[str] = Field(default_factory=list)

    def run_steps(
        self, context: dg.AssetExecutionContext, requests: Sequence[StepRequest]
    ) -> Iterator[StepRun]:
        from rental_platform.local.session import local_session
        from rental_platform.spark.steps import run_step

        for request in requests:
            days = session_days(request, context.run.tags)
            session = local_session(self.conf, self.local_off, days)
            yield StepRun(run_step(session, request))

    def start_session(self, cycle_tags: Mapping[str, str]) -> None:
        """Start the session the cycle's runs share, tuned as its first step (a snapshot, with
        no window) would tune it, in the background: the JVM starts while Dagster prepares
        the first run."""
        from rental_platform.local.session import start_in_background

        start_in_background(self.conf, self.local_off, extracted_days(cycle_tags))


def session_days(request: StepRequest, run_tags: Mapping[str, str]) -> int | None:
    """The range a local session started by this step is tuned for (its JVM's compilers): the
    step's window, or, for a step without one (a snapshot), the days its cycle extracts. A
    command's cycle runs in one process, whose session its snapshot step starts and all its
    later steps share; tuned as a snapshot's (short), a long range's steps ran slower
    (benchmarks/results/xlarge.md). A nightly or an audit re-extracts only what changed, which
    the short tuning suits, however many days it compares (large.md)."""
    return request.days if request.days is not None else extracted_days(run_tags)
