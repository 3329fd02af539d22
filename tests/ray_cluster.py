"""A throwaway Ray cluster on this computer for the tests and the benchmark: a head node that
runs no work (``--num-cpus=0``) and worker nodes of one CPU each, every node its own
``ray start --block`` in its own process group, so stopping kills exactly this cluster's
processes (``ray stop`` would stop every Ray cluster of the machine).

Token authentication, Ray's default since 2.60, is off for this cluster
(``RAY_AUTH_MODE=disabled``): whoever connects to it sets the same (``AUTH_OFF``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AUTH_OFF = {"RAY_AUTH_MODE": "disabled"}
_QUIET = {"RAY_USAGE_STATS_ENABLED": "0"}
STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RayCluster:
    """``with RayCluster(workers=2) as cluster: ... cluster.address``; stopped even when
    starting it failed half-way."""

    def __init__(self, workers: int = 2, cpus_per_worker: int = 1,
                 start_timeout_s: float = 90.0) -> None:
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.start_timeout_s = start_timeout_s
        # Short: Ray's socket paths under it must stay below the 107 characters Unix allows.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._nodes: list[tuple[subprocess.Popen, Path]] = []

    def __enter__(self) -> RayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._node(["--head", f"--port={self.port}", "--num-cpus=0",
                    "--include-dashboard=false", "--disable-usage-stats"], "head")
        for index in range(self.workers):
            self._node([f"--address={self.address}", f"--num-cpus={self.cpus_per_worker}"],
                       f"worker{index}")

    def _node(self, options: list[str], name: str) -> None:
        ray = Path(sys.executable).with_name("ray")
        log = self.temp_dir / f"{name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(ray), "start", *options, "--node-ip-address=127.0.0.1",
                 f"--temp-dir={self.temp_dir}", "--block"],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **AUTH_OFF, **_QUIET}, start_new_session=True)
        self._nodes.append((process, log))
        deadline = time.monotonic() + self.start_timeout_s
        while STARTED not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start ({name}) failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def processes_running(self, task: str) -> list[int]:
        """This cluster's worker processes now running ``task`` (Ray names them
        ``ray::<task>`` while they run it)."""
        groups = {process.pid for process, _ in self._nodes}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            except (OSError, UnicodeDecodeError):
                continue  # gone meanwhile
            if command.startswith(f"ray::{task}") and _ancestor_group(int(entry.name)) & groups:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Every node's process group: asked, then killed; then the temp folder."""
        for process, _ in reversed(self._nodes):
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for process, _ in self._nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process, _ in self._nodes:
            _signal_group(process.pid, signal.SIGKILL)  # workers left behind, if any
            if process.poll() is None:
                process.wait(5)
        self._nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_tail(self, characters: int = 4000) -> str:
        return "\n".join(log.read_text(errors="replace")[-characters:]
                         for _, log in self._nodes if log.exists())


def _ancestor_group(pid: int) -> set[int]:
    """The process groups of ``pid`` and its ancestors: a worker process gets a group of its
    own, its raylet is in the group of the node's ``ray start``."""
    groups = set()
    while pid > 1:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            break
        pid, group = int(fields[1]), int(fields[2])  # the parent, the process group
        groups.add(group)
    return groups


def _signal_group(group: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(group, number)
