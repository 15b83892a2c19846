"""Every request, written to the warehouse's ``requests`` table off the request path.

A request hands its rows to :meth:`RequestLog.record` (a bounded queue; it never waits) and is answered.
A writer thread takes what is queued in batches and appends it in one transaction each. While the
warehouse does not answer, the batch waits and is tried again (backoff up to 10 s), the queue keeps what
comes meanwhile, and ``/health`` says the log is failing. Rows are lost only where it is counted and logged:
a request that finds the queue full (``dropped``), and what is still unwritten when the server stops and the
flush gives up (``lost``). ``sample`` keeps that share of the requests (each request whole); the rest are
counted as ``sampled_out``.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("runner.serve")
Rows = Callable[[], list[dict[str, Any]]]  # a request's rows, made when the writer takes them
BACKOFF = (0.5, 10.0)  # seconds before trying a failed batch again, doubling, and the most


class RequestLog:
    def __init__(self, write: Callable[[list[dict[str, Any]]], int], *, capacity: int = 10_000, batch: int = 1000,
                 interval: float = 0.5, sample: float = 1.0):
        self.write, self.batch, self.interval, self.sample = write, batch, interval, sample
        self._queue: queue.Queue[tuple[int, Rows]] = queue.Queue(maxsize=capacity)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.counts = {"written": 0, "dropped": 0, "lost": 0, "sampled_out": 0, "failed_writes": 0}
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._pending: list[dict[str, Any]] = []  # taken from the queue, not yet written
        self._thread = threading.Thread(target=self._run, name="runner-serve-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, count: int, rows: Rows) -> None:
        """Queue one request's ``count`` rows (or count them out); never blocks the request. ``rows()`` makes
        them, in the writer's thread: turning inputs into JSON is no work of the request's."""
        if self.sample < 1.0 and random.random() >= self.sample:
            self._count("sampled_out", count)
            return
        try:
            self._queue.put_nowait((count, rows))
        except queue.Full:
            self._count("dropped", count)
            log.error("the request log's queue is full (the warehouse is slow or down): %d row(s) dropped, %d so far",
                      count, self.counts["dropped"])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "queued": self._unwritten(), "failing": self.failing_since is not None,
                    "last_error": self.last_error}

    def _unwritten(self) -> int:
        return len(self._pending) + sum(count for count, _ in list(self._queue.queue))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (trying for ``timeout`` seconds); what is left is counted lost and logged."""
        self._stopping.set()
        self._thread.join(timeout)
        with self._lock:
            left = self._unwritten()
            self.counts["lost"] += left
        if left:
            log.error("stopped with %d request row(s) not written to the warehouse (%s)", left, self.last_error)
        else:
            log.info("request log flushed: %d row(s) written", self.counts["written"])

    def _count(self, what: str, rows: int) -> None:
        with self._lock:
            self.counts[what] += rows

    def _take(self) -> None:
        """Move queued rows into the pending batch, waiting up to ``interval`` for the first."""
        deadline = time.monotonic() + self.interval
        while len(self._pending) < self.batch:
            left = deadline - time.monotonic()
            try:
                _, rows = self._queue.get(timeout=max(left, 0.0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            made = rows()
            with self._lock:
                self._pending.extend(made)

    def _run(self) -> None:
        delay = BACKOFF[0]
        while True:
            stopping = self._stopping.is_set()
            self._take()
            if self._pending:
                try:
                    written = self.write(self._pending)
                except Exception as exc:  # noqa: BLE001 - any failure of the warehouse: keep the rows, try again
                    with self._lock:
                        self.counts["failed_writes"] += 1
                        self.failing_since = self.failing_since or time.time()
                        first = self.last_error is None
                        self.last_error = f"{type(exc).__name__}: {exc}"
                    if first:
                        log.error("could not write the request log (%d row(s) kept, trying again): %s",
                                  len(self._pending), self.last_error)
                    if self._stopping.wait(delay) and stopping:
                        return  # a flush that keeps failing: close() counts what is left
                    delay = min(delay * 2, BACKOFF[1])
                    continue
                with self._lock:
                    self.counts["written"] += written
                    self._pending = []
                    if self.failing_since is not None:
                        log.warning("the request log writes again after %.0f s", time.time() - self.failing_since)
                    self.failing_since, self.last_error = None, None
                delay = BACKOFF[0]
            elif stopping and self._queue.empty():
                return
