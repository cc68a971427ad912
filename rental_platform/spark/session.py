"""The local SparkSession: one per process, tuned for a small machine, with UTC everywhere."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pyspark.sql import SparkSession

MARIADB_JDBC_JAR = "/usr/share/java/mariadb-java-client.jar"

# DATETIME values are UTC and must not shift: the JVM, the session and the JDBC driver all use
# UTC. The UI and the console progress bar cost start-up time and clutter logs.
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": str(max(2, 2 * (os.cpu_count() or 1))),
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.driver.memory": "2g",
    "spark.jars": MARIADB_JDBC_JAR,
    # Stay on loopback: nothing here needs another interface.
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


def get_or_create_session(
    master: str = "local[*]", extra_conf: Mapping[str, str] | None = None
) -> SparkSession:
    """The process's SparkSession; the first call pays the JVM start, later calls reuse it."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName("rental-platform")
    for key, value in {**BASE_CONF, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
