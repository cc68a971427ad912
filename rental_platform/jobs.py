"""The platform's jobs: one per partition grain, run in this order to bring all up to date."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from rental_platform import tables
from rental_platform.assets.checks import asset_key
from rental_platform.tables import Grain, Layer, Table


@dataclass(frozen=True)
class GrainJob:
    name: str
    grain: Grain
    tables: tuple[Table, ...]
    description: str

    def definition(self) -> dg.UnresolvedAssetJobDefinition:
        return dg.define_asset_job(
            self.name,
            selection=dg.AssetSelection.assets(*[asset_key(t) for t in self.tables]),
            description=self.description,
        )


def _of(grain: Grain, *layers: Layer) -> tuple[Table, ...]:
    return tuple(t for t in tables.ALL_TABLES if t.grain is grain and t.layer in layers)


GRAIN_JOBS: tuple[GrainJob, ...] = (
    GrainJob(
        "snapshots",
        Grain.SNAPSHOT,
        _of(Grain.SNAPSHOT, Layer.RAW, Layer.CURATED, Layer.QUARANTINE),
        "Extract the listing tables and curate them.",
    ),
    GrainJob(
        "daily",
        Grain.DAILY,
        _of(Grain.DAILY, Layer.RAW, Layer.CURATED, Layer.QUARANTINE),
        "Extract and curate the days of bookings and page views.",
    ),
    GrainJob("weekly_kpis", Grain.WEEKLY, _of(Grain.WEEKLY, Layer.PRESENTATION), "Weekly KPIs."),
    GrainJob(
        "monthly_kpis", Grain.MONTHLY, _of(Grain.MONTHLY, Layer.PRESENTATION), "Monthly KPIs."
    ),
)
