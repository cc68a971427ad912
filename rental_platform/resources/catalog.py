"""The Glue Data Catalog as the Dagster side keeps it: after each step, the partitions the
step's lake commit changed (`lake_catalog.py`). Without a database set, there is no catalog."""

from __future__ import annotations

import dagster as dg

from rental_platform.lake_catalog import GlueCatalog, catalog_table_name
from rental_platform.tables import Table


class LakeCatalog(dg.ConfigurableResource):
    """The Glue database `database` (RENTAL_GLUE_DATABASE) showing the lake at `lake_root`."""

    lake_root: str
    database: str | None = None

    def register_commit(self, seq: int, table_ids: list[str]) -> list[str]:
        """Register what lake commit `seq` changed in these tables; what changed, as lines."""
        if self.database is None:
            return []
        return (
            GlueCatalog(self.database, self.lake_root)
            .register_commit(seq, table_ids)
            .lines(self.database)
        )

    def table_name(self, table: Table) -> str | None:
        """The table as the catalog names it, for the asset's metadata."""
        return f"{self.database}.{catalog_table_name(table)}" if self.database else None
