"""One headless cycle at a time on a Dagster instance: the kernel's lock on a file in the
instance's folder. Free of Dagster, so that a command can tell, before importing it, that it
will wait for another's cycle (and not start its JVM to keep it idle meanwhile)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "rental-cycle.lock"


@contextmanager
def one_cycle_at_a_time(root: str | Path) -> Iterator[None]:
    """Hold the instance's cycle lock (waiting for it) while the block runs. A process that
    dies, however, lets go of it."""
    with (Path(root) / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cycle_running(root: str | Path) -> bool:
    """Whether another process holds the instance's cycle lock now."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False
