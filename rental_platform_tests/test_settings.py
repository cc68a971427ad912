"""Configuration is read once from the environment; a bad value fails at start-up naming the
variable, and a password never appears in a repr, a message or the definitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from rental_platform import local
from rental_platform.cli import main
from rental_platform.definitions import build_definitions
from rental_platform.resources import build_resources
from rental_platform.settings import EmrCluster, GlueJob, S3Location, Settings, SettingsError

pytestmark = pytest.mark.fast


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.mysql.host == "127.0.0.1"
    assert settings.mysql.port == 3306
    assert settings.mysql.database == "rental"
    assert settings.lake_root == str(Path(".rental/lake").resolve())
    assert settings.warehouse.database == str(Path(".rental/warehouse.duckdb").resolve())
    assert settings.partitions_start == date(2025, 1, 1)


def test_urls_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "RENTAL_MYSQL_URL": "mysql://reader:s%40cret@db.internal:3307/market",
            "RENTAL_WAREHOUSE_URL": "duckdb:////srv/warehouse.duckdb",
        }
    )
    assert (settings.mysql.user, settings.mysql.password) == ("reader", "s@cret")
    assert settings.mysql.jdbc_url.startswith("jdbc:mysql://db.internal:3307/market")
    assert settings.warehouse.database == "/srv/warehouse.duckdb"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RENTAL_MYSQL_URL", "postgres://u:topsecret@h/db"),
        ("RENTAL_MYSQL_URL", "mysql://u:topsecret@h:notaport/db"),
        ("RENTAL_MYSQL_URL", "mysql://u:topsecret@h:3306/"),
        ("RENTAL_LAKE_ROOT", "gs://bucket/lake"),
        ("RENTAL_LAKE_ROOT", " "),
        ("RENTAL_WAREHOUSE_URL", "sqlite:///x.db"),
        ("RENTAL_PARTITIONS_START", "2025-13-01"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({variable: value})
    assert str(error.value).startswith(f"{variable}:")
    assert "topsecret" not in str(error.value)


AWS = {
    "RENTAL_LAKE_ROOT": "s3://lake/prefix/",
    "RENTAL_PIPES_S3_PREFIX": "s3://ops/pipes",
    "RENTAL_CODE_S3_PREFIX": "s3://ops/code",
}


@pytest.mark.parametrize(
    ("variable", "environment"),
    [
        ("RENTAL_SPARK_RUNNER", {"RENTAL_SPARK_RUNNER": "databricks"}),
        ("RENTAL_GLUE_JOB_NAME", {**AWS, "RENTAL_SPARK_RUNNER": "glue"}),
        (
            "RENTAL_PIPES_S3_PREFIX",
            {**AWS, "RENTAL_SPARK_RUNNER": "emr", "RENTAL_PIPES_S3_PREFIX": "/tmp"},
        ),
        (
            "RENTAL_CODE_S3_PREFIX",
            {
                "RENTAL_SPARK_RUNNER": "emr",
                "RENTAL_LAKE_ROOT": "s3://l/p",
                "RENTAL_PIPES_S3_PREFIX": "s3://o/p",
            },
        ),
        (
            "RENTAL_EMR_SERVERLESS_ROLE_ARN",
            {
                **AWS,
                "RENTAL_SPARK_RUNNER": "emr_serverless",
                "RENTAL_EMR_SERVERLESS_APPLICATION_ID": "00abc",
            },
        ),
        (
            "RENTAL_EMR_CORE_INSTANCES",
            {**AWS, "RENTAL_SPARK_RUNNER": "emr", "RENTAL_EMR_CORE_INSTANCES": "1.5"},
        ),
        # EMR's auto-termination takes 1 minute to 7 days.
        (
            "RENTAL_EMR_IDLE_MINUTES",
            {**AWS, "RENTAL_SPARK_RUNNER": "emr", "RENTAL_EMR_IDLE_MINUTES": "0"},
        ),
        (
            "RENTAL_EMR_IDLE_MINUTES",
            {**AWS, "RENTAL_SPARK_RUNNER": "emr", "RENTAL_EMR_IDLE_MINUTES": "10081"},
        ),
        # EMR shares a cluster already; a shared job is for Glue and EMR Serverless.
        (
            "RENTAL_SHARED_JOB_IDLE_SECONDS",
            {**AWS, "RENTAL_SPARK_RUNNER": "emr", "RENTAL_SHARED_JOB_IDLE_SECONDS": "60"},
        ),
        (
            "RENTAL_SHARED_JOB_IDLE_SECONDS",
            {
                **AWS,
                "RENTAL_SPARK_RUNNER": "glue",
                "RENTAL_GLUE_JOB_NAME": "step",
                "RENTAL_SHARED_JOB_IDLE_SECONDS": "3601",
            },
        ),
        # Spark on AWS cannot see this machine's folders.
        (
            "RENTAL_LAKE_ROOT",
            {**AWS, "RENTAL_SPARK_RUNNER": "emr", "RENTAL_LAKE_ROOT": "/data/lake"},
        ),
        # Local Spark reads s3:// only with the hadoop-aws jars.
        ("RENTAL_SPARK_CONF", {"RENTAL_LAKE_ROOT": "s3://lake/prefix"}),
        ("RENTAL_SPARK_CONF", {"RENTAL_SPARK_CONF": "spark.driver.memory"}),
        ("RENTAL_LOCAL_OFF", {"RENTAL_LOCAL_OFF": "class_archive, jit"}),
    ],
)
def test_a_bad_runner_setting_names_its_variable(variable: str, environment: dict) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env(environment)
    assert str(error.value).startswith(f"{variable}:")


def test_parts_of_the_local_machinery_are_switched_off_by_name() -> None:
    runner = Settings.from_env({"RENTAL_LOCAL_OFF": " file_system,quick_compiler , "}).runner
    assert runner.local_off == {local.FILE_SYSTEM, local.QUICK_COMPILER}
    assert Settings.from_env({}).runner.local_off == frozenset()
    assert build_resources(replace(Settings.from_env({}), runner=runner))["spark"].local_off == [
        local.FILE_SYSTEM,
        local.QUICK_COMPILER,
    ]


def test_remote_runners_are_configured_from_the_environment() -> None:
    glue = Settings.from_env(
        {
            **AWS,
            "RENTAL_SPARK_RUNNER": "glue",
            "RENTAL_GLUE_JOB_NAME": "step",
            "RENTAL_GLUE_WORKERS": "10",
            "RENTAL_SHARED_JOB_IDLE_SECONDS": "90",
        }
    )
    assert glue.lake_root == "s3://lake/prefix"
    assert glue.runner.shared_idle_seconds == 90
    assert build_resources(glue)["spark"].shared_idle_seconds == 90
    assert glue.runner.pipes == S3Location("ops", "pipes")
    assert glue.runner.code == S3Location("ops", "code")
    assert glue.runner.glue == GlueJob("step", workers=10)
    emr = Settings.from_env(
        {
            **AWS,
            "RENTAL_SPARK_RUNNER": "emr",
            "RENTAL_EMR_SUBNET_ID": "subnet-1",
            "RENTAL_EMR_LOG_URI": "s3://ops/logs",
            "RENTAL_EMR_IDLE_MINUTES": "45",
        }
    )
    assert emr.runner.emr == EmrCluster(
        subnet_id="subnet-1", log_uri="s3://ops/logs/", idle_minutes=45
    )
    local_s3 = Settings.from_env(
        {
            "RENTAL_LAKE_ROOT": "s3://lake/prefix",
            "RENTAL_SPARK_CONF": "spark.jars.packages=org.apache.hadoop:hadoop-aws:3.3.4, "
            "spark.hadoop.fs.s3.impl=org.apache.hadoop.fs.s3a.S3AFileSystem",
        }
    )
    assert local_s3.runner.spark_conf["spark.hadoop.fs.s3.impl"].endswith("S3AFileSystem")


def test_password_is_never_shown() -> None:
    settings = Settings.from_env({"RENTAL_MYSQL_URL": "mysql://u:topsecret@h:3306/db"})
    assert "topsecret" not in repr(settings)
    assert "topsecret" not in settings.mysql.redacted_url
    assert "topsecret" not in settings.mysql.jdbc_url


def test_definitions_take_a_password_only_from_the_environment(monkeypatch) -> None:
    url = "mysql://u:topsecret@h:3306/db"
    monkeypatch.setenv("RENTAL_MYSQL_URL", url)
    defs = build_definitions(Settings.from_env({"RENTAL_MYSQL_URL": url}))
    source = defs.resources["source"]
    assert "topsecret" not in repr(source)
    with dg.build_resources({"source": source}) as resources:
        assert resources.source.connection().password == "topsecret"


def test_cli_fails_at_start_up_naming_the_variable(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RENTAL_PARTITIONS_START", "yesterday")
    assert main(["run", "--start", "2025-01-01", "--end", "2025-01-02"]) == 2
    assert "RENTAL_PARTITIONS_START" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://analyst@127.0.0.1:5432/analytics",
            {"kind": "postgresql", "host": "127.0.0.1", "port": 5432, "user": "analyst"},
        ),
        (
            "redshift://etl@wg.123.eu-west-1.redshift-serverless.amazonaws.com/dev?iam=true&workgroup=wg",
            {"kind": "redshift", "port": 5439, "iam": True, "workgroup": "wg"},
        ),
        (
            "redshift://etl@c.abc.eu-west-1.redshift.amazonaws.com:5439/dev?iam=true&cluster_identifier=c",
            {"kind": "redshift", "iam": True, "cluster_identifier": "c", "user": "etl"},
        ),
    ],
)
def test_warehouse_urls(url: str, expected: dict) -> None:
    target = Settings.from_env({"RENTAL_WAREHOUSE_URL": url}).warehouse
    assert {key: getattr(target, key) for key in expected} == expected
    assert Settings.from_env({"RENTAL_WAREHOUSE_URL": target.public_url}).warehouse == target


@pytest.mark.parametrize(
    ("url", "variable"),
    [
        ("redshift://etl@host/dev", "RENTAL_WAREHOUSE_PASSWORD"),
        ("redshift://etl@host/dev?iam=true", "RENTAL_WAREHOUSE_URL"),
        (
            "redshift://etl@host/dev?iam=true&workgroup=a&cluster_identifier=b",
            "RENTAL_WAREHOUSE_URL",
        ),
        ("redshift://etl@host/dev?workgroup=a", "RENTAL_WAREHOUSE_URL"),
        ("postgresql://host/db", "RENTAL_WAREHOUSE_URL"),
        ("postgresql://u@host/db?iam=true", "RENTAL_WAREHOUSE_URL"),
    ],
)
def test_bad_warehouse_urls(url: str, variable: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}:"):
        Settings.from_env({"RENTAL_WAREHOUSE_URL": url})


def test_warehouse_password_stays_out_of_sight(monkeypatch) -> None:
    url = "redshift://etl@host:5439/dev"
    monkeypatch.setenv("RENTAL_WAREHOUSE_PASSWORD", "topsecret")
    settings = Settings.from_env(
        {"RENTAL_WAREHOUSE_URL": url, "RENTAL_WAREHOUSE_PASSWORD": "topsecret"}
    )
    assert settings.warehouse.password == "topsecret"
    assert "topsecret" not in repr(settings) + settings.warehouse.public_url
    warehouse = build_definitions(settings).resources["warehouse"]
    assert "topsecret" not in repr(warehouse)
    with dg.build_resources({"warehouse": warehouse}) as resources:
        assert resources.warehouse.endpoint.password == "topsecret"
        assert "topsecret" not in resources.warehouse.target
