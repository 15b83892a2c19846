"""One run of a pipeline at a time, across processes and machines: a lock file in the run store.

``<store>/.locks/<pipeline>.lock`` holds who owns the pipeline (host, pid and its start time, a
heartbeat, what for). On a local store the lock file is written aside and hard-linked into
place: it appears whole or not at all, and of processes taking it at once exactly one wins. A
lock whose owner died (same host: the pid is gone or is another process; other host: no
heartbeat for four intervals) is broken and taken over, so a crashed runner never blocks its
pipeline for good; but on the same host not while a step process or kernel of the owner's runs
lives (their records list them as they start): a killed runner's steps die with it, within
seconds, and until they have, a new run could meet the old one's writes. A lock file that says
nothing (empty, not JSON, the wrong shape: a write cut short by a crash) is judged by its age as a
silent heartbeat is: taken over once it is four intervals old, busy until then, since it may be one
another process is writing. On an object store
(fsspec URL) taking it is a put followed by reading the lock back: good enough for schedulers
that do not start in the same second, which is the case the lock is for.

    with PipelineLock(store, "credit_score", "run 20261130T060000-ab12cd"):
        ...
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
from datetime import datetime, timezone
from typing import Any

from runner.errors import PipelineBusy
from runner.store.records import (
    HEARTBEAT_SECONDS,
    HEARTBEAT_TIMEOUT,
    ChildProcess,
    Process,
    RunStore,
    current_process,
    process_alive,
    utcnow,
)


class PipelineLock:
    """Held while a pipeline runs; a context manager. ``acquire`` raises :class:`PipelineBusy`."""

    def __init__(self, store: RunStore, pipeline: str, purpose: str = "run"):
        self.store, self.pipeline, self.purpose = store, pipeline, purpose
        self.path = f"{store.root.rstrip('/')}/.locks/{pipeline}.lock"
        self.token = secrets.token_hex(8)
        self._held = False
        self.acquired_at = ""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.took_over: dict[str, Any] | None = None  # what the lock of a dead owner said, when acquire broke it

    def __enter__(self) -> PipelineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        self.acquired_at = utcnow()
        for _ in range(3):  # a stale lock broken by us or by someone else: try again
            if self._create():
                self._held = True
                self._stop.clear()
                self._beat = threading.Thread(target=self._heartbeat, name=f"lock-{self.pipeline}", daemon=True)
                self._beat.start()
                return
            try:
                seen = self.store.fs.cat_file(self.path)
            except FileNotFoundError:
                continue  # released meanwhile
            holder, owner, problem = _parse(seen)
            if owner is None:
                age = self._age()
                if age is not None and age < HEARTBEAT_TIMEOUT:
                    raise PipelineBusy(self.pipeline, f"its lock file {self.path} is unreadable ({problem}), written "
                                       f"{age:.0f}s ago, maybe still being written; it is taken over once "
                                       f"{HEARTBEAT_TIMEOUT:g}s old")
                # A write cut short long ago: nobody's lock. (A store that cannot tell a file's age writes
                # whole objects, so nothing is half-written there.)
                self._break(seen)
                continue
            if process_alive(owner):
                raise PipelineBusy(self.pipeline, describe(holder))
            survivors = self.survivors(holder)
            if survivors:
                shown = ", ".join(f"{child.role} {child.pid}" + (f" (step {child.step})" if child.step else "")
                                  for child in survivors)
                raise PipelineBusy(self.pipeline, f"{describe(holder)}; that process is gone but its {shown} still "
                                   "run: they end within seconds of it, or kill them")
            self.took_over = holder  # its runs may say running still (runner.run.pipeline.settle_abandoned)
            self._break(seen)
        raise PipelineBusy(self.pipeline, "its lock keeps changing hands")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        holder = self.holder()
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.store.fs.rm_file(self.path)

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says, or None when there is none (or it is unreadable)."""
        try:
            holder, owner, _ = _parse(self.store.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        return holder if owner is not None else None

    def _age(self) -> float | None:
        """Seconds since the lock file was last written, or None when the store cannot tell."""
        try:
            modified = self.store.fs.modified(self.path)
        except (NotImplementedError, OSError):
            return None
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=timezone.utc)
        return max(0.0, (datetime.now(timezone.utc) - modified).total_seconds())

    def abandoned_since(self) -> str | None:
        """When the dead owner whose lock :meth:`acquire` broke took it, as the start of a run id (its runs are not
        older); "" when no dead owner's lock was broken (nothing to look for), None when the time is unknown."""
        if self.took_over is None:
            return ""
        return _run_id_prefix(self.took_over.get("acquired_at"))

    def survivors(self, holder: dict[str, Any]) -> list[ChildProcess]:
        """The step processes and kernels still alive of the runs the holder started since it took the lock.

        Only on the holder's host; another host's lock lives by its heartbeat alone. The runs are
        those of the pipeline whose id (their start time) is not older than the lock and whose
        record names the holder's process.
        """
        owner = Process(**holder["process"])
        if owner.host != socket.gethostname():
            return []
        alive = []
        for record in self.store.list(self.pipeline, newer_than=_run_id_prefix(holder.get("acquired_at"))):
            runner = record.process
            same = (runner.host, runner.pid) == (owner.host, owner.pid) and (
                runner.pid_started is None or owner.pid_started is None
                or abs(runner.pid_started - owner.pid_started) < 1.0)
            alive.extend(child for child in runner.children if same and child.alive_here())
        return alive

    def _content(self) -> bytes:
        return json.dumps({
            "pipeline": self.pipeline, "purpose": self.purpose, "token": self.token, "acquired_at": self.acquired_at,
            "process": current_process().model_dump(exclude={"children"}) | {"heartbeat_at": utcnow()},
        }).encode()

    def _create(self) -> bool:
        fs = self.store.fs
        if self.store.is_local:
            # Written aside, then hard-linked into place: the lock appears complete or not at all.
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{self.token}.new"
            with open(tmp, "wb") as out:
                out.write(self._content())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        if fs.exists(self.path):
            return False
        try:  # an exclusive create where the store has one (S3's conditional write: If-None-Match)
            fs.pipe_file(self.path, self._content(), mode="create")
        except FileExistsError:
            return False  # another host created it since we looked
        except TypeError:  # a filesystem without exclusive creates: write, then read back who holds it
            fs.pipe_file(self.path, self._content())
        holder = self.holder()
        return holder is not None and holder.get("token") == self.token

    def _break(self, seen: bytes) -> None:
        """Remove a dead owner's (or an unreadable) lock, unless it changed since we read ``seen``."""
        if self.store.is_local:
            stale = f"{self.path}.{self.token}.stale"
            try:
                os.rename(self.path, stale)  # of several processes breaking it, one gets it
            except FileNotFoundError:
                return
            with open(stale, "rb") as moved:
                taken = moved.read()
            if taken != seen:
                # Its owner wrote it (a heartbeat) or a live process took it after our read: give it back.
                with contextlib.suppress(FileExistsError):
                    os.link(stale, self.path)
            os.unlink(stale)
            return
        self._break_remote(seen)

    def _break_remote(self, seen: bytes) -> None:
        """On S3 the delete is conditional on the object's ETag (If-Match), so a lock that another host took or
        refreshed after we read ``seen`` stays; other fsspec stores re-read the lock, then delete it."""
        fs = self.store.fs
        try:
            etag = fs.info(self.path).get("ETag")
            if fs.cat_file(self.path) != seen:
                return  # its owner wrote it (a heartbeat) or a live process took it after our read
            if etag and hasattr(fs, "call_s3"):
                bucket, key, _ = fs.split_path(self.path)
                fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
                fs.invalidate_cache(self.path)
            else:
                fs.rm_file(self.path)
        except FileNotFoundError:
            return  # broken by someone else first
        except OSError as exc:
            if _precondition_failed(exc):
                return  # changed between our read and the delete: not ours to break
            raise

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            holder = self.holder()
            if holder is None or holder.get("token") != self.token:
                return  # broken by someone who thought we were dead; nothing to refresh
            tmp = f"{self.path}.{self.token}.tmp"
            try:
                if self.store.is_local:
                    with open(tmp, "wb") as out:
                        out.write(self._content())
                    os.replace(tmp, self.path)
                else:
                    self.store.fs.pipe_file(self.path, self._content())
            except OSError:  # a full or read-only store: the run fails on its own record; this beat is skipped
                with contextlib.suppress(OSError):
                    os.unlink(tmp)  # (none for a remote store)


def _parse(content: bytes) -> tuple[dict[str, Any], Process | None, str]:
    """What a lock file says and its owner; no owner, and why, when it is empty, not JSON or of the wrong shape."""
    if not content.strip():
        return {}, None, "empty"
    try:
        holder = json.loads(content)
    except ValueError as exc:  # UnicodeDecodeError included
        return {}, None, f"not JSON: {exc}"
    if not isinstance(holder, dict) or not isinstance(holder.get("process"), dict):
        return {}, None, "no owning process in it"
    try:
        owner = Process(**holder["process"])
        datetime.fromisoformat(owner.heartbeat_at)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        return {}, None, f"owning process: {str(exc).splitlines()[0]}"
    return holder, owner, ""


def describe(holder: dict[str, Any]) -> str:
    process = holder.get("process", {})
    return (f"{holder.get('purpose', 'run')}, pid {process.get('pid')} on {process.get('host')}, "
            f"since {holder.get('acquired_at') or '?'}")


def _run_id_prefix(when: str | None) -> str | None:
    """The start of the ids of runs created at or after ``when`` (ISO time): run ids begin with their UTC start."""
    try:
        return datetime.fromisoformat(when or "").astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S")
    except ValueError:
        return None  # an older lock without the time: look at every run


def _precondition_failed(exc: BaseException) -> bool:
    """Whether S3 refused a conditional request (412 PreconditionFailed), as s3fs reports it or as botocore did."""
    seen: BaseException | None = exc
    while seen is not None:
        code = (getattr(seen, "response", None) or {}).get("Error", {}).get("Code")
        if code == "PreconditionFailed" or "pre-conditions you specified did not hold" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False

