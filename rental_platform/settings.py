"""The platform's configuration: read from the environment once, validated, typed.

Every bad value fails here, at start-up, with a message that names the variable, so nothing
half-configured ever reaches a run. Passwords are kept out of every repr and message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/rental"
DEFAULT_LAKE_ROOT = "./.rental/lake"
DEFAULT_WAREHOUSE_URL = "duckdb:///./.rental/warehouse.duckdb"
# Covers the sample data (which starts on 2025-01-01) and the worked example of kpis.md.
DEFAULT_PARTITIONS_START = "2025-01-01"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class MySqlSource:
    """Where the source database is. The password never appears in repr or messages."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)

    @property
    def jdbc_url(self) -> str:
        # jdbc:mysql:// (not jdbc:mariadb://) so Spark quotes identifiers with backticks.
        return f"jdbc:mysql://{self.host}:{self.port}/{self.database}?permitMysqlScheme"

    @property
    def redacted_url(self) -> str:
        secret = ":***" if self.password else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}/{self.database}"

    def pymysql_kwargs(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }


@dataclass(frozen=True)
class WarehouseTarget:
    """Where the KPI tables are published. The password never appears in repr or messages."""

    kind: str  # duckdb, postgresql or redshift
    database: str  # the file's absolute path for DuckDB
    host: str = ""
    port: int = 0
    user: str = ""
    iam: bool = False
    workgroup: str | None = None
    cluster_identifier: str | None = None
    password: str = field(default="", repr=False)

    @property
    def public_url(self) -> str:
        """The URL without any password: safe to show, and enough with the password apart."""
        if self.kind == "duckdb":
            return f"duckdb:///{self.database}"
        options = {"workgroup": self.workgroup, "cluster_identifier": self.cluster_identifier}
        pairs = ["iam=true", *(f"{key}={value}" for key, value in options.items() if value)]
        query = "?" + "&".join(pairs) if self.iam else ""
        user = f"{self.user}@" if self.user else ""
        return f"{self.kind}://{user}{self.host}:{self.port}/{self.database}{query}"


@dataclass(frozen=True)
class RunnerSettings:
    """Where Spark steps run: `local` (in-process) or `glue` (an AWS Glue job, via Pipes)."""

    kind: str = "local"
    glue_job_name: str = ""
    pipes_bucket: str = ""
    pipes_prefix: str = ""
    glue_worker_type: str = "G.1X"
    glue_workers: int = 2
    # An ARN names the secret; it is not the secret.
    mysql_secret_arn: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything the platform needs to know about its environment."""

    mysql: MySqlSource
    lake_root: str
    warehouse: WarehouseTarget
    partitions_start: date
    lookback_days: int = 3
    max_quarantine_share: float = 0.05
    freshness_hours: float = 48.0
    runner: RunnerSettings = field(default_factory=RunnerSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            mysql=parse_mysql_url(env.get("RENTAL_MYSQL_URL", DEFAULT_MYSQL_URL)),
            lake_root=parse_lake_root(env.get("RENTAL_LAKE_ROOT", DEFAULT_LAKE_ROOT)),
            warehouse=parse_warehouse_url(
                env.get("RENTAL_WAREHOUSE_URL", DEFAULT_WAREHOUSE_URL),
                env.get("RENTAL_WAREHOUSE_PASSWORD", ""),
            ),
            partitions_start=parse_date(
                "RENTAL_PARTITIONS_START",
                env.get("RENTAL_PARTITIONS_START", DEFAULT_PARTITIONS_START),
            ),
            lookback_days=int(
                parse_number("RENTAL_LOOKBACK_DAYS", env.get("RENTAL_LOOKBACK_DAYS", "3"), 0, 366)
            ),
            max_quarantine_share=parse_number(
                "RENTAL_MAX_QUARANTINE_SHARE", env.get("RENTAL_MAX_QUARANTINE_SHARE", "0.05"), 0, 1
            ),
            freshness_hours=parse_number(
                "RENTAL_FRESHNESS_HOURS", env.get("RENTAL_FRESHNESS_HOURS", "48"), 1, 24 * 366
            ),
            runner=parse_runner(env),
        )


def parse_mysql_url(url: str) -> MySqlSource:
    """`mysql://user:password@host:port/database`.

    Errors never echo the URL: it may hold a password.
    """
    name = "RENTAL_MYSQL_URL"
    expected = "expected mysql://user[:password]@host[:port]/database"
    parts = urlsplit(url.strip())
    if parts.scheme != "mysql":
        raise SettingsError(f"{name}: scheme must be 'mysql'; {expected}")
    try:
        port = parts.port or 3306
    except ValueError as error:
        raise SettingsError(f"{name}: port is not a number; {expected}") from error
    database = parts.path.lstrip("/")
    if not parts.hostname or not parts.username or not database or "/" in database:
        raise SettingsError(f"{name}: host, user and database are required; {expected}")
    return MySqlSource(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=database,
    )


def parse_lake_root(value: str) -> str:
    """A local folder, made absolute so every process of a run sees the same lake."""
    name = "RENTAL_LAKE_ROOT"
    value = value.strip()
    if not value:
        raise SettingsError(f"{name}: must not be empty")
    if "://" in value and not value.startswith("file://"):
        raise SettingsError(
            f"{name}: only a local folder is supported for now (got scheme {value.split(':')[0]!r})"
        )
    path = Path(value.removeprefix("file://")).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{name}: {path} exists and is not a folder")
    return str(path)


def parse_warehouse_url(url: str, password: str = "") -> WarehouseTarget:
    """`duckdb:///path`, `postgresql://user@host:port/db` or `redshift://user@host:port/db`
    (with `?iam=true` and `workgroup=` or `cluster_identifier=` for IAM authentication).

    A password comes from RENTAL_WAREHOUSE_PASSWORD (or, for PostgreSQL, the URL). Errors never
    echo the URL.
    """
    name = "RENTAL_WAREHOUSE_URL"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "duckdb":
        path = url.removeprefix("duckdb:///")
        if not url.startswith("duckdb:///") or not path:
            raise SettingsError(f"{name}: expected duckdb:///path/to/file.duckdb")
        # duckdb:////abs/file.duckdb is absolute; duckdb:///./file.duckdb is relative to the cwd.
        resolved = Path(path).expanduser().resolve()
        if resolved.is_dir():
            raise SettingsError(f"{name}: {resolved} is a folder, expected a file")
        return WarehouseTarget("duckdb", database=str(resolved))
    if scheme not in ("postgresql", "redshift"):
        raise SettingsError(
            f"{name}: expected duckdb:///path, postgresql://user@host:port/db "
            "or redshift://user@host:port/db"
        )
    parts = urlsplit(url.strip())
    try:
        port = parts.port or (5439 if scheme == "redshift" else 5432)
    except ValueError as error:
        raise SettingsError(f"{name}: port is not a number") from error
    database = parts.path.lstrip("/")
    if not parts.hostname or not database or "/" in database:
        raise SettingsError(f"{name}: host and database are required")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(options) - {"iam", "workgroup", "cluster_identifier"}
    if unknown or (scheme == "postgresql" and options):
        raise SettingsError(f"{name}: unknown options {sorted(unknown or options)}")
    iam = options.get("iam", "false").lower() in ("true", "1", "yes")
    workgroup, cluster = options.get("workgroup"), options.get("cluster_identifier")
    if iam and bool(workgroup) == bool(cluster):
        raise SettingsError(
            f"{name}: with iam=true give exactly one of workgroup= (Redshift Serverless) "
            "or cluster_identifier= (a provisioned cluster)"
        )
    if (workgroup or cluster) and not iam:
        raise SettingsError(f"{name}: workgroup= and cluster_identifier= go with iam=true")
    user = unquote(parts.username or "")
    if not user and not (iam and workgroup):
        raise SettingsError(f"{name}: a user is required")
    secret = password or unquote(parts.password or "")
    if scheme == "redshift" and not iam and not secret:
        raise SettingsError(
            f"RENTAL_WAREHOUSE_PASSWORD: Redshift needs a password, or iam=true in {name}"
        )
    return WarehouseTarget(
        scheme,
        host=parts.hostname,
        port=port,
        database=database,
        user=user,
        iam=iam,
        workgroup=workgroup,
        cluster_identifier=cluster,
        password=secret,
    )


def parse_date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError as error:
        raise SettingsError(f"{name}: expected a date YYYY-MM-DD, got {value!r}") from error


def parse_number(name: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value.strip())
    except ValueError as error:
        raise SettingsError(f"{name}: expected a number, got {value!r}") from error
    if not low <= number <= high:
        raise SettingsError(f"{name}: must be between {low:g} and {high:g}, got {number:g}")
    if name == "RENTAL_LOOKBACK_DAYS" and not number.is_integer():
        raise SettingsError(f"{name}: must be a whole number of days, got {number:g}")
    return number


RUNNERS = ("local", "glue")


def parse_runner(env: Mapping[str, str]) -> RunnerSettings:
    kind = env.get("RENTAL_SPARK_RUNNER", "local").strip()
    if kind not in RUNNERS:
        raise SettingsError(
            f"RENTAL_SPARK_RUNNER: expected one of {', '.join(RUNNERS)}, got {kind!r} "
            "(emr_serverless and emr are not built yet)"
        )
    if kind == "local":
        return RunnerSettings()
    job = env.get("RENTAL_GLUE_JOB_NAME", "").strip()
    if not job:
        raise SettingsError("RENTAL_GLUE_JOB_NAME: required with RENTAL_SPARK_RUNNER=glue")
    prefix = env.get("RENTAL_PIPES_S3_PREFIX", "").strip()
    parts = urlsplit(prefix)
    if parts.scheme != "s3" or not parts.netloc:
        raise SettingsError(
            "RENTAL_PIPES_S3_PREFIX: expected s3://bucket/prefix for Pipes context and messages"
        )
    return RunnerSettings(
        kind=kind,
        glue_job_name=job,
        pipes_bucket=parts.netloc,
        pipes_prefix=parts.path.strip("/") or "dagster-pipes",
        glue_worker_type=env.get("RENTAL_GLUE_WORKER_TYPE", "G.1X").strip(),
        glue_workers=int(
            parse_number("RENTAL_GLUE_WORKERS", env.get("RENTAL_GLUE_WORKERS", "2"), 2, 1000)
        ),
        mysql_secret_arn=env.get("RENTAL_MYSQL_SECRET_ARN") or None,
    )
