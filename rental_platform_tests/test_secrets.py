"""Secrets stay secret (design.md, "Least privilege"): the platform runs with a source password
and a warehouse password, once to success and once to a failure at the source, and neither
password appears in any output: stdout and stderr (Spark's log included), Dagster's event log and
run storage, the lake's files, the warehouse's tables, or anything left in the working folder.
(The moto server's recorded job arguments are searched in test_remote_runners.)"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from rental_platform_tests.harness import BIN, Platform

START, END = "2025-01-01", "2025-01-31"


@dataclass
class Runs:
    passwords: tuple[str, ...]
    outputs: dict[str, bytes]
    folders: tuple[Path, ...]
    warehouse_url: str


@pytest.fixture(scope="module")
def runs(platform: Platform, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    platform.load_worked_example()
    # The warehouse as a role with a password of its own, owning the database it publishes to.
    role, password = f"publisher_{os.getpid()}", secrets.token_urlsafe(16)
    database = urlsplit(postgres_url).path.lstrip("/")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(database), sql.Identifier(role)
            )
        )
    parts = urlsplit(postgres_url)
    warehouse_url = urlunsplit(
        parts._replace(netloc=f"{role}:{quote(password, safe='')}@{parts.hostname}:{parts.port}")
    )
    folder = tmp_path_factory.mktemp("secrets")
    home, lake, work = folder / "dagster_home", folder / "lake", folder / "work"
    for made in (home, work):
        made.mkdir()
    env = {
        **platform.cli_env(home),
        "RENTAL_LAKE_ROOT": str(lake),
        "RENTAL_WAREHOUSE_URL": warehouse_url,
    }
    command = [BIN / "rental-platform", "run", "--start", START, "--end", END]
    succeeded = subprocess.run(command, env=env, cwd=work, capture_output=True, timeout=600)
    assert succeeded.returncode == 0, succeeded.stderr.decode()[-3000:]
    # The same password for a database the user may not read: the run fails at the source.
    denied = f"{platform.mysql_url}_elsewhere"
    failed = subprocess.run(
        command, env={**env, "RENTAL_MYSQL_URL": denied}, cwd=work, capture_output=True, timeout=600
    )
    assert failed.returncode != 0
    assert b"Access denied" in failed.stdout + failed.stderr
    try:
        yield Runs(
            passwords=(platform.settings.mysql.password, password),
            outputs={
                "stdout": succeeded.stdout + failed.stdout,
                "stderr": succeeded.stderr + failed.stderr,
            },
            folders=(home, lake, work),
            warehouse_url=warehouse_url,
        )
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(database))
            )
            admin.execute(
                sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role))
            )
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _forms(password: str) -> list[bytes]:
    """The password as it might be written: plain, URL-quoted, and UTF-16 (Java's strings)."""
    return [password.encode(), quote(password, safe="").encode(), password.encode("utf-16-le")]


def test_the_runs_published(runs: Runs) -> None:
    """A test that searches outputs only means something if the runs wrote them."""
    with psycopg.connect(runs.warehouse_url) as warehouse:
        (count,) = warehouse.execute("SELECT COUNT(*) FROM presentation.occupancy_rate").fetchone()
    assert count > 0
    assert runs.outputs["stderr"]
    assert any(path.suffix == ".parquet" for path in runs.folders[1].rglob("*"))


def test_no_password_in_the_console(runs: Runs) -> None:
    for name, output in runs.outputs.items():
        for password in runs.passwords:
            assert not any(form in output for form in _forms(password)), name


def test_no_password_in_any_file(runs: Runs) -> None:
    """Dagster's SQLite event log and run storage, the lake's Parquet and manifests, anything
    Spark left in the working folder: every byte of every file."""
    files = [path for folder in runs.folders for path in folder.rglob("*") if path.is_file()]
    assert any(path.suffix == ".db" for path in files)  # Dagster's storage was searched
    for path in files:
        content = path.read_bytes()
        for password in runs.passwords:
            assert not any(form in content for form in _forms(password)), path


def test_no_password_in_the_warehouse(runs: Runs) -> None:
    """Every row of every table the platform made, the publish log included, as text."""
    with psycopg.connect(runs.warehouse_url) as warehouse:
        relations = warehouse.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert ("presentation", "_publish_log") in relations
        for schema, table in relations:
            rows = warehouse.execute(
                sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchall()
            text = "\n".join(row for (row,) in rows)
            for password in runs.passwords:
                assert password not in text, f"{schema}.{table}"
