"""`make dev` as a newcomer meets it: it prints no warning while it loads the platform, and
Ctrl-C, or a SIGTERM to make or to all its processes, stops all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from rental_platform_tests.harness import REPO, free_port, running_services

WARNING_MARKS = ("Warning", "WARNING", "warnings.warn")


def test_loading_the_platform_prints_no_warning() -> None:
    """Every process that loads the definitions (webserver, daemon, each run) would print it."""
    program = (
        "from rental_platform.definitions import build_definitions\n"
        "from rental_platform.settings import Settings\n"
        "build_definitions(Settings.from_env()).resolve_all_job_defs()\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert result.stderr == ""


@pytest.mark.parametrize(
    "stop",
    [
        # Ctrl-C in a terminal: SIGINT to every process of the foreground job.
        lambda make: os.killpg(make.pid, signal.SIGINT),
        # `kill`: SIGTERM to make alone.
        lambda make: make.terminate(),
        # A supervisor (systemd's control group, `timeout`): SIGTERM to every process of it.
        lambda make: os.killpg(make.pid, signal.SIGTERM),
    ],
    ids=["ctrl-c", "sigterm-to-make", "sigterm-to-all"],
)
def test_make_dev_prints_no_warning_and_stops_whole(
    tmp_path: Path, stop: Callable[[subprocess.Popen], None]
) -> None:
    home = tmp_path / "dagster_home"
    port = free_port()
    log = tmp_path / "dev.log"
    # dg dev (dagster._cli.proxy_server_manager) looks for a code server that has exited every
    # second rather than every five: one stopped ahead of the webserver is then seen, and
    # restarted with a warning, on every run rather than on some.
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_CODE_SERVER_AUTO_RESTART_INTERVAL": "1",
    }
    env.pop("VIRTUAL_ENV", None)  # as from a fresh shell: make does what activating would
    command = ["make", "-s", "dev", f"PORT={port}"]
    # Its own process group, as a terminal's foreground job.
    with running_services([command], env, REPO, log) as (make,):
        deadline = time.monotonic() + 180
        while not _serves_the_platform(port):
            assert make.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        processes = [psutil.Process(make.pid), *psutil.Process(make.pid).children(True)]
        assert any("dagster_webserver" in " ".join(p.cmdline()) for p in processes)
        stop(make)
        _, alive = psutil.wait_procs(processes, timeout=90)
        assert alive == [], [p.cmdline() for p in alive]
    warnings = [
        line for line in log.read_text().splitlines() if any(m in line for m in WARNING_MARKS)
    ]
    assert warnings == []


def _serves_the_platform(port: int) -> bool:
    """The webserver answers and its code location has loaded the assets."""
    query = {"query": "{ assetNodes { assetKey { path } } }"}
    try:
        response = requests.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=5)
    except requests.ConnectionError:
        return False
    return response.ok and bool(response.json().get("data", {}).get("assetNodes"))
