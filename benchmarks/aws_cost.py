"""What a nightly run and a year's backfill cost on AWS, per remote Spark runner.

    python -m benchmarks.aws_cost                                  # benchmarks/results/large.json
    python -m benchmarks.aws_cost --input benchmarks/results/small.json   # aws_cost_small.*

Prices the step times `benchmarks/run.py` measured (`backfill.steps_s`, `nightly[history].steps_s`)
on Glue (and Glue Flex), EMR Serverless and EMR on EC2 at the platform's default sizes
(`rental_platform.settings`), with AWS's on-demand list prices for us-east-1 (`PRICES`). Writes
`aws_cost.md` and `aws_cost.json` beside the input (`aws_cost_{scale}.*` for another scale than
`large`). Four ways of cutting the work into remote
jobs are priced: one job per Spark step (what the platform did before), one per multi-asset (what
it does: a remote runner runs a job's steps in one launch, `assets/layer.py` `launch_groups`),
one per Dagster run, one per command (a whole nightly or backfill).

Assumptions:

- The `job/step` keys of `steps_s` are the local runner's multi-assets, one Spark step each. On a
  remote runner the steps of one `launch_groups` group are one multi-asset, and its StepRequests
  go to one remote launch: one Glue or EMR Serverless job run, or one EMR step on the cluster a
  command's launches share (`resources/remote_spark.py`), whose work is the sum of its steps'.
  A job run more than once in a command adds up its steps' times (`benchmarks.run.dagster_runs`):
  the output says whether each job ran once.
- A step's Spark work takes as long remotely as measured on the benchmark's machine; each launch
  adds its runner's start-up (`*_STARTUP_S`, billed) and waits before billing starts (`*_WAIT_S`,
  not billed; counted in the wall-time estimate only). The measured step also includes what
  Dagster does around the Spark work (checks, catalog, publishing KPI tables), which a remote job
  does not bill: a small overestimate.
- A launch bills max(minimum, start-up + work) seconds, rounded up to the second, for everything
  it runs on. Not counted: S3 and CloudWatch, data transfer, the EBS volumes of EMR's instances,
  the Dagster host, retried steps.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.run import HISTORIES, RESULTS, markdown_table
from rental_platform.assets.layer import launch_groups, launch_name
from rental_platform.definitions import spark_steps
from rental_platform.deploy import GLUE_VERSION
from rental_platform.partitions import PlatformPartitions
from rental_platform.settings import EmrCluster, GlueJob, Settings

REGION = "us-east-1"
PRICES_READ_ON = "2026-12-02"
NIGHTS_PER_YEAR = 365


@dataclass(frozen=True)
class Prices:
    """AWS on-demand list prices in USD, us-east-1, and the billing rules they go with; read on
    PRICES_READ_ON. AWS's pricing pages render their tables in the browser: where the figure was
    read elsewhere, the comment says where."""

    # https://aws.amazon.com/glue/pricing/ : Spark jobs (Glue 2.0 and later, so 4.0 and 5.0), per
    # DPU-hour, billed per second with a 1-minute minimum per job run. Same figure in
    # https://cubeapm.com/?p=32116 and https://awsnegotiations.com/glue-job-cost-optimization.html
    glue_dpu_hour: float = 0.44
    # Same page, Flex execution class (Glue 3.0 and later; spare capacity, start may be later):
    # per DPU-hour, 1-minute minimum as for standard. Figure as quoted in
    # https://cubeapm.com/?p=32116 (34% under standard, https://oneuptime.com/blog/post/
    # 2026-02-12-aws-glue-flex-execution-cost-savings/view).
    glue_flex_dpu_hour: float = 0.29
    glue_minimum_s: float = 60
    # https://aws.amazon.com/emr/pricing/ (EMR Serverless, x86_64, the architecture of the
    # application deploy/rental-platform.yaml creates): per vCPU-hour and per GB-hour of the
    # workers, from the time a worker is ready to run the job until it stops, per second. Figures
    # as quoted in public cost comparisons (GitHub code and docs found by search); ARM64 is lower.
    emr_serverless_vcpu_hour: float = 0.052624
    emr_serverless_gb_hour: float = 0.0057785
    # https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/considerations.html :
    # billed resources include "the minimum usage of 1 minute per worker" and the storage above
    # 20 GB per worker; https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/
    # app-behavior.html : "you only pay for storage over 20 GB per worker".
    emr_serverless_minimum_s: float = 60
    emr_serverless_free_disk_gb: float = 20
    # https://aws.amazon.com/ec2/pricing/on-demand/ (Linux, m5.xlarge) and
    # https://aws.amazon.com/emr/pricing/ (EMR price per instance-hour on top of EC2's); the
    # pages render by script: figures as in https://gist.github.com/turtlemonvh/
    # 89ceb82d80bfee10c19db33f45f8a7b4 (m5.xlarge $0.192) and GitHub code listing EMR surcharges
    # for us-east-1 (m5.xlarge $0.048).
    ec2_instance_hour: Mapping[str, float] = field(default_factory=lambda: {"m5.xlarge": 0.192})
    emr_instance_hour: Mapping[str, float] = field(default_factory=lambda: {"m5.xlarge": 0.048})
    # EMR FAQ (https://aws.amazon.com/emr/faqs/, as quoted in https://brainscape.com/flashcards/
    # amazon-emr-billing-13222488/packs/21349959): "per-second ... (with a one-minute minimum),
    # from the time cluster is requested until it is terminated"; EC2 Linux is per second with a
    # 60-second minimum too.
    emr_minimum_s: float = 60


PRICES = Prices()

# Glue DPUs per worker: https://docs.aws.amazon.com/glue/latest/dg/worker-types.html (read
# 2026-12-02): G.1X is 1 DPU (4 vCPU, 16 GB), G.2X 2, G.4X 4, G.8X 8.
GLUE_DPU_PER_WORKER: Mapping[str, float] = {"G.1X": 1, "G.2X": 2, "G.4X": 4, "G.8X": 8}

# EMR Serverless with no sizes set (the platform sets none: EmrServerlessApp,
# remote_spark.EmrServerlessSparkRunner): Spark's defaults there are 4 vCPU and 14 GB for the
# driver and each executor, 20 GB of disk, dynamic allocation on, starting with 3 executors
# (https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/jobs-spark.html, "Spark job
# properties"; copied in public code as spark.executor.instances=3, initialExecutors=3, 14G, 20G).
# The worker holds the memory plus Spark's 10% overhead (app-behavior.html), 15.4 GB, in whole GB
# (1 GB increments for 4 vCPU): 16 GB. Executors beyond the first 3 (dynamic allocation asks for
# more when tasks wait) are not counted: a lower bound.
EMR_SERVERLESS_WORKER_VCPU = 4
EMR_SERVERLESS_WORKER_GB = 16
EMR_SERVERLESS_WORKER_DISK_GB = 20
EMR_SERVERLESS_WORKERS = 1 + 3  # the driver and the initial executors

# Start-up per launch: billed seconds that are not the step's own work, and unbilled waiting.
# Glue bills a run's ExecutionTime, "the amount of time ... that the job run consumed resources"
# (https://docs.aws.amazon.com/glue/latest/dg/aws-glue-api-jobs-runs.html); the worker wait is
# taken as unbilled. Assumptions: 10 s of billed start (the script's imports, the SparkSession)
# and 20 s of wait (ephemeral Spark "can take up to 1 minute to set up",
# https://docs.aws.amazon.com/glue/latest/dg/development.html). Below 50 s of work the 1-minute
# minimum makes the billed figure irrelevant.
GLUE_STARTUP_S = 10.0
GLUE_WAIT_S = 20.0
# Flex waits for spare capacity, "seconds or several minutes" (oneuptime post above): 2 minutes,
# an assumption.
GLUE_FLEX_WAIT_S = 120.0
# EMR Serverless bills from a worker's being ready: the driver's JVM and SparkSession and the
# unpacking of the Python runtime `deploy` ships (spark.archives) are billed. Assumption: 30 s.
# Workers take "typically 15-30 seconds" to start (https://awsi.click/en/glossary/emrsl/, not AWS):
# 30 s of wait. An application stopped after 15 idle minutes (deploy/rental-platform.yaml) first
# starts again, unbilled, once a night: not counted.
EMR_SERVERLESS_STARTUP_S = 30.0
EMR_SERVERLESS_WAIT_S = 30.0
# EMR on EC2. Instances are billed from the cluster's BOOTSTRAPPING on (docs.aws.amazon.com/
# ElasticMapReduce/latest/DeveloperGuide/ProcessingCycle.html), EMR's fee from the request to
# termination (EMR FAQ above). A cluster takes "~10 minutes to provision" (https://
# www.leadfeeder.com/blog/marketing-analytics/emr-data-processing/). Assumption: 7 minutes billed
# from the instances running to the first step's Spark work (bootstrap, Hadoop and Spark, YARN,
# the first spark-submit) and 1 minute shutting down: 480 s; 60 s of EC2 provisioning before,
# unbilled.
EMR_EC2_STARTUP_S = 480.0
EMR_EC2_WAIT_S = 60.0
# The runner keeps one cluster for the launches of a command (remote_spark.EmrSparkRunner): the
# cluster's start once, then per launch a step (spark-submit in cluster mode: YARN's application
# master, the runtime archive unpacked, the SparkSession; an assumption: 30 s), and at the end
# the idle time before EMR's auto-termination ends it (EmrCluster.idle_minutes), billed.
EMR_EC2_STEP_STARTUP_S = 30.0


@dataclass(frozen=True)
class Runner:
    """A remote runner at the platform's default size, and how one of its launches is billed."""

    name: str
    size: str
    # Everything one launch runs on, together.
    usd_per_second: float
    minimum_s: float
    # Per launch: billed start-up, and the wait before it.
    startup_s: float
    wait_s: float
    # Once per command, for a cluster its launches share: billed start-up (in the wall too),
    # billed idle time after the last launch, and the wait before billing starts.
    shared_startup_s: float = 0.0
    shared_idle_s: float = 0.0
    shared_wait_s: float = 0.0

    def billed_seconds(self, work_s: float) -> int:
        return math.ceil(max(self.minimum_s, self.startup_s + work_s))


def runners(prices: Prices = PRICES) -> list[Runner]:
    """The runners at the defaults of rental_platform.settings."""
    dpus = GLUE_DPU_PER_WORKER[GlueJob.worker_type] * GlueJob.workers
    glue_size = f"{GlueJob.workers} x {GlueJob.worker_type} ({dpus:g} DPU), Glue {GLUE_VERSION}"
    worker_hour = (
        EMR_SERVERLESS_WORKER_VCPU * prices.emr_serverless_vcpu_hour
        + EMR_SERVERLESS_WORKER_GB * prices.emr_serverless_gb_hour
    )
    instances = 1 + EmrCluster.core_instances
    instance_hour = (
        prices.ec2_instance_hour[EmrCluster.instance_type]
        + prices.emr_instance_hour[EmrCluster.instance_type]
    )
    return [
        Runner(
            "Glue",
            glue_size,
            dpus * prices.glue_dpu_hour / 3600,
            prices.glue_minimum_s,
            GLUE_STARTUP_S,
            GLUE_WAIT_S,
        ),
        Runner(
            "Glue Flex",
            glue_size,
            dpus * prices.glue_flex_dpu_hour / 3600,
            prices.glue_minimum_s,
            GLUE_STARTUP_S,
            GLUE_FLEX_WAIT_S,
        ),
        Runner(
            "EMR Serverless",
            f"{EMR_SERVERLESS_WORKERS} workers (driver + 3 executors) x "
            f"{EMR_SERVERLESS_WORKER_VCPU} vCPU, {EMR_SERVERLESS_WORKER_GB} GB, "
            f"{EMR_SERVERLESS_WORKER_DISK_GB} GB disk (free), x86",
            EMR_SERVERLESS_WORKERS * worker_hour / 3600,
            prices.emr_serverless_minimum_s,
            EMR_SERVERLESS_STARTUP_S,
            EMR_SERVERLESS_WAIT_S,
        ),
        Runner(
            "EMR on EC2",
            f"{instances} x {EmrCluster.instance_type} (1 primary + {EmrCluster.core_instances} "
            f"core), {EmrCluster.release_label}, one cluster a command, a step a launch",
            instances * instance_hour / 3600,
            0.0,  # the cluster's minute is far exceeded by its start
            EMR_EC2_STEP_STARTUP_S,
            0.0,
            shared_startup_s=EMR_EC2_STARTUP_S,
            shared_idle_s=EmrCluster.idle_minutes * 60.0,
            shared_wait_s=EMR_EC2_WAIT_S,
        ),
        Runner(
            EMR_PER_LAUNCH,
            f"the same, a cluster a launch (the runner until {EMR_PER_LAUNCH_UNTIL})",
            instances * instance_hour / 3600,
            prices.emr_minimum_s,
            EMR_EC2_STARTUP_S,
            EMR_EC2_WAIT_S,
        ),
    ]


EMR_PER_LAUNCH = "EMR on EC2, a cluster a launch"
EMR_PER_LAUNCH_UNTIL = "2026-12-04"


def remote_launches() -> dict[str, str]:
    """The multi-asset a remote runner runs each step in (by the step's name): its launch."""
    settings = Settings.from_env({})
    steps = spark_steps(PlatformPartitions.starting(settings.partitions_start), 0)
    return {step.name: launch_name(group) for group in launch_groups(steps) for step in group}


REMOTE_LAUNCHES = remote_launches()
# How the work is cut into remote jobs: the launch a `job/step` key's work goes to.
GROUPINGS: dict[str, Callable[[str], str]] = {
    "one job per step": lambda key: key,
    "one job per multi-asset": lambda key: REMOTE_LAUNCHES[key.split("/")[1]],
    "one job per Dagster run": lambda key: key.split("/")[0],
    "one job per command": lambda key: "",
}
TODAY = "one job per multi-asset"


@dataclass(frozen=True)
class Bill:
    """What a workload costs on a runner, cut into remote jobs one way."""

    launches: int
    work_s: float
    billed_s: int
    cost_usd: float
    # The work alone: no start-up, no minimum.
    work_only_usd: float
    # The launches one after another (the steps of a command run in turn), waits included.
    wall_s: float


def launch_work(steps: Mapping[str, float], grouping: Callable[[str], str]) -> list[float]:
    """The Spark work of each launch."""
    work: dict[str, float] = defaultdict(float)
    for key, seconds in steps.items():
        work[grouping(key)] += seconds
    return list(work.values())


def bill(runner: Runner, launches: list[float]) -> Bill:
    shared = math.ceil(runner.shared_startup_s + runner.shared_idle_s)
    billed = shared + sum(runner.billed_seconds(work) for work in launches)
    work = sum(launches)
    return Bill(
        launches=len(launches),
        work_s=work,
        billed_s=billed,
        cost_usd=billed * runner.usd_per_second,
        work_only_usd=work * runner.usd_per_second,
        wall_s=runner.shared_wait_s
        + runner.shared_startup_s
        + sum(runner.wait_s + runner.startup_s + w for w in launches),
    )


@dataclass(frozen=True)
class Workload:
    """A command's remote Spark steps, as measured."""

    name: str
    steps: dict[str, float]
    # Whether each job ran once (one Dagster run per job): then each step key is one launch.
    one_run_per_job: bool


def workloads(results: Mapping[str, Any]) -> list[Workload]:
    sections = {"backfill": results["backfill"]} | {
        f"nightly, {history}": results["nightly"][history] for history in HISTORIES
    }
    return [
        Workload(
            name,
            dict(section["steps_s"]),
            section["dagster_runs"] == len(section["jobs_s"]),
        )
        for name, section in sections.items()
    ]


def price(results: Mapping[str, Any]) -> dict[str, Any]:
    """Every runner, workload and grouping."""
    loads = workloads(results)
    return {
        "region": REGION,
        "prices_read_on": PRICES_READ_ON,
        "scale": results["scale"],
        "machine": results["machine"],
        "prices": asdict(PRICES),
        "runners": [asdict(r) for r in runners()],
        "workloads": {w.name: asdict(w) for w in loads},
        "bills": {
            r.name: {
                w.name: {
                    grouping: asdict(bill(r, launch_work(w.steps, key)))
                    for grouping, key in GROUPINGS.items()
                }
                for w in loads
            }
            for r in runners()
        },
    }


# --- the report ----------------------------------------------------------------------------


def usd(value: float) -> str:
    return f"${value:,.3f}" if value < 10 else f"${value:,.0f}"


def runner_rows(priced: Mapping[str, Any]) -> list[list[str]]:
    nightly = [f"nightly, {h}" for h in HISTORIES]
    rows = []
    for runner in priced["runners"]:
        bills = priced["bills"][runner["name"]]
        night = [bills[n][TODAY] for n in nightly]
        backfill = bills["backfill"][TODAY]
        rows.append(
            [
                runner["name"],
                runner["size"],
                " / ".join(str(b["launches"]) for b in night),
                " / ".join(f"{b['billed_s']:,}" for b in night),
                " / ".join(usd(b["cost_usd"]) for b in night),
                " / ".join(usd(b["cost_usd"] * NIGHTS_PER_YEAR) for b in night),
                " / ".join(f"{b['wall_s'] / 60:.0f} min" for b in night),
                str(backfill["launches"]),
                f"{backfill['billed_s']:,}",
                usd(backfill["cost_usd"]),
            ]
        )
    return rows


def grouping_rows(priced: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for runner in priced["runners"]:
        for workload in priced["workloads"]:
            bills = priced["bills"][runner["name"]][workload]
            cells = [f"{usd(b['cost_usd'])} ({b['launches']})" for b in bills.values()]
            rows.append([runner["name"], workload, *cells, usd(bills[TODAY]["work_only_usd"])])
    return rows


def assumption_rows(priced: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            r["name"],
            f"${r['usd_per_second'] * 3600:.4f}",
            f"{r['minimum_s']:.0f} s",
            f"{r['startup_s']:.0f} s",
            f"{r['wait_s']:.0f} s",
            f"{r['shared_startup_s']:.0f} s + {r['shared_idle_s']:.0f} s idle"
            if r["shared_startup_s"]
            else "-",
        ]
        for r in priced["runners"]
    ]


def findings(priced: Mapping[str, Any]) -> str:
    """A few sentences on where the launches dominate, from the figures (the longer history)."""
    night = f"nightly, {list(HISTORIES)[-1]}"
    jobs = ("Glue", "EMR Serverless")
    bills = {name: b[night] for name, b in priced["bills"].items()}
    today = {name: b[TODAY] for name, b in bills.items()}
    before = {name: bills[name]["one job per step"] for name in jobs}
    ratio = {name: b["cost_usd"] / b["work_only_usd"] for name, b in today.items()}
    saved = {n: 1 - today[n]["cost_usd"] / before[n]["cost_usd"] for n in jobs}
    per_run = {
        n: 1 - bills[n]["one job per Dagster run"]["cost_usd"] / today[n]["cost_usd"] for n in jobs
    }
    per_command = [usd(bills[n]["one job per command"]["cost_usd"]) for n in jobs]
    yearly = [b["cost_usd"] * NIGHTS_PER_YEAR for n, b in today.items() if n != EMR_PER_LAUNCH]
    glue, shared, separate = today["Glue"], today["EMR on EC2"], today[EMR_PER_LAUNCH]
    lead = "Launches still dominate" if min(ratio.values()) >= 2 else "Launches weigh"
    return " ".join(
        [
            f"Running a job's steps in one launch took a nightly ({night.split(', ')[1]} of "
            f"history) from {before['Glue']['launches']} launches to {glue['launches']}: "
            f"{saved['Glue']:.0%} less on Glue, {saved['EMR Serverless']:.0%} on EMR "
            "Serverless.",
            f"{lead}: the nightly bills {glue['billed_s']} s on Glue for {glue['work_s']:.0f} s "
            f"of Spark work, {ratio['Glue']:.0f}x what the work alone would cost, and "
            f"{ratio['EMR Serverless']:.0f}x on EMR Serverless.",
            f"On EMR on EC2 the night's {shared['launches']} launches are steps on one cluster: "
            f"{shared['billed_s']:,} s billed ({ratio['EMR on EC2']:.0f}x the work: the "
            f"cluster's start, about {EMR_EC2_STARTUP_S / 60:.0f} minutes, and "
            f"{EmrCluster.idle_minutes} idle minutes before it ends itself), against "
            f"{separate['billed_s']:,} s with a new cluster per launch "
            f"({ratio[EMR_PER_LAUNCH]:.0f}x), {1 - shared['cost_usd'] / separate['cost_usd']:.0%} "
            "less.",
            "One remote job per Dagster run would take the weekly KPIs' two multi-assets into "
            f"one launch (a further {per_run['Glue']:.0%} on Glue, "
            f"{per_run['EMR Serverless']:.0%} on EMR Serverless); Dagster allows a multi-asset "
            "one partition mapping per upstream asset, and repeat_customer_rate reads four weeks "
            "of bookings where the others read their week. One job per command brings a "
            f"nightly to {per_command[0]} on Glue and {per_command[1]} on EMR Serverless: "
            "RENTAL_SHARED_JOB_IDLE_SECONDS above 0 runs a command's launches on one shared job "
            "(docs/aws.md), which ends with the command (a run the daemon launched leaves it "
            "to end after that many idle seconds, billed).",
            f"In absolute terms a year of nightlies costs {usd(min(yearly))} to "
            f"{usd(max(yearly))} at these sizes: the launches, not the data, set the price.",
        ]
    )


def render(priced: Mapping[str, Any], source: str) -> str:
    m = priced["machine"]
    loads = priced["workloads"]
    steps = loads["backfill"]["steps"]
    once = all(w["one_run_per_job"] for w in loads.values())
    runs_note = (
        "each job ran once per command (one Dagster run per job), so each multi-asset is one launch"
        if once
        else "some job ran more than once in a command: its steps' times add up several launches, "
        "counted here as one each (a lower bound)"
    )
    groupings = list(GROUPINGS)
    return "\n\n".join(
        [
            f"# What the Spark steps cost on AWS (`{priced['scale']}` scale)",
            f"Prices read on {priced['prices_read_on']}: AWS on-demand list prices, "
            f"{priced['region']} (sources in `benchmarks/aws_cost.py`). Step times from "
            f"`{source}` ({m['cores']} cores, {m['cpu']}, Spark {m['spark']}): the backfill of a "
            "year in a single run, one nightly over 3 months and over 3 years of history.",
            f"Launches: {len(steps)} Spark steps in {len({k.split('/')[0] for k in steps})} jobs, "
            f"run by a remote runner in {len(set(REMOTE_LAUNCHES.values()))} multi-assets "
            "(`assets/layer.py` `launch_groups`), each one remote job (a Glue or EMR Serverless "
            "job run, an EMR step on the cluster the command's launches share) running its "
            "steps' StepRequests in turn in one SparkSession: "
            + "; ".join(
                f"{name}: {', '.join(s for s, n in REMOTE_LAUNCHES.items() if n == name)}"
                for name in dict.fromkeys(REMOTE_LAUNCHES.values())
            )
            + f". No step is local. In the measured commands {runs_note}.",
            "## One remote job per multi-asset (the platform today)",
            f"Nightly figures are for {' / '.join(HISTORIES)} of history. Billed seconds: each "
            "launch's "
            "after the minimum, summed (each second bills everything the launch runs on). Wall: "
            "the launches one after another, waits and start-up included.",
            markdown_table(
                [
                    "runner",
                    "size (defaults)",
                    "launches / nightly",
                    "billed s / nightly",
                    "cost / nightly",
                    "365 nightlies",
                    "wall / nightly",
                    "backfill launches",
                    "backfill billed s",
                    "backfill cost",
                ],
                runner_rows(priced),
            ),
            "## How much of it is launches",
            "Cost (launches) if a command's steps ran in one remote job per step (as before), per "
            "multi-asset (today), per Dagster run "
            "(the jobs in `steps_s`, the part before `/`), or per command (one job for the whole "
            "nightly or backfill); and the work alone, with no start-up and no minimum.",
            markdown_table(["runner", "workload", *groupings, "work alone"], grouping_rows(priced)),
            "## Billing per launch",
            "A launch bills max(minimum, start-up + work) seconds at the rate of everything it "
            "runs on; the wait before billing starts only adds wall time. A cluster the launches "
            "of a command share (EMR on EC2) bills its start and its idle time before it ends "
            "itself once per command. Start-up and wait are assumptions (see the constants); "
            "work is the measured step time.",
            markdown_table(
                [
                    "runner",
                    "rate per hour",
                    "minimum",
                    "start-up (billed)",
                    "wait (unbilled)",
                    "once per command (billed)",
                ],
                assumption_rows(priced),
            ),
            findings(priced),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=RESULTS / "large.json")
    args = parser.parse_args(argv)
    results = json.loads(args.input.read_text())
    if "nightly" not in results:
        print(
            f"{args.input} has no nightly figures: run the benchmark at large scale",
            file=sys.stderr,
        )
        return 1
    priced = price(results)
    try:
        source = str(args.input.resolve().relative_to(Path.cwd()))
    except ValueError:
        source = str(args.input)
    text = render(priced, source) + "\n"
    suffix = "" if results["scale"] == "large" else f"_{results['scale']}"
    out = args.input.parent / f"aws_cost{suffix}"
    out.with_suffix(".json").write_text(json.dumps(priced, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
