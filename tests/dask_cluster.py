"""A Dask cluster for the tests: distributed's ``LocalCluster`` with two worker processes (each under a nanny that
starts it again when it dies), in a process of its own, as a cluster the runner reaches only by its address.

conftest imports the fixture: a test asks for ``dask_cluster`` by name, and each pytest-xdist worker starts one cluster
for its session. The workers get the moto S3 server's endpoint and credentials in their environment (what a worker
machine of a team has), nothing of the runner's. A cluster that cannot start fails the tests that need it, with its
log; never a skip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from s3_server import CREDENTIALS

START_TIMEOUT = 90.0
# Runs in the cluster's process: two workers, one thread each (a step at a time per worker), no dashboard;
# the address goes to stdout, and the cluster lives until its stdin closes.
CLUSTER = """
import sys
from distributed import LocalCluster

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                       scheduler_port=0, silence_logs=False)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()
cluster.close()
"""


@dataclass
class Cluster:
    address: str
    process: subprocess.Popen
    log: Path

    def workers(self) -> dict[str, int]:
        """Each worker's address and the pid of its process."""
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=30) as client:
            return client.run(os.getpid)

    def wait_for_workers(self, count: int = 2, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=30) as client:
            client.wait_for_workers(count, timeout=timeout)


def start(folder: Path, env: Mapping[str, str] | None = None) -> Cluster:
    log = folder / "cluster.log"
    with open(log, "wb") as err:
        process = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=err, cwd=folder, env={**os.environ, **(env or {})}, start_new_session=True)
    started = time.monotonic()
    assert process.stdout is not None
    address = process.stdout.readline().decode().strip()
    if not address.startswith("tcp://"):
        stop(process)
        pytest.fail(f"the Dask LocalCluster did not start in {time.monotonic() - started:.0f}s:\n{log.read_text()[-3000:]}")
    return Cluster(address, process, log)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        assert process.stdin is not None
        process.stdin.close()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory, s3_endpoint) -> Iterator[Cluster]:
    """A LocalCluster with two worker processes whose machine reaches the S3 endpoint."""
    cluster = start(tmp_path_factory.mktemp("dask"), {"AWS_ENDPOINT_URL": s3_endpoint, **CREDENTIALS})
    try:
        yield cluster
    finally:
        stop(cluster.process)
