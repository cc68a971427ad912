"""What each fault test measured, for `make chaos` (benchmarks/chaos.py): the fault, whether it
was injected, the rows lost and duplicated against an undisturbed run, and the seconds from the
fault to the recovered state. A fault test records before its final assertions; whether it
survived is the test's own outcome. Outside `make chaos` recording does nothing."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPORT_ENV = "RENTAL_CHAOS_REPORT"
# `make chaos` sets it: every kill point of the matrix, not only the short version's.
FULL_ENV = "RENTAL_CHAOS_FULL"


@contextmanager
def refusing_writes(path: Path) -> Iterator[None]:
    """The folder refuses every new entry, or the file every write, also to root (whom a
    read-only mode does not stop: the tests run as root): the immutable attribute,
    `chattr +i`. A missing path is made a folder."""
    if not path.exists():
        path.mkdir(parents=True)
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def full_matrix() -> bool:
    return os.environ.get(FULL_ENV) == "1"


def row_differences(
    expected: Mapping[str, Sequence[tuple]], actual: Mapping[str, Sequence[tuple]]
) -> tuple[int, int]:
    """(rows lost, rows duplicated or extra) of `actual` against `expected`, table by table,
    duplicates counted."""
    lost = duplicated = 0
    for table in expected.keys() | actual.keys():
        want, have = Counter(expected.get(table, ())), Counter(actual.get(table, ()))
        lost += sum((want - have).values())
        duplicated += sum((have - want).values())
    return lost, duplicated


def record_recovery(
    test_id: str,
    fault: str,
    expected: Mapping[str, Sequence[tuple]],
    actual: Mapping[str, Sequence[tuple]],
    injected_at: float,
) -> None:
    """Record a fault injected at `injected_at` (time.monotonic()) whose recovery left
    `actual`, against the undisturbed `expected`."""
    lost, duplicated = row_differences(expected, actual)
    record(
        test_id,
        fault,
        injected=True,
        lost=lost,
        duplicated=duplicated,
        recover_seconds=time.monotonic() - injected_at,
    )


def record(
    test_id: str,
    fault: str,
    *,
    injected: bool,
    lost: int,
    duplicated: int,
    recover_seconds: float,
) -> None:
    """Append one line to the report `make chaos` asked for (RENTAL_CHAOS_REPORT)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    line = {
        "test": test_id,
        "fault": fault,
        "injected": injected,
        "rows_lost": lost,
        "rows_duplicated": duplicated,
        "recover_seconds": round(recover_seconds, 1),
    }
    with Path(path).open("a") as report:
        report.write(json.dumps(line) + "\n")
