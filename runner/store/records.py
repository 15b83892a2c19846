"""Run records and the run store.

A run's record lives at ``<store>/<pipeline>/<run_id>/run.json`` with each step's executed
notebook beside it (``<step>.ipynb``, ``<step>.html``, ``<step>.log``). The store is a local
folder or any fsspec URL; records are written atomically (a local temp file renamed, or one
object put) and are not rewritten after the run ends. A write that fails (a full disk, a read-only
store) leaves no temp file and raises :class:`StoreError` naming the file and the reason. A ``run.json`` that is not a run record
anyway (cut short by a full disk, edited by hand) is listed as :class:`Unreadable`, never skipped.
Run ids are matched literally, never as a glob or a path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from runner.errors import NotFound, RunnerError, StoreError, cell_label
from runner.secrets import strip_userinfo

RunStatus = Literal["running", "succeeded", "failed", "interrupted"]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "interrupted"]
Trigger = Literal["manual", "schedule", "backfill", "rerun", "resume"]
HEARTBEAT_SECONDS = 30.0
HEARTBEAT_TIMEOUT = 4 * HEARTBEAT_SECONDS  # silent this long: a process of another host (or a lock) counts as dead
FINAL = ("succeeded", "failed", "interrupted")
# Scraps that runner.nb glues and the record lifts into each step's `snapshots` and `models`.
SNAPSHOTS_SCRAP, MODELS_SCRAP = "runner_snapshots", "runner_models"
REGISTERED_SCRAP = "runner_registered"  # versions a step registered, with the alias decision the runner applies
VERDICT_SCRAP = "runner_verdict"  # what nb.verdict glues; the record lifts it into the step's `verdict`
VerdictLevel = Literal["ok", "warn", "alert"]
LEVELS: tuple[str, ...] = ("ok", "warn", "alert")  # from best to worst


RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{6}")
CELL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # nbformat's pattern of a cell id


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSS-xxxxxx``: UTC time and 6 random hex digits; sorts by start time."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def is_run_id(text: str) -> bool:
    return RUN_ID.fullmatch(text) is not None


def check_run_id(text: str) -> str:
    """``text`` if it is a run id; else :class:`NotFound` (a run id is matched literally, never as a glob or path)."""
    if not is_run_id(text):
        raise NotFound(f"{text!r} is not a run id: expected YYYYMMDDTHHMMSS-xxxxxx, as `runner runs` lists them")
    return text


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StepError(BaseModel):
    """Why a step failed, and in which cell. Records from before the cell's other names were kept have only
    ``cell_index``; :meth:`where` names the cell either way."""

    ename: str
    evalue: str
    cell_index: int | None = None  # in the executed notebook, whose banners and injected parameters cell count
    execution_count: int | None = None  # the In [N] the executed notebook shows
    code_cell: int | None = None  # among the authored notebook's code cells, from 1 (the injected cell not counted)
    cell_source_first_line: str | None = None  # its first line that is not blank, cut at 80 characters
    cell_id: str | None = None  # its nbformat id: the anchor ``cell-id=<id>`` of the executed notebook's page

    def where(self) -> str:
        """The failing cell as its author sees it, ``In [6] (code cell 5: `model.fit(X, y)`)``; ``cell 7`` for an
        older record; "" when the failure was not inside a cell."""
        return cell_label(self.cell_index, self.execution_count, self.code_cell, self.cell_source_first_line)

    @property
    def anchor(self) -> str | None:
        """The fragment of the executed notebook's page that shows the failing cell: the cell itself, else the
        banner papermill (or the runner) put before it; None when the failure was not inside a cell."""
        if self.cell_id and CELL_ID.match(self.cell_id):
            return f"cell-id={self.cell_id}"
        return "papermill-error-cell" if self.cell_index is not None else None


class Attempt(BaseModel):
    """One execution of a step. Earlier attempts keep their notebooks as ``<step>.attempt<N>.*``."""

    number: int
    status: StepStatus
    started_at: str
    ended_at: str
    error: StepError | None = None
    output: str | None = None
    html: str | None = None
    log: str | None = None
    worker: str | None = None  # the executor's worker it ran on (a remote executor), e.g. tcp://10.0.0.7:40123


class Verdict(BaseModel):
    """What a step judged of its results, besides whether it ran: ``ok``, ``warn`` or ``alert``, and why.

    A step reports one with ``runner.nb.verdict(level, reasons)``; a run's verdict is the worst of its
    steps' (:attr:`RunRecord.verdict`). A record written before verdicts existed has none (``None``): it
    reads as "no verdict", never as ``ok``.
    """

    level: VerdictLevel
    reasons: list[str] = Field(default_factory=list)

    @classmethod
    def from_scrap(cls, value: Any) -> Verdict | None:
        """The verdict a step glued as :data:`VERDICT_SCRAP`, or None (none glued, or not a verdict's shape)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls.model_validate({"level": value.get("level"),
                                       "reasons": [str(reason) for reason in value.get("reasons") or []]})
        except (ValidationError, TypeError):
            return None

    @property
    def text(self) -> str:
        """One line: ``alert: reason; reason``."""
        return f"{self.level}: {'; '.join(self.reasons)}" if self.reasons else self.level


def worst(verdicts: dict[str, Verdict | None]) -> Verdict | None:
    """The worst of the steps' verdicts (by step name), its reasons those of every step at that level (each
    named by its step when several steps reported one); None when no step did."""
    given = {name: verdict for name, verdict in verdicts.items() if verdict is not None}
    if not given:
        return None
    level = max((verdict.level for verdict in given.values()), key=LEVELS.index)
    at_level = {name: verdict for name, verdict in given.items() if verdict.level == level}
    named = len(given) > 1
    reasons = [f"{name}: {reason}" if named else reason
               for name, verdict in at_level.items() for reason in verdict.reasons]
    return Verdict(level=level, reasons=reasons)


class StepRecord(BaseModel):
    name: str
    notebook: str
    notebook_sha256: str
    needs: list[str] = Field(default_factory=list)
    source: str | None = None  # the notebook's bytes as run, kept in the run folder (rerun runs these)
    requested: dict[str, Any] = Field(default_factory=dict)  # parameters before ${...} were resolved
    parameters: dict[str, Any] = Field(default_factory=dict)
    status: StepStatus = "pending"
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    error: StepError | None = None
    scraps: dict[str, Any] = Field(default_factory=dict)
    verdict: Verdict | None = None  # what the step judged (nb.verdict); None: it reported none
    mlflow_run_id: str | None = None
    output: str | None = None  # file names inside the run folder
    html: str | None = None
    snapshots: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    reused_from: str | None = None  # resume: the run whose succeeded step this is

    def outputs(self) -> list[str]:
        """The files the step's execution left in its run folder: executed notebook, page and log,
        then those of earlier attempts (the notebook as run, ``source``, is not among them)."""
        names = (self.output, self.html, f"{self.name}.log",
                 *(name for attempt in self.attempts for name in (attempt.output, attempt.html, attempt.log)))
        return list(dict.fromkeys(name for name in names if name))


class GitState(BaseModel):
    commit: str | None = None
    dirty: bool | None = None


class ChildProcess(BaseModel):
    """A process the run started: a step process or its kernel. On its host, the pipeline's lock is
    not recovered while one of them lives, even when the runner itself died."""

    pid: int
    pid_started: float
    role: str  # "step process" or "kernel" (the kernel, or a process the step process started)
    host: str = Field(default_factory=socket.gethostname)
    step: str = ""

    def alive_here(self) -> bool:
        """Whether it runs on this host (a process of another host is never seen alive here)."""
        return self.host == socket.gethostname() and pid_alive(self.pid, self.pid_started)


class Process(BaseModel):
    """Who runs the run, so a reader can tell a live run from one whose process died."""

    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    pid_started: float | None = None
    heartbeat_at: str = Field(default_factory=utcnow)
    children: list[ChildProcess] = Field(default_factory=list)  # the run's step processes and kernels, as they start


class RunRecord(BaseModel):
    run_id: str
    pipeline: str
    trigger: Trigger = "manual"
    as_of: str
    scheduled_for: str | None = None  # the cron tick (ISO, in the schedule's timezone) a run was due at
    origin: str | None = None  # the run this one resumes or reruns
    status: RunStatus = "running"
    created_at: str = Field(default_factory=utcnow)
    ended_at: str | None = None
    duration_s: float | None = None
    config: str = ""
    git: GitState = Field(default_factory=GitState)
    mlflow_experiment_id: str | None = None
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    process: Process = Field(default_factory=Process)
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    notifications: list[dict[str, Any]] = Field(default_factory=list)  # deliveries of the failure notice
    environment: dict[str, Any] = Field(default_factory=dict)  # python, digest of the distributions, how many

    @property
    def effective_status(self) -> str:
        """``interrupted`` for a run still marked running whose process is gone or silent."""
        if self.status != "running":
            return self.status
        return "interrupted" if not process_alive(self.process) else "running"

    @property
    def verdict(self) -> Verdict | None:
        """The worst of the steps' verdicts (:func:`worst`); None when no step reported one."""
        return worst({name: step.verdict for name, step in self.steps.items()})

    def step_status(self, step: StepRecord) -> str:
        """A step's status as a reader should see it: ``interrupted`` for a step still marked running (or
        pending) in the record of a run whose process is gone (killed before it could record its end)."""
        if step.status in ("running", "pending") and self.effective_status == "interrupted":
            return "interrupted"
        return step.status

    def failed_steps(self) -> list[StepRecord]:
        return [step for step in self.steps.values() if step.status == "failed"]


def process_alive(process: Process) -> bool:
    if process.host == socket.gethostname():
        return pid_alive(process.pid, process.pid_started)
    heartbeat = datetime.fromisoformat(process.heartbeat_at)
    return datetime.now(timezone.utc) - heartbeat < timedelta(seconds=HEARTBEAT_TIMEOUT)


def pid_alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` of this host runs and, given ``started``, is the process that started
    then (not a later one with the same pid). A zombie is dead: a killed process whose parent died too
    stays one for as long as the host's init does not reap it."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    return started is None or abs(created - started) < 1.0


def current_process() -> Process:
    import psutil

    return Process(pid_started=psutil.Process(os.getpid()).create_time())


def git_state(root: Path) -> GitState:
    """The project's commit and whether its work tree has uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return GitState()
    status = git("status", "--porcelain", "--untracked-files=no")
    return GitState(commit=commit.strip(), dirty=bool(status and status.strip()))


@contextlib.contextmanager
def store_errors(doing: str, path: str) -> Iterator[None]:
    """An OSError (a full disk, a read-only folder, a file where a folder should be; fsspec's remote stores
    raise OSError too) as a :class:`StoreError` naming ``path`` and the reason, where it enters."""
    try:
        yield
    except OSError as exc:
        code = f" ({errno.errorcode[exc.errno]})" if exc.errno in errno.errorcode else ""
        raise StoreError(f"could not {doing} {path}: {exc.strerror or exc}{code}") from exc


@dataclass(frozen=True)
class Unreadable:
    """A ``run.json`` that is not a run record (truncated, not JSON, the wrong shape). Listings show
    it rather than skip it: a run exists there, whatever it was."""

    path: str
    pipeline: str  # the names of its folders
    run_id: str
    reason: str
    status = "unreadable"

    @property
    def message(self) -> str:
        return f"{self.path}: not a valid run record: {self.reason}"


class RunStore:
    """The run records and executed notebooks, in a local folder or behind an fsspec URL."""

    def __init__(self, url: str):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def run_dir(self, pipeline: str, run_id: str) -> str:
        return f"{self.root.rstrip('/')}/{pipeline}/{run_id}"

    def workdir(self, pipeline: str, run_id: str, staging: Path) -> Path:
        """Where a run writes its files on this host: its run folder on a local store; else a folder under
        ``staging`` whose files :meth:`put` sends to the store (and :meth:`discard` removes once the run ended)."""
        return Path(self.run_dir(pipeline, run_id)) if self.is_local else staging / pipeline / run_id

    def discard(self, workdir: Path) -> None:
        """Remove a run's staging folder, once it ended (a local store's run folder is the record: kept)."""
        if not self.is_local:
            shutil.rmtree(workdir, ignore_errors=True)

    def local_copy(self, path: str, staging: Path) -> str:
        """A file of the store as a local file: itself on a local store, else downloaded under ``staging``."""
        if self.is_local:
            return path
        local = staging / os.path.relpath(path, self.root)
        with store_errors("read", path):
            os.makedirs(local.parent, exist_ok=True)
            self.fs.get_file(path, str(local))
        return str(local)

    def write(self, record: RunRecord) -> None:
        """Write ``run.json`` atomically, with the credentials of any URL in it masked."""
        path = self.record_path(record.pipeline, record.run_id)
        data = strip_userinfo(record.model_dump_json(indent=2)).encode()
        with store_errors("write", path):
            if not self.is_local:
                self.fs.pipe_file(path, data)  # one object put: readers see the old or the new record
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):  # a full disk keeps no partial copy
                    os.unlink(tmp)
                raise

    def record_path(self, pipeline: str, run_id: str) -> str:
        return f"{self.run_dir(pipeline, run_id)}/run.json"

    def put(self, local_path: str, pipeline: str, run_id: str) -> None:
        """Keep a file produced locally (an executed notebook) in its run folder: on a remote store it is
        put there and its staged copy removed, so a run leaves no files behind on its host (a local
        store's run folder is where the file was written: nothing to do)."""
        if not self.is_local:
            target = f"{self.run_dir(pipeline, run_id)}/{os.path.basename(local_path)}"
            with store_errors("write", target):
                self.fs.put_file(local_path, target)
            with contextlib.suppress(OSError):
                os.unlink(local_path)

    def keep_project(self, digest: str, data: bytes) -> None:
        """Keep a copy of the project's files (:mod:`runner.run.bundle`) under ``.projects/``, once per version:
        a remote executor's workers take it from here, whatever becomes of the machines in between."""
        path = self._project_path(digest)
        with store_errors("write", path):
            if not self.fs.exists(path):
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                self.fs.pipe_file(path, data)

    def project(self, digest: str) -> bytes:
        """The copy of the project kept as ``digest``."""
        path = self._project_path(digest)
        with store_errors("read", path):
            return self.fs.cat_file(path)

    def _project_path(self, digest: str) -> str:
        return f"{self.root.rstrip('/')}/.projects/{digest}.tar.gz"  # no pipeline's name starts with a dot

    def rename(self, pipeline: str, run_id: str, name: str, new_name: str) -> None:
        """Rename a file of a run's folder (a failed attempt's notebook, set aside for the next attempt)."""
        folder = self.run_dir(pipeline, run_id)
        with store_errors("write", f"{folder}/{new_name}"):
            self.fs.mv(f"{folder}/{name}", f"{folder}/{new_name}")

    def copy_files(self, pipeline: str, from_run: str, to_run: str, names: list[str]) -> None:
        """Copy files of one run's folder into another's (a resume keeps the steps it reuses)."""
        target = self.run_dir(pipeline, to_run)
        with store_errors("write", target):
            self.fs.makedirs(target, exist_ok=True)
            for name in names:
                source = f"{self.run_dir(pipeline, from_run)}/{name}"
                if self.fs.exists(source):
                    self.fs.copy(source, f"{target}/{name}")

    def read(self, run_id: str) -> RunRecord:
        """The record of ``run_id``, matched literally (:class:`NotFound` for a malformed or unknown id);
        a record that cannot be read is an error naming its file and the problem."""
        matches = self.fs.glob(f"{self.root.rstrip('/')}/*/{check_run_id(run_id)}/run.json")
        if not matches:
            raise NotFound(f"no run {run_id!r} in the run store {self.url}; `runner runs` lists the runs")
        entry = self._load(matches[0])
        if isinstance(entry, Unreadable):
            raise RunnerError(entry.message)
        return entry

    def _load(self, path: str) -> RunRecord | Unreadable:
        """The record at ``path``, or what is wrong with it (FileNotFoundError when it is gone)."""
        try:
            return RunRecord.model_validate_json(self.fs.cat_file(path))
        except ValidationError as exc:
            errors = exc.errors()
            where = ".".join(str(part) for part in errors[0]["loc"])
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            reason = f"{where + ': ' if where else ''}{errors[0]['msg']}{more}"
        except FileNotFoundError:
            raise
        except OSError as exc:  # a folder named run.json, no permission
            reason = f"{type(exc).__name__}: {exc}"
        folder, run_id = path.rsplit("/", 3)[-3:-1]
        return Unreadable(path, folder, run_id, reason)

    def entries(
        self,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newer_than: str | None = None,
    ) -> list[RunRecord | Unreadable]:
        """Runs newest first, those whose record cannot be read included (status ``unreadable``),
        optionally of one pipeline, with one (effective) status, or whose run id (its UTC start
        time) sorts at or after ``newer_than``."""
        found: list[RunRecord | Unreadable] = []
        for entry in self._scan(pipeline, newer_than):
            shown = entry.status if isinstance(entry, Unreadable) else entry.effective_status
            if status is None or shown == status:
                found.append(entry)
                if limit and len(found) >= limit:
                    break
        return found

    def list(
        self,
        pipeline: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        newer_than: str | None = None,
    ) -> list[RunRecord]:
        """The readable runs of :meth:`entries`; :meth:`unreadable` gives the others."""
        records: list[RunRecord] = []
        for entry in self._scan(pipeline, newer_than):
            if isinstance(entry, RunRecord) and (status is None or entry.effective_status == status):
                records.append(entry)
                if limit and len(records) >= limit:
                    break
        return records

    def unreadable(self, pipeline: str | None = None, newer_than: str | None = None) -> list[Unreadable]:
        """The ``run.json`` files that are not run records, newest first."""
        return [entry for entry in self._scan(pipeline, newer_than) if isinstance(entry, Unreadable)]

    def _scan(self, pipeline: str | None, newer_than: str | None) -> Iterator[RunRecord | Unreadable]:
        """Every ``run.json`` of the store (or of one pipeline), newest run id first, read as it is reached."""
        pattern = f"{self.root.rstrip('/')}/{pipeline or '*'}/*/run.json"
        paths = sorted(self.fs.glob(pattern), key=lambda p: p.rsplit("/", 2)[-2], reverse=True)
        for path in paths:
            if newer_than and path.rsplit("/", 2)[-2] < newer_than:
                continue
            try:
                yield self._load(path)
            except FileNotFoundError:
                continue  # removed since the listing
