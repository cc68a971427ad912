"""Benchmark: seed a scale (`large` unless named: 1,000,000 bookings and 5,000,000 views) into
a throwaway database.

Prints the wall time of each stage and in total, then drops the database. `make bench`
times seeding too, with its targets (60 s at `large`, 300 s at `xlarge`); this times it alone.

    RENTAL_MYSQL_URL=mysql://root@127.0.0.1:3306/ignored python -m benchmarks.seed_load [xlarge]

Only host, port, user and password are taken from RENTAL_MYSQL_URL (default root@127.0.0.1);
the database is always `rental_bench_seed`. The password is never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pymysql

from rental_platform.seed import SCALES, seed_source
from rental_platform.settings import Settings

DATABASE = "rental_bench_seed"


def connect_kwargs() -> dict[str, object]:
    """The server of RENTAL_MYSQL_URL (or the default), with the benchmark's own database."""
    source = Settings.from_env().mysql
    return dataclasses.replace(source, database=DATABASE).pymysql_kwargs()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scale", nargs="?", default="large", choices=sorted(SCALES))
    scale = SCALES[parser.parse_args(argv).scale]
    kwargs = connect_kwargs()
    print(
        f"seeding {scale.listings:,} listings, {scale.bookings:,} bookings, {scale.views:,} views"
        f" into {kwargs['host']}:{kwargs['port']}/{DATABASE}"
    )
    began = time.perf_counter()
    try:
        counts = seed_source(kwargs, scale, log=lambda line: print(f"  {line}", flush=True))
        total = time.perf_counter() - began
        print(f"  rows: {counts}")
        print(f"total: {total:.1f}s")
    finally:
        server = {key: value for key, value in kwargs.items() if key != "database"}
        with pymysql.connect(**server) as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")


if __name__ == "__main__":
    main()
