"""The soak: night after night of a changing source (`rental_platform.seed.changes`), each
followed by the platform's nightly run, and after each the promise of kpis.md checked ("Always
equal to a full recompute"): every KPI table equals the DuckDB reference computed from scratch
over the source as it is then (`benchmarks/reference.py`), and the listing history equals the
reference's own.

`make test` runs a few nights (rental_platform_tests/test_soak.py); `make soak` the long one:

    python -m benchmarks.soak --nights 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import pymysql

from benchmarks.reference import compare, history_differences, run_reference, snapshot_listings
from rental_platform import tables
from rental_platform.seed.changes import NIGHT_SCALES, NightScale, play_night
from rental_platform.settings import MySqlSource
from rental_platform.spark.manifest import committed_files

RESULTS = Path(__file__).resolve().parent / "results"

BACKFILL, NIGHT, BEYOND_HORIZON, AUDIT = "backfill", "night", "beyond horizon", "audit"
# A night on which the source did not change: the platform keeps what it has.
QUIET = "quiet night"


@dataclass
class NightResult:
    """One night: what the source went through, how long the platform took, and every row
    on which the platform and the full recompute disagree (none, if the night went right)."""

    day: date
    # backfill, night, night beyond the horizon (changes rows older than it), quiet night (no
    # change), or audit
    kind: str
    changes: dict[str, int]
    platform_seconds: float
    differences: dict[str, list[tuple]] = field(default_factory=dict)
    history_differences: list[tuple] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.differences and not self.history_differences

    def line(self) -> str:
        """One line for a log: the night, its time, and what differed from the recompute."""
        differing = {table: len(rows) for table, rows in self.differences.items()}
        if self.history_differences:
            differing["listings_history"] = len(self.history_differences)
        verdict = "exact" if self.exact else f"differs: {json.dumps(differing)}"
        return f"{self.day} {self.kind:<15} {self.platform_seconds:7.1f} s  {verdict}"

    @property
    def promised(self) -> bool:
        """Whether the night is held to the promise: every run but a nightly one after
        changes older than its horizon, which the audit that follows must repair."""
        return self.kind != BEYOND_HORIZON


@dataclass
class Soak:
    """A platform to soak: its source (as the platform reads it, and as the application
    writes it), lake and warehouse, how to run its nightly and audit, and a folder for the
    reference's databases."""

    source: MySqlSource
    writer: MySqlSource
    lake_root: str
    warehouse: Path
    first_day: date
    nightly: Callable[[date], object]
    audit: Callable[[date], object]
    folder: Path

    @property
    def history(self) -> Path:
        return self.folder / "reference_history.duckdb"

    def check(self, day: date) -> tuple[dict[str, list[tuple]], list[tuple]]:
        """The platform against a full recompute over the source as it is now."""
        snapshot_listings(self.history, self.source, day)
        reference = self.folder / "reference.duckdb"
        run_reference(self.source, self.first_day, day, reference, self.history)
        differences = {t: rows for t, rows in compare(self.warehouse, reference).items() if rows}
        history = history_differences(
            committed_files(self.lake_root, tables.CURATED_LISTINGS_HISTORY.id), self.history
        )
        return differences, history

    def night(
        self, day: date, seed: int, horizon: int, scale: NightScale, beyond_horizon: bool = False
    ) -> NightResult:
        """Play the night that ends `day` on the source, run the nightly, compare."""
        with pymysql.connect(**self.writer.pymysql_kwargs()) as connection:
            log = play_night(
                connection,
                day,
                seed=seed,
                horizon_days=horizon,
                beyond_horizon=beyond_horizon,
                scale=scale,
            )
        kind = BEYOND_HORIZON if beyond_horizon else NIGHT
        return self._nightly(day, kind, log.counts())

    def quiet_night(self, day: date) -> NightResult:
        """Run the nightly of `day` on a source that has not changed since the last, compare."""
        return self._nightly(day, QUIET, {})

    def _nightly(self, day: date, kind: str, changes: dict[str, int]) -> NightResult:
        began = time.perf_counter()
        self.nightly(day)
        seconds = time.perf_counter() - began
        differences, history = self.check(day)
        return NightResult(day, kind, changes, round(seconds, 2), differences, history)


def soak(
    platform: Soak,
    first_night: date,
    nights: int,
    *,
    seed: int,
    horizon: int,
    scale: NightScale,
    beyond_horizon_every: int = 0,
    quiet_every: int = 0,
) -> list[NightResult]:
    """`nights` nights from `first_night` on, after a backfill up to the day before. The
    first result is the backfill's (the reference's history starts with its snapshot). Every
    `beyond_horizon_every`-th night also changes rows older than the horizon; the audit that
    follows such a night must leave no difference (its result follows the night's). Every
    `quiet_every`-th night (unless it is one beyond the horizon) changes nothing."""
    backfilled = first_night - timedelta(days=1)
    results = [NightResult(backfilled, BACKFILL, {}, 0.0, *platform.check(backfilled))]
    for n in range(nights):
        day = first_night + timedelta(days=n)
        beyond = bool(beyond_horizon_every) and (n + 1) % beyond_horizon_every == 0
        if not beyond and quiet_every and (n + 1) % quiet_every == 0:
            results.append(platform.quiet_night(day))
            continue
        results.append(platform.night(day, seed, horizon, scale, beyond))
        if beyond:
            began = time.perf_counter()
            platform.audit(day)
            seconds = round(time.perf_counter() - began, 2)
            results.append(NightResult(day, AUDIT, {}, seconds, *platform.check(day)))
    return results


def main() -> None:
    """A long soak on a `tiny` seed in its own database (rental_soak) of RENTAL_MYSQL_URL's
    server, with a lake and warehouse under --folder, in this process."""
    import dagster as dg

    from rental_platform.cycle_tags import Cycle
    from rental_platform.runs import materialize_range, run_cycle
    from rental_platform.seed import SCALES, seed_source
    from rental_platform.settings import Settings, parse_warehouse_url

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=Path(".rental/soak"))
    args = parser.parse_args()
    folder = args.folder.resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    scale = SCALES["tiny"]
    defaults = Settings.from_env()
    settings = replace(
        defaults,
        mysql=replace(defaults.mysql, database="rental_soak"),
        lake_root=str(folder / "lake"),
        warehouse=parse_warehouse_url(f"duckdb:///{folder / 'warehouse.duckdb'}"),
        partitions_start=scale.start,
        mutable_days=args.horizon,
        max_quarantine_share=0.2,
    )
    seed_source(settings.mysql.pymysql_kwargs(), scale, seed=args.seed)
    with dg.DagsterInstance.get() as instance:
        materialize_range(settings, instance, scale.start, scale.end - timedelta(days=1))
        platform = Soak(
            settings.mysql,
            settings.mysql,
            settings.lake_root,
            Path(settings.warehouse.database),
            scale.start,
            lambda d: run_cycle(settings, instance, Cycle.nightly(d, args.horizon, scale.start)),
            lambda d: run_cycle(settings, instance, Cycle.audit(d, scale.start)),
            folder,
        )
        results = soak(
            platform,
            scale.end,
            args.nights,
            seed=args.seed,
            horizon=args.horizon,
            scale=NIGHT_SCALES["small"],
            beyond_horizon_every=5,
        )
    lines = [result.line() for result in results]
    print("\n".join(lines))
    exact = all(r.exact for r in results if r.promised)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.md").write_text(
        "# Soak: nights of a changing source\n\n"
        f"`python -m benchmarks.soak --nights {args.nights} --horizon {args.horizon}`: the `tiny` "
        "seed backfilled, then each night the source changes "
        "(`rental_platform.seed.changes`, every kind of change; every fifth night also rows "
        "older than the horizon, followed by the audit), `rental-platform nightly` runs, and "
        "every KPI table and the listing history are compared with the DuckDB reference's full "
        "recompute. Seconds are the platform's (the nightly or the audit). Every night but those "
        "changing rows older than the horizon must be exact; the audit after them too.\n\n"
        f"Result: {'every promised night exact' if exact else 'DIFFERENCES'}.\n\n```\n"
        + "\n".join(lines)
        + "\n```\n"
    )
    raise SystemExit(0 if all(r.exact for r in results if r.promised) else 1)


if __name__ == "__main__":
    main()
