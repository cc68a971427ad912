"""Where this environment keeps what it builds for the local JVM, and the jars it builds
against."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyspark


def build_dir() -> Path:
    """RENTAL_CLASS_ARCHIVE_DIR, by default inside the virtual environment: what is built there
    is only valid for that environment's Java and Spark."""
    return Path(os.environ.get("RENTAL_CLASS_ARCHIVE_DIR") or Path(sys.prefix, "var", "rental"))


def spark_jars() -> list[Path]:
    return sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar"))
