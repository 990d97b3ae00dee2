"""pytest plugin: a throwaway real PostgreSQL server (Debian's binaries) on 127.0.0.1.

Register with ``pytest_plugins = ["tests.plugins.postgres"]`` (or ``-p tests.plugins.postgres``).

Fixtures:

* ``postgres_server`` (session) -> :class:`PostgresServer`: the running server.
* ``postgres_url`` (session) -> str: SQLAlchemy URL ``postgresql+psycopg://cds@127.0.0.1:{port}/cds_test``
  of a database created for the session.
* ``postgres_database_url`` (function) -> str: URL of a fresh, empty database for one test
  (dropped afterwards).

The server lives in a temp dir (data directory and unix socket), listens on a free loopback port,
runs as the ``postgres`` system user when the tests run as root, and is stopped at session end. It
never touches a cluster the Debian package may have started on port 5432. Binaries come from
``/usr/lib/postgresql/*/bin`` (installed by ``scripts/install-system-deps.sh``), or from the
directory named by ``POSTGRES_BIN_DIR``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

DB_USER = "cds"
DB_NAME = "cds_test"
START_ATTEMPTS = 3


class PostgresError(RuntimeError):
    """The PostgreSQL test server could not be set up."""


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb and pg_ctl."""
    override = os.environ.get("POSTGRES_BIN_DIR")
    if override:
        candidates = [Path(override)]
    else:

        def version_key(p: Path) -> tuple[int, ...]:
            return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    raise PostgresError(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; "
        "run `bash scripts/install-system-deps.sh` (or `make system-deps`) as root"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running throwaway PostgreSQL server."""

    host: str
    port: int
    user: str
    root: Path
    """Temp dir holding ``data/``, ``socket/`` and ``server.log``."""
    bin_dir: Path
    run_as: str | None
    """System user running the server (``postgres`` when the tests run as root), else None."""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = DB_NAME) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of database ``dbname``."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string of database ``dbname``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def create_database(self, name: str) -> str:
        """Creates an empty database and returns its SQLAlchemy URL."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-max_chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stops the server (fast shutdown) and deletes its directory."""
        if self.data_dir.is_dir():
            _run(
                self,
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)


def _command(server: PostgresServer, args: Sequence[str]) -> list[str]:
    if server.run_as:
        return ["runuser", "-u", server.run_as, "--", *args]
    return list(args)


def _run(
    server: PostgresServer, args: Sequence[str], *, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    result = subprocess.run(
        _command(server, args),
        cwd=str(server.root),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise PostgresError(
            f"{' '.join(args[:2])} failed with exit code {result.returncode}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}\n"
            f"server log: {server.log_tail()}"
        )
    return result


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start in a fresh temp dir on a free 127.0.0.1 port."""
    bin_dir = find_bin_dir()
    run_as: str | None = None
    if os.geteuid() == 0:
        run_as = os.environ.get("POSTGRES_RUN_AS", "postgres")
        if shutil.which("runuser") is None:
            raise PostgresError("running as root but `runuser` is missing (util-linux)")
    root = Path(tempfile.mkdtemp(prefix="pg-test-"))
    server = PostgresServer(host="127.0.0.1", port=0, user=DB_USER, root=root, bin_dir=bin_dir, run_as=run_as)
    try:
        server.socket_dir.mkdir()
        if run_as:
            for path in (root, server.socket_dir):
                shutil.chown(path, user=run_as, group=None)
        _run(
            server,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=120,
        )
        last_error = ""
        for _ in range(START_ATTEMPTS):
            server.port = _free_port()
            options = " ".join(
                [
                    f"-p {server.port}",
                    f"-k {server.socket_dir}",
                    "-c listen_addresses=127.0.0.1",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=50",
                ]
            )
            result = _run(
                server,
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(server.data_dir),
                    "-l",
                    str(server.log_path),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                check=False,
                timeout=90,
            )
            if result.returncode == 0:
                break
            last_error = f"{result.stdout}\n{result.stderr}\n{server.log_tail()}"
        else:
            raise PostgresError(f"pg_ctl start failed {START_ATTEMPTS} times:\n{last_error}")
        server.create_database(DB_NAME)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session (stopped and deleted afterwards)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of the session database, e.g. postgresql+psycopg://cds@127.0.0.1:5xxxx/cds_test."""
    return postgres_server.url(DB_NAME)


@pytest.fixture
def postgres_database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh empty database for one test (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)
