"""What each part of the local speed machinery (`rental_platform.local`) earns, on this machine.

    python -m benchmarks.local_parts --repeat 3      # or: make bench-local

On the `small` source, two runs an operator waits for: a one-day increment (the last day, on
a fresh lake: the snapshot, a day of each grain's tables and the KPIs), and the 90-day
backfill. Each is timed with every part on, with each part off in turn (`RENTAL_LOCAL_OFF`;
the event log by going back to Dagster's own SQLite storage in the instance's dagster.yaml),
and with all of them off; configurations alternate within each repeat, so that other work on
the machine slows them alike, and each repeat starts one configuration later than the one
before, so that none is always the first to read the source. Every configuration's KPI tables
must be equal. Results go to `benchmarks/results/local_parts.json` and `.md`; exits 1 on a
difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from benchmarks.reference import compare
from benchmarks.run import (
    REPO,
    RESULTS,
    Sandbox,
    bench_source,
    drop_database,
    machine,
    markdown_table,
    median,
    run_platform,
    say,
    seed,
)
from rental_platform import local
from rental_platform.seed import SCALES

SCALE = "small"
EVENT_LOG = "event_log"


@dataclass(frozen=True)
class Configuration:
    """The machinery with some parts off."""

    name: str
    off: tuple[str, ...] = ()
    event_log: bool = True

    @property
    def env(self) -> dict[str, str]:
        return {"RENTAL_LOCAL_OFF": ",".join(self.off)}

    def prepare(self, sandbox: Sandbox) -> Sandbox:
        """A fresh sandbox whose instance uses this configuration's event log."""
        sandbox.fresh()
        if not self.event_log:
            instance = yaml.safe_load((REPO / "instance" / "dagster.yaml").read_text())
            del instance["storage"]  # Dagster's own SQLite storage under DAGSTER_HOME
            (sandbox.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance))
        return sandbox


CONFIGURATIONS = (
    Configuration("all on"),
    *(Configuration(f"{part} off", off=(part,)) for part in local.PARTS),
    Configuration(f"{EVENT_LOG} off", event_log=False),
    Configuration("all off", off=local.PARTS, event_log=False),
)


def measure(repeat: int, scratch: Path) -> dict[str, Any]:
    scale = SCALES[SCALE]
    source = bench_source("local_parts")
    last_day = scale.end - timedelta(days=1)
    ranges = {"one-day increment": (last_day, last_day), "90-day backfill": (scale.start, last_day)}
    walls: dict[str, dict[str, list[float]]] = {
        run: {c.name: [] for c in CONFIGURATIONS} for run in ranges
    }
    differing: dict[str, dict[str, int]] = {}
    logs = scratch / "logs"
    logs.mkdir(parents=True)
    try:
        say(f"seeding {SCALE} into {source.database}")
        seed(source, scale)
        results: dict[str, Any] = {"scale": SCALE, "repeat": repeat, "machine": machine(source)}
        for attempt in range(repeat):
            for run, (start, end) in ranges.items():
                baseline = None
                shift = attempt % len(CONFIGURATIONS)
                for configuration in CONFIGURATIONS[shift:] + CONFIGURATIONS[:shift]:
                    say(f"{run}, {configuration.name} ({attempt + 1}/{repeat})")
                    sandbox = configuration.prepare(Sandbox(scratch / configuration.name))
                    arguments = ["run", "--start", start.isoformat(), "--end", end.isoformat()]
                    log = logs / f"{run}-{configuration.name}-{attempt + 1}.log".replace(" ", "_")
                    outcome = run_platform(
                        source, sandbox, start, arguments, log, env=configuration.env
                    )
                    walls[run][configuration.name].append(outcome.wall)
                    if baseline is None:
                        baseline = scratch / "first.duckdb"
                        shutil.copy(sandbox.warehouse, baseline)
                    elif found := {
                        t: len(r) for t, r in compare(sandbox.warehouse, baseline).items() if r
                    }:
                        differing[f"{run}, {configuration.name}"] = found
        results["wall_s"] = {
            run: {name: median(values) for name, values in by_configuration.items()}
            for run, by_configuration in walls.items()
        }
        results["kpi_differences"] = differing
        return results
    finally:
        drop_database(source)


def render(results: dict[str, Any]) -> str:
    runs = list(results["wall_s"])
    rows = []
    for configuration in CONFIGURATIONS:
        row = [configuration.name]
        for run in runs:
            wall = results["wall_s"][run][configuration.name]
            row += [f"{wall:.1f} s", f"{wall / results['wall_s'][run]['all on']:.2f}x"]
        rows.append(row)
    header = ["configuration", *(f"{run} {what}" for run in runs for what in ("", "/ all on"))]
    kpis = "equal to one another" if not results["kpi_differences"] else "DIFFERENT"
    return (
        f"# The local machinery, part by part ({results['scale']}, medians of "
        f"{results['repeat']})\n\n"
        f"{markdown_table(header, rows)}\n\n"
        f"KPI tables of every configuration: {kpis}.\n\n"
        f"Machine: {results['machine']}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    scratch = REPO / ".rental" / "bench" / "local_parts"
    shutil.rmtree(scratch, ignore_errors=True)
    results = measure(args.repeat, scratch)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "local_parts.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (RESULTS / "local_parts.md").write_text(render(results))
    print(render(results))
    if results["kpi_differences"]:
        print(f"KPI tables differ: {results['kpi_differences']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
