"""The local runner's SparkSession: Spark's local session with the switched-on parts' tuning,
started on first use, or ahead of it in the background."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from concurrent.futures import Future, wait

from pyspark.sql import SparkSession

from rental_platform.local.jvm import tuning_conf
from rental_platform.spark.session import LOCAL_MASTER, get_or_create_session

# The start begun by `start_in_background`, if one was.
_background_start: Future[SparkSession] | None = None
_background_lock = threading.Lock()


def local_session(
    user_conf: Mapping[str, str] | None = None,
    off: Collection[str] = (),
    days: int | None = None,
) -> SparkSession:
    """The process's local session: tuned for `days` (None: unknown) unless the parts are
    switched `off`, then the user's settings (RENTAL_SPARK_CONF) over both. Waits for a start
    in the background to end first; if that one failed, this one tries again, so the error is
    raised where the session is needed."""
    if _background_start is not None:
        wait([_background_start])
    return _session(user_conf, off, days)


def start_in_background(
    user_conf: Mapping[str, str] | None = None,
    off: Collection[str] = (),
    days: int | None = None,
) -> None:
    """Start the session `local_session` would return, in a thread of its own: the JVM starts
    while the caller goes on, and the first `local_session` finds it started, or waits for
    it. Nothing if a start was begun already."""
    global _background_start
    with _background_lock:
        if _background_start is not None:
            return
        _background_start = started = Future()

    def start() -> None:
        try:
            started.set_result(_session(user_conf, off, days))
        except Exception as error:  # raised again by `local_session`'s own attempt
            started.set_exception(error)

    threading.Thread(target=start, name="local-spark-session", daemon=True).start()


def _session(
    user_conf: Mapping[str, str] | None, off: Collection[str], days: int | None
) -> SparkSession:
    return get_or_create_session(LOCAL_MASTER, tuning_conf(off, days), user_conf)
