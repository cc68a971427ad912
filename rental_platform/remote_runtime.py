"""The Python that runs the Spark code on EMR and EMR Serverless: a relocatable CPython 3.11
with the shipped code's dependencies, packed as an archive that Spark unpacks beside the driver
and each executor (`spark.archives`, with `PYSPARK_PYTHON` pointing into it).

Glue 5.0 runs Python 3.11 itself. EMR 7 and EMR Serverless 7 run Python 3.9, which cannot
import the code (`enum.StrEnum`, `datetime.UTC`, dagster-pipes), and install nothing on their
own: so every runner runs the same Python version, and this archive carries it where the
service does not. The interpreter is copied from an installation (`RENTAL_REMOTE_PYTHON`, by
default the one running this), which must be built for the runners' Amazon Linux 2023: a build
that needs a newer C library than that system's does not start there, so `deploy` says so.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from functools import cache
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement

# Glue 5.0's Python: the one version the shipped code runs under on every runner.
RUNTIME_PYTHON = (3, 11)
# What the shipped code imports beyond the standard library and what Spark provides (pyspark
# and py4j come from the cluster's Spark, on the driver's path).
REMOTE_DISTRIBUTIONS = ("boto3", "dagster-pipes")
# EMR 7's and EMR Serverless 7's Amazon Linux 2023 has GNU C library 2.34.
AMAZON_LINUX_2023_GLIBC = (2, 34)
# Where the archive is unpacked (`spark.archives=...#environment`), and its interpreter there,
# relative to the working folder of the driver and of each executor.
ENVIRONMENT = "environment"
PYTHON = f"./{ENVIRONMENT}/bin/python"
# Parts of the standard library no Spark job imports; they only make the archive larger.
UNUSED_STDLIB = frozenset(
    {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}
)
# The interpreter's shared library is found through its own folder, wherever it was unpacked.
LAUNCHER = b"""#!/bin/sh
here="$(dirname "$0")"
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/python3" "$@"
"""
# Run by the interpreter being packed: where its parts are.
FACTS_SCRIPT = """
import json, platform, sys, sysconfig
v = sysconfig.get_config_var
print(json.dumps({
    "version": platform.python_version(),
    "machine": platform.machine(),
    "executable": f"{v('BINDIR')}/python{v('VERSION')}",
    "stdlib": sysconfig.get_paths()["stdlib"],
    "libpython": f"{v('LIBDIR')}/{v('INSTSONAME')}" if v("Py_ENABLE_SHARED") else None,
}))
"""


def remote_distributions() -> dict[str, str]:
    """The shipped code's dependencies and theirs, installed here: name -> version."""
    found: dict[str, str] = {}
    todo = list(REMOTE_DISTRIBUTIONS)
    while todo:
        dist = distribution(todo.pop())
        name = dist.metadata["Name"].lower()
        if name in found:
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return dict(sorted(found.items()))


@cache
def runtime_archive_name() -> str:
    """The archive's name: the declared Python version, the dependencies' versions and how it
    is packed. The Dagster side computes it without the interpreter, which only `deploy` needs;
    `deploy` replaces the archive when the interpreter changed (see `Interpreter.fingerprint`)."""
    declared = json.dumps([RUNTIME_PYTHON, remote_distributions()]).encode()
    digest = hashlib.sha256(declared + Path(__file__).read_bytes()).hexdigest()[:16]
    return "python-{}.{}-{}.tar.gz".format(*RUNTIME_PYTHON, digest)


@dataclass(frozen=True)
class Interpreter:
    """A CPython installation, as its own interpreter reports it."""

    version: str
    machine: str
    executable: Path
    stdlib: Path
    libpython: Path | None

    @property
    def binaries(self) -> list[Path]:
        """The files compiled for the system: the interpreter, its library, its extensions."""
        extensions = sorted((self.stdlib / "lib-dynload").glob("*.so"))
        return [self.executable, *([self.libpython] if self.libpython else []), *extensions]

    @property
    def fingerprint(self) -> str:
        """What tells one build of the interpreter from another."""
        digest = hashlib.sha256(self.version.encode())
        for path in self.binaries[:2]:
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    def glibc_needed(self) -> tuple[int, int]:
        """The newest GNU C library version any of its binaries asks for (from the version
        names in their dynamic symbol tables)."""
        versions = {
            (2, int(minor))
            for path in self.binaries
            for minor in re.findall(rb"GLIBC_2\.(\d+)", path.read_bytes())
        }
        return max(versions, default=(2, 0))

    def system_warning(self) -> str | None:
        """Why it will not start on the runners' system, if it will not."""
        needed = self.glibc_needed()
        if needed <= AMAZON_LINUX_2023_GLIBC:
            return None
        return (
            "the runtime's Python ({}) needs GNU C library {}.{}; EMR 7's Amazon Linux 2023 has "
            "{}.{}, so it will not start there: set RENTAL_REMOTE_PYTHON to a Python {}.{} built "
            "on Amazon Linux 2023"
        ).format(self.executable, *needed, *AMAZON_LINUX_2023_GLIBC, *RUNTIME_PYTHON)


@cache
def interpreter(python: str | None = None) -> Interpreter:
    """The installation of `python` (by default the one running this)."""
    result = subprocess.run(
        [python or sys.executable, "-I", "-c", FACTS_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(result.stdout)
    return Interpreter(
        version=facts["version"],
        machine=facts["machine"],
        executable=Path(facts["executable"]),
        stdlib=Path(facts["stdlib"]),
        libpython=facts["libpython"] and Path(facts["libpython"]),
    )


def _stdlib_files(python: Interpreter) -> dict[str, Path]:
    """Archive name -> file of the standard library, without what no job imports."""
    version = "python{}.{}".format(*RUNTIME_PYTHON)
    files = {}
    for path in sorted(python.stdlib.rglob("*")):
        relative = path.relative_to(python.stdlib)
        if relative.parts[0] in UNUSED_STDLIB or relative.parts[0].startswith("config-"):
            continue
        if path.is_file() and "__pycache__" not in relative.parts:
            files[f"lib/{version}/{relative}"] = path
    return files


def _dependency_files() -> dict[str, Path]:
    """Archive name -> file of the dependencies, as installed here. They must be pure Python:
    what was compiled for this machine need not run on the cluster."""
    site = "lib/python{}.{}/site-packages".format(*RUNTIME_PYTHON)
    files = {}
    for name in remote_distributions():
        dist = distribution(name)
        for file in dist.files or []:
            if file.suffix in (".so", ".pyd"):
                raise RuntimeError(
                    f"{name} has compiled code ({file}); the runtime takes only pure Python"
                )
            path = Path(str(dist.locate_file(file)))
            if path.is_file() and "__pycache__" not in file.parts and ".." not in file.parts:
                files[f"{site}/{file}"] = path
    return files


@cache
def build_runtime_archive(python: Interpreter) -> bytes:
    """The archive: the interpreter and its library, its standard library and the shipped
    code's dependencies, with a launcher at `bin/python`. Entries are sorted and dated 1980, so
    the same inputs give the same bytes."""
    files = {"bin/python3": python.executable}
    if python.libpython:
        files[f"lib/{python.libpython.name}"] = python.libpython
    files |= _stdlib_files(python) | _dependency_files()
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        _add(archive, "bin/python", LAUNCHER, 0o755)
        for name, path in sorted(files.items()):
            executable = name.startswith("bin/") or path.suffix == ".so" or ".so." in path.name
            _add(archive, name, path.read_bytes(), 0o755 if executable else 0o644)
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, content: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(content), mode, 315532800
    archive.addfile(info, io.BytesIO(content))
