"""`rental-platform`: seed the source, materialise a date range, run the nightly cycle or the
audit, run the whole demo, serve the Dagster UI, or deploy the Spark code for a remote runner."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import date

from rental_platform.cycle_lock import cycle_running
from rental_platform.cycle_tags import Cycle, extracted_days, yesterday
from rental_platform.settings import Settings, SettingsError, parse_date

DEMO_SCALE = "demo"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(Settings.from_env(), args)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    from rental_platform.seed import SCALES

    parser = argparse.ArgumentParser(prog="rental-platform", description=__doc__)
    commands = parser.add_subparsers(required=True)

    seed = commands.add_parser("seed", help="create the source tables and fill them")
    seed.add_argument("--scale", choices=sorted(SCALES), default=DEMO_SCALE)
    seed.add_argument("--seed", type=int, default=42, help="random seed (same seed, same data)")
    for name in ("listings", "users", "bookings", "views", "days"):
        seed.add_argument(f"--{name}", type=int, help=f"override the scale's {name}")
    seed.add_argument("--start", type=_date, help="override the scale's first day")
    seed.set_defaults(command=seed_command)

    run = commands.add_parser("run", help="materialise every asset for a date range")
    run.add_argument("--start", type=_date, required=True)
    run.add_argument("--end", type=_date, required=True, help="last day, inclusive")
    run.set_defaults(command=run_command)

    nightly = commands.add_parser(
        "nightly",
        help="the nightly run for day D: the listings snapshot, the days of the mutable horizon "
        "that changed in the source, and every KPI partition that reads them",
    )
    nightly.add_argument("--as-of", type=_date, help="day D (default: yesterday, UTC)")
    nightly.set_defaults(command=nightly_command)

    audit = commands.add_parser(
        "audit", help="the nightly run, comparing every day since RENTAL_PARTITIONS_START"
    )
    audit.add_argument("--as-of", type=_date, help="day D (default: yesterday, UTC)")
    audit.set_defaults(command=audit_command)

    demo = commands.add_parser("demo", help="seed sample data, run its whole range, summarise")
    demo.set_defaults(command=demo_command)

    dev = commands.add_parser(
        "dev", help="the Dagster UI and daemon (dg dev); Ctrl-C or a SIGTERM stops all of it"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(command=dev_command)

    deploy = commands.add_parser(
        "deploy", help="upload the Spark code for a remote runner; create or update its Glue job"
    )
    deploy.add_argument(
        "--check",
        action="store_true",
        help="then run a canary job on the runner: it imports the code, starts Spark, reads the "
        "source password from its secret, connects to the source and reports through Pipes",
    )
    deploy.set_defaults(command=deploy_command)

    archive = commands.add_parser(
        "class-archive",
        help="build the local Spark JVM's class-data archive, which makes short runs start "
        "faster (make setup does this)",
    )
    archive.add_argument("--if-missing", action="store_true", help="keep an archive that exists")
    archive.set_defaults(command=class_archive_command)
    return parser


def _date(value: str) -> date:
    try:
        return parse_date("date", value)
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def seed_command(settings: Settings, args: argparse.Namespace) -> int:
    from rental_platform.seed import SCALES, seed_source

    overrides = {
        name: getattr(args, name)
        for name in ("listings", "users", "bookings", "views", "days", "start")
        if getattr(args, name) is not None
    }
    scale = replace(SCALES[args.scale], **overrides)
    print(f"Seeding {settings.mysql.redacted_url} with {scale} (seed {args.seed})")
    counts = seed_source(settings.mysql.pymysql_kwargs(), scale, seed=args.seed)
    for table, rows in counts.items():
        print(f"  {table:<22}{rows:>10} rows")
    return 0


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.end < args.start:
        raise RuntimeError(f"--end {args.end} is before --start {args.start}")
    return _cycle(settings, Cycle.range(args.start, args.end))


def nightly_command(settings: Settings, args: argparse.Namespace) -> int:
    as_of = args.as_of or yesterday()
    return _cycle(settings, Cycle.nightly(as_of, settings.mutable_days, settings.partitions_start))


def audit_command(settings: Settings, args: argparse.Namespace) -> int:
    return _cycle(settings, Cycle.audit(args.as_of or yesterday(), settings.partitions_start))


def _cycle(settings: Settings, cycle: Cycle) -> int:
    """Run the cycle in this process, through the Dagster instance (the UI shows its runs)."""
    if "DAGSTER_HOME" not in os.environ:
        raise SettingsError("DAGSTER_HOME: must name the folder of the Dagster instance")
    if cycle_running(os.environ["DAGSTER_HOME"]):
        print("another cycle on this Dagster instance is running: this one waits for it to end")
    else:
        _start_local_session(settings, cycle)
    import dagster as dg

    from rental_platform.runs import run_cycle

    print(
        f"{cycle.mode} run as of {cycle.as_of}: comparing the source with the lake from "
        f"{cycle.compare_from}, extracting every day from {cycle.extract_from}"
    )
    with dg.DagsterInstance.get() as instance:
        for outcome in run_cycle(settings, instance, cycle):
            print(f"  {outcome.job:<14}{outcome.partitions:<26}run {outcome.run_id}")
    return 0


def _start_local_session(settings: Settings, cycle: Cycle) -> None:
    """Start the local runner's JVM in the background, tuned for the cycle, before Dagster is
    imported and the definitions built: about a second that the first step no longer waits
    for (the run's own start, `LocalSparkRunner.start_session`, then finds it begun). Not
    for a command that will wait for another's cycle to end: its JVM would sit idle, holding
    its memory, all that time."""
    if settings.runner.remote:
        return
    from rental_platform.local.session import start_in_background

    runner = settings.runner
    start_in_background(runner.spark_conf, runner.local_off, extracted_days(cycle.tags()))


def demo_command(settings: Settings, args: argparse.Namespace) -> int:
    """Seed activity from RENTAL_PARTITIONS_START to yesterday, at the demo scale's density,
    and materialise all of it: every partition complete, the data as fresh as a nightly
    run leaves it (`make demo` starts the partitions 90 days ago)."""
    from rental_platform.resources.warehouse import warehouse_for
    from rental_platform.seed import SCALES
    from rental_platform.summary import warehouse_summary

    scale = SCALES[DEMO_SCALE]
    start, end = settings.partitions_start, yesterday()
    if end < start:
        raise SettingsError(f"RENTAL_PARTITIONS_START {start} is after yesterday ({end})")
    days = (end - start).days + 1
    seed = ["seed", "--scale", DEMO_SCALE, "--start", start.isoformat(), "--days", str(days)]
    for name in ("bookings", "views"):
        seed += [f"--{name}", str(max(1, round(getattr(scale, name) * days / scale.days)))]
    seed_command(settings, _parser().parse_args(seed))
    print(f"Materialising every asset from {start} to {end}")
    run_command(settings, argparse.Namespace(start=start, end=end))
    print()
    import dagster as dg

    with dg.build_resources({"warehouse": warehouse_for(settings.warehouse)}) as resources:
        print(warehouse_summary(resources.warehouse))
    return 0


def dev_command(settings: Settings, args: argparse.Namespace) -> int:
    from rental_platform.dev_server import serve

    return serve(args.host, args.port)


def deploy_command(settings: Settings, args: argparse.Namespace) -> int:
    from rental_platform.deploy import deploy, lake_catalog

    for line in deploy(settings.runner, catalog=lake_catalog(settings)).lines():
        print(line)
    if args.check:
        from rental_platform.canary import check_remote_runtime

        for line in check_remote_runtime(settings):
            print(line)
    return 0


def class_archive_command(settings: Settings, args: argparse.Namespace) -> int:
    from rental_platform.local.class_archive import build_class_archive
    from rental_platform.local.file_system import build_file_system_jar, file_system_jar
    from rental_platform.local.jvm import class_archive_path

    # The archive holds the classes of the jars on the driver's class path: this one first.
    if not file_system_jar().is_file():
        jar = build_file_system_jar()
        print(f"Local file system for Spark: {jar or 'no javac found: Hadoop keeps its own'}")
    if args.if_missing and class_archive_path().is_file():
        print(f"Spark class-data archive: {class_archive_path()} (up to date)")
        return 0
    print("Building the Spark class-data archive (a short training run on a scratch lake)")
    print(f"  {build_class_archive()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
