"""Which code made a partition: digests of the modules that decide what the lake holds.

A curated partition records the rules it was curated under (`RULES`), a KPI partition the
definitions it was computed under (`KPIS`). A deploy that changes either reaches every
partition they made, not only those whose source changes next (kpis.md, "Always equal to a
full recompute").

Free of pyspark: the Dagster side compares a KPI partition's digest with the deployed code's,
and gives the KPI assets the digest as their code version. The source is read through each
module's loader, without importing it, from files or from the remote jobs' archive alike, so
every runner agrees.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util

# Facts of a partition: the digest of the code it was made by.
RULES = "rules"
KPIS = "kpis"

# The curated rules, and the listing history's (a type 2 dimension) they curate against.
RULES_MODULES = ("rental_platform.spark.curate", "rental_platform.spark.history")
# The KPI definitions, the history's lookups they use, and the figures each period carries.
KPI_MODULES = (
    "rental_platform.spark.kpis",
    "rental_platform.spark.history",
    "rental_platform.spark.figures",
)


@functools.cache
def rules_version() -> str:
    """The rules this code applies: a partition curated under another digest is curated again."""
    return _modules_digest(RULES_MODULES)


@functools.cache
def kpis_version() -> str:
    """The KPI definitions this code computes: a period computed under another digest is
    computed again."""
    return _modules_digest(KPI_MODULES)


def _modules_digest(names: tuple[str, ...]) -> str:
    digests = "".join(code_digest(_source(name)) for name in names)
    return hashlib.sha256(digests.encode()).hexdigest()[:16]


def _source(name: str) -> str:
    spec = importlib.util.find_spec(name)
    source = spec.loader.get_source(name) if spec and spec.loader else None
    if source is None:
        raise RuntimeError(f"the source of {name} cannot be read: its code has no digest")
    return source


def code_digest(source: str) -> str:
    """A digest of Python code that comment lines and blank lines do not change: a reworded
    comment recomputes nothing. Taken from the text, not from Python's tokens, which change
    between versions (3.12's f-strings): the Dagster side's Python and a remote job's may
    differ, and must agree."""
    lines = [line.rstrip() for line in source.splitlines()]
    code = [line for line in lines if line and not line.lstrip().startswith("#")]
    return hashlib.sha256("\n".join(code).encode()).hexdigest()[:16]
