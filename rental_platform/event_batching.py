"""Dagster's event batching, which both of the platform's instances turn on.

Dagster hands a step's events to the event log in batches (one statement or transaction for a
backfill's hundreds of per-partition materialisations) only while `DAGSTER_EVENT_BATCH_SIZE`
is above 0 in the process that runs the step; unset, it stores them one by one. The instances'
storages (`local/event_log.py`, `postgres_storage.py`) set it when they open, so every process
that opens the instance (the CLI, the webserver, the daemon, a run's worker) batches.
"""

from __future__ import annotations

import os

BATCH_SIZE_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# A batch is stored when it ends or reaches this size (a year of one daily asset's
# materialisations is 365).
BATCH_SIZE = 5000


def turn_on_event_batching() -> None:
    """Batch this process's events, unless the environment already says how."""
    os.environ.setdefault(BATCH_SIZE_VARIABLE, str(BATCH_SIZE))
