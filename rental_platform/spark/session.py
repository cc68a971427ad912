"""The SparkSession: one per process, with UTC everywhere, tuned for one small machine when
run locally. On Glue / EMR the cluster decides master, memory and jars."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pyspark.sql import SparkSession

MARIADB_JDBC_JAR = "/usr/share/java/mariadb-java-client.jar"

# DATETIME values are UTC and must not shift: the JVM, the session and the JDBC driver all use
# UTC, wherever the step runs.
PORTABLE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # A step reads up to hundreds of day folders: list them on the driver, not with a Spark job
    # of one task per folder (the default above 32 paths).
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "4096",
}
# One machine: the UI and the progress bar cost start-up time and clutter logs; shuffles are
# sized for its cores; everything stays on loopback.
LOCAL_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": str(max(2, 2 * (os.cpu_count() or 1))),
    # Heap for the driver, which is also the executor here: with the JVM's own overhead and
    # Python, a year of data fits in 2 GB; Spark spills what does not fit in memory.
    "spark.driver.memory": "1g",
    "spark.jars": MARIADB_JDBC_JAR,
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


def get_or_create_session(
    master: str | None = "local[*]", extra_conf: Mapping[str, str] | None = None
) -> SparkSession:
    """The process's SparkSession; the first call pays the JVM start, later calls reuse it.

    `master=None` leaves master and resources to the cluster (a Glue or EMR job).
    """
    builder = SparkSession.builder.appName("rental-platform")
    conf = dict(PORTABLE_CONF)
    if master is not None:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master(master)
        conf |= LOCAL_CONF
    for key, value in {**conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
