"""The SparkSession: one per process, with UTC everywhere, sized for one small machine when
run locally. On Glue / EMR the cluster decides master, memory and jars. The local runner's
speed machinery adds its own settings (`rental_platform.local`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from rental_platform.contract import MARIADB_JDBC_JAR

LOCAL_MASTER = "local[*]"

# DATETIME values are UTC and must not shift: the session, and every JVM the JDBC driver reads
# in, use UTC wherever the step runs. Executors take it from their environment (a JVM's
# default zone is TZ): their Java options belong to Glue and EMR, which set their own there.
# A cluster's driver JVM is running before this code, so `get_or_create_session` sets its zone.
PORTABLE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.executorEnv.TZ": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Dates are proleptic Gregorian as written, as every other engine reads them: a listing's
    # first version starts on 0001-01-01, which Spark would otherwise refuse to write.
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    # Readers find committed files through the lake's commit log, not through markers.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    # A step reads up to hundreds of day folders: list them on the driver, not with a Spark job
    # of one task per folder (the default above 32 paths).
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "4096",
    # Spark describes the plans of the wide tables (quarantines carry every raw column) in
    # full, instead of warning in the step's output that it cut them short.
    "spark.sql.debug.maxToStringFields": "100",
}
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
# The serial collector suits a 1 GB heap on two cores.
LOCAL_JAVA_OPTIONS = (
    "-Duser.timezone=UTC",
    "-XX:+UseSerialGC",
    f"-Dlog4j2.configurationFile={LOG_CONFIG}",
)
# One machine: the UI and the progress bar cost start-up time and clutter logs; shuffles are
# sized for its cores; everything stays on loopback.
LOCAL_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # A shuffle of millions of rows into a few partitions gives each task a hash table that
    # outgrows a 1 GB heap's execution memory, and aggregation falls back to sorting and
    # spilling (1.4 GB spilled, a third of a year's curation, when it was 4): many partitions,
    # which adaptive execution coalesces by size, not by core count, so that small data still
    # runs as one or two tasks.
    "spark.sql.shuffle.partitions": str(8 * (os.cpu_count() or 1)),
    "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
    "spark.sql.adaptive.advisoryPartitionSizeInBytes": "8m",
    # Shuffle files stay on this machine's disk: compressing them spends the two cores on
    # bytes that never cross a network (spills, which can be large, stay compressed).
    "spark.shuffle.compress": "false",
    # Heap for the driver, which is also the executor here: with the JVM's own overhead and
    # Python, a year of data fits in 2 GB; Spark spills what does not fit in memory.
    "spark.driver.memory": "1g",
    "spark.jars": MARIADB_JDBC_JAR,
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.extraJavaOptions": " ".join(LOCAL_JAVA_OPTIONS),
}
# Settings holding lists (of jars, of Java options): a later layer extends them rather than
# replacing them, so that jars a user adds (hadoop-aws for an S3 lake) keep the JDBC driver,
# and Java options keep UTC.
LIST_SEPARATORS = {
    "spark.jars": ",",
    "spark.driver.extraClassPath": os.pathsep,
    "spark.driver.extraJavaOptions": " ",
}


def get_or_create_session(
    master: str | None = LOCAL_MASTER, *layers: Mapping[str, str] | None
) -> SparkSession:
    """The process's SparkSession; the first call pays the JVM start, later calls reuse it.

    `master=None` leaves master and resources to the cluster (a Glue or EMR job). `layers`:
    settings over the session's own, in order (`session_conf`).
    """
    builder = SparkSession.builder.appName("rental-platform")
    if master is not None:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master(master)
    for key, value in session_conf(master, *layers).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    if master is None:
        use_utc_in_driver_jvm(session)
    return session


def use_utc_in_driver_jvm(session: SparkSession) -> None:
    """Make UTC the default zone of a driver JVM that was started before this code ran (Glue,
    EMR): JDBC reads turn DATETIME values into instants in it."""
    time_zone = _jvm_time_zone(session)
    time_zone.setDefault(time_zone.getTimeZone("UTC"))


def driver_time_zone(session: SparkSession) -> str:
    """The driver JVM's default zone, the one JDBC reads DATETIME values in."""
    return _jvm_time_zone(session).getDefault().getID()


def _jvm_time_zone(session: SparkSession) -> Any:
    """java.util.TimeZone in the driver JVM (a py4j proxy). PySpark has no public handle on
    the JVM; `_jvm` is pinned by test_session.py."""
    return session.sparkContext._jvm.java.util.TimeZone


def session_conf(master: str | None, *layers: Mapping[str, str] | None) -> dict[str, str]:
    """The session's settings, then each layer's: a layer's setting replaces the one before,
    except the lists (`LIST_SEPARATORS`), which it extends."""
    conf = dict(PORTABLE_CONF)
    if master is not None:
        conf |= LOCAL_CONF
    for layer in layers:
        for key, value in (layer or {}).items():
            separator = LIST_SEPARATORS.get(key)
            conf[key] = f"{conf[key]}{separator}{value}" if separator and conf.get(key) else value
    return conf
