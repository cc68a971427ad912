"""A lake under `s3://bucket/prefix`, listed and copied here through dagster-aws's S3Resource."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from dagster_aws.s3 import S3Resource

from rental_platform.resources.lake import Lake
from rental_platform.settings import parse_s3_location
from rental_platform.spark import layout
from rental_platform.tables import Table


class S3Lake(Lake):
    """A lake under `s3://bucket/prefix`."""

    s3: S3Resource

    def parquet_files(self, table: Table, periods: list[date]) -> list[str]:
        client = self.s3.get_client()
        files: list[str] = []
        for period in periods:
            folder = parse_s3_location(
                "RENTAL_LAKE_ROOT", layout.period_path(self.root, table, period)
            )
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=folder.bucket, Prefix=folder.prefix + "/"
            )
            files += sorted(
                f"s3://{folder.bucket}/{item['Key']}"
                for page in pages
                for item in page.get("Contents", [])
                if item["Key"].endswith(".parquet")
                and "/" not in item["Key"][len(folder.prefix) + 1 :]
            )
        return files

    @contextmanager
    def local_copies(self, files: list[str]) -> Iterator[list[str]]:
        client = self.s3.get_client()
        with tempfile.TemporaryDirectory(prefix="rental-lake-") as folder:
            copies = []
            for number, uri in enumerate(files):
                location = parse_s3_location("RENTAL_LAKE_ROOT", uri)
                copy = f"{folder}/{number:05d}.parquet"
                client.download_file(location.bucket, location.prefix, copy)
                copies.append(copy)
            yield copies
