"""The S3 lake in the AWS Glue Data Catalog, so Athena, Redshift Spectrum and Glue's own jobs can
query it: one table per catalogue table, its columns from the catalogue, and one catalog
partition per committed lake partition, located at the version folder the lake's commit names.

A lake partition lives in a version folder of its own until a newer commit replaces it, so the
catalog cannot point at a table's folder and list it: it names each partition's committed folder,
and follows every commit (`register_commit`, after each step) or the whole lake (`sync`, by
`rental-platform deploy`). A snapshot table has no partitions: its location is moved instead.
A query planned just before a commit still reads the old folder, which the lake keeps for its
grace period.

Pure Python (boto3, no Spark, no Dagster): the catalogue says the schema, the commit log says
where the data is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rental_platform.spark.layout import PERIOD_PREFIX
from rental_platform.spark.manifest import CommitLog, LakeState, Partition, S3Store, TableState
from rental_platform.tables import ALL_TABLES, Grain, Table

PARQUET = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {
        "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    },
}
# Glue takes at most 100 partitions per BatchCreatePartition, 100 per BatchUpdatePartition and
# 25 per BatchDeletePartition.
CREATE_BATCH, UPDATE_BATCH, DELETE_BATCH = 100, 100, 25


def catalog_table_name(table: Table) -> str:
    """`raw_bookings`, `quarantine_bookings`, `presentation_occupancy`, ...: one namespace."""
    return f"{table.layer}_{table.name}"


def partition_key(table: Table) -> str | None:
    """The catalog's partition column: the lake's folder name (`dt`, `week`, `month`), a string
    holding the period's first day or `undated`. None for a snapshot table."""
    return None if table.grain is Grain.SNAPSHOT else PERIOD_PREFIX[table.grain]


@dataclass
class CatalogChanges:
    """What one registration changed, for the run's log and deploy's report."""

    tables: list[tuple[str, str]] = field(default_factory=list)  # ("created", name), ...
    partitions: dict[str, int] = field(default_factory=dict)  # "created" / "moved" / "removed"

    def count(self, what: str, n: int) -> None:
        if n:
            self.partitions[what] = self.partitions.get(what, 0) + n

    def lines(self, database: str) -> list[str]:
        lines = [f"{change} Glue table {database}.{name}" for change, name in self.tables]
        if self.partitions:
            counts = ", ".join(f"{what} {n}" for what, n in self.partitions.items())
            lines.append(f"Glue Data Catalog {database}: partitions {counts}")
        return lines


class GlueCatalog:
    """The lake at `lake_root` (s3://...) as the tables of the Glue database `database`, which
    must exist (the stack creates it)."""

    def __init__(self, database: str, lake_root: str, glue: Any = None, s3: Any = None) -> None:
        self.database = database
        self.store = S3Store(lake_root, s3)
        self._glue = glue

    @property
    def glue(self) -> Any:
        if self._glue is None:
            import boto3

            self._glue = boto3.client("glue")
        return self._glue

    # --- tables --------------------------------------------------------------------------------

    def table_input(self, table: Table, location: str | None = None) -> dict[str, Any]:
        """The table's definition: its catalogue columns, Parquet, its partition column. A
        partitioned table is located at its folder; a snapshot at its committed version."""
        columns = [
            {"Name": c.name, "Type": c.type, "Comment": c.description[:255]} for c in table.columns
        ]
        key = partition_key(table)
        folder = self.store.uri(f"{table.layer}/{table.name}") + "/"
        return {
            "Name": catalog_table_name(table),
            "Description": table.description[:2048],
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
            "StorageDescriptor": {
                "Columns": columns,
                "Location": location or folder,
                **PARQUET,
            },
            "PartitionKeys": [{"Name": key, "Type": "string"}] if key else [],
        }

    def ensure_tables(
        self, state: LakeState, changes: CatalogChanges, tables: Iterable[Table] = ALL_TABLES
    ) -> None:
        """Create each table, or update it where its definition differs from the catalogue's."""
        for table in tables:
            location = self._snapshot_location(table, state.table(table.id))
            wanted = self.table_input(table, location)
            current = self._table(catalog_table_name(table))
            if current is None:
                self.glue.create_table(DatabaseName=self.database, TableInput=wanted)
                changes.tables.append(("created", wanted["Name"]))
            elif _shape(current) != _shape(wanted):
                self.glue.update_table(DatabaseName=self.database, TableInput=wanted)
                changes.tables.append(("updated", wanted["Name"]))

    def _table(self, name: str) -> dict[str, Any] | None:
        try:
            return self.glue.get_table(DatabaseName=self.database, Name=name)["Table"]
        except self.glue.exceptions.EntityNotFoundException:
            return None

    def _snapshot_location(self, table: Table, state: TableState) -> str | None:
        partition = state.partitions.get("all") if table.grain is Grain.SNAPSHOT else None
        return self._location(partition) if partition else None

    def _location(self, partition: Partition) -> str:
        return self.store.uri(partition.folder) + "/"

    # --- partitions ----------------------------------------------------------------------------

    def register_commit(self, seq: int, table_ids: Iterable[str]) -> CatalogChanges:
        """Make the catalog show what commit `seq` changed in these tables: the partitions it
        replaced, added or removed (its difference from the commit before it). Only those: a
        later commit of other partitions, by another writer, is that writer's to register."""
        log, changes = CommitLog(self.store), CatalogChanges()
        before, after = log.at(seq - 1) if seq > 1 else None, log.at(seq)
        tables = _tables(table_ids)
        self.ensure_tables(after, changes, tables)
        for table in tables:
            old = before.table(table.id) if before else TableState()
            self._apply(table, old.partitions, after.table(table.id).partitions, changes)
        return changes

    def sync(self) -> CatalogChanges:
        """Make every table and partition match the lake's newest commit (deploy; also mends
        a catalog that missed a registration)."""
        state, changes = CommitLog(self.store).head(), CatalogChanges()
        self.ensure_tables(state, changes)
        for table in ALL_TABLES:
            if partition_key(table):
                registered = dict(self._partitions(table))
                self._apply(table, registered, state.table(table.id).partitions, changes)
        return changes

    def _partitions(self, table: Table) -> Iterator[tuple[str, str]]:
        """The catalog's partitions of the table: period key -> location."""
        pages = self.glue.get_paginator("get_partitions").paginate(
            DatabaseName=self.database, TableName=catalog_table_name(table)
        )
        for page in pages:
            for partition in page["Partitions"]:
                yield partition["Values"][0], partition["StorageDescriptor"]["Location"]

    def _apply(
        self,
        table: Table,
        before: dict[str, Any],
        after: dict[str, Partition],
        changes: CatalogChanges,
    ) -> None:
        """Turn the catalog's partitions from `before` (lake partitions or catalog locations)
        into `after`. A snapshot table has none: `ensure_tables` moves its location."""
        if not partition_key(table):
            return
        name = catalog_table_name(table)
        created = [key for key in after if key not in before]
        moved = [
            key
            for key in after
            if key in before and self._where(before[key]) != self._location(after[key])
        ]
        removed = [key for key in before if key not in after]
        # A registration repeated after a partial failure finds some of its work done: a
        # partition already there is moved instead, one already gone is not missed.
        for batch in _batches(created, CREATE_BATCH):
            inputs = [self._partition_input(table, key, after[key]) for key in batch]
            response = self.glue.batch_create_partition(
                DatabaseName=self.database, TableName=name, PartitionInputList=inputs
            )
            there = _raise_errors(response, name, allowed="AlreadyExistsException")
            moved += there
            created = [key for key in created if key not in there]
        for batch in _batches(moved, UPDATE_BATCH):
            entries = [
                {
                    "PartitionValueList": [key],
                    "PartitionInput": self._partition_input(table, key, after[key]),
                }
                for key in batch
            ]
            response = self.glue.batch_update_partition(
                DatabaseName=self.database, TableName=name, Entries=entries
            )
            _raise_errors(response, name)
        for batch in _batches(removed, DELETE_BATCH):
            response = self.glue.batch_delete_partition(
                DatabaseName=self.database,
                TableName=name,
                PartitionsToDelete=[{"Values": [key]} for key in batch],
            )
            _raise_errors(response, name, allowed="EntityNotFoundException")
        changes.count("created", len(created))
        changes.count("moved", len(moved))
        changes.count("removed", len(removed))

    def _where(self, registered: Partition | str | None) -> str | None:
        """A partition's location, whether a lake partition's or one the catalog holds."""
        return self._location(registered) if isinstance(registered, Partition) else registered

    def _partition_input(self, table: Table, key: str, partition: Partition) -> dict[str, Any]:
        descriptor = self.table_input(table, self._location(partition))["StorageDescriptor"]
        return {
            "Values": [key],
            "StorageDescriptor": descriptor,
            "Parameters": {"rows": str(partition.rows), "version": partition.version},
        }


def _tables(table_ids: Iterable[str]) -> list[Table]:
    wanted = set(table_ids)
    return [table for table in ALL_TABLES if table.id in wanted]


def _batches(keys: list[str], size: int) -> Iterator[list[str]]:
    ordered = sorted(keys)
    for first in range(0, len(ordered), size):
        yield ordered[first : first + size]


def _raise_errors(response: dict[str, Any], table: str, allowed: str = "") -> list[str]:
    """Glue's batch calls answer 200 and list what failed: a failure must not pass. Returns the
    partition keys that failed with the `allowed` error code."""
    errors = response.get("Errors", [])
    allowed_keys = [
        e["PartitionValues"][0] for e in errors if e["ErrorDetail"]["ErrorCode"] == allowed
    ]
    failed = [e for e in errors if e["ErrorDetail"]["ErrorCode"] != allowed]
    if failed:
        first = failed[0]
        detail = first.get("ErrorDetail", {})
        why = f"{detail.get('ErrorCode')} {detail.get('ErrorMessage')}"
        raise RuntimeError(
            f"Glue Data Catalog table {table}: {len(failed)} partition change(s) failed, first "
            f"{first.get('PartitionValues')}: {why}"
        )
    return allowed_keys


def _shape(definition: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of a table's definition this module manages, as TableInput and GetTable
    both have them (GetTable adds fields of its own)."""
    descriptor = definition["StorageDescriptor"]
    return (
        [(c["Name"], c["Type"], c.get("Comment")) for c in descriptor["Columns"]],
        descriptor["Location"],
        descriptor["InputFormat"],
        descriptor["SerdeInfo"]["SerializationLibrary"],
        [(k["Name"], k["Type"]) for k in definition.get("PartitionKeys", [])],
        definition.get("Parameters", {}).get("classification"),
        definition.get("Description"),
    )
