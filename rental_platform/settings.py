"""The platform's configuration: read from the environment once, validated, typed.

Every bad value fails here, at start-up, with a message that names the variable, so nothing
half-configured ever reaches a run. Passwords are kept out of every repr and message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from rental_platform import local
from rental_platform.contract import CheckLimits

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
class S3Location:
    """A bucket and a key prefix (`s3://bucket/prefix`)."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def object_uri(self, name: str) -> str:
        """The `s3://` address of the object `name` under this prefix."""
        return f"s3://{self.bucket}/{self.key(name)}"


@dataclass(frozen=True)
class GlueJob:
    """The AWS Glue job that runs the Spark steps (`rental-platform deploy` creates it)."""

    name: str
    worker_type: str = "G.1X"
    workers: int = 2
    # The role the job runs as: needed by `deploy` to create the job, not to run it.
    role_arn: str | None = None
    # A Glue connection that puts the job in the source database's VPC.
    connection: str | None = None


@dataclass(frozen=True)
class EmrServerlessApp:
    """An EMR Serverless Spark application and the role its job runs assume."""

    application_id: str
    role_arn: str


@dataclass(frozen=True)
class EmrCluster:
    """The EMR cluster the remote jobs of a night share: started by the first job that finds
    none of these settings, each job an EMR step on it, ended by EMR once idle for
    `idle_minutes`: long enough to bridge the gaps between a night's runs (seconds, or a run
    worker's start), short because its idle minutes are billed as much as its start."""

    release_label: str = "emr-7.5.0"
    instance_type: str = "m5.xlarge"
    core_instances: int = 2
    service_role: str = "EMR_DefaultRole"
    instance_profile: str = "EMR_EC2_DefaultRole"
    subnet_id: str | None = None
    log_uri: str | None = None
    idle_minutes: int = 5


@dataclass(frozen=True)
class RunnerSettings:
    """Where Spark steps run: `local` (in-process), or remotely through Dagster Pipes on
    `glue`, `emr_serverless` or `emr`, with the code `deploy` uploaded under `code`."""

    kind: str = "local"
    pipes: S3Location | None = None
    code: S3Location | None = None
    # An ARN names the secret; it is not the secret.
    mysql_secret_arn: str | None = None
    glue: GlueJob | None = None
    emr_serverless: EmrServerlessApp | None = None
    emr: EmrCluster | None = None
    # The Python 3.11 whose installation `deploy` ships to EMR and EMR Serverless
    # (RENTAL_REMOTE_PYTHON); None: the one running `deploy`.
    remote_python: str | None = None
    # How often to ask AWS whether a job has ended.
    poll_seconds: float = 5.0
    # Above 0 (Glue, EMR Serverless): a command's launches run on one shared job, which ends
    # with the command or after this many seconds without a launch
    # (RENTAL_SHARED_JOB_IDLE_SECONDS; resources/shared_job.py).
    shared_idle_seconds: float = 0.0
    # Extra Spark settings for the local runner (RENTAL_SPARK_CONF).
    spark_conf: Mapping[str, str] = field(default_factory=dict)
    # The local runner's speed machinery switched off (RENTAL_LOCAL_OFF; rental_platform.local).
    local_off: frozenset[str] = frozenset()

    @property
    def remote(self) -> bool:
        return self.kind != "local"


@dataclass(frozen=True)
class Settings:
    """Everything the platform needs to know about its environment."""

    mysql: MySqlSource
    lake_root: str
    warehouse: WarehouseTarget
    partitions_start: date
    # How far back the nightly run compares the source with the lake (RENTAL_MUTABLE_DAYS).
    mutable_days: int = 120
    max_quarantine_share: float = CheckLimits.max_quarantine_share
    freshness_hours: float = CheckLimits.freshness_hours
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    # The role Redshift assumes to COPY KPI partitions from an S3 lake.
    redshift_copy_role_arn: str | None = None
    # The Glue Data Catalog database that shows the S3 lake's tables (RENTAL_GLUE_DATABASE).
    glue_database: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
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
            mutable_days=parse_count(env, "RENTAL_MUTABLE_DAYS", cls.mutable_days, 0, 3660),
            max_quarantine_share=parse_number(
                "RENTAL_MAX_QUARANTINE_SHARE",
                env.get("RENTAL_MAX_QUARANTINE_SHARE", str(cls.max_quarantine_share)),
                0,
                1,
            ),
            freshness_hours=parse_number(
                "RENTAL_FRESHNESS_HOURS",
                env.get("RENTAL_FRESHNESS_HOURS", str(cls.freshness_hours)),
                1,
                24 * 366,
            ),
            runner=parse_runner(env),
            redshift_copy_role_arn=_optional(env, "RENTAL_REDSHIFT_COPY_ROLE_ARN"),
            glue_database=_optional(env, "RENTAL_GLUE_DATABASE"),
        )
        check_lake_reachable(settings.lake_root, settings.runner)
        if settings.glue_database and not settings.lake_root.startswith("s3://"):
            raise SettingsError(
                "RENTAL_GLUE_DATABASE: the Glue Data Catalog shows a lake on S3; "
                "RENTAL_LAKE_ROOT is a local folder"
            )
        return settings


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
    """`s3://bucket/prefix`, or a local folder made absolute so every process of a run sees
    the same lake."""
    name = "RENTAL_LAKE_ROOT"
    value = value.strip()
    if not value:
        raise SettingsError(f"{name}: must not be empty")
    if value.startswith("s3://"):
        return parse_s3_location(name, value).uri
    if "://" in value and not value.startswith("file://"):
        raise SettingsError(
            f"{name}: expected a local folder or s3://bucket/prefix "
            f"(got scheme {value.split(':')[0]!r})"
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
    return number


RUNNERS = ("local", "glue", "emr_serverless", "emr")
SHARED_IDLE = "RENTAL_SHARED_JOB_IDLE_SECONDS"
# A shared job waiting longer than an hour for work would bill more than it saves.
SHARED_IDLE_MAX_SECONDS = 3600
# Spark reads s3:// through the S3A file system of these jars; Glue and EMR bring their own.
HADOOP_AWS_JAR = "hadoop-aws"


def parse_s3_location(name: str, value: str) -> S3Location:
    parts = urlsplit(value.strip())
    if parts.scheme != "s3" or not parts.netloc:
        raise SettingsError(f"{name}: expected s3://bucket/prefix, got {value.strip()!r}")
    return S3Location(parts.netloc, parts.path.strip("/"))


def parse_spark_conf(value: str) -> dict[str, str]:
    """`key=value` pairs separated by commas."""
    conf: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        key, equals, setting = pair.partition("=")
        if not equals or not key.strip().startswith("spark."):
            raise SettingsError(
                f"RENTAL_SPARK_CONF: expected spark.key=value pairs separated by commas, "
                f"got {pair!r}"
            )
        conf[key.strip()] = setting.strip()
    return conf


def parse_local_off(value: str) -> frozenset[str]:
    """Names of the local speed machinery's parts, separated by commas."""
    off = frozenset(filter(None, (part.strip() for part in value.split(","))))
    if unknown := sorted(off - set(local.PARTS)):
        raise SettingsError(
            f"RENTAL_LOCAL_OFF: expected parts among {', '.join(local.PARTS)}, "
            f"got {', '.join(unknown)}"
        )
    return off


def _required(env: Mapping[str, str], name: str, kind: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name}: required with RENTAL_SPARK_RUNNER={kind}")
    return value


def _optional(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def parse_count(env: Mapping[str, str], name: str, default: int, low: int, high: int = 1000) -> int:
    """A whole number between low and high (days, workers, instances)."""
    value = parse_number(name, env.get(name, str(default)), low, high)
    if not value.is_integer():
        raise SettingsError(f"{name}: must be a whole number, got {value:g}")
    return int(value)


def parse_runner(env: Mapping[str, str]) -> RunnerSettings:
    kind = env.get("RENTAL_SPARK_RUNNER", "local").strip()
    if kind not in RUNNERS:
        raise SettingsError(
            f"RENTAL_SPARK_RUNNER: expected one of {', '.join(RUNNERS)}, got {kind!r}"
        )
    spark_conf = parse_spark_conf(env.get("RENTAL_SPARK_CONF", ""))
    if kind == "local":
        return RunnerSettings(
            spark_conf=spark_conf, local_off=parse_local_off(env.get("RENTAL_LOCAL_OFF", ""))
        )
    runner = RunnerSettings(
        kind=kind,
        pipes=parse_s3_location(
            "RENTAL_PIPES_S3_PREFIX", _required(env, "RENTAL_PIPES_S3_PREFIX", kind)
        ),
        code=parse_s3_location(
            "RENTAL_CODE_S3_PREFIX", _required(env, "RENTAL_CODE_S3_PREFIX", kind)
        ),
        mysql_secret_arn=_optional(env, "RENTAL_MYSQL_SECRET_ARN"),
        poll_seconds=parse_number(
            "RENTAL_REMOTE_POLL_SECONDS", env.get("RENTAL_REMOTE_POLL_SECONDS", "5"), 0.1, 600
        ),
        shared_idle_seconds=parse_number(
            SHARED_IDLE, env.get(SHARED_IDLE, "0"), 0, SHARED_IDLE_MAX_SECONDS
        ),
    )
    if kind == "emr" and runner.shared_idle_seconds:
        raise SettingsError(
            f"{SHARED_IDLE}: EMR runs every launch of a command on one cluster already "
            "(RENTAL_EMR_IDLE_MINUTES); a shared job is for glue and emr_serverless"
        )
    if kind == "glue":
        glue = GlueJob(
            name=_required(env, "RENTAL_GLUE_JOB_NAME", kind),
            worker_type=env.get("RENTAL_GLUE_WORKER_TYPE", GlueJob.worker_type).strip(),
            workers=parse_count(env, "RENTAL_GLUE_WORKERS", GlueJob.workers, 2),
            role_arn=_optional(env, "RENTAL_GLUE_ROLE_ARN"),
            connection=_optional(env, "RENTAL_GLUE_CONNECTION"),
        )
        return replace(runner, glue=glue)
    runner = replace(runner, remote_python=_remote_python(env))
    if kind == "emr_serverless":
        application = EmrServerlessApp(
            application_id=_required(env, "RENTAL_EMR_SERVERLESS_APPLICATION_ID", kind),
            role_arn=_required(env, "RENTAL_EMR_SERVERLESS_ROLE_ARN", kind),
        )
        return replace(runner, emr_serverless=application)
    log_uri = _optional(env, "RENTAL_EMR_LOG_URI")
    cluster = EmrCluster(
        release_label=env.get("RENTAL_EMR_RELEASE_LABEL", EmrCluster.release_label).strip(),
        instance_type=env.get("RENTAL_EMR_INSTANCE_TYPE", EmrCluster.instance_type).strip(),
        core_instances=parse_count(env, "RENTAL_EMR_CORE_INSTANCES", EmrCluster.core_instances, 1),
        service_role=env.get("RENTAL_EMR_SERVICE_ROLE", EmrCluster.service_role).strip(),
        instance_profile=env.get(
            "RENTAL_EMR_INSTANCE_PROFILE", EmrCluster.instance_profile
        ).strip(),
        subnet_id=_optional(env, "RENTAL_EMR_SUBNET_ID"),
        log_uri=log_uri and parse_s3_location("RENTAL_EMR_LOG_URI", log_uri).uri + "/",
        # EMR's auto-termination takes 1 minute to 7 days of idleness.
        idle_minutes=parse_count(
            env, "RENTAL_EMR_IDLE_MINUTES", EmrCluster.idle_minutes, 1, 7 * 24 * 60
        ),
    )
    return replace(runner, emr=cluster)


def _remote_python(env: Mapping[str, str]) -> str | None:
    python = _optional(env, "RENTAL_REMOTE_PYTHON")
    if python is not None and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise SettingsError(f"RENTAL_REMOTE_PYTHON: {python} is not an executable file")
    return python


def check_lake_reachable(lake_root: str, runner: RunnerSettings) -> None:
    """Spark must be able to reach the lake: a remote job cannot see this machine's folders,
    and local Spark reads S3 only with the hadoop-aws jars."""
    on_s3 = lake_root.startswith("s3://")
    if runner.remote and not on_s3:
        raise SettingsError(
            f"RENTAL_LAKE_ROOT: RENTAL_SPARK_RUNNER={runner.kind} runs Spark on AWS, which cannot "
            "reach a local folder; set an s3://bucket/prefix"
        )
    if on_s3 and not runner.remote:
        jars = runner.spark_conf.get("spark.jars", "") + runner.spark_conf.get(
            "spark.jars.packages", ""
        )
        if HADOOP_AWS_JAR not in jars:
            raise SettingsError(
                "RENTAL_SPARK_CONF: an s3:// RENTAL_LAKE_ROOT with local Spark needs the "
                "hadoop-aws jars (spark.jars or spark.jars.packages) and spark.hadoop.fs.s3.impl="
                "org.apache.hadoop.fs.s3a.S3AFileSystem; or run Spark on AWS "
                "(RENTAL_SPARK_RUNNER=glue, emr_serverless or emr)"
            )
