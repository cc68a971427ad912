"""What the Dagster side and the Spark steps share: a step's request and report, the checks
a table carries and their results, the check limits, and how Spark reaches the source. Plain
data, free of pyspark and of Dagster: a deployment that runs its Spark steps remotely loads
its definitions without pyspark, and a remote job reads its request without Dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any

from rental_platform import tables
from rental_platform.tables import Grain, Layer, Table

# --- the source ---------------------------------------------------------------------------------

JDBC_DRIVER = "org.mariadb.jdbc.Driver"
# Debian's libmariadb-java: local Spark loads it; `deploy` ships it to the remote jobs.
MARIADB_JDBC_JAR = "/usr/share/java/mariadb-java-client.jar"


@dataclass(frozen=True)
class SourceConnection:
    """How Spark reaches the source. The password is used in-process and never serialised."""

    jdbc_url: str
    user: str
    password: str = field(default="", repr=False)

    def properties(self) -> dict[str, str]:
        return {
            "user": self.user,
            "password": self.password,
            "driver": JDBC_DRIVER,
            "fetchsize": "10000",
        }


# --- checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckLimits:
    """Thresholds the checks compare with (RENTAL_MAX_QUARANTINE_SHARE, RENTAL_FRESHNESS_HOURS)."""

    max_quarantine_share: float = 0.05
    freshness_hours: float = 48.0


@dataclass(frozen=True)
class CheckSpec:
    name: str
    description: str
    # A failing blocking check stops the run's downstream assets; the others warn.
    blocking: bool = True


SCHEMA = CheckSpec("schema_matches_catalogue", "The stored columns and types are the catalogue's.")
SOURCE_SCHEMA = CheckSpec(
    "source_schema_unchanged",
    "The source table still has every column the platform reads, with the type the contract "
    "gives it; a new column is reported (and not read), a missing or retyped one fails.",
)
ROW_COUNT = CheckSpec(
    "row_count_matches_source", "The lake holds as many rows as the source, day by day."
)
FRESHNESS = CheckSpec(
    "freshness",
    "The newest daily partition is no older than RENTAL_FRESHNESS_HOURS.",
    blocking=False,
)
ACCOUNTED = CheckSpec("rows_accounted_for", "raw = curated + quarantined + collapsed duplicates.")
QUARANTINE_SHARE = CheckSpec(
    "quarantine_share_within_limit",
    "Quarantined rows are at most RENTAL_MAX_QUARANTINE_SHARE of the raw rows; counts by reason.",
)
PRIMARY_KEY = CheckSpec("primary_key_unique", "The key columns are unique and never null.")
DISTINCT_ROWS = CheckSpec(
    "no_duplicate_rows",
    "No two rows are equal (exact duplicates were collapsed; a null equals a null).",
)
VERSIONS = CheckSpec(
    "versions_do_not_overlap",
    "Each listing's versions are valid on disjoint ranges of days, at most one of them open.",
)
LISTINGS_EXIST = CheckSpec("listings_exist", "Every booking's listing is a curated listing.")
VALUES = CheckSpec("values_in_range", "Prices and nights positive, rates in [0, 1], ranks >= 1.")


def checks_for(table: Table) -> list[CheckSpec]:
    """The checks a table carries; the steps compute exactly these."""
    specs: list[CheckSpec] = []
    if table.layer is Layer.QUARANTINE:
        return specs
    specs.append(SCHEMA)
    if table.layer is Layer.RAW:
        specs.insert(0, SOURCE_SCHEMA)
        specs.append(ROW_COUNT)
        if table.grain is Grain.DAILY:
            specs.append(FRESHNESS)
        return specs
    if table.layer is Layer.CURATED and table is not tables.CURATED_LISTINGS_HISTORY:
        specs += [ACCOUNTED, QUARANTINE_SHARE]
    specs.append(PRIMARY_KEY if table.key else DISTINCT_ROWS)
    if table is tables.CURATED_LISTINGS_HISTORY:
        specs.append(VERSIONS)
    if table is tables.CURATED_BOOKINGS:
        specs.append(LISTINGS_EXIST)
    if any(column.valid for column in table.columns):
        specs.append(VALUES)
    return specs


@dataclass(frozen=True)
class CheckResult:
    """A check's result over the step's window. A check that judges each partition on its own
    also gives each partition's result, by key: {"passed", "description", "metadata"}; the
    window passes only if every partition does (and what belongs to none, undated rows say)."""

    table: str
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of_partition(self, key: str) -> CheckResult:
        """The result recorded against partition `key`: its own, or else the window's, which
        says so (`judged`)."""
        own = self.partitions.get(key)
        if own is None:
            return replace(self, metadata=self.metadata | {"judged": "the run's window"})
        return replace(self, **own, partitions={})

    @property
    def blocking(self) -> bool:
        """Whether this check, failing, stops what is downstream (and the commit)."""
        return next(
            s.blocking for s in checks_for(tables.TABLES[self.table]) if s.name == self.name
        )


# --- a step's request and report ----------------------------------------------------------------


@dataclass(frozen=True)
class StepRequest:
    step: str
    tables: tuple[str, ...]
    lake_root: str
    # The window [start, end) in days; None for snapshot steps.
    window_start: date | None = None
    window_end: date | None = None
    source: SourceConnection | None = None
    limits: CheckLimits = field(default_factory=CheckLimits)
    # The day a listings snapshot is stamped with (kpis.md, "Listing history").
    as_of: date | None = None
    # The first day of the daily partitions: no day before it is ever extracted.
    first_day: date | None = None
    # Change detection: the days from this one to the window's end are extracted whatever their
    # fingerprints say (day D of a nightly run; every day of a range run).
    force_from: date | None = None
    # Who writes, for the lake's commit log (the Dagster run).
    writer: str = ""
    # The days of the window to extract or curate, per table (a nightly plan's); every day of
    # the window when None.
    only_days: dict[str, tuple[date, ...]] | None = None
    # Per raw table, the fingerprints the plan's comparison read of the days it re-extracts
    # (by partition key, as `Fingerprint.to_json`): recorded instead of checksumming again.
    source_fingerprints: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def days(self) -> int | None:
        """The window's length in days; None for snapshot steps."""
        if self.window_start is None or self.window_end is None:
            return None
        return (self.window_end - self.window_start).days

    def to_json(self) -> dict[str, Any]:
        """The request as a remote job receives it: everything but the source password,
        which the job reads from the environment or a secret store itself."""
        dates = {name: _iso(getattr(self, name)) for name in DATE_FIELDS}
        return {
            "step": self.step,
            "tables": list(self.tables),
            "lake_root": self.lake_root,
            **dates,
            "source": {"jdbc_url": self.source.jdbc_url, "user": self.source.user}
            if self.source
            else None,
            "limits": asdict(self.limits),
            "writer": self.writer,
            "only_days": {t: [d.isoformat() for d in days] for t, days in self.only_days.items()}
            if self.only_days is not None
            else None,
            "source_fingerprints": self.source_fingerprints,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source_password: str = "") -> StepRequest:
        source = data.get("source")
        return cls(
            step=data["step"],
            tables=tuple(data["tables"]),
            lake_root=data["lake_root"],
            **{name: _date(data.get(name)) for name in DATE_FIELDS},
            source=SourceConnection(source["jdbc_url"], source["user"], source_password)
            if source
            else None,
            limits=CheckLimits(**data.get("limits", {})),
            writer=data.get("writer", ""),
            only_days={
                t: tuple(date.fromisoformat(d) for d in days)
                for t, days in data["only_days"].items()
            }
            if data.get("only_days") is not None
            else None,
            source_fingerprints=data.get("source_fingerprints", {}),
        )


DATE_FIELDS = ("window_start", "window_end", "as_of", "first_day", "force_from")
# The keys of a remote job's message carrying a step's report.
STEP_INDEX, STEP_REPORT = "step_index", "step_report"


@dataclass
class TableReport:
    table: str
    row_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
    # Per partition of the window, by key, as committed: its rows and figures (`figures.py`).
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class StepReport:
    step: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    duration_seconds: float = 0.0
    # The lake commit that made the step's tables current (None: nothing committed).
    committed: int | None = None
    # Tables written but not committed, because a blocking check of theirs failed: where the
    # rejected versions lie, for whoever looks into it.
    rejected: dict[str, list[str]] = field(default_factory=dict)
    # Why the step changed nothing, when it chose not to (a listings snapshot already taken).
    skipped: str = ""
    # detect_changes: the days to re-extract and re-curate (changes.ChangePlan).
    plan: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def in_catalogue_order(self) -> None:
        """Tables and checks in the catalogue's order, however the step's threads interleaved
        them (a table's own checks keep the order it made them in)."""
        self.tables = {t.id: self.tables[t.id] for t in tables.ALL_TABLES if t.id in self.tables}
        self.checks.sort(key=lambda check: CATALOGUE_ORDER[check.table])

    def as_message(self, index: int) -> dict[str, Any]:
        """The Pipes message a remote job sends the report in: of its `index`th step."""
        return {STEP_INDEX: index, STEP_REPORT: self.to_json()}

    @classmethod
    def from_messages(cls, messages: Sequence[Any]) -> list[StepReport]:
        """The reports among a remote job's Pipes messages, in the order of its steps."""
        sent = [m for m in messages if isinstance(m, dict) and STEP_REPORT in m]
        return [cls.from_json(m[STEP_REPORT]) for m in sorted(sent, key=lambda m: m[STEP_INDEX])]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepReport:
        """The same report a local run returns, rebuilt from what a remote job sent back."""
        return cls(
            step=data["step"],
            tables={key: TableReport(**value) for key, value in data["tables"].items()},
            checks=[CheckResult(**check) for check in data["checks"]],
            duration_seconds=data["duration_seconds"],
            committed=data.get("committed"),
            rejected=data.get("rejected", {}),
            skipped=data.get("skipped", ""),
            plan=data.get("plan", {}),
        )


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


CATALOGUE_ORDER = {table.id: index for index, table in enumerate(tables.ALL_TABLES)}
