"""The platform's jobs: one per partition grain, run in this order to bring all up to date."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.cycle import DAILY_JOB, MONTHLY_JOB, SOURCE_CHANGES, WEEKLY_JOB
from rental_platform.tables import Grain, Layer


@dataclass(frozen=True)
class GrainJob:
    name: str
    grain: Grain
    assets: tuple[dg.AssetKey, ...]
    description: str

    def definition(self) -> dg.UnresolvedAssetJobDefinition:
        return dg.define_asset_job(
            self.name,
            selection=dg.AssetSelection.assets(*self.assets),
            description=self.description,
        )


def _keys_of(grain: Grain, *layers: Layer) -> tuple[dg.AssetKey, ...]:
    return tuple(asset_key(t) for t in tables.ALL_TABLES if t.grain is grain and t.layer in layers)


SNAPSHOTS_JOB = GrainJob(
    "snapshots",
    Grain.SNAPSHOT,
    (*_keys_of(Grain.SNAPSHOT, Layer.RAW, Layer.CURATED, Layer.QUARANTINE), SOURCE_CHANGES),
    "Take the listings snapshot, apply it to the listing history, and find which days of the "
    "source differ from the lake (the plan of the daily runs).",
)
GRAIN_JOBS: tuple[GrainJob, ...] = (
    SNAPSHOTS_JOB,
    GrainJob(
        DAILY_JOB,
        Grain.DAILY,
        _keys_of(Grain.DAILY, Layer.RAW, Layer.CURATED, Layer.QUARANTINE),
        "Extract and curate the days of bookings and page views.",
    ),
    GrainJob(WEEKLY_JOB, Grain.WEEKLY, _keys_of(Grain.WEEKLY, Layer.PRESENTATION), "Weekly KPIs."),
    GrainJob(
        MONTHLY_JOB, Grain.MONTHLY, _keys_of(Grain.MONTHLY, Layer.PRESENTATION), "Monthly KPIs."
    ),
)
# Each job defined once: the definitions, the schedules and the sensors name the same objects.
JOB_DEFINITIONS: dict[str, dg.UnresolvedAssetJobDefinition] = {
    job.name: job.definition() for job in GRAIN_JOBS
}
