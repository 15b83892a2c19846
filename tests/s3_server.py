"""A real S3 endpoint for tests: moto's standalone server in a process of its own, one per pytest worker.

The runner, its step processes and kernels reach it as they would reach S3: through the environment only
(``AWS_ENDPOINT_URL``, which botocore, and so s3fs, honours; keys and a region). conftest imports the fixtures: a
test asks for ``s3_env`` and ``bucket`` by name and gets a bucket of its own.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """``python -m moto.server`` on 127.0.0.1 and a free port, answering; yields its URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() - started > STARTUP_TIMEOUT:
                    pytest.fail(f"moto's S3 server did not start on {url}:\n{log.read_text()}")
                time.sleep(0.1)
        print(f"\nmoto S3 server at {url} answered after {time.monotonic() - started:.2f}s", file=sys.stderr)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> str:
    """The environment a runner on S3 has: the endpoint and credentials as variables, nothing else."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_endpoint


@pytest.fixture
def bucket(s3_env) -> str:
    """A new, empty bucket with a unique name (the server is shared by the tests of a worker)."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    return name


def s3():
    """An s3fs filesystem of its own (no cached listings), configured from the environment alone."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
