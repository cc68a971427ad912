"""The lake in the Glue Data Catalog, against moto's Glue catalog and S3 on loopback: commits
made through the lake's own commit log, registered as a step registers them, and a whole-lake
sync as `deploy` runs it. (The real steps' files against the registered columns:
`test_remote_runners.py::test_the_glue_data_catalog_shows_the_committed_lake`.)"""

from __future__ import annotations

import itertools

import boto3
import pytest

from rental_platform.deploy import deploy, lake_catalog
from rental_platform.lake_catalog import GlueCatalog, catalog_table_name
from rental_platform.settings import (
    EmrCluster,
    RunnerSettings,
    S3Location,
    Settings,
    SettingsError,
)
from rental_platform.spark.manifest import CommitLog, Partition, S3Store, TableChange
from rental_platform.tables import ALL_TABLES, TABLES
from rental_platform_tests.aws import aws  # noqa: F401

pytestmark = pytest.mark.usefixtures("aws")
BOOKINGS, APARTMENTS, OCCUPANCY = (
    TABLES["raw.bookings"],
    TABLES["raw.apartments"],
    TABLES["presentation.occupancy_rate"],
)
_names = itertools.count()


def _lake() -> tuple[GlueCatalog, CommitLog]:
    """An empty S3 lake, and a fresh Glue database to show it."""
    n = next(_names)
    bucket, database = f"catalog-lake-{n}", f"rental_lake_{n}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    boto3.client("glue").create_database(DatabaseInput={"Name": database})
    root = f"s3://{bucket}/lake"
    return GlueCatalog(database, root), CommitLog(S3Store(root))


def _partition(table_id: str, version: str, folder: str = "", rows: int = 3) -> Partition:
    layer, name = table_id.split(".")
    path = f"{layer}/{name}/{version}" + (f"/{folder}" if folder else "")
    return Partition(path, ("part-0.parquet",), rows)


def _registered(catalog: GlueCatalog, table_id: str) -> dict[str, str]:
    pages = (
        boto3.client("glue")
        .get_paginator("get_partitions")
        .paginate(DatabaseName=catalog.database, TableName=catalog_table_name(TABLES[table_id]))
    )
    return {
        p["Values"][0]: p["StorageDescriptor"]["Location"]
        for page in pages
        for p in page["Partitions"]
    }


def _table(catalog: GlueCatalog, table_id: str) -> dict:
    name = catalog_table_name(TABLES[table_id])
    return boto3.client("glue").get_table(DatabaseName=catalog.database, Name=name)["Table"]


def test_each_commit_moves_exactly_its_partitions() -> None:
    catalog, log = _lake()
    root = catalog.store.root
    first = log.commit(
        {
            "raw.bookings": TableChange(
                {
                    "2025-01-01": _partition("raw.bookings", "v1", "dt=2025-01-01"),
                    "2025-01-02": _partition("raw.bookings", "v1", "dt=2025-01-02"),
                    "undated": _partition("raw.bookings", "v1u"),
                }
            ),
            "raw.apartments": TableChange({"all": _partition("raw.apartments", "v1")}),
        },
        "test",
    )
    changes = catalog.register_commit(first.seq, ["raw.bookings", "raw.apartments"])

    assert changes.lines(catalog.database) == [
        f"created Glue table {catalog.database}.raw_apartments",
        f"created Glue table {catalog.database}.raw_bookings",
        f"Glue Data Catalog {catalog.database}: partitions created 3",
    ]
    assert _registered(catalog, "raw.bookings") == {
        "2025-01-01": f"{root}/raw/bookings/v1/dt=2025-01-01/",
        "2025-01-02": f"{root}/raw/bookings/v1/dt=2025-01-02/",
        "undated": f"{root}/raw/bookings/v1u/",
    }
    bookings = _table(catalog, "raw.bookings")
    assert bookings["PartitionKeys"] == [{"Name": "dt", "Type": "string"}]
    assert [(c["Name"], c["Type"]) for c in bookings["StorageDescriptor"]["Columns"]] == [
        (c.name, c.type) for c in BOOKINGS.columns
    ]
    assert bookings["StorageDescriptor"]["Location"] == f"{root}/raw/bookings/"
    apartments = _table(catalog, "raw.apartments")
    assert apartments["PartitionKeys"] == []
    assert apartments["StorageDescriptor"]["Location"] == f"{root}/raw/apartments/v1/"

    # The next step replaces a day, removes another, and takes a new snapshot...
    second = log.commit(
        {
            "raw.bookings": TableChange(
                {"2025-01-02": _partition("raw.bookings", "v2", "dt=2025-01-02")},
                removed=("2025-01-01",),
            ),
            "raw.apartments": TableChange({"all": _partition("raw.apartments", "v2")}),
        },
        "test",
    )
    # ...and another writer commits a day of its own before the first registers.
    third = log.commit(
        {
            "raw.bookings": TableChange(
                {"2025-01-05": _partition("raw.bookings", "v3", "dt=2025-01-05")}
            )
        },
        "other writer",
    )
    assert catalog.register_commit(third.seq, ["raw.bookings"]).partitions == {"created": 1}
    changes = catalog.register_commit(second.seq, ["raw.bookings", "raw.apartments"])

    assert changes.partitions == {"moved": 1, "removed": 1}
    assert changes.tables == [("updated", "raw_apartments")]
    assert _registered(catalog, "raw.bookings") == {
        "2025-01-02": f"{root}/raw/bookings/v2/dt=2025-01-02/",
        "2025-01-05": f"{root}/raw/bookings/v3/dt=2025-01-05/",  # the other writer's, kept
        "undated": f"{root}/raw/bookings/v1u/",
    }
    apartments = _table(catalog, "raw.apartments")
    assert apartments["StorageDescriptor"]["Location"] == f"{root}/raw/apartments/v2/"


def test_sync_mends_the_catalog_to_the_lakes_newest_commit() -> None:
    catalog, log = _lake()
    root = catalog.store.root
    log.commit(
        {
            "presentation.occupancy_rate": TableChange(
                {
                    "2025-01-01": _partition(
                        "presentation.occupancy_rate", "v1", "month=2025-01-01"
                    ),
                    "2025-02-01": _partition(
                        "presentation.occupancy_rate", "v1", "month=2025-02-01"
                    ),
                }
            )
        },
        "test",
    )
    first = catalog.sync()
    assert len(first.tables) == len(ALL_TABLES)  # every table, committed or not yet
    assert first.partitions == {"created": 2}

    glue = boto3.client("glue")
    name = catalog_table_name(OCCUPANCY)
    glue.batch_delete_partition(
        DatabaseName=catalog.database,
        TableName=name,
        PartitionsToDelete=[{"Values": ["2025-01-01"]}],
    )
    stray = glue.get_partition(
        DatabaseName=catalog.database, TableName=name, PartitionValues=["2025-02-01"]
    )["Partition"]
    descriptor = {**stray["StorageDescriptor"], "Location": f"{root}/elsewhere/"}
    glue.update_partition(
        DatabaseName=catalog.database,
        TableName=name,
        PartitionValueList=["2025-02-01"],
        PartitionInput={"Values": ["2025-02-01"], "StorageDescriptor": descriptor},
    )
    glue.create_partition(
        DatabaseName=catalog.database,
        TableName=name,
        PartitionInput={"Values": ["2024-12-01"], "StorageDescriptor": descriptor},
    )

    mended = catalog.sync()

    assert mended.partitions == {"created": 1, "moved": 1, "removed": 1}
    assert mended.tables == []
    assert _registered(catalog, "presentation.occupancy_rate") == {
        "2025-01-01": f"{root}/presentation/occupancy_rate/v1/month=2025-01-01/",
        "2025-02-01": f"{root}/presentation/occupancy_rate/v1/month=2025-02-01/",
    }
    assert catalog.sync().lines(catalog.database) == []  # nothing left to change


def _emr_runner(bucket: str) -> RunnerSettings:
    """A runner to deploy with, its code and Pipes in the lake's bucket."""
    code, pipes = S3Location(bucket, "code"), S3Location(bucket, "pipes")
    return RunnerSettings(kind="emr", pipes=pipes, code=code, emr=EmrCluster())


def test_deploy_registers_the_lake_and_then_has_nothing_to_change() -> None:
    catalog, _ = _lake()
    runner = _emr_runner(catalog.store.bucket)
    first = deploy(runner, catalog=catalog).lines()
    assert f"created Glue table {catalog.database}.presentation_occupancy_rate" in first
    again = deploy(runner, catalog=catalog).lines()
    assert not [line for line in again if "Glue" in line]


def test_a_missing_database_is_named() -> None:
    catalog, _ = _lake()
    missing = GlueCatalog("no_such_database", catalog.store.root)
    with pytest.raises(RuntimeError, match="RENTAL_GLUE_DATABASE") as error:
        deploy(_emr_runner(catalog.store.bucket), catalog=missing)
    assert "no_such_database" in str(error.value)


def test_the_catalog_needs_a_lake_on_s3() -> None:
    with pytest.raises(SettingsError, match="RENTAL_GLUE_DATABASE"):
        Settings.from_env({"RENTAL_GLUE_DATABASE": "rental_lake"})
    settings = Settings.from_env(
        {
            "RENTAL_GLUE_DATABASE": "rental_lake",
            "RENTAL_LAKE_ROOT": "s3://lake/prefix",
            "RENTAL_SPARK_RUNNER": "emr",
            "RENTAL_PIPES_S3_PREFIX": "s3://artifacts/pipes",
            "RENTAL_CODE_S3_PREFIX": "s3://artifacts/code",
        }
    )
    catalog = lake_catalog(settings)
    assert catalog is not None and catalog.database == "rental_lake"
    assert lake_catalog(Settings.from_env({})) is None


def test_a_registration_repeated_after_a_failure_completes() -> None:
    """A step retried after its registration failed half-way registers its commit again: the
    partitions already there are moved to the same place, none is an error."""
    catalog, log = _lake()
    commit = log.commit(
        {
            "raw.bookings": TableChange(
                {
                    "2025-01-01": _partition("raw.bookings", "v1", "dt=2025-01-01"),
                    "2025-01-02": _partition("raw.bookings", "v1", "dt=2025-01-02"),
                }
            )
        },
        "test",
    )
    catalog.register_commit(commit.seq, ["raw.bookings"])
    boto3.client("glue").batch_delete_partition(
        DatabaseName=catalog.database,
        TableName="raw_bookings",
        PartitionsToDelete=[{"Values": ["2025-01-02"]}],
    )

    again = catalog.register_commit(commit.seq, ["raw.bookings"])

    assert again.partitions == {"created": 1, "moved": 1}
    assert set(_registered(catalog, "raw.bookings")) == {"2025-01-01", "2025-01-02"}
