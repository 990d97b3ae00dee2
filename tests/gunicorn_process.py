"""A real `cds-service serve` process (gunicorn master + workers) on 127.0.0.1 for load, restart, soak and
log tests: start on a chosen port with a chosen environment, wait for /healthz, stop gracefully (SIGTERM,
then SIGKILL of our own process group), list worker pids, read worker RSS and the JSON log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

CLI = Path(sys.executable).with_name("cds-service")
START_TIMEOUT_S = 60


@dataclass
class ServerProcess:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith('{"ts"')]

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: children of the master process."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def workers_rss_kib(self) -> int:
        """Resident memory of all workers together (KiB, from /proc/<pid>/status VmRSS)."""
        total = 0
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def stop(self, timeout: float = 30) -> None:
        """Graceful stop (gunicorn finishes in-flight requests); SIGKILL of our process group if stuck."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_server(
    workdir: Path, port: int, env: dict[str, str], *, dev: bool = True, label: str = "server"
) -> ServerProcess:
    """Start `cds-service serve` with `env` on top of a clean environment (no inherited CDS_* settings)."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "DATABASE_URL"}
    base_env.update(env)
    log_path = workdir / f"{label}-{port}-{time.monotonic_ns()}.log"
    command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port)] + (["--dev"] if dev else [])
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=base_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, process, log_path)
    _wait_healthy(server)
    return server


def _wait_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            if requests.get(f"{server.base_url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or (a loaded machine) not answering yet
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not healthy within {START_TIMEOUT_S} s:\n{server.log()[-4000:]}")
