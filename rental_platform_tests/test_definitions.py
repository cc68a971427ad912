"""A snapshot of the definitions: every asset (group, partitions, kinds, what it reads), every
check (and whether it blocks), every job, schedule and sensor. A change to any of them shows
here as a diff to review; `RENTAL_UPDATE_SNAPSHOT=1 pytest -k snapshot` writes the new one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from rental_platform.definitions import build_definitions
from rental_platform.jobs import GRAIN_JOBS
from rental_platform.settings import Settings

pytestmark = pytest.mark.fast

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
ENV = {"RENTAL_PARTITIONS_START": "2025-01-01", "RENTAL_LAKE_ROOT": "/lake"}


def _partitions(spec: dg.AssetSpec) -> str | None:
    definition = spec.partitions_def
    return type(definition).__name__ if definition else None


def describe(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    specs = sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    return {
        "assets": {
            spec.key.to_user_string(): {
                "group": spec.group_name,
                "partitions": _partitions(spec),
                "kinds": sorted(spec.kinds),
                "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
            }
            for spec in specs
        },
        "checks": sorted(
            f"{key.asset_key.to_user_string()}:{key.name}"
            + (" (blocking)" if graph.get_check_spec(key).blocking else "")
            for key in graph.asset_check_keys
        ),
        "jobs": {
            job.name: sorted(key.to_user_string() for key in job.assets) for job in GRAIN_JOBS
        },
        "schedules": {s.name: s.cron_schedule for s in defs.schedules or []},
        "sensors": sorted(s.name for s in defs.sensors or []),
    }


def test_the_definitions_match_their_snapshot() -> None:
    defs = build_definitions(Settings.from_env(ENV))
    assert {job.name for job in defs.resolve_all_job_defs()} >= {job.name for job in GRAIN_JOBS}
    described = describe(defs)
    if os.environ.get("RENTAL_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(described, indent=2) + "\n")
    assert described == json.loads(SNAPSHOT.read_text())
