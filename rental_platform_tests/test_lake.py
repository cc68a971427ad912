"""The lake's commits (`spark/manifest.py`) on a local folder and on S3 (moto's server): a write
is invisible until committed, two writers never make the same commit, racing writers both keep
their partitions, readers see exactly the committed files, superseded and abandoned versions
go after the grace period; and the schema a step wrote is read back from its files."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import boto3
import duckdb
import pytest
from pyspark.sql import SparkSession

from rental_platform import tables
from rental_platform.local.session import local_session
from rental_platform.spark.lake import Lake
from rental_platform.spark.manifest import (
    WHOLE,
    CommitLog,
    LocalStore,
    Partition,
    S3Store,
    TableChange,
    commit_key,
    committed_files,
)
from rental_platform_tests import chaos
from rental_platform_tests.aws import aws  # noqa: F401

TOP = tables.TOP_LISTINGS
WEEK = date(2025, 1, 6)


@pytest.fixture(scope="module")
def spark() -> SparkSession:
    return local_session()


def _rows(spark: SparkSession, weeks: list[date], revenue: str = "1.00"):
    return spark.createDataFrame(
        [
            (week, "USD", n, f"L{n}", "TX", "Austin", revenue, 1, n)
            for week in weeks
            for n in (1, 2)
        ],
        "week_start date, currency string, apartment_id long, title string, state string, "
        "cityname string, revenue string, booking_count long, rank long",
    )


def _stored(lake_root: str, table: tables.Table) -> list[tuple]:
    files = committed_files(lake_root, table.id)
    if not files:
        return []
    with duckdb.connect() as connection:
        return connection.execute(
            f"SELECT week_start, apartment_id, revenue FROM read_parquet({files!r}) ORDER BY ALL"
        ).fetchall()


def test_a_write_is_invisible_until_committed(spark: SparkSession, tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    writer = Lake(spark, root)
    writer.stage_periods(_rows(spark, [WEEK]), TOP, [WEEK])
    # Written to disk, yet no reader sees it: not a new step's lake, not another engine.
    assert Lake(spark, root).read_periods(TOP, WEEK, WEEK + timedelta(7)).count() == 0
    assert _stored(root, TOP) == []
    assert writer.commit([TOP], "test") == 1
    assert Lake(spark, root).read_periods(TOP, WEEK, WEEK + timedelta(7)).count() == 2
    assert [row[1] for row in _stored(root, TOP)] == [1, 2]


def test_a_new_version_replaces_the_partition_and_the_old_one_stays_for_the_grace_period(
    spark: SparkSession, tmp_path: Path
) -> None:
    root = str(tmp_path / "lake")
    first = Lake(spark, root)
    first.stage_periods(_rows(spark, [WEEK], "1.00"), TOP, [WEEK])
    first.commit([TOP], "first")
    old_folder = first.state.table(TOP.id).partitions[WEEK.isoformat()].folder
    second = Lake(spark, root)
    second.stage_periods(_rows(spark, [WEEK], "2.00"), TOP, [WEEK])
    second.commit([TOP], "second")
    assert {row[2] for row in _stored(root, TOP)} == {2}
    log = CommitLog(LocalStore(root))
    # A reader that planned its read on the first commit can still read it.
    assert log.collect_garbage() == []
    assert (Path(root) / old_folder).is_dir()
    assert {row[2] for row in _read(log.at(1).files(TOP.id))} == {1}
    # Past the grace period (and the commits always kept), it goes.
    assert Lake(spark, root).commit([], "nothing") is None  # nothing staged: no commit
    _commit_many(log, 25)
    deleted = log.collect_garbage(grace=timedelta(0))
    assert old_folder in deleted
    assert not (Path(root) / old_folder).exists()
    assert {row[2] for row in _stored(root, TOP)} == {2}


def _read(files: list[str]) -> list[tuple]:
    with duckdb.connect() as connection:
        return connection.execute(
            f"SELECT week_start, apartment_id, revenue FROM read_parquet({files!r})"
        ).fetchall()


def _commit_many(log: CommitLog, count: int) -> None:
    for n in range(count):
        log.commit({"test.counter": TableChange(facts={"n": n})}, "counter")


def test_writers_racing_for_one_commit_number_never_both_make_it(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def create(n: int) -> None:
        barrier.wait()
        results.append(store.create(commit_key(1), f'{{"seq": 1, "writer": {n}}}'.encode()))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.list("_lake") == [commit_key(1)]  # no partial or temporary file is left


def _commit_partition(root: str, key: str) -> None:
    log = CommitLog(LocalStore(root))
    change = TableChange({key: Partition(f"presentation/top_listings/v-{key}/week={key}", (), 0)})
    log.commit({TOP.id: change}, f"writer {key}")


def test_racing_writers_in_processes_keep_every_partition(tmp_path: Path) -> None:
    """Processes committing different partitions of one table at the same time: each commit
    applies on top of the one it lost to, so none is lost."""
    root = str(tmp_path)
    keys = [(WEEK + timedelta(weeks=n)).isoformat() for n in range(12)]
    # Spawned, not forked: a fork of this process (a JVM's and other threads' locks held at
    # the moment of the fork) can hang in its child for ever.
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        pool.starmap(_commit_partition, [(root, key) for key in keys])
    head = CommitLog(LocalStore(root)).head()
    assert head.seq == len(keys)
    assert sorted(head.table(TOP.id).partitions) == keys


def test_a_writer_killed_before_its_commit_leaves_the_committed_state(
    spark: SparkSession, tmp_path: Path
) -> None:
    """SIGKILL while a writer is between writing its version and committing it."""
    root = str(tmp_path / "lake")
    lake = Lake(spark, root)
    lake.stage_periods(_rows(spark, [WEEK], "1.00"), TOP, [WEEK])
    lake.commit([TOP], "first")
    staged = Lake(spark, root)
    staged.stage_periods(_rows(spark, [WEEK], "9.00"), TOP, [WEEK])
    child = os.fork()
    if child == 0:  # the writer: it stops for good just before committing
        os.kill(os.getpid(), signal.SIGSTOP)
        staged.commit([TOP], "killed")
        os._exit(0)
    os.waitpid(child, os.WUNTRACED)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert {row[2] for row in _stored(root, TOP)} == {1}
    log = CommitLog(LocalStore(root))
    assert log.head().seq == 1
    # Its version is an orphan: collected once older than the grace period, not before.
    orphan = staged.staged(TOP)[WEEK.isoformat()].folder.rsplit("/", 1)[0]
    assert log.collect_orphans() == []
    assert log.collect_orphans(grace=timedelta(seconds=-1)) == [orphan]
    assert not (Path(root) / orphan).exists()
    assert {row[2] for row in _stored(root, TOP)} == {1}


def test_commits_on_s3_are_conditional_puts(aws: str) -> None:  # noqa: F811
    boto3.client("s3").create_bucket(Bucket="lake")
    store = S3Store("s3://lake/prefix")
    assert store.create(commit_key(1), b'{"seq": 1, "tables": {}}')
    assert not store.create(commit_key(1), b'{"seq": 1, "tables": {"other": "x"}}')
    assert store.read(commit_key(1)) == b'{"seq": 1, "tables": {}}'
    log = CommitLog(store)
    state = log.commit({TOP.id: TableChange(facts={"a": 1})}, "s3 writer")
    assert state.seq == 2
    assert CommitLog(S3Store("s3://lake/prefix")).head().table(TOP.id).facts == {"a": 1}
    assert store.list("_lake/commits") == [commit_key(1), commit_key(2)]


def test_a_bucket_that_refuses_writes_leaves_the_commit_log_as_it_was(
    aws: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """A bucket policy denies PutObject on the commit log: the commit fails naming the object,
    readers keep the previous commit, and once the policy is lifted the commit goes in."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="refusing")
    log = CommitLog(S3Store("s3://refusing/lake"))
    first = log.commit({TOP.id: TableChange(facts={"a": 1})}, "writer")
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::refusing/lake/_lake/commits/*",
    }
    s3.put_bucket_policy(
        Bucket="refusing", Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    )
    started = time.monotonic()
    try:
        with pytest.raises(PermissionError, match="s3://refusing/lake/_lake/commits/"):
            log.commit({TOP.id: TableChange(facts={"a": 2})}, "writer")
        head = CommitLog(S3Store("s3://refusing/lake")).head()
        assert (head.seq, head.table(TOP.id).facts) == (first.seq, {"a": 1})
    finally:
        s3.delete_bucket_policy(Bucket="refusing")
    after = log.commit({TOP.id: TableChange(facts={"a": 2})}, "writer")
    chaos.record_recovery(
        request.node.nodeid,
        "S3 bucket policy denies PutObject on the commit log (committed state compared)",
        {TOP.id: list(first.table(TOP.id).facts.items())},
        {TOP.id: list(head.table(TOP.id).facts.items())},
        started,
    )
    assert (after.seq, after.table(TOP.id).facts) == (first.seq + 1, {"a": 2})


def test_the_schema_comes_from_the_files_the_step_wrote(spark: SparkSession, tmp_path) -> None:
    lake = Lake(spark, str(tmp_path))
    assert lake.stored_schema(tables.AVG_LISTING_PRICE) is None
    lake.stage_periods(_rows(spark, [WEEK]), TOP, [WEEK, WEEK + timedelta(7)])
    stored = lake.stored_schema(TOP)
    assert [(f.name, f.dataType.simpleString()) for f in stored.fields] == [
        (c.name, c.type) for c in TOP.columns
    ]


def test_a_snapshot_is_one_partition(spark: SparkSession, tmp_path) -> None:
    lake = Lake(spark, str(tmp_path))
    columns = ", ".join(
        f"{'1' if c.name == 'id' else 'NULL'} AS {c.name}" for c in tables.RAW_APARTMENTS.columns
    )
    lake.stage_snapshot(spark.sql(f"SELECT {columns}"), tables.RAW_APARTMENTS)
    lake.commit([tables.RAW_APARTMENTS], "snapshot")
    assert list(lake.state.table(tables.RAW_APARTMENTS.id).partitions) == [WHOLE]
    assert Lake(spark, str(tmp_path)).read_snapshot(tables.RAW_APARTMENTS).count() == 1


def test_a_dated_write_gathers_its_rows_into_no_more_tasks_than_periods(spark, tmp_path) -> None:
    """A day's increment writes as one task; a year as many as the session's shuffle has."""
    lake = Lake(spark, str(tmp_path))
    shuffle_partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    assert shuffle_partitions > 1
    assert lake.write_partitions(1) == 1
    assert lake.write_partitions(2) == 2
    assert lake.write_partitions(365) == shuffle_partitions
