"""Spark runners: where a step's Spark work happens. The assets cannot tell them apart."""

from __future__ import annotations

from abc import ABC, abstractmethod

import dagster as dg

from rental_platform.spark.session import get_or_create_session
from rental_platform.spark.steps import StepReport, StepRequest, run_step


class SparkRunner(dg.ConfigurableResource, ABC):
    """Runs one Spark step and returns its report."""

    @abstractmethod
    def run(self, request: StepRequest) -> StepReport: ...


class LocalSparkRunner(SparkRunner):
    """An in-process SparkSession, created by the first step of a process and shared by the
    rest (the definitions use the in-process executor), so a run pays the JVM start once."""

    master: str = "local[*]"

    def run(self, request: StepRequest) -> StepReport:
        return run_step(get_or_create_session(self.master), request)
