"""The Parquet lake as the Dagster side sees it: a root, and where a table's files are."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg

from rental_platform.spark import layout
from rental_platform.tables import Table


class LocalLake(dg.ConfigurableResource):
    """A lake in a local folder (`RENTAL_LAKE_ROOT`)."""

    root: str

    def parquet_files(self, table: Table, periods: list[date]) -> list[str]:
        """The Parquet files of the given partitions, for publishing them elsewhere."""
        files: list[str] = []
        for period in periods:
            files += sorted(
                str(p) for p in Path(layout.period_path(self.root, table, period)).glob("*.parquet")
            )
        return files
