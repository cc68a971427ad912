"""What the lake holds: the committed version of every partition of every table.

A lake is a folder (or an S3 prefix) of immutable Parquet files plus a commit log. Each write
lands under a folder of its own (`{layer}/{table}/{version}/...`) that no reader looks at until a
commit names it. A commit is one small JSON file, `_lake/commits/{seq}.json`, created only if
no commit with that number exists (a hard link on a local disk, a conditional PUT on S3), so two
writers can never both make commit N: the loser re-reads the log and tries N + 1. It names, per
table, a manifest file listing each partition's committed version: its folder, files and row
count, and facts about it (the source fingerprint it was extracted with, the versions it was
computed from). Readers take the newest commit and read exactly the files it names, so a writer
that dies half-way leaves nothing visible, and every reader sees all of a commit or none of it.

Superseded files stay readable for a grace period (a reader may have planned its read just
before the commit), then `collect_garbage` removes them.

Pure Python, no Spark and no Dagster: the Spark steps commit through it, the Dagster side reads
which files to publish through it, and so can any other engine (`committed_files`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

LOG_FOLDER = "_lake"
COMMITS = f"{LOG_FOLDER}/commits"
MANIFESTS = f"{LOG_FOLDER}/manifests"
# Commits to keep however old they are: enough to read a recent state back.
KEEP_COMMITS = 20
DEFAULT_GRACE = timedelta(hours=24)
COMMIT_ATTEMPTS = 50
# The partition key of a snapshot table's only partition, and of a daily table's rows with no day.
WHOLE = "all"
UNDATED = "undated"


class CommitConflict(RuntimeError):
    """The log kept moving under this writer: too many commits raced it."""


# --- where the bytes are ------------------------------------------------------------------------


class LakeStore(ABC):
    """The few object operations the log needs, on keys relative to the lake root."""

    root: str

    def uri(self, key: str) -> str:
        """What Spark, DuckDB or a person uses to read the object."""
        return f"{self.root.rstrip('/')}/{key}"

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Write an object under a key no one else writes (a new, unique name)."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Create the object only if no object has this key; False if one had."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder), at any depth, sorted."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Remove objects (missing ones are fine)."""

    def delete_folder(self, prefix: str) -> None:
        """Remove everything under a folder (Spark's markers and checksums included)."""
        self.delete(self.list(prefix))


class LocalStore(LakeStore):
    """A lake in a local folder."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return Path(self.root) / key

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._written_aside(path, data)
        os.replace(temporary, path)

    def create(self, key: str, data: bytes) -> bool:
        """Written aside, then hard-linked into place: link() fails if the name exists, so
        exactly one of two racing writers creates it, and it never holds a partial file."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._written_aside(path, data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
        _sync_folder(path.parent)
        return True

    @staticmethod
    def _written_aside(path: Path, data: bytes) -> str:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        return temporary

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        root = Path(self.root)
        return sorted(
            str((Path(folder) / name).relative_to(root))
            for folder, _, names in os.walk(base)
            for name in names
        )

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def delete_folder(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)
        # A version folder whose last partition went goes too.
        parent = self._path(prefix).parent
        while parent != Path(self.root) and parent.is_dir() and not _holds_data(parent):
            shutil.rmtree(parent, ignore_errors=True)
            parent = parent.parent


def _holds_data(folder: Path) -> bool:
    """Whether anything but Spark's markers and checksums is left in a folder."""
    return any(not p.name.startswith(("_", ".")) for p in folder.iterdir())


def _sync_folder(folder: Path) -> None:
    """Make a new name in `folder` survive a power cut, not only the file's bytes."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class S3Store(LakeStore):
    """A lake under `s3://bucket/prefix`. A commit is a PUT with `If-None-Match: *`, which S3
    refuses (412) when the key exists: the compare-and-swap that S3 has no rename for."""

    def __init__(self, root: str, client: Any = None) -> None:
        self.root = root.rstrip("/")
        bucket, _, prefix = root.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._client = client

    @cached_property
    def client(self) -> Any:
        if self._client is not None:
            return self._client
        import boto3

        return boto3.client("s3")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def write(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        return self._put(key, data, IfNoneMatch="*")

    def _put(self, key: str, data: bytes, **conditions: str) -> bool:
        """PUT the object; False if a condition failed. A refusal (a bucket policy, a role
        without s3:PutObject) raises PermissionError naming the object."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            if code in ("AccessDenied", "Forbidden", "403"):
                raise PermissionError(
                    f"s3://{self.bucket}/{self._key(key)}: the bucket refused the write ({code})"
                ) from error
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        start = len(self._key(""))
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/") + "/")
        )
        return sorted(item["Key"][start:] for page in pages for item in page.get("Contents", []))

    def delete(self, keys: Iterable[str]) -> None:
        batch = [{"Key": self._key(key)} for key in keys]
        for first in range(0, len(batch), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch[first : first + 1000], "Quiet": True}
            )


def store_for(root: str) -> LakeStore:
    return S3Store(root) if root.startswith("s3://") else LocalStore(root)


# --- what a commit says -------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """One committed version of a partition: a folder (relative to the lake root), the Parquet
    files in it, its rows, and facts about it (see the steps: the source fingerprint it was
    extracted with, the versions of the inputs it was computed from)."""

    folder: str
    files: tuple[str, ...]
    rows: int
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """The write that made it: the version folder's name."""
        return self.folder.split("/")[2]

    @property
    def keys(self) -> list[str]:
        return [f"{self.folder}/{name}" for name in self.files]

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "files": list(self.files), "rows": self.rows} | (
            {"facts": dict(self.facts)} if self.facts else {}
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Partition:
        return cls(data["folder"], tuple(data["files"]), data["rows"], data.get("facts", {}))


@dataclass(frozen=True)
class TableState:
    """A table as one commit has it: its partitions by key (a day, week or month as
    YYYY-MM-DD, `undated`, or `all` for a snapshot table), and facts about the whole table."""

    partitions: Mapping[str, Partition] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "partitions": {key: p.to_json() for key, p in sorted(self.partitions.items())},
            "facts": dict(self.facts),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TableState:
        return cls(
            {key: Partition.from_json(p) for key, p in data["partitions"].items()},
            data.get("facts", {}),
        )


@dataclass(frozen=True)
class TableChange:
    """What one writer changes in a table: partitions replaced (by key) or removed, and table
    facts set."""

    partitions: Mapping[str, Partition] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    def applied_to(self, state: TableState) -> TableState:
        kept = {k: p for k, p in state.partitions.items() if k not in self.removed}
        return TableState({**kept, **self.partitions}, {**state.facts, **self.facts})


@dataclass(frozen=True)
class Commit:
    seq: int
    tables: Mapping[str, str]  # table id -> manifest key
    committed_at: str = ""
    writer: str = ""
    # Partition folders and manifests this commit made unreachable: deleted once it is older
    # than the grace period.
    superseded: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "committed_at": self.committed_at,
            "writer": self.writer,
            "tables": dict(sorted(self.tables.items())),
            "superseded": list(self.superseded),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Commit:
        return cls(
            data["seq"],
            data["tables"],
            data.get("committed_at", ""),
            data.get("writer", ""),
            tuple(data.get("superseded", ())),
        )


EMPTY_COMMIT = Commit(0, {})


def commit_key(seq: int) -> str:
    return f"{COMMITS}/{seq:012d}.json"


def _seq_of(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    stem = name.removesuffix(".json")
    return int(stem) if name.endswith(".json") and stem.isdigit() else None


class LakeState:
    """The lake as of one commit. Table manifests are read on first use."""

    def __init__(self, store: LakeStore, commit: Commit) -> None:
        self.store = store
        self.commit = commit
        self._tables: dict[str, TableState] = {}

    @property
    def seq(self) -> int:
        return self.commit.seq

    def table(self, table_id: str) -> TableState:
        if table_id not in self._tables:
            key = self.commit.tables.get(table_id)
            data = self.store.read(key) if key else None
            if key and data is None:
                raise FileNotFoundError(f"commit {self.seq} names {key}, which is gone")
            self._tables[table_id] = (
                TableState.from_json(json.loads(data)) if data else TableState()
            )
        return self._tables[table_id]

    def files(self, table_id: str, keys: Iterable[str] | None = None) -> list[str]:
        """URIs of the committed Parquet files of the table's partitions (all, or `keys`)."""
        partitions = self.table(table_id).partitions
        chosen = (
            partitions.values()
            if keys is None
            else (partitions[k] for k in keys if k in partitions)
        )
        return [self.store.uri(key) for partition in chosen for key in partition.keys]


class CommitLog:
    """The lake's commits: read the newest, add one, forget old ones."""

    def __init__(self, store: LakeStore) -> None:
        self.store = store

    def head(self) -> LakeState:
        """The newest commit (an empty lake before the first)."""
        keys = self.store.list(COMMITS)
        seqs = [seq for seq in map(_seq_of, keys) if seq is not None]
        if not seqs:
            return LakeState(self.store, EMPTY_COMMIT)
        for seq in sorted(seqs, reverse=True):
            data = self.store.read(commit_key(seq))
            if data is not None:  # else collected between the listing and the read
                return LakeState(self.store, Commit.from_json(json.loads(data)))
        return LakeState(self.store, EMPTY_COMMIT)

    def at(self, seq: int) -> LakeState:
        """The lake as commit `seq` left it (within the grace period of later ones)."""
        data = self.store.read(commit_key(seq))
        if data is None:
            raise FileNotFoundError(f"the lake has no commit {seq} (any more)")
        return LakeState(self.store, Commit.from_json(json.loads(data)))

    def commit(self, changes: Mapping[str, TableChange], writer: str) -> LakeState:
        """Apply `changes` on top of whatever the newest commit is, as the next commit.

        Changes replace partitions by key, so a writer that raced another simply applies its
        own partitions on the other's result: both commits' partitions survive. Returns the
        state the commit made."""
        for attempt in range(COMMIT_ATTEMPTS):
            head = self.head()
            tables = dict(head.commit.tables)
            superseded: list[str] = []
            for table_id, change in changes.items():
                before = head.table(table_id)
                after = change.applied_to(before)
                superseded += [
                    before.partitions[key].folder
                    for key, partition in change.partitions.items()
                    if key in before.partitions
                    and before.partitions[key].folder != partition.folder
                ]
                tables[table_id] = f"{MANIFESTS}/{table_id}/{new_version()}.json"
                self.store.write(tables[table_id], _dumps(after.to_json()))
                if table_id in head.commit.tables:
                    superseded.append(head.commit.tables[table_id])
            commit = Commit(head.seq + 1, tables, _now().isoformat(), writer, tuple(superseded))
            if self.store.create(commit_key(commit.seq), _dumps(commit.to_json())):
                return LakeState(self.store, commit)
            time.sleep(min(0.05 * (attempt + 1), 1.0))
        raise CommitConflict(f"{writer}: {COMMIT_ATTEMPTS} commits raced this one; try again")

    def collect_garbage(self, grace: timedelta = DEFAULT_GRACE) -> list[str]:
        """Delete what no kept commit can reach: files superseded, and the commits themselves,
        more than `grace` ago (the newest KEEP_COMMITS commits are always kept). Returns the
        keys deleted."""
        seqs = sorted(s for s in map(_seq_of, self.store.list(COMMITS)) if s is not None)
        cutoff = _now() - grace
        doomed: list[str] = []
        for seq in seqs[:-KEEP_COMMITS]:
            data = self.store.read(commit_key(seq))
            if data is None:
                continue
            commit = Commit.from_json(json.loads(data))
            if datetime.fromisoformat(commit.committed_at) > cutoff:
                break
            doomed += [*commit.superseded, commit_key(seq)]
        for key in doomed:
            if key.endswith(".json"):
                self.store.delete([key])
            else:
                self.store.delete_folder(key)
        return doomed

    def collect_orphans(self, grace: timedelta = DEFAULT_GRACE) -> list[str]:
        """Delete version folders that no commit names and that are older than `grace`: what
        writers left that died, or had a blocking check fail, before committing. Returns the
        folders deleted. It lists every table folder: for the weekly audit, not every run."""
        head = self.head()
        named = {
            "/".join(partition.folder.split("/")[:3])
            for table_id in head.commit.tables
            for partition in head.table(table_id).partitions.values()
        }
        cutoff = _version_name(_now() - grace)
        doomed = [
            folder
            for folder in sorted({"/".join(key.split("/")[:3]) for key in self._data_keys()})
            if folder not in named and folder.split("/")[-1] < cutoff
        ]
        for folder in doomed:
            self.store.delete_folder(folder)
        return doomed

    def _data_keys(self) -> list[str]:
        return [
            key
            for layer in ("raw", "curated", "quarantine", "presentation")
            for key in self.store.list(layer)
            if len(key.split("/")) > 3
        ]


def new_version() -> str:
    """A name for a write's folder: when (sortable, for garbage collection) and a random part."""
    return f"{_version_name(_now())}-{uuid.uuid4().hex[:8]}"


def _version_name(moment: datetime) -> str:
    return "v" + moment.strftime("%Y%m%dT%H%M%S")


def _now() -> datetime:
    return datetime.now(UTC)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=False).encode()


def committed_files(lake_root: str, table_id: str) -> list[str]:
    """Every committed Parquet file of a table, as paths or s3:// URIs: what a reader outside
    the platform (DuckDB, pandas, Athena) should read instead of globbing the table's folder,
    which also holds versions not, or no longer, committed."""
    store = store_for(lake_root)
    return CommitLog(store).head().files(table_id)


def with_facts(partition: Partition, **facts: Any) -> Partition:
    return replace(partition, facts={**partition.facts, **facts})
