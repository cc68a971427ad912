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
from urllib.parse import unquote, urlsplit

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
class Settings:
    """Everything the platform needs to know about its environment."""

    mysql: MySqlSource
    lake_root: str
    warehouse_path: Path
    partitions_start: date

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            mysql=parse_mysql_url(env.get("RENTAL_MYSQL_URL", DEFAULT_MYSQL_URL)),
            lake_root=parse_lake_root(env.get("RENTAL_LAKE_ROOT", DEFAULT_LAKE_ROOT)),
            warehouse_path=parse_warehouse_url(
                env.get("RENTAL_WAREHOUSE_URL", DEFAULT_WAREHOUSE_URL)
            ),
            partitions_start=parse_date(
                "RENTAL_PARTITIONS_START",
                env.get("RENTAL_PARTITIONS_START", DEFAULT_PARTITIONS_START),
            ),
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


def parse_warehouse_url(url: str) -> Path:
    name = "RENTAL_WAREHOUSE_URL"
    prefix = "duckdb:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise SettingsError(f"{name}: expected duckdb:///path/to/file.duckdb")
    # duckdb:////abs/file.duckdb is absolute; duckdb:///./file.duckdb is relative to the cwd.
    path = Path(url.removeprefix(prefix)).expanduser().resolve()
    if path.is_dir():
        raise SettingsError(f"{name}: {path} is a folder, expected a file")
    return path


def parse_date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError as error:
        raise SettingsError(f"{name}: expected a date YYYY-MM-DD, got {value!r}") from error
