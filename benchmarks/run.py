"""Benchmark of the whole platform on this machine: seed, backfill, the nightly run (change
detection included) over 3 months and 3 years of history after nights of a changing source,
the audit, and row-for-row checks against the DuckDB reference.

    python -m benchmarks.run --scale small --repeat 3      # or: make bench SCALE=large

Every platform run is `rental-platform run`, `nightly` or `audit` in a subprocess with its own
lake, warehouse and DAGSTER_HOME, so a figure is what an operator waits for: Python and Dagster
start-up and the Spark JVM included. Wall times per grain job and per step come from the run's
Dagster instance; memory is the process tree's RSS, sampled every 0.2 s. Timings are medians of
`--repeat` runs (nights), peak memory the highest of them. Results go to
`benchmarks/results/{scale}.json` and `.md`; scratch data to `.rental/bench/{scale}/`; the
source database `rental_bench_{scale}` is dropped at the end. Exits 1 if the platform's KPI
tables differ from the reference's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import dagster as dg
import duckdb
import psutil
import pymysql
import pyspark
from dagster._core.events import DagsterEventType

from rental_platform import tables
from rental_platform.seed import SCALES, SeedScale, seed_source
from rental_platform.seed.changes import NIGHT_SCALES, NightScale, play_night
from rental_platform.settings import MySqlSource, Settings
from rental_platform.spark import layout
from rental_platform.spark.manifest import CommitLog, LocalStore
from rental_platform.tables import Layer

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SAMPLE_SECONDS = 0.2
GIB = 1024**3
# Memory figures are in GB of 10^9 bytes, as the 2 GB target is.
GB = 10**9
# Days of history in the lake before the first night.
HISTORIES = {"3 months": 90, "3 years": 3 * 365}
# How much changes in the source each night, per scale (rental_platform.seed.changes). The
# nightly targets are for `large`: `xlarge` measures the backfill's growth alone.
NIGHTS = {"small": "small", "large": "large"}
RUN_ID = re.compile(r"\brun ([0-9a-f-]{36})\s*$")


# --- measuring one platform run ------------------------------------------------------------


@dataclass
class Memory:
    """Peak RSS of a process tree: of the sum over the tree, and per process name (summed over
    the processes of that name at one sample). RSS counts shared pages once per process, so
    the total is an upper bound.

    A child still running its parent's executable (the JVM forks a helper before exec'ing
    `ps`, `chmod` and the like, and the fork shows the JVM's whole RSS) shares its parent's
    pages: it is not counted again."""

    peak_total: int = 0
    peak_by_name: dict[str, int] = field(default_factory=dict)

    def sample(self, root: psutil.Process) -> None:
        by_name: dict[str, int] = defaultdict(int)
        for process in [root, *root.children(recursive=True)]:
            try:
                if process is root or not _unexeced_fork(process):
                    by_name[process.name()] += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_total = max(self.peak_total, sum(by_name.values()))
        for name, rss in by_name.items():
            self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), rss)


def _unexeced_fork(process: psutil.Process) -> bool:
    parent = process.parent()
    return parent is not None and process.exe() == parent.exe()


@dataclass
class PlatformRun:
    """One `rental-platform run`: its wall time, the Dagster runs it launched, the source rows
    its raw steps read, and its memory."""

    wall: float
    jobs: dict[str, float]
    steps: dict[str, float]
    source_rows: int
    memory: Memory
    # What the change detection cost the source (raw/source_changes), if the run compared.
    detection: dict[str, int] = field(default_factory=dict)
    # How many Dagster runs it launched.
    runs: int = 0


@dataclass(frozen=True)
class Sandbox:
    """A lake, warehouse and Dagster instance of their own."""

    root: Path

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    def fresh(self) -> Sandbox:
        shutil.rmtree(self.root, ignore_errors=True)
        self.dagster_home.mkdir(parents=True)
        shutil.copy(REPO / "instance" / "dagster.yaml", self.dagster_home / "dagster.yaml")
        return self


def mysql_url(source: MySqlSource) -> str:
    password = f":{quote(source.password, safe='')}" if source.password else ""
    user = quote(source.user, safe="")
    return f"mysql://{user}{password}@{source.host}:{source.port}/{source.database}"


def run_platform(
    source: MySqlSource,
    sandbox: Sandbox,
    first_day: date,
    arguments: list[str],
    log: Path,
    env: dict[str, str] | None = None,
) -> PlatformRun:
    """`rental-platform ARGUMENTS` (run, nightly, audit) in a subprocess, its process tree
    sampled until it ends; then its Dagster runs read back from the sandbox's instance. `env`:
    further settings of the platform's."""
    env = (
        os.environ
        | (env or {})
        | {
            "RENTAL_MYSQL_URL": mysql_url(source),
            "RENTAL_LAKE_ROOT": str(sandbox.lake.resolve()),
            "RENTAL_WAREHOUSE_URL": f"duckdb:///{sandbox.warehouse.resolve()}",
            "RENTAL_PARTITIONS_START": first_day.isoformat(),
            "DAGSTER_HOME": str(sandbox.dagster_home.resolve()),
        }
    )
    command = [sys.executable, "-m", "rental_platform.cli", *arguments]
    memory = Memory()
    with log.open("w") as output:
        began = time.perf_counter()
        child = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=output)
        root = psutil.Process(child.pid)
        while child.poll() is None:
            memory.sample(root)
            time.sleep(SAMPLE_SECONDS)
        wall = time.perf_counter() - began
    text = log.read_text()
    if child.returncode != 0:
        raise RuntimeError(f"rental-platform {arguments[0]} failed ({log}):\n{text[-3000:]}")
    run_ids = [m.group(1) for line in text.splitlines() if (m := RUN_ID.search(line))]
    jobs, steps, rows, detection = dagster_runs(sandbox.dagster_home, run_ids)
    return PlatformRun(wall, jobs, steps, rows, memory, detection, len(run_ids))


@contextmanager
def sandbox_instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """The sandbox's Dagster instance: its dagster.yaml places the storage under
    $DAGSTER_HOME, which is set to the sandbox's while it is open."""
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(dagster_home.resolve())
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous


def dagster_runs(
    dagster_home: Path, run_ids: list[str]
) -> tuple[dict[str, float], dict[str, float], int, dict[str, int]]:
    """Per job, the run's wall time (its start and end events); per `job/step`, the step's;
    and the rows the raw assets landed (what was read from the source): a single-run backfill
    records one materialisation per partition, each with its partition's row count. And what
    the change detection cost the source."""
    jobs: dict[str, float] = {}
    detection: dict[str, int] = {}
    steps: dict[str, float] = {}
    rows: dict[tuple[str, ...], int] = {}
    with sandbox_instance(dagster_home) as instance:
        for run_id in run_ids:
            job = instance.get_run_by_id(run_id).job_name
            stats = instance.get_run_stats(run_id)
            # Jobs run more than once (a daily run per stretch of days) add up.
            jobs[job] = jobs.get(job, 0) + stats.end_time - stats.start_time
            for step in instance.get_run_step_stats(run_id):
                key = f"{job}/{step.step_key}"
                steps[key] = steps.get(key, 0) + step.end_time - step.start_time
            for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
                materialization = entry.asset_materialization
                if materialization.asset_key.path == ["raw", "source_changes"]:
                    detection = materialization.metadata["plan"].value.get("cost", {})
                elif materialization.asset_key.path[0] == Layer.RAW:
                    key = (run_id, *materialization.asset_key.path, str(materialization.partition))
                    rows[key] = materialization.metadata["dagster/row_count"].value
    return jobs, steps, sum(rows.values()), detection


# --- aggregating repeats ---------------------------------------------------------------------


def summarise(runs: list[PlatformRun]) -> dict[str, Any]:
    """Medians of the timings over the repeats; the highest peak memory of any of them."""
    return {
        "wall_s": median([r.wall for r in runs]),
        "dagster_runs_s": median([sum(r.jobs.values()) for r in runs]),
        "jobs_s": median_each([r.jobs for r in runs]),
        "steps_s": median_each([r.steps for r in runs]),
        "source_rows": runs[0].source_rows,
        "detection_cost": runs[0].detection,
        "dagster_runs": runs[0].runs,
        "rows_per_s": runs[0].source_rows / median([r.wall for r in runs]),
        "peak_rss_total_bytes": max(r.memory.peak_total for r in runs),
        "peak_rss_by_name_bytes": {
            name: max(r.memory.peak_by_name.get(name, 0) for r in runs)
            for name in sorted({n for r in runs for n in r.memory.peak_by_name})
        },
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_each(maps: list[dict[str, float]]) -> dict[str, float]:
    return {key: median([m[key] for m in maps if key in m]) for key in maps[0]}


# --- the source --------------------------------------------------------------------------------


def bench_source(scale_name: str) -> MySqlSource:
    """The server of RENTAL_MYSQL_URL (or the default) with the benchmark's own database."""
    return replace(Settings.from_env().mysql, database=f"rental_bench_{scale_name}")


def drop_database(source: MySqlSource) -> None:
    server = {key: value for key, value in source.pymysql_kwargs().items() if key != "database"}
    with pymysql.connect(**server) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{source.database}`")


@dataclass
class Seeding:
    wall_s: float
    # Each statement's wall time ("bookings": 189.0); bookings and the browsing views load side
    # by side, so the stages add up to more than the wall time.
    stages_s: dict[str, float]


def seed(source: MySqlSource, scale: SeedScale) -> Seeding:
    """Seed a fresh database; its wall time, and each stage's."""
    drop_database(source)
    stages: dict[str, float] = {}

    def record(line: str) -> None:
        label, seconds = line.rsplit(": ", 1)
        stages[label] = float(seconds.removesuffix("s"))

    began = time.perf_counter()
    seed_source(source.pymysql_kwargs(), scale, log=record)
    return Seeding(time.perf_counter() - began, stages)


def server_version(source: MySqlSource) -> str:
    with pymysql.connect(**source.pymysql_kwargs()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        return str(cursor.fetchone()[0])


# --- history for the nights -------------------------------------------------------------------


def history_scale(scale: SeedScale, days: int) -> SeedScale:
    """A marketplace of `scale`'s listings and daily activity (users, bookings, views per day)
    that has `days` days of history, ending where `scale` ends."""
    share = days / scale.days
    return replace(
        scale,
        users=round(scale.users * share),
        bookings=round(scale.bookings * share),
        views=round(scale.views * share),
        start=scale.end - timedelta(days=days),
        days=days,
    )


@dataclass(frozen=True)
class History:
    """A marketplace with some history, for the nights: a source of its own, seeded with that
    history, and a lake (with warehouse) backfilled from it by the platform."""

    name: str
    scale: SeedScale
    source: MySqlSource
    sandbox: Sandbox
    seeding_s: float
    backfill: PlatformRun

    @property
    def slug(self) -> str:
        return history_slug(self.name)

    @property
    def listing_history(self) -> Path:
        """The reference's listing history of this source, snapshotted night by night."""
        return self.sandbox.root / "reference_listing_history.duckdb"


def history_slug(name: str) -> str:
    return name.replace(" ", "")


def history_source(scale_name: str, name: str) -> MySqlSource:
    return replace(
        bench_source(scale_name), database=f"rental_bench_{scale_name}_{history_slug(name)}"
    )


def build_history(scale_name: str, name: str, days: int, scratch: Path) -> History:
    """Seed `rental_bench_{scale}_{name}` with `days` days of `scale_name`'s activity and
    backfill a lake from it. A source of three years makes every scan of the source three
    times as long as one of a year: the lake's history alone would not show it."""
    scale = history_scale(SCALES[scale_name], days)
    slug = history_slug(name)
    source = history_source(scale_name, name)
    say(f"seeding {name} of history into {source.database}")
    seeding = seed(source, scale)
    last = scale.end - timedelta(days=1)
    say(f"backfill of {name} of history, {scale.start}..{last}")
    sandbox = Sandbox(scratch / f"nightly-{slug}").fresh()
    backfill = run_platform(
        source,
        sandbox,
        scale.start,
        ["run", "--start", scale.start.isoformat(), "--end", last.isoformat()],
        scratch / "logs" / f"history-{slug}.log",
    )
    return History(name, scale, source, sandbox, seeding.wall_s, backfill)


# --- the reference -----------------------------------------------------------------------------


def load_reference() -> ModuleType | None:
    """benchmarks/reference.py, or None while it does not exist (an error inside it is raised)."""
    try:
        from benchmarks import reference
    except ModuleNotFoundError as error:
        if error.name != "benchmarks.reference":
            raise
        return None
    return reference


def run_reference(
    reference: ModuleType, source: MySqlSource, start: date, end: date, database: Path
) -> float:
    """Seconds of the reference's run over [start, end] from a fresh listing history: a
    snapshot stamped `end`, as the platform's run takes one, then the run itself."""
    history = database.with_name(f"{database.stem}.listing_history.duckdb")
    for path in (database, history, history.with_name(f"{history.name}.wal")):
        path.unlink(missing_ok=True)
    began = time.perf_counter()
    reference.snapshot_listings(history, source, end)
    reference.run_reference(source, start, end, database, history)
    return time.perf_counter() - began


def differences(
    reference: ModuleType, platform_warehouse: Path, reference_warehouse: Path
) -> dict[str, list]:
    """Per KPI table, the rows that differ (tables without differences left out)."""
    found = reference.compare(platform_warehouse, reference_warehouse)
    return {table: rows for table, rows in found.items() if rows}


# --- the whole benchmark -------------------------------------------------------------------


def machine(source: MySqlSource) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, flags=re.MULTILINE)
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "python": platform.python_version(),
        "spark": pyspark.__version__,
        "duckdb": duckdb.__version__,
        "dagster": dg.__version__,
        "source_server": server_version(source),
    }


def benchmark(scale_name: str, repeat: int, scratch: Path) -> dict[str, Any]:
    scale = SCALES[scale_name]
    source = bench_source(scale_name)
    last_day = scale.end - timedelta(days=1)
    logs = scratch / "logs"
    logs.mkdir(parents=True)
    try:
        say(f"seeding {scale_name} into {source.database} ({repeat}x)")
        seeding = [seed(source, scale) for _ in range(repeat)]
        results: dict[str, Any] = {
            "scale": scale_name,
            "seed_scale": {**asdict(scale), "start": scale.start.isoformat()},
            "repeat": repeat,
            "machine": machine(source),
            "seeding_s": median([s.wall_s for s in seeding]),
            "seeding_stages_s": seeding[-1].stages_s,
        }
        backfill = Sandbox(scratch / "backfill")
        runs = []
        for attempt in range(repeat):
            say(f"backfill {scale.start}..{last_day} ({attempt + 1}/{repeat})")
            log = logs / f"backfill-{attempt + 1}.log"
            arguments = ["run", "--start", scale.start.isoformat(), "--end", last_day.isoformat()]
            runs.append(run_platform(source, backfill.fresh(), scale.start, arguments, log))
        results["backfill"] = summarise(runs) | {"range": [str(scale.start), str(last_day)]}
        results["reference"] = check_reference(
            source, scale.start, last_day, backfill.warehouse, scratch / "reference.duckdb", repeat
        )
        if scale_name in NIGHTS:
            results["nightly"] = nights(
                source, backfill, scratch, scale_name, last_day + timedelta(days=1), repeat
            )
        # Other work on the machine slows every figure: the load says how much there was.
        results["load_average_at_end"] = [round(load, 1) for load in os.getloadavg()]
        return results
    finally:
        drop_database(source)


def check_reference(
    source: MySqlSource, start: date, end: date, warehouse: Path, database: Path, repeat: int
) -> dict[str, Any]:
    """Time the reference over the backfill's range; compare its KPI tables with the
    platform's, row for row."""
    reference = load_reference()
    if reference is None:
        say("REFERENCE SKIPPED: benchmarks/reference.py does not exist yet")
        return {"status": "skipped: benchmarks/reference.py missing"}
    walls = []
    for attempt in range(repeat):
        say(f"reference {start}..{end} ({attempt + 1}/{repeat})")
        walls.append(run_reference(reference, source, start, end, database))
    differing = differences(reference, warehouse, database)
    return {
        "status": "differs" if differing else "equal",
        "wall_s": median(walls),
        # A few rows per table are enough to start looking; the count says how many.
        "differences": {
            table: {"rows": len(rows), "first": [str(row) for row in rows[:10]]}
            for table, rows in differing.items()
        },
    }


def nights(
    source: MySqlSource,
    backfill: Sandbox,
    scratch: Path,
    scale_name: str,
    day: date,
    repeat: int,
) -> dict[str, Any]:
    """`repeat` nights from `day` on, over a marketplace with 3 months and one with 3 years of
    history (`build_history`), each with its own source and lake. Each night plays the same
    changes (one seed) on every source, the backfill's included, then runs `rental-platform
    nightly --as-of` on each history's lake. Afterwards, each history's KPI tables are compared
    with the reference's full recompute of its source, and the audit is timed on the
    backfill's lake (its year of days; its comparison is a query over every day of the
    source)."""
    reference = load_reference()
    night_scale = NIGHT_SCALES[NIGHTS[scale_name]]
    try:
        histories = [
            build_history(scale_name, name, days, scratch) for name, days in HISTORIES.items()
        ]
        return _play_nights(
            reference, source, backfill, histories, scratch, night_scale, day, repeat
        )
    finally:
        for name in HISTORIES:
            drop_database(history_source(scale_name, name))


def _play_nights(
    reference: ModuleType | None,
    source: MySqlSource,
    backfill: Sandbox,
    histories: list[History],
    scratch: Path,
    night_scale: NightScale,
    day: date,
    repeat: int,
) -> dict[str, Any]:
    if reference is not None:
        for history in histories:
            reference.snapshot_listings(
                history.listing_history, history.source, day - timedelta(days=1)
            )
    runs: dict[str, list[PlatformRun]] = {history.name: [] for history in histories}
    played = []
    for n in range(repeat):
        night = day + timedelta(days=n)
        say(f"night {night}: the sources change")
        for changed in (source, *(history.source for history in histories)):
            with pymysql.connect(**changed.pymysql_kwargs()) as connection:
                counts = play_night(connection, night, seed=7, scale=night_scale).counts()
            if changed is source:
                played.append(counts)
        for history in histories:
            if reference is not None:
                reference.snapshot_listings(history.listing_history, history.source, night)
            say(f"nightly {night} over {history.name} of history")
            log = scratch / "logs" / f"nightly-{history.slug}-{night}.log"
            arguments = ["nightly", "--as-of", night.isoformat()]
            runs[history.name].append(
                run_platform(history.source, history.sandbox, history.scale.start, arguments, log)
            )
    last = day + timedelta(days=repeat - 1)
    result: dict[str, Any] = {
        history.name: summarise(runs[history.name])
        | {
            "first_day": str(history.scale.start),
            "source": {
                "bookings": history.scale.bookings,
                "views": history.scale.views,
                "days": history.scale.days,
            },
            "history_seeding_s": history.seeding_s,
            "history_backfill_s": history.backfill.wall,
            "nights": [str(day), str(last)],
        }
        for history in histories
    }
    result["changes_per_night"] = dict(sorted(Counter(played[0]).items()))
    if reference is not None:
        differing: dict[str, list] = {}
        for history in histories:
            first = history.scale.start
            say(f"reference {first}..{last} over {history.name} of history (after the nights)")
            database = scratch / f"reference-nights-{history.slug}.duckdb"
            reference.run_reference(history.source, first, last, database, history.listing_history)
            found = differences(reference, history.sandbox.warehouse, database)
            differing |= {f"{history.name}: {table}": rows for table, rows in found.items()}
        result["reference_status"] = "differs" if differing else "equal"
        result["reference_differences"] = {
            table: {"rows": len(rows), "first": [str(row) for row in rows[:10]]}
            for table, rows in differing.items()
        }
    say(f"audit as of {last} over the backfill's days")
    audit = run_platform(
        source,
        backfill,
        backfill_first(backfill),
        ["audit", "--as-of", last.isoformat()],
        scratch / "logs" / "audit.log",
    )
    result["audit"] = summarise([audit])
    return result


def backfill_first(sandbox: Sandbox) -> date:
    head = CommitLog(LocalStore(str(sandbox.lake))).head()
    return min(
        period
        for key in head.table(tables.RAW_BOOKINGS.id).partitions
        if (period := layout.parse_period_key(key))
    )


# --- targets and report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: a limit on a figure, at one scale or at all."""

    label: str
    limit: float
    unit: str
    only_scale: str | None = None

    def row(self, value: float | None) -> list[str]:
        if value is None:
            return [self.label, f"<= {self.limit:g}{self.unit}", "-", "not measured"]
        met = "met" if value <= self.limit else "NOT MET"
        return [self.label, f"<= {self.limit:g}{self.unit}", f"{value:.2f}{self.unit}", met]


def _nightly(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The nightly runs over 3 months and 3 years of history; none at a scale without nights."""
    return [results["nightly"][name] for name in HISTORIES] if "nightly" in results else []


def _seconds_per_source_row(results: dict[str, Any]) -> float:
    """The backfill's wall time per row the seeded source holds."""
    scale = results["seed_scale"]
    return results["backfill"]["wall_s"] / (scale["listings"] + scale["bookings"] + scale["views"])


def growth_over_large(results: dict[str, Any]) -> float | None:
    """The backfill's time per source row against `large`'s, from `results/large.json` (the
    last `make bench SCALE=large` on this machine), if there is one."""
    large = RESULTS / "large.json"
    if results["scale"] == "large" or not large.is_file():
        return None
    return _seconds_per_source_row(results) / _seconds_per_source_row(json.loads(large.read_text()))


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    backfill = results["backfill"]
    reference = results["reference"].get("wall_s")
    nightly = _nightly(results)
    months, years = (n["wall_s"] for n in nightly) if nightly else (None, None)
    peaks = [backfill, *nightly, *([results["nightly"]["audit"]] if nightly else [])]
    scale = results["scale"]
    peak = max(p["peak_rss_total_bytes"] for p in peaks) / GB
    targets = [
        (
            Target("backfill, platform / reference", 2.0, "x", "large"),
            reference and backfill["wall_s"] / reference,
        ),
        (
            Target("nightly wall, detection included (worse of the two)", 15, " s"),
            nightly and max(months, years),
        ),
        (Target("nightly, 3 years / 3 months", 1.2, "x"), nightly and years / months),
        (Target("peak memory, all processes", 3.0 if scale == "xlarge" else 2.0, " GB"), peak),
        (
            Target("backfill time per source row / large's", 1.3, "x", "xlarge"),
            growth_over_large(results),
        ),
        (Target("seeding", 60, " s", "large"), results["seeding_s"]),
        (Target("seeding", 300, " s", "xlarge"), results["seeding_s"]),
    ]
    # Another scale's targets are left out; a scale without nights shows theirs unmeasured.
    return [
        target.row(value or None) for target, value in targets if target.only_scale in (None, scale)
    ]


def breakdown_rows(results: dict[str, Any]) -> list[list[str]]:
    """Where the time and memory go, per grain job and step, for each platform run."""
    nightly = _nightly(results)
    columns = [results["backfill"], *nightly, *([results["nightly"]["audit"]] if nightly else [])]
    rows = [
        ["`rental-platform run`, wall", *(f"{c['wall_s']:.1f} s" for c in columns)],
        ["  the Dagster runs", *(f"{c['dagster_runs_s']:.1f} s" for c in columns)],
    ]
    for job in columns[0]["jobs_s"]:
        rows.append([f"  job {job}", *(f"{c['jobs_s'].get(job, 0):.1f} s" for c in columns)])
        for step in (s for s in columns[0]["steps_s"] if s.startswith(f"{job}/")):
            rows.append(
                [f"    step {step}", *(f"{c['steps_s'].get(step, 0):.1f} s" for c in columns)]
            )
    rows.append(
        [
            "  outside the runs (start-up, definitions, exit)",
            *(f"{c['wall_s'] - c['dagster_runs_s']:.1f} s" for c in columns),
        ]
    )
    rows.append(["Dagster runs launched", *(str(c["dagster_runs"]) for c in columns)])
    rows.append(["source rows read", *(f"{c['source_rows']:,}" for c in columns)])
    for label, key in (
        ("change detection: source queries", "source_queries"),
        ("change detection: source rows checksummed", "source_rows_checksummed"),
    ):
        rows.append([label, *(f"{c['detection_cost'].get(key, 0):,}" for c in columns)])
    rows.append(["source rows / s (of the wall)", *(f"{c['rows_per_s']:,.0f}" for c in columns)])
    peaks = (f"{c['peak_rss_total_bytes'] / GB:.2f} GB" for c in columns)
    rows.append(["peak RSS, whole process tree", *peaks])
    # Helpers the JVM runs for a moment (`bash`, `chmod`, ...) stay under 10 MB: left out.
    names = sorted(
        {n for c in columns for n, rss in c["peak_rss_by_name_bytes"].items() if rss >= GB / 100}
    )
    for name in names:
        rows.append(
            [
                f"  peak RSS, {name}",
                *(f"{c['peak_rss_by_name_bytes'].get(name, 0) / GB:.2f} GB" for c in columns),
            ]
        )
    return rows


def figure_rows(results: dict[str, Any]) -> list[list[str]]:
    backfill, reference = results["backfill"], results["reference"]
    rows = [
        ["seeding a fresh source", f"{results['seeding_s']:.1f} s"],
        *(
            [f"  seeding: {stage}", f"{seconds:.1f} s"]
            for stage, seconds in results.get("seeding_stages_s", {}).items()
        ),
        ["backfill, platform", f"{backfill['wall_s']:.1f} s"],
    ]
    if "wall_s" in reference:
        rows += [
            ["backfill, reference (DuckDB)", f"{reference['wall_s']:.1f} s"],
            ["backfill, platform / reference", f"{backfill['wall_s'] / reference['wall_s']:.2f}x"],
        ]
    rows.append(["KPI tables equal to the reference's", reference["status"]])
    if (growth := growth_over_large(results)) is not None:
        rows.append(
            ["backfill time per source row / large's (results/large.json)", f"{growth:.2f}x"]
        )
    if "nightly" not in results:
        return rows
    months, years = _nightly(results)
    nightly = results["nightly"]
    for name in HISTORIES:
        history = nightly[name]
        source = history["source"]
        rows += [
            [
                f"{name} of history: its source, seeded",
                f"{source['bookings']:,} bookings, {source['views']:,} views over "
                f"{source['days']} days, {history['history_seeding_s']:.1f} s",
            ],
            [f"{name} of history: its backfill", f"{history['history_backfill_s']:.1f} s"],
        ]
    rows += [
        ["nightly, 3 months of history", f"{months['wall_s']:.1f} s"],
        ["nightly, 3 years of history", f"{years['wall_s']:.1f} s"],
        ["nightly, 3 years / 3 months", f"{years['wall_s'] / months['wall_s']:.2f}x"],
        [
            "after the nights, KPI tables equal to the reference's",
            nightly.get("reference_status", "not checked"),
        ],
        ["audit over the backfill's days", f"{nightly['audit']['wall_s']:.1f} s"],
    ]
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def render(results: dict[str, Any]) -> str:
    m, scale = results["machine"], results["seed_scale"]
    backfill = results["backfill"]
    return "\n\n".join(
        [
            f"# Benchmark: `{results['scale']}`",
            f"{m['cores']} cores, {m['ram_gib']} GiB RAM, {m['cpu']}; Python {m['python']}, "
            f"Spark {m['spark']}, DuckDB {m['duckdb']}, Dagster {m['dagster']}, "
            f"source {m['source_server']}. Load average (1, 5, 15 min) at the end: "
            f"{', '.join(map(str, results['load_average_at_end']))}.",
            f"{scale['listings']:,} listings, {scale['bookings']:,} bookings, "
            f"{scale['views']:,} views over {scale['days']} days; backfill "
            f"{backfill['range'][0]}..{backfill['range'][1]}. Times are medians over "
            f"{results['repeat']} runs, peak memory the highest; GB = 10^9 bytes.",
            markdown_table(["target", "limit", "measured", "met"], target_rows(results)),
            markdown_table(["figure", "value"], figure_rows(results)),
            markdown_table(
                [
                    "where it goes",
                    "backfill",
                    *(
                        (*(f"nightly, {n}" for n in HISTORIES), "audit")
                        if "nightly" in results
                        else ()
                    ),
                ],
                breakdown_rows(results),
            ),
        ]
    )


def write_results(results: dict[str, Any]) -> None:
    """`{scale}.json` and `{scale}.md`, each written beside and renamed into place."""
    RESULTS.mkdir(exist_ok=True)
    for suffix, text in (
        ("json", json.dumps(results, indent=2) + "\n"),
        ("md", render(results) + "\n"),
    ):
        path = RESULTS / f"{results['scale']}.{suffix}"
        staged = path.with_suffix(f".{suffix}.tmp")
        staged.write_text(text)
        staged.replace(path)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=("small", "large", "xlarge"), default="small")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    args = parser.parse_args(argv)
    scratch = REPO / ".rental" / "bench" / args.scale
    shutil.rmtree(scratch, ignore_errors=True)
    results = benchmark(args.scale, max(1, args.repeat), scratch)
    # The logs stay for a look at a run; the lakes and warehouses go.
    for path in scratch.iterdir():
        if path.name != "logs":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    write_results(results)
    print(render(results))
    status = results["reference"]["status"]
    if status == "differs":
        print(
            "\nFAILED: the platform's KPI tables differ from the reference's: "
            + json.dumps(results["reference"]["differences"], indent=2),
            file=sys.stderr,
        )
        return 1
    if status != "equal":
        print(f"\nWARNING: reference check {status}", file=sys.stderr)
    if results.get("nightly", {}).get("reference_status") == "differs":
        print(
            "\nFAILED: after the nights, the platform's KPI tables differ from a full "
            "recompute: " + json.dumps(results["nightly"]["reference_differences"], indent=2),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
