"""The local runner's SparkSession: Spark's local session with the switched-on parts' tuning."""

from __future__ import annotations

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
