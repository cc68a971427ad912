"""The SparkSession: one per process, with UTC everywhere, tuned for one small machine when
run locally. On Glue / EMR the cluster decides master, memory and jars."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from rental_platform.contract import MARIADB_JDBC_JAR
from rental_platform.spark.local_fs import (
    FILE_SYSTEM_CLASS,
    local_fs_jar,
    local_jvm_dir,
    spark_jars,
)

UTC_JVM_OPTION = "-Duser.timezone=UTC"
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
    # Heap for the driver, which is also the executor here: with the JVM's own overhead and
    # Python, a year of data fits in 2 GB; Spark spills what does not fit in memory.
    "spark.driver.memory": "1g",
    "spark.jars": MARIADB_JDBC_JAR,
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}
# Settings holding lists of jars: RENTAL_SPARK_CONF extends them rather than replacing them.
JAR_LIST_SEPARATORS = {"spark.jars": ",", "spark.driver.extraClassPath": os.pathsep}
# The serial collector suits a 1 GB heap on two cores.
LOCAL_JAVA_OPTIONS = ("-XX:+UseSerialGC",)
LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
# A run of a few months or less is mostly small Spark jobs whose time goes to loading and
# compiling classes, not to rows: the quick C1 compiler alone makes them warm up sooner. A
# longer range runs hot loops over millions of rows, where C2's faster code repays its
# compilation (benchmarks/README.md, "Local machinery", has the measurements).
QUICK_COMPILER = "-XX:TieredStopAtLevel=1"
QUICK_COMPILER_MAX_DAYS = 180


def get_or_create_session(
    master: str | None = LOCAL_MASTER,
    extra_conf: Mapping[str, str] | None = None,
    days: int | None = None,
) -> SparkSession:
    """The process's SparkSession; the first call pays the JVM start, later calls reuse it.

    `master=None` leaves master and resources to the cluster (a Glue or EMR job). `days`: how
    long a range the process works on, if known; it chooses the local JVM's compilers.
    """
    builder = SparkSession.builder.appName("rental-platform")
    if master is not None:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master(master)
    for key, value in session_conf(master, extra_conf, days).items():
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


def session_conf(
    master: str | None, extra_conf: Mapping[str, str] | None, days: int | None = None
) -> dict[str, str]:
    """The session's settings, then the caller's (RENTAL_SPARK_CONF): a caller's setting
    replaces the session's, except the jar lists, which it extends: jars a user adds (hadoop-aws
    for an S3 lake) must not drop the JDBC driver, nor the jar of the local file system that
    `spark.hadoop.fs.file.impl` names."""
    conf = dict(PORTABLE_CONF)
    if master is not None:
        conf |= LOCAL_CONF
        conf["spark.driver.extraJavaOptions"] = " ".join(local_java_options(days=days))
        file_system_jar = local_fs_jar()
        if file_system_jar.is_file():
            conf["spark.driver.extraClassPath"] = str(file_system_jar)
            conf["spark.hadoop.fs.file.impl"] = FILE_SYSTEM_CLASS
    for key, value in (extra_conf or {}).items():
        separator = JAR_LIST_SEPARATORS.get(key)
        conf[key] = f"{conf[key]}{separator}{value}" if separator and conf.get(key) else value
    return conf


def start_local_session_early(
    extra_conf: Mapping[str, str] | None = None, days: int | None = None
) -> None:
    """Start the local Spark JVM on a background thread, while Python goes on importing and
    loading Dagster: the first step finds the session (or waits for the rest of its start)
    instead of paying the whole start, about 3 s, itself. Its settings must be the local
    runner's, whose later call then returns this session."""
    threading.Thread(
        target=get_or_create_session,
        args=(LOCAL_MASTER, extra_conf, days),
        name="spark-session-start",
        daemon=True,
    ).start()


def local_java_options(archiving_to: Path | None = None, days: int | None = None) -> list[str]:
    """The local driver JVM's options: C1 alone unless the range is longer than
    `QUICK_COMPILER_MAX_DAYS`; with the class-data archive if one was built for this Java and
    these Spark jars, or writing one at exit to `archiving_to`."""
    options = [UTC_JVM_OPTION, *LOCAL_JAVA_OPTIONS, f"-Dlog4j2.configurationFile={LOG_CONFIG}"]
    if days is None or days <= QUICK_COMPILER_MAX_DAYS:
        options.append(QUICK_COMPILER)
    if archiving_to is not None:
        # The JVM warns of each class it cannot archive (generated ones): thousands of lines.
        options += [f"-XX:ArchiveClassesAtExit={archiving_to}", "-Xlog:cds=off,cds+dynamic=off"]
    elif (archive := class_archive_path()).is_file():
        options.append(f"-XX:SharedArchiveFile={archive}")
    return options


def class_archive_path() -> Path:
    """Where the class-data archive of this environment's Java and Spark jars is (JDK AppCDS):
    the JVM maps the classes a step loads from it instead of reading and verifying them from
    the jars, about 3 s of a one-day increment. `rental-platform class-archive` builds it
    (`make setup` does). Its name holds a fingerprint of the Java binary and the jars on the
    driver's class path, which the archive is only valid for: after an upgrade of either, the
    old one is ignored until a new one is built."""
    java = Path(os.environ.get("JAVA_HOME", ""), "bin", "java")
    if not java.is_file():
        java = Path(shutil.which("java") or "java")
    file_system_jar = local_fs_jar()
    jars = [*spark_jars(), *([file_system_jar] if file_system_jar.is_file() else [])]
    fingerprint = hashlib.sha256()
    for path in (java.resolve(), *jars):
        stat = path.stat() if path.exists() else None
        fingerprint.update(f"{path}:{stat and stat.st_size}:{stat and stat.st_mtime_ns}\n".encode())
    return local_jvm_dir() / f"spark-classes-{fingerprint.hexdigest()[:16]}.jsa"
