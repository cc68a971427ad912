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
RUNTIME_VERSION = "3.11"
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
# Run by the interpreter being packed: where its parts are, from its installation's prefix
# (not from its build's, which a relocatable build does not have), in the scheme of a plain
# `./configure --prefix` install (distributions patch the default one); the site-packages
# folder is the first one its `site` module looks in (Debian's is `dist-packages`).
FACTS_SCRIPT = """
import json, platform, site, sys, sysconfig
from pathlib import Path
v, base = sysconfig.get_config_var, sys.base_prefix
where = {"base": base, "platbase": base, "installed_base": base, "installed_platbase": base}
paths = sysconfig.get_paths(scheme="posix_prefix", vars=where)
executable = Path(base, "bin", "python" + v("VERSION"))
library = v("INSTSONAME") if v("Py_ENABLE_SHARED") else None
print(json.dumps({
    "version": platform.python_version(),
    "machine": platform.machine(),
    "prefix": base,
    "executable": str(executable),
    "stdlib": paths["stdlib"],
    "platstdlib": paths["platstdlib"],
    "site_packages": site.getsitepackages([base])[0],
    "libpython": str(Path(base, Path(v("LIBDIR")).relative_to(v("prefix")), library))
    if library and library.encode() in executable.read_bytes() else None,
}))
"""


def is_runtime_version(version: str) -> bool:
    """Whether a Python version (`3.11.7`) is the runners' one."""
    return version.startswith(f"{RUNTIME_VERSION}.")


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
    declared = json.dumps([RUNTIME_VERSION, remote_distributions()]).encode()
    digest = hashlib.sha256(declared + Path(__file__).read_bytes()).hexdigest()[:16]
    return f"python-{RUNTIME_VERSION}-{digest}.tar.gz"


@dataclass(frozen=True)
class Interpreter:
    """A CPython installation, as its own interpreter reports it. `libpython` is the shared
    library the interpreter loads, if it loads one."""

    version: str
    machine: str
    prefix: Path
    executable: Path
    stdlib: Path
    platstdlib: Path
    site_packages: Path
    libpython: Path | None = None

    @property
    def binaries(self) -> list[Path]:
        """The files compiled for the system: the interpreter, its library, its extensions."""
        extensions = sorted((self.platstdlib / "lib-dynload").glob("*.so"))
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
            "{}.{}, so it will not start there: set RENTAL_REMOTE_PYTHON to a relocatable Python "
            "{} built for it (docs/aws.md)"
        ).format(self.executable, *needed, *AMAZON_LINUX_2023_GLIBC, RUNTIME_VERSION)


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
    paths = ("prefix", "executable", "stdlib", "platstdlib", "site_packages")
    return Interpreter(
        version=facts["version"],
        machine=facts["machine"],
        **{name: Path(facts[name]) for name in paths},
        libpython=facts["libpython"] and Path(facts["libpython"]),
    )


def _stdlib_files(python: Interpreter) -> dict[str, Path]:
    """Archive name -> file of the standard library, where the installation has it (relative
    to its prefix), without what no job imports."""
    files = {}
    for folder in {python.stdlib, python.platstdlib}:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if relative.parts[0] in UNUSED_STDLIB or relative.parts[0].startswith("config-"):
                continue
            if path.is_file() and "__pycache__" not in relative.parts:
                files[str(path.relative_to(python.prefix))] = path
    return files


def _dependency_files(python: Interpreter) -> dict[str, Path]:
    """Archive name -> file of the dependencies, as installed here, in the runtime's
    site-packages. They must be pure Python: what was compiled here need not run there."""
    site = python.site_packages.relative_to(python.prefix)
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
    files = {str(path.relative_to(python.prefix)): path for path in python.binaries[:2]}
    files |= _stdlib_files(python) | _dependency_files(python)
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        _add(archive, "bin/python", _launcher(python), 0o755)
        for name, path in sorted(files.items()):
            executable = name.startswith("bin/") or path.suffix == ".so" or ".so." in path.name
            _add(archive, name, path.read_bytes(), 0o755 if executable else 0o644)
    return buffer.getvalue()


def _launcher(python: Interpreter) -> bytes:
    """`bin/python`: the interpreter, finding its shared library (if it loads one) in the
    archive, wherever the archive was unpacked."""
    run = f'exec "$here/{python.executable.name}" "$@"'
    if python.libpython:
        folder = python.libpython.parent.relative_to(python.prefix)
        run = f'LD_LIBRARY_PATH="$here/../{folder}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" {run}'
    return f'#!/bin/sh\nhere="$(dirname "$0")"\n{run}\n'.encode()


def _add(archive: tarfile.TarFile, name: str, content: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(content), mode, 315532800
    archive.addfile(info, io.BytesIO(content))
