"""The Parquet lake as the Dagster side sees it: a root, and where a table's files are.

Spark reads and writes the lake itself; the Dagster side only lists a KPI table's files to
publish them: a local lake in place, an S3 lake (through dagster-aws's S3Resource) by copying
the files here, unless the warehouse loads them from S3 itself (Redshift's COPY).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg

from rental_platform.spark import layout
from rental_platform.tables import Table


class Lake(dg.ConfigurableResource, ABC):
    """A lake at `root` (RENTAL_LAKE_ROOT)."""

    root: str

    @property
    def on_s3(self) -> bool:
        return self.root.startswith("s3://")

    @abstractmethod
    def parquet_files(self, table: Table, periods: list[date]) -> list[str]:
        """The Parquet files of the given partitions: paths, or s3:// URIs."""

    @contextmanager
    def local_copies(self, files: list[str]) -> Iterator[list[str]]:
        """The files as paths on this machine, for as long as the context lasts."""
        yield files


class LocalLake(Lake):
    """A lake in a local folder."""

    def parquet_files(self, table: Table, periods: list[date]) -> list[str]:
        files: list[str] = []
        for period in periods:
            folder = Path(layout.period_path(self.root, table, period))
            files += sorted(str(p) for p in folder.glob("*.parquet"))
        return files


def lake_for(root: str) -> Lake:
    if not root.startswith("s3://"):
        return LocalLake(root=root)
    # dagster-aws is imported only for an S3 lake: it takes about a second.
    from dagster_aws.s3 import S3Resource

    from rental_platform.resources.s3_lake import S3Lake

    return S3Lake(root=root, s3=S3Resource())
