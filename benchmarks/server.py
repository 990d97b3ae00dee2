"""Start `cds-service serve` (gunicorn) on a free loopback port for benchmarks; read worker memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(pid: int, key: str) -> int:
    """A VmRSS/VmHWM-style field of /proc/<pid>/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@dataclass
class ServiceProcess:
    """A running service. Use as a context manager; `cold_start_s` is launch -> first discovery answer."""

    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    cold_start_s: float = 0.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServiceProcess:
        workdir = tempfile.mkdtemp(prefix="cds-bench-")
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir}/feedback.sqlite3",
            "CDS_BENCH_FLOOR": "1",
            **self.env,
        }
        exe = Path(sys.executable).parent / "cds-service"
        command = [
            str(exe),
            "serve",
            "--dev",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        start = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(workdir) / "server.log", "wb"),
            start_new_session=True,
        )
        while time.perf_counter() - start < 60:
            try:
                with urllib.request.urlopen(f"{self.base}/cds-services", timeout=2) as response:
                    if response.status == 200:
                        self.cold_start_s = time.perf_counter() - start
                        return self
            except OSError:
                time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the service did not answer discovery within 60 s (log: {workdir}/server.log)")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def cpu_seconds(self) -> float:
        """User + system CPU time of all workers so far (from /proc/<pid>/stat)."""
        ticks = 0
        for pid in self.worker_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> dict[int, float]:
        return {pid: _status(pid, "VmRSS") / 1024 for pid in self.worker_pids()}

    def peak_rss_mb(self) -> dict[int, float]:
        return {pid: _status(pid, "VmHWM") / 1024 for pid in self.worker_pids()}
