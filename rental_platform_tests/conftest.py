"""Fixtures on real parts: a MariaDB database per test module, a lake and a DuckDB warehouse in a
temporary folder, a Dagster instance, and the Spark session shared by the whole test session
(the local runner creates it once per process). What the tests share besides fixtures is in
harness.py."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
import psycopg
import pymysql
import pytest
import yaml

from rental_platform.seed.load import SOURCE_TABLES, schema_statements
from rental_platform.settings import Settings, parse_mysql_url
from rental_platform_tests.harness import (
    LOCAL_INSTANCE,
    POSTGRES_SERVER,
    SERVER_URL,
    Platform,
    next_name,
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose source holds the contract's four tables, empty."""
    name = next_name("rental_test")
    server = parse_mysql_url(f"{SERVER_URL}/{name}")
    admin = pymysql.connect(
        host=server.host, port=server.port, user=server.user, password=server.password
    )
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE `{name}`")
    reader, password = next_name("reader"), secrets.token_urlsafe(12)
    with admin.cursor() as cursor:
        cursor.execute(f"DROP USER IF EXISTS '{reader}'@'%'")
        cursor.execute(f"CREATE USER '{reader}'@'%' IDENTIFIED BY '{password}'")
    folder = tmp_path_factory.mktemp(name)
    host = f"{server.host}:{server.port}"
    settings = Settings.from_env(
        {
            "RENTAL_MYSQL_URL": f"mysql://{reader}:{password}@{host}/{name}",
            "RENTAL_LAKE_ROOT": str(folder / "lake"),
            "RENTAL_WAREHOUSE_URL": f"duckdb:///{folder / 'warehouse.duckdb'}",
            "RENTAL_PARTITIONS_START": "2025-01-01",
        }
    )
    owner = replace(server, database=name)
    source = pymysql.connect(**owner.pymysql_kwargs())
    with source.cursor() as cursor:
        for statement in schema_statements().values():
            cursor.execute(statement)
        for table in SOURCE_TABLES:
            cursor.execute(f"GRANT SELECT ON `{name}`.`{table}` TO '{reader}'@'%'")
    try:
        # As in production, the definitions take the source's password from the environment.
        # The instance users run (instance/dagster.yaml: its batching event log, its pools),
        # in a temporary home.
        local = yaml.safe_load(LOCAL_INSTANCE.read_text())
        with (
            pytest.MonkeyPatch.context() as env,
            dg.instance_for_test(overrides=local) as instance,
        ):
            platform = Platform(settings, instance, source, owner)
            env.setenv("RENTAL_MYSQL_URL", platform.mysql_url)
            yield platform
    finally:
        source.close()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cursor.execute(f"DROP USER IF EXISTS '{reader}'@'%'")
        admin.close()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    name = f"rental_test_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES_SERVER}/{name}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
