"""`make chaos`: the whole fault matrix of design.md's promises, injected for real, written to
benchmarks/results/chaos.json and chaos.md.

It runs the fault tests (every kill point: RENTAL_CHAOS_FULL=1) under pytest. Each test records
what it measured (rental_platform_tests/chaos.py); whether the fault was survived is the test's
outcome: the previous commit and publication intact while the fault lasted, the recovered lake
and warehouse equal to an undisturbed run's, the failure naming its cause. `make test` runs the
short version (one kill point per layer)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from rental_platform_tests import chaos

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FAULT_TESTS = (
    "rental_platform_tests/test_faults.py",
    "rental_platform_tests/test_one_writer.py",
    "rental_platform_tests/test_lake.py::test_a_bucket_that_refuses_writes_leaves_the_commit_log_as_it_was",
    "rental_platform_tests/test_remote_runners.py::test_a_failed_job_fails_its_assets",
    "rental_platform_tests/test_remote_runners.py::test_a_job_that_reports_nothing_fails_its_assets",
)


class Outcomes:
    """A pytest plugin that keeps each test's outcome (a failed set-up or call wins)."""

    def __init__(self) -> None:
        self.by_test: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.by_test.setdefault(report.nodeid, report.outcome)
            if report.outcome != "passed":
                self.by_test[report.nodeid] = report.outcome


def run_matrix() -> tuple[list[dict], int]:
    """Run the fault tests; return each recorded fault with its outcome, and pytest's code."""
    outcomes = Outcomes()
    with tempfile.TemporaryDirectory(prefix="rental-chaos-") as folder:
        report = Path(folder) / "faults.jsonl"
        os.environ[chaos.REPORT_ENV] = str(report)
        os.environ[chaos.FULL_ENV] = "1"
        code = pytest.main(["-q", "-p", "no:cacheprovider", *FAULT_TESTS], plugins=[outcomes])
        lines = report.read_text().splitlines() if report.exists() else []
    faults = [json.loads(line) for line in lines]
    for fault in faults:
        fault["survived"] = outcomes.by_test.get(fault["test"]) == "passed"
    recorded = {fault["test"] for fault in faults}
    for test, outcome in outcomes.by_test.items():
        if test not in recorded:  # it failed before it could record (or records nothing)
            faults.append(
                {"test": test, "fault": test, "injected": False, "survived": outcome == "passed"}
            )
    return faults, int(code)


def markdown(faults: list[dict]) -> str:
    lines = [
        "# Chaos: the fault matrix",
        "",
        "Written by `make chaos` (benchmarks/chaos.py). Each fault is injected for real; survived",
        "means the test passed: the committed lake and the publication stayed intact and readable",
        "while the fault lasted, the recovered state equals an undisturbed run's, and the failure",
        "named its cause. Rows are counted over the committed lake and the KPI tables (for a",
        "remote job, whose lake is on S3, the committed files are compared). Time to recover is",
        "from the fault to the recovered state; for a remote job, to the run failing cleanly.",
        "",
        "| fault | injected | survived | rows lost | rows duplicated | time to recover (s) |",
        "|---|---|---|---|---|---|",
    ]
    for fault in faults:
        lines.append(
            f"| {fault['fault']} | {_yes(fault['injected'])} | {_yes(fault['survived'])} | "
            f"{fault.get('rows_lost', '-')} | {fault.get('rows_duplicated', '-')} | "
            f"{fault.get('recover_seconds', '-')} |"
        )
    return "\n".join(lines) + "\n"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def main() -> int:
    argparse.ArgumentParser(description=__doc__).parse_args()
    faults, code = run_matrix()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chaos.json").write_text(json.dumps(faults, indent=2) + "\n")
    (RESULTS / "chaos.md").write_text(markdown(faults))
    print(markdown(faults))
    clean = all(
        f["injected"] and f["survived"] and not f.get("rows_lost") and not f.get("rows_duplicated")
        for f in faults
    )
    return 0 if clean and code == 0 and faults else 1


if __name__ == "__main__":
    sys.exit(main())
