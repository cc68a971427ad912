"""The local runner's speed machinery: what makes Spark and Dagster quick on one small machine,
and does nothing for Glue or EMR.

Each part is switched off by naming it in RENTAL_LOCAL_OFF (comma-separated); the platform
computes the same numbers without any of them, only slower. `make bench-local` measures what
each part saves (benchmarks/README.md, "Local machinery").

- `class_archive`: the local JVM maps the classes a step loads from a class-data archive
  (`class_archive.py`, built by `make setup` over a scratch lake) instead of loading them
  from Spark's jars.
- `file_system`: the lake is written through a java.nio file system (`file_system.py`) instead
  of Hadoop's, which starts a `chmod` process for each file and folder.
- `quick_compiler`: a range of `QUICK_COMPILER_MAX_DAYS` or fewer runs with the JVM's quick
  compiler alone (`jvm.py`).

The instance's event log (`event_log.py`) is chosen in `instance/dagster.yaml`, as Dagster's
storage always is: replace its `storage` block with Dagster's `sqlite` one to go without it.
"""

from __future__ import annotations

CLASS_ARCHIVE = "class_archive"
FILE_SYSTEM = "file_system"
QUICK_COMPILER = "quick_compiler"
PARTS = (CLASS_ARCHIVE, FILE_SYSTEM, QUICK_COMPILER)
