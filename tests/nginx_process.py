"""A real Debian nginx on 127.0.0.1 running the shipped deploy/nginx/cds-service.conf (only its port tokens
replaced) in front of a server started by the test: a non-daemon child process with its own prefix, pid
file, logs and temp directories, stopped (SIGQUIT, then SIGKILL of its own process group) by the test."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cds_service.datafiles import PROJECT_ROOT

SHIPPED_CONFIG = PROJECT_ROOT / "deploy" / "nginx" / "cds-service.conf"
START_TIMEOUT_S = 30


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed: run `make system-deps` (scripts/install-system-deps.sh)")
    return found


def render(listen_port: int, upstream_port: int) -> str:
    """The shipped configuration with its two port tokens replaced (nothing else changes)."""
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    return text.replace("@LISTEN_PORT@", str(listen_port)).replace("@UPSTREAM_PORT@", str(upstream_port))


def main_config(prefix: Path, site: Path) -> str:
    """The top level a Debian /etc/nginx/nginx.conf provides, pointed at private paths under `prefix`."""
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    user = f"user {getpass.getuser()};" if os.getuid() == 0 else ""  # root would hand workers to nobody
    return f"""
daemon off;
{user}
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
"""


@dataclass
class NginxProcess:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    prefix: Path

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_nginx(prefix: Path, listen_port: int, upstream_port: int) -> NginxProcess:
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "cds-service.conf"
    site.write_text(render(listen_port, upstream_port), encoding="utf-8")
    config = prefix / "nginx.conf"
    config.write_text(main_config(prefix, site), encoding="utf-8")
    binary = nginx_binary()
    subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")],
                   check=True, capture_output=True)  # fmt: skip
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    running = NginxProcess(f"http://127.0.0.1:{listen_port}", listen_port, process, prefix)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{running.error_log()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", listen_port), timeout=1).close()
            return running
        except OSError:
            time.sleep(0.05)
    running.stop()
    raise RuntimeError(f"nginx did not listen within {START_TIMEOUT_S} s:\n{running.error_log()[-3000:]}")
