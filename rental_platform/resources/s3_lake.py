"""A lake under `s3://bucket/prefix`, read and copied here through dagster-aws's S3Resource."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from dagster_aws.s3 import S3Resource

from rental_platform.resources.lake import LakeResource
from rental_platform.settings import parse_s3_location
from rental_platform.spark.manifest import LakeStore, S3Store


class S3LakeResource(LakeResource):
    """A lake under `s3://bucket/prefix`."""

    s3: S3Resource

    def store(self) -> LakeStore:
        return S3Store(self.root, client=self.s3.get_client())

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
