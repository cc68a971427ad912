"""What the tests share: a platform on real parts (its settings, a Dagster instance, the source
as the application writes it), the repository's paths and servers, and helpers to run the
CLI and Dagster's services as processes. The fixtures that build them are in conftest.py."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import dagster as dg
import duckdb
import psutil
import psycopg
import pymysql
import pytest
import yaml
from pyspark.sql import DataFrame

from rental_platform import tables
from rental_platform.cycle_tags import Cycle
from rental_platform.resources.warehouse import warehouse_for
from rental_platform.runs import RunOutcome, materialize_range, run_cycle
from rental_platform.settings import MySqlSource, Settings
from rental_platform.spark import code_version
from rental_platform.spark.extract import SourceReader
from rental_platform.spark.manifest import LakeState, committed_files
from rental_platform.tables import Table
from rental_platform_tests import worked_example as example

REPO = Path(__file__).resolve().parents[1]
# The local Dagster instance `make` installs in DAGSTER_HOME, and the production one.
LOCAL_INSTANCE = REPO / "instance" / "dagster.yaml"
PRODUCTION_INSTANCE = REPO / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
SERVER_URL = os.environ.get("RENTAL_TEST_MYSQL_SERVER", "mysql://root@127.0.0.1:3306")
POSTGRES_SERVER = os.environ.get(
    "RENTAL_TEST_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432"
)
_names = itertools.count()


@contextmanager
def dagster_postgres_database(name: str) -> Iterator[dict[str, str]]:
    """A fresh database on the PostgreSQL server for a Dagster instance; yields the
    DAGSTER_PG_* settings that reach it (deploy/dagster.yaml reads them)."""
    server = urlsplit(POSTGRES_SERVER)
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "DAGSTER_PG_HOST": server.hostname or "127.0.0.1",
            "DAGSTER_PG_PORT": str(server.port or 5432),
            "DAGSTER_PG_USER": unquote(server.username or "postgres"),
            # Trust auth: set, and empty (the config reads it from the environment regardless).
            "DAGSTER_PG_PASSWORD": unquote(server.password or ""),
            "DAGSTER_PG_DB": name,
        }
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_instance_config(batching: bool) -> dict:
    """A dagster.yaml on the production instance's PostgreSQL settings (DAGSTER_PG_*): its
    storage, or with `batching` off dagster-postgres's own storage configured alike."""
    storage = yaml.safe_load(PRODUCTION_INSTANCE.read_text())["storage"]
    if not batching:
        storage = {"postgres": storage["custom"]["config"]}
    return {"telemetry": {"enabled": False}, "storage": storage}


def next_name(prefix: str) -> str:
    """A name no other test of this run or of a run beside it uses: `prefix_pid_n`."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


@dataclass
class Platform:
    """One isolated platform: its own source database, lake, warehouse and instance. The
    platform reads the source as a user that may only SELECT from the contract's four tables
    (`settings.mysql`); the tests play the application through `admin` (`execute`)."""

    settings: Settings
    instance: dg.DagsterInstance
    source: pymysql.connections.Connection
    admin: MySqlSource

    @property
    def mysql_url(self) -> str:
        """RENTAL_MYSQL_URL of the platform's (read-only) user, password included."""
        mysql = self.settings.mysql
        return (
            f"mysql://{mysql.user}:{quote(mysql.password, safe='')}@{mysql.host}:{mysql.port}/"
            f"{mysql.database}"
        )

    def run(self, start: date, end: date) -> list[RunOutcome]:
        return materialize_range(self.settings, self.instance, start, end)

    def nightly(self, as_of: date) -> list[RunOutcome]:
        cycle = Cycle.nightly(as_of, self.settings.mutable_days, self.settings.partitions_start)
        return run_cycle(self.settings, self.instance, cycle)

    def audit(self, as_of: date) -> list[RunOutcome]:
        return run_cycle(
            self.settings, self.instance, Cycle.audit(as_of, self.settings.partitions_start)
        )

    def warehouse(self, sql: str) -> list[tuple]:
        return warehouse_for(self.settings.warehouse).query(sql)

    def kpis(self) -> dict[str, list[tuple]]:
        """Every KPI table of the warehouse, sorted."""
        return {
            t.name: self.warehouse(
                f'SELECT * FROM presentation."{t.name}" ORDER BY '
                + ", ".join(str(n + 1) for n in range(len(t.columns)))
            )
            for t in tables.tables_of(tables.Layer.PRESENTATION)
        }

    def state(self) -> dict[str, list[tuple]]:
        """What readers see: every KPI table of the warehouse and every committed lake table
        (extraction times aside), sorted: two runs that agree leave equal states."""
        state = {f"warehouse.{name}": rows for name, rows in self.kpis().items()}
        for table in tables.ALL_TABLES:
            columns = ", ".join(f'"{c}"' for c in table.column_names if c != "_extracted_at")
            state[table.id] = self.lake(table, f"SELECT {columns} FROM t ORDER BY ALL")
        return state

    def lake(self, table: Table, sql: str = "SELECT * FROM t") -> list[tuple]:
        """Query every committed partition of a lake table as `t`."""
        paths = committed_files(self.settings.lake_root, table.id)
        if not paths:
            return []
        with duckdb.connect() as connection:
            connection.execute("SET TimeZone = 'UTC'")
            connection.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({paths!r})")
            return connection.execute(sql).fetchall()

    def load_worked_example(self) -> None:
        """The source rows of kpis.md's worked example: its listings and bookings."""
        self.execute("INSERT INTO apartments VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", example.APARTMENTS)
        self.execute(
            "INSERT INTO apartment_attributes (id, cityname, state) VALUES (%s,%s,%s)",
            example.APARTMENT_ATTRIBUTES,
        )
        self.execute("INSERT INTO bookings VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", example.BOOKINGS)

    def cli_env(self, home: Path) -> dict[str, str]:
        """The environment of `rental-platform` in a subprocess on this platform (its source,
        lake and warehouse) with a Dagster instance of its own in `home`, as `make` sets up."""
        shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
        return {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "RENTAL_MYSQL_URL": self.mysql_url,
            "RENTAL_LAKE_ROOT": self.settings.lake_root,
            "RENTAL_WAREHOUSE_URL": self.settings.warehouse.public_url,
            "RENTAL_PARTITIONS_START": self.settings.partitions_start.isoformat(),
        }

    def execute(self, sql: str, rows: list[tuple] | None = None) -> None:
        with self.source.cursor() as cursor:
            if rows is None:
                cursor.execute(sql)
            else:
                cursor.executemany(sql, rows)
        self.source.commit()


def start_cli_run(
    env: dict[str, str], first: date, last: date, output: int = subprocess.DEVNULL
) -> subprocess.Popen:
    """`rental-platform run` of [first, last] in a process group of its own, so that a test can
    kill it whole (its JVM included); stderr goes where stdout does."""
    return subprocess.Popen(
        [BIN / "rental-platform", "run", "--start", str(first), "--end", str(last)],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_services(
    commands: Sequence[Sequence[str | Path]], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[list[subprocess.Popen]]:
    """Long-running processes (dagster-webserver, dagster-daemon, a code server), each in a
    process group of its own, their output in `log`; stopped whole on exit, with any
    descendants in groups of their own (dagster's services ignore SIGTERM from a script)."""
    with log.open("w") as output:
        services = [
            subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for command in commands
        ]
        try:
            yield services
        finally:
            for service in services:
                with contextlib.suppress(psutil.NoSuchProcess):  # a test may have stopped it
                    descendants = psutil.Process(service.pid).children(recursive=True)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(service.pid, signal.SIGKILL)
                    for descendant in descendants:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            descendant.kill()
                service.wait()


def queries_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queries every SourceReader sends from now on (a step makes readers of its own),
    recorded in order while the monkeypatch holds."""
    sent: list[str] = []
    send = SourceReader._sql

    def recording(self: SourceReader, query: str) -> DataFrame:
        sent.append(query)
        return send(self, query)

    monkeypatch.setattr(SourceReader, "_sql", recording)
    return sent


def kpi_digests(state: LakeState) -> set[str | None]:
    """The KPI definitions every committed KPI partition of a lake was computed under."""
    return {
        partition.facts.get(code_version.KPIS)
        for table in tables.tables_of(tables.Layer.PRESENTATION)
        for partition in state.table(table.id).partitions.values()
    }
