"""Benchmark: seed 1,000,000 bookings and 5,000,000 views into a throwaway database.

Prints the wall time per table (and index build) and in total, then drops the database.
The requirement is under two minutes on a 2-core machine.

    RENTAL_MYSQL_URL=mysql://root@127.0.0.1:3306/ignored python benchmarks/seed_load.py

Only host, port, user and password are taken from RENTAL_MYSQL_URL (default root@127.0.0.1);
the database is always `rental_bench_seed`. The password is never printed.
"""

from __future__ import annotations

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


def main() -> None:
    kwargs = connect_kwargs()
    scale = SCALES["large"]
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
