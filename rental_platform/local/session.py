"""The local runner's SparkSession: Spark's local session with the switched-on parts' tuning."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping

from pyspark.sql import SparkSession

from rental_platform.local.jvm import tuning_conf
from rental_platform.spark.session import LOCAL_MASTER, get_or_create_session


def local_session(
    user_conf: Mapping[str, str] | None = None,
    off: Collection[str] = (),
    days: int | None = None,
) -> SparkSession:
    """The process's local session: tuned for `days` (None: unknown) unless the parts are
    switched `off`, then the user's settings (RENTAL_SPARK_CONF) over both."""
    return get_or_create_session(LOCAL_MASTER, tuning_conf(off, days), user_conf)


def start_local_session_early(
    user_conf: Mapping[str, str] | None = None,
    off: Collection[str] = (),
    days: int | None = None,
) -> None:
    """Part `early_jvm`: start the local Spark JVM on a background thread, while Python goes on
    importing and loading Dagster. The first step finds the session (or waits for the rest of
    its start) instead of paying the whole start itself; its later `local_session` call, with
    the same arguments, returns this session."""
    threading.Thread(
        target=local_session,
        args=(user_conf, off, days),
        name="spark-session-start",
        daemon=True,
    ).start()
