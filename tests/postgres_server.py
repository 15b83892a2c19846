"""A throwaway PostgreSQL cluster for a test session: ``initdb`` into a temporary folder, ``pg_ctl start``, stopped
at the end. conftest imports the ``postgres_url`` fixture: a test asks for it by name.

The server binaries are found on PATH (``initdb``, ``pg_ctl``) or under ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package, which ``.ci/run`` installs). PostgreSQL refuses to run as root: as root the cluster belongs to
the ``postgres`` user and its commands run as that user (``runuser``); otherwise as the current user. Every pytest-xdist
worker starts its own cluster (its own folder, its own free port, its unix socket in that folder). Trust
authentication, on 127.0.0.1 only; fsync off, since nothing in it outlives the session. A cluster that cannot start
fails the tests that need it, in one line that says what was run and the tail of the server's log; never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "postgres"  # the database superuser, and the system user the cluster runs as under root
DATABASE = "runner_tests"
START_TIMEOUT = 30  # seconds pg_ctl waits for the server to accept connections
SERVER_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"


def binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: PATH's first, else Debian's newest version."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """One cluster in ``folder`` (data in ``folder/data``, socket and log beside it), run as the right user."""

    def __init__(self, bin_dir: Path, folder: Path):
        self.bin_dir, self.folder = bin_dir, folder
        self.data, self.log = folder / "data", folder / "server.log"
        self.port = 0
        self.as_root = os.geteuid() == 0

    def run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT + 30, cwd=self.folder)

    def start(self) -> None:
        if self.as_root:
            shutil.chown(self.folder, USER, USER)
        made = self.run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C",
                        "--no-sync")
        if made.returncode:
            self.fail("initdb", made)
        for _ in range(3):  # another worker may take the free port between the probe and the server's bind
            self.port = free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} {SERVER_OPTIONS}"
            started = self.run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT), "-D", str(self.data), "-l",
                               str(self.log), "-o", options)
            if started.returncode == 0:
                return
            if "could not bind" not in self.tail():
                break
        self.fail("pg_ctl start", started)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "stop", "-m", "fast", "-D", str(self.data))

    def tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def fail(self, what: str, result: subprocess.CompletedProcess) -> None:
        said = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        as_whom = f" as the {USER} user (runuser)" if self.as_root else ""
        pytest.fail(f"PostgreSQL did not start: {what} in {self.bin_dir}{as_whom} exited {result.returncode}: {said}"
                    + (f"; server log: {self.tail()}" if self.tail() else ""), pytrace=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:<port>/runner_tests`` on a cluster of this session (this worker)."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.fail("PostgreSQL did not start: no initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin; "
                    "install Debian's postgresql package (as .ci/run does)", pytrace=False)
    import psycopg

    begun = time.monotonic()
    cluster = Cluster(bin_dir, Path(tempfile.mkdtemp(prefix="runner-pg-")))
    try:
        cluster.start()
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user=USER, dbname="postgres",
                             autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DATABASE}")
        print(f"\nPostgreSQL ({bin_dir}) on 127.0.0.1:{cluster.port} started in {time.monotonic() - begun:.2f} s")
        yield f"postgresql+psycopg://{USER}@127.0.0.1:{cluster.port}/{DATABASE}"
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


def conninfo(url: str) -> str:
    """libpq's connection string of a SQLAlchemy URL of the test server (no password: it trusts local users)."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return f"host={parsed.host} port={parsed.port} user={parsed.username} dbname={parsed.database}"


@contextlib.contextmanager
def own_database(server: str):
    """The URL of a database of the caller's own on the session's ``server``, dropped afterwards."""
    import uuid

    import psycopg
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo(server), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo(server), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
