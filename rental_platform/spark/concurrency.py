"""Tables worked on side by side in one Spark driver.

A table's work is a chain of small Spark jobs and source queries whose driver-side part
(planning, committing files, waiting on the source) would leave the cores idle if the tables
went one after the other; two threads keep both cores of a small machine, or a cluster's
executors, busy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

# Tables worked on at once.
CONCURRENT_TABLES = 2

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_concurrently(
    work: Callable[[Item], Result], items: Iterable[Item], name: str = "table"
) -> list[Result]:
    """`work` on every item, `CONCURRENT_TABLES` at once, its results in the items' order. The
    first failure is raised once all have ended, so no thread is left writing."""
    with ThreadPoolExecutor(CONCURRENT_TABLES, thread_name_prefix=name) as pool:
        return list(pool.map(work, items))


def side_by_side(*work: Callable[[], Any]) -> list[Any]:
    """Independent parts of one table's work (writes, checks), `CONCURRENT_TABLES` at once,
    their results in order: a step over one small table is a chain of Spark jobs whose
    driver-side part would otherwise leave the cores idle."""
    return map_concurrently(lambda part: part(), work, name="part")
