"""Runs whose process died without a word: a headless run (the CLI's, a test's) that is killed,
or whose machine stops, stays STARTED in the instance and keeps the `lake` pool slot its step
held, so every later step would wait for it for ever. Each headless run is tagged with its host
and process; the next headless run on that host marks the dead ones failed and frees their
slots. (Runs the daemon launches are Dagster's run monitoring's to watch.)"""

from __future__ import annotations

import logging
import os
import socket

import dagster as dg

WORKER_TAG = "rental/worker"
RUNNING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]

log = logging.getLogger(__name__)


def worker_tags() -> dict[str, str]:
    """The tag naming this process, for a run it executes itself."""
    return {WORKER_TAG: f"{socket.gethostname()}:{os.getpid()}"}


def release_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every running run of a process of this host that no longer exists, and free
    the pool slots it held; return their run ids."""
    host = socket.gethostname()
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=RUNNING)):
        worker = run.tags.get(WORKER_TAG, "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        instance.report_run_failed(
            run,
            f"process {worker} ended without finishing the run (killed, or its machine stopped)",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning(
            "run %s was abandoned by process %s: marked failed, its pool slot freed",
            run.run_id,
            worker,
        )
        released.append(run.run_id)
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True
