"""The production instance's storage (`deploy/dagster.yaml`): dagster-postgres's, unchanged,
with Dagster's event batching on (`event_batching.py`).

Unbatched, a year-long single-run backfill stores each of its thousands of per-partition
materialisations in a statement and a transaction of its own; batched, dagster-postgres
stores a step's materialisations in one statement (`make bench-events`).
"""

from __future__ import annotations

from dagster._core.storage.config import PostgresStorageConfig
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from rental_platform.event_batching import turn_on_event_batching


class BatchingPostgresStorage(DagsterPostgresStorage):
    """`storage: custom:` in dagster.yaml, configured as `storage: postgres:` is: it opens
    dagster-postgres's own storage, having turned event batching on."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: PostgresStorageConfig
    ) -> DagsterPostgresStorage:
        turn_on_event_batching()
        return super().from_config_value(inst_data, config_value)
