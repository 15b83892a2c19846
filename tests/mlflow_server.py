"""A real ``mlflow server`` on the shared stores of a team: its metadata (tracking and model registry) in a database
of the session's PostgreSQL cluster (tests/postgres_server.py), its artifacts in a bucket on the moto S3 server
(tests/s3_server.py), proxied by the server (``--artifacts-destination s3://<bucket>/mlflow``): a client needs only
the server's URL, never the bucket's credentials.

conftest imports the fixture (a test asks for ``shared_mlflow`` by name). One server per pytest-xdist worker, started
once for the session: MLflow migrates a new PostgreSQL database in 10 to 30 s. Its
tests share it, so each keeps to experiments (pipelines) and models of its own names.

The server reaches the bucket the way the runner reaches S3, through the environment only: ``AWS_ENDPOINT_URL``
(which boto3 honours, and so MLflow's S3 artifact repository), keys and a region; no ``MLFLOW_S3_ENDPOINT_URL``.
A server that does not answer ``/health`` in time fails the tests that need it, with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from s3_server import CREDENTIALS

START_TIMEOUT = 180.0  # seconds: migrations on PostgreSQL, beside another worker doing the same
STOP_TIMEOUT = 15.0
PREFIX = "mlflow"  # the artifacts' folder in the bucket


@dataclass(frozen=True)
class SharedMlflow:
    """The running server and where it keeps things."""

    url: str  # http://127.0.0.1:<port>: the tracking URI a client uses
    backend_url: str  # postgresql+psycopg://...: the server's own database (tracking and registry)
    endpoint: str  # the S3 endpoint (moto)
    bucket: str
    proc: subprocess.Popen
    log: Path

    @property
    def artifacts(self) -> str:
        """``s3://<bucket>/mlflow``: where ``mlflow-artifacts:/`` points."""
        return f"s3://{self.bucket}/{PREFIX}"

    def s3(self):
        """An s3fs filesystem on the bucket's endpoint, with the test credentials given as arguments, not read from
        the environment (a test's runner may well have none); no cached listings."""
        return _s3(self.endpoint)

    def keys(self, under: str = "") -> set[str]:
        """The objects below ``s3://<bucket>/mlflow/<under>``, relative to ``mlflow/``."""
        root = f"{self.bucket}/{PREFIX}/"
        return {path.removeprefix(root) for path in self.s3().find(root + under)}

    def in_bucket(self, location: str) -> str:
        """The bucket's path (``<bucket>/mlflow/...``) of an artifact location of the server
        (``mlflow-artifacts:/...`` or ``mlflow-artifacts://host/...``)."""
        assert location.startswith("mlflow-artifacts:"), location
        path = location.removeprefix("mlflow-artifacts:").lstrip("/")
        if location.startswith("mlflow-artifacts://"):
            path = path.split("/", 1)[1]  # drop the host
        return f"{self.bucket}/{PREFIX}/{path}"

    def rows(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        """What the server's database holds, read with a psycopg connection of the test's own."""
        import psycopg

        with psycopg.connect(conninfo(self.backend_url), autocommit=True) as db:
            return db.execute(sql, params).fetchall()

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").rstrip().splitlines()[-lines:])
        except OSError:
            return ""


def _s3(endpoint: str):
    """An s3fs filesystem on ``endpoint`` with the test credentials as arguments (no region: s3fs would send it as
    the new bucket's LocationConstraint, which us-east-1 refuses)."""
    import s3fs

    return s3fs.S3FileSystem(key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                             client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True,
                             use_listings_cache=False)


def conninfo(url: str) -> str:
    """psycopg's conninfo for a SQLAlchemy URL of the session's cluster (trust authentication, no password)."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return f"host={parsed.host} port={parsed.port} user={parsed.username} dbname={parsed.database}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(endpoint: str) -> dict[str, str]:
    """The server's environment: this one without the runner's and MLflow's client settings, with the bucket's
    endpoint and credentials (as s3_server's ``s3_env`` gives the runner) and MLflow's telemetry off."""
    dropped = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3", "MLFLOW_S3_ENDPOINT_URL")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("RUNNER_", "MLFLOW_")) and name not in dropped}
    env.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    return env


def _stop(proc: subprocess.Popen) -> None:
    """The server and its workers (its process group), killed outright: nothing of it outlives the session, and
    its graceful stop takes seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="session")
def shared_mlflow(postgres_url, s3_endpoint, tmp_path_factory) -> Iterator[SharedMlflow]:
    """``mlflow server`` on a new database ``mlflow_<hex>`` of the session's PostgreSQL cluster (psycopg 3's driver)
    and a new bucket of the moto server; stopped, and its database dropped, at the end of the session."""
    import psycopg
    import sqlalchemy as sa

    database, bucket = f"mlflow_{uuid.uuid4().hex[:12]}", f"mlflow-{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo(postgres_url), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    backend_url = sa.make_url(postgres_url).set(database=database).render_as_string(hide_password=False)
    _s3(s3_endpoint).mkdir(bucket)

    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    if mlflow is None:
        pytest.fail(f"no mlflow script beside {sys.executable}; install the project's dependencies", pytrace=False)
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend_url, "--artifacts-destination", f"s3://{bucket}/{PREFIX}"]
    begun = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_server_env(s3_endpoint),
                                start_new_session=True)
    server = SharedMlflow(url, backend_url, s3_endpoint, bucket, proc, log)
    try:
        while True:
            try:  # not MLflow's client, which would wait out its own retries
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            exited = proc.poll()
            if exited is not None or time.monotonic() - begun > START_TIMEOUT:
                why = f"exited {exited}" if exited is not None else f"no answer on /health in {START_TIMEOUT:.0f} s"
                pytest.fail(f"mlflow server on PostgreSQL and S3 did not start ({why}): {' '.join(command)}\n"
                            f"its log ({log}):\n{server.tail()}", pytrace=False)
            time.sleep(0.25)
        print(f"\nmlflow server at {url} (PostgreSQL database {database}, s3://{bucket}/{PREFIX}) answered after "
              f"{time.monotonic() - begun:.1f} s", file=sys.stderr)
        yield server
    finally:
        stopping = time.monotonic()
        _stop(proc)
        stopped = time.monotonic()
        with contextlib.suppress(psycopg.Error), psycopg.connect(conninfo(postgres_url), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        print(f"\nmlflow server at {url} stopped in {stopped - stopping:.1f} s, its database dropped in "
              f"{time.monotonic() - stopped:.1f} s", file=sys.stderr)
