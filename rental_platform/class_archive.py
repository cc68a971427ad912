"""Build the class-data archive the local Spark JVM starts from (`class_archive_path`).

A JVM trained on every step, over a tiny seeded source and a scratch lake, writes the classes
it loaded to the archive when it exits. `make setup` runs this once per environment; without
an archive the platform runs the same, only slower to warm up.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path

import pymysql
from pyspark.sql import SparkSession

from rental_platform import tables
from rental_platform.seed import SeedScale, seed_source
from rental_platform.settings import MySqlSource
from rental_platform.spark.extract import SourceConnection
from rental_platform.spark.session import (
    class_archive_path,
    get_or_create_session,
    local_java_options,
)
from rental_platform.spark.steps import STEPS, StepRequest, run_step

# Two weeks from a Monday: every step, the weekly and monthly KPIs included, has rows to work on.
TRAINING_SCALE = SeedScale(
    listings=30, users=60, bookings=400, views=1_000, start=date(2024, 12, 30), days=14
)
TRAINING_SUFFIX = "_class_archive"


def build_class_archive(source: MySqlSource) -> Path:
    """Train a JVM and keep the archive it writes; the server of `source` lends a scratch
    database for it, dropped afterwards. Older archives in the same folder are removed."""
    target = class_archive_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    # Its own database: two set-ups at once do not seed over each other.
    training = replace(source, database=f"{source.database[:32]}{TRAINING_SUFFIX}_{os.getpid()}")
    try:
        seed_source(training.pymysql_kwargs(), TRAINING_SCALE)
        with tempfile.TemporaryDirectory(prefix="rental-class-archive-") as lake:
            spark = get_or_create_session(
                extra_conf={"spark.driver.extraJavaOptions": " ".join(local_java_options(partial))}
            )
            _train(spark, training, lake)
            _exit_jvm(spark)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        _drop_database(training)
    for stale in target.parent.glob("spark-classes-*.jsa"):
        if stale != target:
            stale.unlink()
    return target


def _train(spark: SparkSession, source: MySqlSource, lake: str) -> None:
    """Every step, in dependency order, over every table; a step ignores what it does not use
    (the window of a snapshot step, the source of a curation)."""
    request = StepRequest(
        step="",
        tables=tuple(table.id for table in tables.ALL_TABLES),
        lake_root=lake,
        window_start=TRAINING_SCALE.start,
        window_end=TRAINING_SCALE.end,
        source=SourceConnection(source.jdbc_url, source.user, source.password),
    )
    for step in STEPS:
        run_step(spark, replace(request, step=step))


def _exit_jvm(spark: SparkSession) -> None:
    """Stop Spark and let its JVM exit by itself (it does when its stdin closes): the archive
    is written on the way out, which a killed JVM never does."""
    gateway = spark.sparkContext._gateway
    spark.stop()
    gateway.proc.stdin.close()
    gateway.proc.wait(timeout=600)


def _drop_database(source: MySqlSource) -> None:
    server = {key: value for key, value in source.pymysql_kwargs().items() if key != "database"}
    with pymysql.connect(**server) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{source.database}`")
