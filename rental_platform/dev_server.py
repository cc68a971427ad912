"""`make dev`: Dagster's `dg dev` in a process group of its own, stopped through its top
process alone.

A stop signal sent to every process at once (Ctrl-C in a terminal, `timeout`, a supervisor's
group kill) also ends the code server, ahead of the webserver: `dg dev`, still waiting for the
webserver, sees its code server gone, warns and starts another. Sent to `dg dev` alone, a
SIGTERM stops the webserver, the daemon and the code server in order.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stopper:
    """Passes the first stop signal on to the server as one SIGTERM, and ignores the rest: a
    group kill reaches this process twice (directly and through make)."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            self._pass_on()

    def start(self, command: list[str]) -> subprocess.Popen:
        self.server = subprocess.Popen(command, process_group=0)
        if self.requested:  # a signal came while it started
            self._pass_on()
        return self.server

    def _pass_on(self) -> None:
        if self.server is not None:
            self.server.terminate()


def serve(host: str, port: int) -> int:
    """Run `dg dev` until it ends or a stop signal comes; its exit code."""
    dg = Path(sys.executable).with_name("dg")
    stopper = _Stopper()
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, stopper)
    server = stopper.start([str(dg), "dev", "--host", host, "--port", str(port)])
    return server.wait()
