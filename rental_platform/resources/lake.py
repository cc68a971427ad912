"""The Parquet lake as the Dagster side sees it: a root, and which files its commits name.

Spark reads and writes the lake itself; the Dagster side only reads the commit log
(`spark/manifest.py`, pure Python) to publish a KPI window's committed files: a local lake in
place, an S3 lake (through dagster-aws's S3Resource) by copying the files here, unless the
warehouse loads them from S3 itself (Redshift's COPY).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import dagster as dg

from rental_platform.spark.manifest import CommitLog, LakeStore, LocalStore
from rental_platform.tables import Table


class LakeResource(dg.ConfigurableResource, ABC):
    """A lake at `root` (RENTAL_LAKE_ROOT)."""

    root: str

    @property
    def on_s3(self) -> bool:
        return self.root.startswith("s3://")

    @abstractmethod
    def store(self) -> LakeStore:
        """Where the lake's objects are."""

    def parquet_files(
        self, table: Table, periods: list[date], commit: int | None = None
    ) -> list[str]:
        """The committed Parquet files of the given partitions, as of `commit` (the newest if
        None): paths, or s3:// URIs."""
        log = CommitLog(self.store())
        state = log.head() if commit is None else log.at(commit)
        return state.files(table.id, [period.isoformat() for period in periods])

    @contextmanager
    def local_copies(self, files: list[str]) -> Iterator[list[str]]:
        """The files as paths on this machine, for as long as the context lasts."""
        yield files


class LocalLakeResource(LakeResource):
    """A lake in a local folder."""

    def store(self) -> LakeStore:
        return LocalStore(self.root)
