"""The warehouse: one SQL database (SQLAlchemy) for development and production, read and written for a purpose.

The same :class:`Warehouse` serves development and production: a URL chooses the database
(sqlite under ``.runner/`` by default). With a :class:`DataDictionary` it validates what is written,
writes only the tables the dictionary declares (and the runner's run tables), and reads for a
purpose: every column a read uses, in ``columns=``, ``where=``, ``order_by=`` or a whole query
(parsed, never trusted), must allow it. Date columns are read as ``datetime64[ns]``, category
columns as strings (see :mod:`runner.data.dictionary`).

Every write is one transaction, all or none. A write that meets another writer waits for its lock
(sqlite: the transaction starts with ``BEGIN IMMEDIATE``, so it takes the write lock first and waits
the busy timeout for it; PostgreSQL: ``lock_timeout``), up to ``RUNNER_WAREHOUSE_BUSY_TIMEOUT`` per
attempt. Transient failures (a lock still held, a deadlock or serialization failure, a connection
lost before the commit) re-run the whole transaction after an exponential backoff with jitter, up to
``RUNNER_WAREHOUSE_WRITE_ATTEMPTS`` attempts; anything else (a constraint, a missing column) fails at
once. The last failure names the lock and the setting to raise, never the table's columns.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from itertools import chain, repeat
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa
from pandas.errors import DatabaseError
from sqlalchemy.exc import SQLAlchemyError

from runner.config import ENV_WAREHOUSE_BUSY_TIMEOUT, ENV_WAREHOUSE_WRITE_ATTEMPTS, PRODUCTION, EnvVar, parse_duration
from runner.data.dictionary import ANY as ANY_PURPOSE
from runner.data.dictionary import DataDictionary, TableSpec, parse_condition, parse_query, sql_dialect
from runner.errors import ConfigError, DataContractError, RunnerError

__all__ = ["Warehouse", "PREDICTIONS", "MONITORING_METRICS", "REQUESTS", "read_ahead"]

PREDICTIONS = "predictions"
CHUNK_ROWS = 5000  # rows per INSERT statement (sqlite, at most as many as its parameters allow) or executemany
BACKOFF = (0.1, 5.0)  # seconds before the first retry of a write (doubling each time, with jitter), and the most
# Transient failures by SQLSTATE (PostgreSQL; psycopg's .sqlstate, psycopg2's .pgcode): the transaction gave way to
# another writer, so running it again can succeed. Class 08 and 57P01-57P03 are a connection lost or refused for now.
SQLSTATES = {"40001": "conflict", "40P01": "conflict", "55P03": "lock", "57P01": "connection",
             "57P02": "connection", "57P03": "connection"}
SQLITE_LOCKS = ("database is locked", "database is busy", "database table is locked", "database schema is locked")
SQL_TYPES = {
    "int": sa.BigInteger, "float": sa.Float, "string": sa.Text, "category": sa.Text,
    "bool": sa.Boolean, "date": sa.Date, "datetime": sa.DateTime,
}
_PREDICTION_COLUMNS = {  # used when the dictionary does not declare the predictions table
    "run_id": ("string", "pipeline run that wrote the score"),
    "model_name": ("string", "registered model name"),
    "model_version": ("string", "registered model version"),
    "as_of": ("date", "logical date of the run"),
    "entity_id": ("string", "id of the scored entity"),
    "score": ("float", "predicted probability"),
    "scored_at": ("datetime", "when the run wrote the score (UTC)"),
    "namespace": ("string", "production, or user:<name> for scores written by a notebook run by hand"),
}
MONITORING_METRICS = "monitoring_metrics"
_MONITORING_COLUMNS = {  # name: (type, description, nullable)
    "run_id": ("string", "pipeline run that computed the value", False),
    "pipeline": ("string", "pipeline of that run", False),
    "step": ("string", "step that computed it (a run may monitor in several steps)", False),
    "as_of": ("date", "logical date of the run", False),
    "model_name": ("string", "registered model monitored", False),
    "model_version": ("string", "its version", False),
    "feature": ("string", "input feature, 'score', or what the value is about ('usage', 'model:v3')", False),
    "statistic": ("string", "psi, ks, wasserstein, jensen_shannon, missing_rate_change, auc, ...", False),
    "value": ("float", "the statistic's value", True),
    "p_value": ("float", "its p-value, when it has one (reported, never decisive)", True),
    "severity": ("string", "ok, warn or alert", False),
    "detail": ("string", "the finding in words", True),
    "computed_at": ("datetime", "when the run wrote the value (UTC)", False),
    "namespace": ("string", "production, or user:<name> for a notebook run by hand", False),
}
REQUESTS = "requests"
_REQUEST_COLUMNS = {  # name: (type, description, nullable); one row per scored row of a request to `runner serve`
    "request_id": ("string", "the request's id (its X-Request-ID header), shared by its rows", False),
    "row": ("int", "the row's position in the request, from 0", False),
    "received_at": ("datetime", "when the server received the request (UTC)", False),
    "model_name": ("string", "registered model that answered", False),
    "model_version": ("string", "its version", False),
    "alias": ("string", "the alias served (champion)", False),
    "inputs": ("string", "the row's input columns as JSON (the whole body, cut short, when it could not be read)", True),
    "score": ("float", "the score answered (the positive class's probability)", True),
    "latency_ms": ("float", "the request's time in the server, parsing to answer", False),
    "status": ("string", "ok, rejected (422: the inputs broke the signature or the dictionary) or error", False),
    "error": ("string", "why it was rejected or failed", True),
    "flags": ("string", "what was scored but is worth a look: levels the model never saw in training", True),
}
RUN_TABLE_INDEXES = (("run_id",), ("as_of",))
# How predictions are stored: ``predictions`` is a view joining one row per write (the run's columns, a batch number
# and its row count) to the scores, three columns a row. A run's columns are the same on each of its rows: stored once,
# the scores take a third of the space and about half the time to write (docs/design/benchmarks.md).
PREDICTION_BATCHES = "prediction_batches"
PREDICTION_SCORES = "prediction_scores"
STORAGE_TABLES = (PREDICTION_BATCHES, PREDICTION_SCORES)  # behind the predictions view: the runner's names
_BATCH_COLUMNS = ("run_id", "model_name", "model_version", "as_of", "scored_at", "namespace")
_PREDICTIONS_VIEW = (f"SELECT b.run_id, b.model_name, b.model_version, b.as_of, s.entity_id, s.score, b.scored_at, "
                     f"b.namespace FROM {PREDICTION_SCORES} s JOIN {PREDICTION_BATCHES} b ON b.batch = s.batch")
T = TypeVar("T")
log = logging.getLogger(__name__)
BUILTIN = DataDictionary.from_dict({
    "purposes": {},
    "tables": {
        PREDICTIONS: {
            "description": "scores written by scoring runs", "owner": "runner",
            "columns": {name: {"type": kind, "description": text, "nullable": False, "pii": False,
                               "allowed_purposes": ["any"], **({"min": 0, "max": 1} if name == "score" else {})}
                        for name, (kind, text) in _PREDICTION_COLUMNS.items()},
        },
        MONITORING_METRICS: {
            "description": "one row per monitoring run, feature and statistic, for BI tools", "owner": "runner",
            "columns": {name: {"type": kind, "description": text, "nullable": nullable, "pii": False,
                               "allowed_purposes": ["any"]}
                        for name, (kind, text, nullable) in _MONITORING_COLUMNS.items()},
        },
        REQUESTS: {
            "description": "every request `runner serve` answered, one row per scored row", "owner": "runner",
            "columns": {name: {"type": kind, "description": text, "nullable": nullable, "pii": False,
                               "allowed_purposes": ["any"]}
                        for name, (kind, text, nullable) in _REQUEST_COLUMNS.items()},
        },
    },
}, source="runner.data.warehouse (built-in tables)")
STORAGE = DataDictionary.from_dict({  # the scores' own table, as it is written (not read: readers see predictions)
    "purposes": {},
    "tables": {PREDICTION_SCORES: {"description": "the scores of predictions, by batch", "owner": "runner", "columns": {
        name: {"type": kind, "description": name, "nullable": False, "pii": False, "allowed_purposes": ["any"]}
        for name, kind in (("batch", "int"), ("entity_id", "string"), ("score", "float"))}}},
}, source="runner.data.warehouse (storage of predictions)")


class Warehouse:
    """One warehouse for development and production, through SQLAlchemy (any URL; sqlite by default).

    Reads are for a ``purpose`` (the pipeline's): given here, or by :meth:`for_purpose`, it is fixed
    for the object's life; a warehouse opened without one takes it per :meth:`read_table` call. A
    read of a table of the ``dictionary`` without a purpose is refused, unless it says
    ``unchecked="why"`` (logged); the runner's run tables (``predictions``, ``monitoring_metrics``)
    may be read for any purpose or none.

    ``busy_timeout`` (seconds) and ``write_attempts`` default to ``RUNNER_WAREHOUSE_BUSY_TIMEOUT`` and
    ``RUNNER_WAREHOUSE_WRITE_ATTEMPTS`` (see the module's docstring for what they bound).
    """

    def __init__(self, url: str, dictionary: DataDictionary | None = None, *, purpose: str | None = None,
                 busy_timeout: float | None = None, write_attempts: int | None = None):
        self.url = url
        self.dictionary = dictionary
        # how long one attempt of a write waits for another writer's lock, and how many attempts a write has
        self.busy_timeout = _busy_timeout(busy_timeout)
        self.write_attempts = _write_attempts(write_attempts)
        self._engine = _create_engine(url, self.busy_timeout)
        self._purpose = purpose
        self._fixed = purpose is not None  # reads are for self._purpose only, or (None) for no purpose
        self._no_purpose = ""  # why a fixed warehouse has no purpose, and what to do: said when a read needs one
        self._on_unchecked: Callable[[str, str], None] | None = None

    def __repr__(self) -> str:
        return f"Warehouse({self._shown_url!r}{f', purpose={self._purpose!r}' if self._purpose else ''})"

    @property
    def purpose(self) -> str | None:
        """What this warehouse reads for (None: no purpose, or per call if not fixed)."""
        return self._purpose

    def for_purpose(self, purpose: str | None, *, no_purpose: str = "",
                    on_unchecked: Callable[[str, str], None] | None = None) -> Warehouse:
        """This warehouse (same connections and dictionary) reading for ``purpose`` and no other.

        With ``purpose`` None its reads of the dictionary's tables are refused, saying ``no_purpose``
        (what the reader should do: the notebook API says which pipeline declares none).
        ``on_unchecked(reason, sql)`` hears every read made with ``unchecked=``. A warehouse fixed
        to one purpose is never turned to another.
        """
        if self._fixed and purpose != self._purpose:
            raise DataContractError(f"this warehouse reads for {self._purpose!r}; it cannot be turned to "
                                    f"{purpose!r}: a pipeline reads for the purpose it declares in runner.yaml")
        view = copy.copy(self)
        view._purpose, view._fixed = purpose, True
        view._no_purpose = no_purpose or self._no_purpose
        view._on_unchecked = on_unchecked or self._on_unchecked
        return view

    def tables(self) -> list[str]:
        """The warehouse's tables and views (``predictions`` is a view: see :meth:`write_predictions`)."""
        with self._connect() as conn:
            inspector = sa.inspect(conn)
            return sorted({*inspector.get_table_names(), *inspector.get_view_names()})

    def write_table(self, table: str, frame: pd.DataFrame, *, mode: str = "append") -> int:
        """Write ``frame`` in one transaction; returns rows written.

        ``mode`` is ``append`` or ``replace`` (the table's previous contents go). Only a table the
        dictionary declares (or a run table of the runner) is written: the frame is validated first
        (nothing is written if it breaks the dictionary) and the table created with the declared
        types; rows whose ``key`` already exists are replaced, so re-ingesting a batch does not
        duplicate it. Any other table is refused: what it held would escape the purpose rule.
        """
        if mode not in ("append", "replace"):
            raise RunnerError(f"write mode must be 'append' or 'replace', got {mode!r}")
        if table == PREDICTIONS:
            raise RunnerError("predictions are written by a run's write_predictions (nb.write_predictions or nb.score), "
                              "one run's scores at a time, never by write_table")
        self._declaration(table, "write")
        contract = self._contract(table)
        spec = contract.table(table)
        frame = contract.validate(table, frame)

        def write(conn: sa.Connection) -> int:
            if mode == "replace":
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {conn.dialect.identifier_preparer.quote(table)}"))
            sql_table = self._ensure_table(conn, table, spec)
            if spec.key and mode == "append":
                self._delete_keys(conn, sql_table, frame[list(spec.key)])
            return self._insert(conn, table, frame, spec)

        return self._in_transaction(table, write)

    def read_table(
        self,
        table: str,
        columns: list[str] | None = None,
        where: str | None = None,
        params: dict | None = None,
        *,
        purpose: str | None = None,
        chunksize: int | None = None,
        order_by: Sequence[str] | None = None,
        unchecked: str | None = None,
    ) -> pd.DataFrame | Iterator[pd.DataFrame]:
        """Rows of ``table``; ``where`` is an SQL condition with ``:named`` parameters.

        Before any row is read, every column the read uses (``columns``, all of the table's when
        None; the columns ``where`` tests; ``order_by``) must be declared and allow the purpose
        (this warehouse's, or ``purpose`` if it has none fixed). ``where`` is parsed in the
        warehouse's dialect: a condition over this table's columns (comparisons, AND/OR/NOT, IN,
        BETWEEN, LIKE, IS NULL, arithmetic, literals, ``:named`` parameters, lower, upper,
        coalesce, substr), never a sub-query, a UNION or another table. ``unchecked="why"`` skips
        all of this on a warehouse without a purpose, logged (see :meth:`read_sql`). With
        ``chunksize``, an iterator of frames of at most that many rows. Rows come in a stable order:
        by ``order_by``, else by the table's declared key, else by every column read; so the same
        data gives the same frame however it was written (a re-ingest that reorders rows changes nothing).
        """
        if unchecked is not None:
            self._unchecked(unchecked, f"{table} columns={columns} where={where!r} order_by={order_by}")
            return self._read(table, columns, sa.text(where) if where else None, params, chunksize, order_by)
        purpose = self._purpose_for(purpose)
        declared = self._declaration(table, "read").table(table).columns
        condition = parse_condition(where, table, self._dialect, declared) if where else None
        names = self._columns(table) if columns is None else list(columns)
        order = list(order_by) if order_by is not None else list(self._contract(table).table(table).key) or names
        self._check_read(table, [*names, *(condition.columns if condition else ()), *order], purpose)
        return self._read(table, names, sa.text(condition.sql) if condition else None, params, chunksize, order_by)

    def read_sql(self, sql: str, params: dict | None = None, *, unchecked: str | None = None) -> pd.DataFrame:
        """The result of one query that only reads, as is (no dictionary dtypes), after the purpose rule.

        The query is parsed in the warehouse's dialect (sqlglot): every table it reads must be
        declared in the dictionary or be a run table of the runner, and every column it uses anywhere
        (``*`` expanded to the table's columns) must allow this warehouse's purpose; several
        statements, writes, table functions, other schemas and functions the parser does not know are
        refused. The statement as parsed is what runs (written out again, comments dropped).

        A warehouse without a purpose reads the dictionary's tables only with ``unchecked="why"``:
        then nothing is parsed or checked, the read is logged as a warning with the reason and the SQL,
        and the notebook API records it in the step's ``unchecked_reads`` scrap. A warehouse with a
        purpose refuses ``unchecked``: a pipeline's reads are always checked.
        """
        if unchecked is not None:
            self._unchecked(unchecked, sql)
            text = sql
        else:
            query = parse_query(sql, self._dialect)
            for table in query.tables:
                self._declaration(table, "read")
            used = query.columns({table: self._query_columns(table) for table in query.tables})
            for table in query.tables:
                self._check_read(table, used.get(table, []), self._purpose)
            text = query.sql
        with self._connect() as conn:
            return self._frame(partial(pd.read_sql, sa.text(text), conn, params=params), "the query")

    def write_predictions(
        self,
        frames: pd.DataFrame | Iterable[pd.DataFrame],
        *,
        run_id: str,
        model_name: str,
        model_version: str,
        as_of: str,
        namespace: str = PRODUCTION,
        on_replaced: Callable[[dict[str, int]], None] | None = None,
    ) -> int:
        """Write a run's scores (frames of ``entity_id``, ``score``): all of them or none.

        One transaction deletes the run's earlier rows and inserts the chunks as they come, so
        writing a run again replaces it, and a failure midway (the database, a chunk breaking the
        dictionary, or the iterator raising) rolls everything back. Chosen over a staging table
        because the database then guarantees atomicity even when the process is killed (nothing
        to clean up) and the rows are written once. Readers keep seeing the previous state until
        the commit (sqlite runs in WAL mode); the price is that on sqlite other writers wait for
        the run to finish (``RUNNER_WAREHOUSE_BUSY_TIMEOUT`` per attempt). A transient failure re-runs
        the transaction from the start when ``frames`` is a frame or a list; an iterator already drawn
        from cannot be replayed, so then the write fails (nothing written) and says so. Returns rows
        written. Rows of a ``namespace`` other than production (a notebook run by hand) are invisible to
        :meth:`read_predictions`.

        Production holds one set of scores per ``as_of``, model name and version: the same
        transaction deletes the production rows another run wrote for them, so a resume or rerun of
        a scored month replaces the earlier run's scores instead of doubling them. After the commit,
        ``on_replaced`` hears which runs lost how many rows (when any did). Rows of other namespaces
        are never touched, and a run by hand replaces only its own rows.

        ``predictions`` is a view: each write is a row of ``prediction_batches`` (the run's columns, a batch number,
        its row count) and the scores are rows of ``prediction_scores`` (batch, ``entity_id``, ``score``), so the
        run's columns are stored once, not on every score. A warehouse with a ``predictions`` table of an earlier
        runner has it moved into the two the first time it is written or read.
        """
        run = {"run_id": run_id, "model_name": model_name, "model_version": str(model_version), "as_of": as_of,
               "scored_at": _now(), "namespace": namespace}
        one_set = ("as_of", "model_name", "model_version", "namespace") if namespace == PRODUCTION else ()
        return self._replace_run_rows(PREDICTIONS, frames, run, required=("entity_id", "score"), supersede=one_set,
                                      on_replaced=on_replaced)

    def write_monitoring_metrics(self, frame: pd.DataFrame, *, run_id: str, step: str, pipeline: str, as_of: str,
                                 model_name: str, model_version: str, namespace: str = PRODUCTION) -> int:
        """Write a monitoring step's findings (``feature``, ``statistic``, ``value``, ``p_value``,
        ``severity``, ``detail``) to ``monitoring_metrics``, replacing the step's earlier rows."""
        run = {"run_id": run_id, "step": step, "pipeline": pipeline, "as_of": as_of, "model_name": model_name,
               "model_version": str(model_version), "computed_at": _now(), "namespace": namespace}
        frame = frame.assign(**{name: frame[name] if name in frame else None for name in ("p_value", "detail")})
        return self._replace_run_rows(MONITORING_METRICS, frame, run, required=("feature", "statistic", "value",
                                                                                 "severity"), scope=("run_id", "step"))

    def read_monitoring_metrics(self, pipeline: str | None = None, before: str | None = None, *,
                                namespace: str | None = PRODUCTION) -> pd.DataFrame:
        """Monitoring rows of a pipeline (all when None), with ``as_of`` before a date (all when None), of
        ``namespace`` (production by default; all when None)."""
        conditions = _in_namespace(namespace)
        if pipeline is not None:
            conditions.append(sa.column("pipeline", sa.Text) == pipeline)
        if before is not None:
            conditions.append(sa.column("as_of", sa.Date) < pd.Timestamp(before).date())
        return self._read_run_table(MONITORING_METRICS, conditions)

    def _replace_run_rows(self, table: str, frames, run: dict, required: tuple[str, ...],
                          scope: tuple[str, ...] = ("run_id",), supersede: tuple[str, ...] = (),
                          on_replaced: Callable[[dict[str, int]], None] | None = None) -> int:
        """One transaction deletes earlier rows of ``table`` that match ``run`` on ``scope``, and those of
        other runs that match it on ``supersede`` (when given; counted by run for ``on_replaced``, which
        is called after the commit), and inserts ``frames`` with the run's columns."""
        contract = self._contract(table)
        spec = contract.table(table)
        chunks = [frames] if isinstance(frames, pd.DataFrame) else frames
        once = iter(chunks) is chunks  # an iterator (a generator): its frames can be drawn only once
        drawn = False

        def write(conn: sa.Connection) -> tuple[int, dict[str, int]]:
            nonlocal drawn
            sql_table = self._ensure_table(conn, table, spec)
            if table == PREDICTIONS:  # the run's columns once, in a batch of its own; the scores by batch number
                batches, scores = _prediction_tables()
                replaced = _clear_batches(conn, batches, scores, run, scope, supersede)
                batch = conn.execute(batches.insert().values(
                    **{name: _matched(name, run) for name in _BATCH_COLUMNS}, row_count=0)).inserted_primary_key[0]
                target, target_spec = PREDICTION_SCORES, STORAGE.table(PREDICTION_SCORES)
                fixed: dict[str, pd.Series] | None = {"batch": pd.Series([batch], dtype="int64")}
            else:
                replaced = _clear_rows(conn, sql_table, run, scope, supersede)
                target, target_spec, fixed = table, spec, None
            drawn = once
            bulk = _bulk_writer(conn, target, target_spec)

            def prepared() -> Iterator[tuple[pd.DataFrame, list | None, dict]]:
                """Each chunk checked, validated and, for a bulk insert, encoded: what may run a stage ahead."""
                constants: dict[str, pd.Series] | None = None  # the run's columns, validated with the first rows
                for chunk in chunks:
                    missing = set(required) - set(chunk.columns)
                    if missing:
                        raise DataContractError(f"{table} rows need columns {', '.join(required)}; missing "
                                                f"{sorted(missing)}")
                    rows = chunk[[name for name in spec.columns if name in chunk.columns and name not in run]]
                    if not len(rows):
                        continue
                    if constants is None:
                        whole = contract.validate(table, rows.assign(**run)[list(spec.columns)])
                        constants = {name: whole[name].iloc[:1] for name in run}
                        rows = whole[list(rows.columns)]
                    else:
                        rows = _validated(contract, table, rows, run)
                    stored = fixed or constants  # what each stored row carries beside its own columns
                    yield rows, bulk.encode(rows, stored) if bulk is not None else None, stored

            written = 0
            # frames that come one by one (a scoring pipeline's) are prepared in a thread of their own, a chunk or
            # two ahead, while this one inserts; a frame or a list, in this thread
            with read_ahead(prepared(), name="runner-write-prepare") if once else contextlib.nullcontext(
                    prepared()) as ready:
                for rows, encoded, stored in ready:
                    if encoded is None:
                        written += self._insert(conn, target, rows, target_spec, stored)
                        continue
                    with _driver_errors(conn, f"inserting into {target}"):
                        bulk.send(encoded)
                    written += len(rows)
            if table == PREDICTIONS:
                conn.execute(sa.delete(batches).where(batches.c.batch == batch) if not written else
                             sa.update(batches).where(batches.c.batch == batch).values(row_count=written))
            return written, replaced

        written, replaced = self._in_transaction(table, write, replayable=lambda: not drawn)
        if replaced and on_replaced is not None:
            on_replaced(replaced)
        return written

    def read_predictions(self, run_id: str | None = None, as_of: str | None = None, *, model_name: str | None = None,
                         model_version: str | None = None, namespace: str | None = PRODUCTION) -> pd.DataFrame:
        """Predictions matching every given field (all when none is), of ``namespace`` (production by
        default: scores written by hand stay out; all namespaces when None)."""
        conditions = _in_namespace(namespace)
        for name, value in (("run_id", run_id), ("model_name", model_name), ("model_version", model_version)):
            if value is not None:
                conditions.append(sa.column(name, sa.Text) == str(value))
        if as_of is not None:
            conditions.append(sa.column("as_of", sa.Date) == pd.Timestamp(as_of).date())
        return self._read_run_table(PREDICTIONS, conditions)

    def write_requests(self, rows: list[dict[str, Any]] | pd.DataFrame) -> int:
        """Append rows of served requests (:data:`REQUESTS`) in one transaction; returns rows written.

        Not validated against the table's declaration: `runner serve` builds these rows itself, and this runs
        beside its request threads, so it takes as little of the interpreter as it can (one ``executemany``)."""
        spec = BUILTIN.table(REQUESTS)
        if isinstance(rows, pd.DataFrame):
            rows = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")

        def write(conn: sa.Connection) -> int:
            sql_table = self._ensure_table(conn, REQUESTS, spec)
            conn.exec_driver_sql(*_driver_insert(conn, sql_table, rows))
            return len(rows)

        return self._in_transaction(REQUESTS, write) if rows else 0

    def read_requests(self, model_name: str | None = None, since: str | None = None,
                      until: str | None = None) -> pd.DataFrame:
        """Rows of served requests, of a model (all when None), received at or after ``since`` and before
        ``until`` (ISO times or dates; no bound when None)."""
        conditions = []
        if model_name is not None:
            conditions.append(sa.column("model_name", sa.Text) == model_name)
        for bound, compare in ((since, "__ge__"), (until, "__lt__")):
            if bound is not None:
                conditions.append(getattr(sa.column("received_at", sa.DateTime), compare)(
                    pd.Timestamp(bound).tz_localize(None).to_pydatetime()))
        return self._read_run_table(REQUESTS, conditions)

    def _read_run_table(self, table: str, conditions: list) -> pd.DataFrame:
        """Rows of a built-in run table (empty, with its columns, before anything was written)."""
        spec = self._contract(table).table(table)
        if table not in self.tables():
            return pd.DataFrame({name: pd.Series(dtype=column.dtype) for name, column in spec.columns.items()})
        # a table written by an older runner gets the columns read below; usually this only reads, so it
        # starts deferred and takes the write lock only if it must write
        self._in_transaction(table, lambda conn: self._ensure_table(conn, table, spec), write=False)
        order = {PREDICTIONS: ["run_id", "entity_id"], REQUESTS: ["received_at", "request_id", "row"]}.get(
            table, ["as_of", "run_id", "step", "feature", "statistic"])
        return self._read(table, None, sa.and_(*conditions) if conditions else None, None, None, order)

    # -- internals -------------------------------------------------------------------------------

    @property
    def _shown_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    @cached_property
    def _dialect(self) -> str:
        """sqlglot's name for the warehouse's SQL dialect (what reads' SQL is parsed as)."""
        return sql_dialect(self._engine.dialect.name)

    def _purpose_for(self, requested: str | None) -> str | None:
        """The purpose a read is checked for: this warehouse's; a per-call one only when it has none fixed."""
        if requested is None or requested == self._purpose:
            return self._purpose
        if self._fixed and self._purpose is None:
            reason = self._no_purpose or "this warehouse reads for no purpose"
            raise DataContractError(f"cannot read for {requested!r}: {reason}")
        if self._fixed:
            raise DataContractError(f"this warehouse reads for {self._purpose!r}, not for {requested!r}: a pipeline "
                                    "reads for the purpose it declares in runner.yaml")
        return requested

    def _declaration(self, table: str, verb: str) -> DataDictionary:
        """The dictionary declaring ``table`` for the purpose rule: the project's, else the runner's for its
        run tables; any other table is refused (:class:`DataContractError`), since nothing would check it."""
        if table in STORAGE_TABLES:
            raise DataContractError(f"cannot {verb} {table!r}: the runner keeps predictions under that name (read "
                                    f"them as 'predictions'); a table of your own needs another name in the data "
                                    f"dictionary")
        if self.dictionary is not None and table in self.dictionary.tables:
            return self.dictionary
        if table in BUILTIN.tables:
            return BUILTIN
        if self.dictionary is None:
            raise DataContractError(
                f"cannot {verb} {table!r}: this warehouse has no data dictionary, so nothing would check what the "
                f"table holds or who reads it; open it with the project's (Warehouse(url, DataDictionary.load(path))); "
                f"without one only the runner's run tables {sorted(BUILTIN.tables)} are used")
        self.dictionary.table(table)  # raises: not declared
        return self.dictionary

    def _check_read(self, table: str, names: list[str], purpose: str | None) -> None:
        """The purpose rule: every column of ``table`` a read uses is declared and allows ``purpose``.

        Without a purpose only the run tables' columns that allow any purpose are read.
        """
        contract = self._declaration(table, "read")
        names = list(dict.fromkeys(names))
        if contract is BUILTIN:  # the runner's own run tables, every column for any purpose
            BUILTIN.check_declared(table, names)
            return
        if purpose is None:
            contract.check_declared(table, names)
            columns = contract.table(table).columns
            if table in BUILTIN.tables and all(columns[name].allows(ANY_PURPOSE) for name in names):
                return
            reason = self._no_purpose or ("this warehouse has no purpose; open it for one (Warehouse(url, "
                                          "dictionary, purpose=...) or .for_purpose(...)), or pass unchecked='why' to "
                                          "read without the purpose rule (logged)")
            raise DataContractError(f"cannot read {table}: {reason}")
        contract.check_purpose(table, names, purpose)

    def _unchecked(self, reason: str, what: str) -> None:
        """Allow, and log, a read past the purpose rule: only on a warehouse without a purpose, with a reason."""
        if self._purpose is not None:
            raise DataContractError(f"unchecked= refused: this warehouse reads for {self._purpose!r} and every one of "
                                    "its reads is checked; unchecked= is only for a warehouse without a purpose")
        if not isinstance(reason, str) or not reason.strip():
            raise DataContractError("unchecked= needs the reason, in words: it is logged with the read")
        log.warning("unchecked read of the warehouse %s, past the purpose rule (%s): %s", self._shown_url,
                    reason.strip(), what)
        if self._on_unchecked is not None:
            self._on_unchecked(reason.strip(), what)

    def _contract(self, table: str) -> DataDictionary | None:
        """The dictionary whose declaration of ``table`` is written and read: the built-in one for the run
        tables the runner owns (a project's dictionary may declare them too, for their purposes), else the
        warehouse's."""
        if table in BUILTIN.tables:
            return BUILTIN
        return self.dictionary if self.dictionary is not None and table in self.dictionary.tables else None

    def _connect(self) -> sa.Connection:
        try:
            return self._engine.connect()
        except SQLAlchemyError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: SQLAlchemyError) -> RunnerError:
        return RunnerError(f"cannot reach the warehouse at {self._shown_url}: {getattr(exc, 'orig', None) or exc}; "
                           "check RUNNER_WAREHOUSE_URL or stores.warehouse in runner.yaml")

    def _in_transaction(self, table: str, body: Callable[[sa.Connection], T], *, write: bool = True,
                        replayable: Callable[[], bool] = lambda: True) -> T:
        """``body(conn)`` in one transaction, committed; on a transient failure, the whole of it again.

        A ``write`` transaction takes the write lock first (sqlite ``BEGIN IMMEDIATE``; PostgreSQL gets
        ``lock_timeout``), waiting :attr:`busy_timeout` for another writer's; otherwise it starts deferred.
        A transient failure (:func:`_transient`) rolls back, waits an exponential backoff with jitter and
        runs ``body`` again, at most :attr:`write_attempts` times in all, unless ``replayable()`` says
        ``body`` cannot run again (it drew from an iterator) or the connection was lost during the commit
        (whether it committed is unknown). Any other failure of the database rolls back and is raised at
        once; exceptions that are not the database's pass through, after the rollback.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            conn, committing = None, False
            try:
                with self._engine.connect() as conn:
                    if write:
                        conn.execution_options(runner_write=True)
                    transaction = conn.begin()
                    if write and conn.dialect.name == "postgresql":  # wait for row locks as long as sqlite would
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, round(self.busy_timeout * 1000))}")
                    result = body(conn)
                    committing = True
                    transaction.commit()
                return result
            except (SQLAlchemyError, DatabaseError) as exc:
                kind = _transient(exc)
                if kind is None:
                    if conn is None and isinstance(exc, SQLAlchemyError):
                        raise self._unreachable(exc) from exc
                    raise self._failed("writing", exc, "nothing was written; check the table's columns "
                                       "against the frame's") from exc
                unknown = committing and kind == "connection"
                again = not unknown and replayable() and attempt < self.write_attempts
                delay = random.uniform(0.5, 1.0) * min(BACKOFF[1], BACKOFF[0] * 2 ** (attempt - 1)) if again else 0
                if not again:
                    raise self._contended(table, kind, exc, attempt, time.monotonic() - started,
                                          "unknown" if unknown else "" if replayable() else "drawn") from exc
                log.warning("writing %s to the warehouse %s: %s (attempt %d of %d); trying again in %.1f s", table,
                            self._shown_url, _detail(exc), attempt, self.write_attempts, delay)
                time.sleep(delay)

    def _contended(self, table: str, kind: str, exc: Exception, attempts: int, waited: float, why: str) -> RunnerError:
        """The failure of a write that met another writer (or lost its connection) for the last time, in one line."""
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        where = f"the warehouse {self._shown_url}"
        if kind == "lock":
            said = (f"{where} is locked by another writer: writing table {table!r} waited {_seconds(waited)} over "
                    f"{tries} ({_detail(exc)})")
            advice = (f"try again when the other write finishes (another run, or a notebook run by hand), or raise "
                      f"{ENV_WAREHOUSE_BUSY_TIMEOUT.name} (now {_seconds(self.busy_timeout)} per attempt)")
        elif kind == "conflict":
            said = (f"writing table {table!r} to {where} conflicted with another writer's transaction in {tries} "
                    f"({_detail(exc)})")
            advice = (f"try again when the other write finishes, or raise {ENV_WAREHOUSE_WRITE_ATTEMPTS.name} "
                      f"(now {self.write_attempts})")
        else:
            said = f"writing table {table!r} lost its connection to {where} in {tries} ({_detail(exc)})"
            advice = "check that the database is up and reachable (RUNNER_WAREHOUSE_URL or stores.warehouse), then try again"
        if why == "unknown":
            return RunnerError(f"{said}, during the commit: whether the rows were written is unknown; look at the "
                               f"table before writing again")
        if why == "drawn":
            advice = ("the frames came from an iterator already partly drawn, so the write could not be run again: "
                      f"run the step again; {advice}")
        return RunnerError(f"{said}; nothing was written; {advice}")

    def _failed(self, what: str, exc: Exception, hint: str) -> RunnerError:
        cause = exc.__cause__ if isinstance(exc, DatabaseError) and exc.__cause__ else exc
        detail = getattr(cause, "orig", None) or cause
        return RunnerError(f"{what} failed in the warehouse {self._shown_url}: {detail}; {hint}")

    def _frame(self, read, what: str):
        try:
            return read()
        except (SQLAlchemyError, DatabaseError) as exc:
            raise self._failed(what, exc, "check the column names and the where clause or query") from exc

    def _read(self, table, columns, condition, params, chunksize, order_by=None):
        """Read, past every check (the callers check first)."""
        available = self._columns(table)
        names = available if columns is None else list(columns)
        contract = self._contract(table)
        declared_key = list(contract.table(table).key) if contract else []
        order = list(order_by) if order_by is not None else declared_key or names
        unknown = [name for name in dict.fromkeys(names + order) if name not in available]
        if unknown:
            raise DataContractError(f"{table} has no column(s) {unknown}; its columns: {available}")
        query = sa.select(*(sa.column(name) for name in names)).select_from(sa.table(table))
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(*(sa.column(name) for name in order))
        conform = (lambda frame: contract.conform(table, frame)) if contract else (lambda frame: frame)
        if chunksize:
            bulk = self._arrow_chunks(table, names, condition, params, chunksize, order, contract)
            return bulk if bulk is not None else self._chunks(query, params, chunksize, conform, table)
        with self._connect() as conn:
            return conform(self._frame(partial(pd.read_sql, query, conn, params=params), f"reading {table}"))

    def _chunks(self, query, params, chunksize, conform, table) -> Iterator[pd.DataFrame]:
        with self._connect() as conn:
            if conn.dialect.supports_server_side_cursors:
                conn = conn.execution_options(stream_results=True)
            for chunk in self._frame(partial(pd.read_sql, query, conn, params=params, chunksize=chunksize),
                                     f"reading {table}"):
                yield conform(chunk)

    def _arrow_chunks(self, table, names, condition, params, chunksize, order,
                      contract: DataDictionary | None) -> Iterator[pd.DataFrame] | None:
        """The chunks of a read moved as Arrow batches (ADBC), as frames with the dictionary's dtypes; None when the
        read has no Arrow path (another database or driver, an in-memory or URI sqlite database, a column the
        dictionary does not declare, a parameter that is not text or a number, no ADBC driver installed): then
        pandas reads Python rows through SQLAlchemy. The same frames either way.

        sqlite is read by a process of its own (:data:`SQLITE_READER`): the ADBC driver carries its own copy of
        SQLite, and two copies in one process break each other's file locks on the same database (SQLite's "how
        to corrupt" page, 2.2.1: closing one copy's connection drops the other's locks and deletes the WAL). The
        batches come back as an Arrow stream on a pipe, which also bounds how far the reader runs ahead."""
        target = _adbc_target(self._engine.url)
        declared = contract.table(table).columns if contract is not None else {}
        if target is None or not all(name in declared for name in names) or not all(
                value is None or type(value) in (str, int, float) for value in (params or {}).values()):
            return None
        backend, where = target
        if importlib.util.find_spec(f"adbc_driver_{backend}") is None:
            log.debug("no adbc-driver-%s: chunked reads of %s go through SQLAlchemy", backend, self._shown_url)
            return None
        try:
            if backend == "sqlite":
                sql, bound, flagged = _sqlite_arrow_query(table, names, [declared[name] for name in names],
                                                          condition, order, params, self._engine.dialect)
                batches = self._sqlite_batches(where, sql, bound, chunksize, table)
            else:
                sql, flagged = self._postgres_literal_query(table, names, condition, order, params), []
                batches = self._postgres_batches(where, sql, table)
        except SQLAlchemyError as exc:
            raise self._failed(f"reading {table}", exc, "check the column names and the where clause") from exc
        return _frames(batches, flagged, names, chunksize, lambda frame: contract.conform(table, frame))

    def _sqlite_batches(self, path: str, sql: str, bound: tuple, chunksize: int, table: str):
        """Arrow batches of ``sql`` read by :data:`SQLITE_READER` in a child process; its failure is this read's."""
        import pyarrow as pa
        import pyarrow.ipc

        job = json.dumps({"path": path, "sql": sql, "params": list(bound), "rows": chunksize,
                          "busy_ms": max(1, round(self.busy_timeout * 1000))})
        said = tempfile.TemporaryFile()  # not a pipe: a child writing more than a pipe holds would wait for us
        child = subprocess.Popen([sys.executable, "-c", SQLITE_READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=said)
        try:
            try:
                child.stdin.write(job.encode() + b"\n")
                child.stdin.close()
                yield from pyarrow.ipc.open_stream(child.stdout)
                broken = None
            except (pa.ArrowInvalid, OSError) as exc:  # the stream stopped short: the child's exit says why
                broken = exc
            child.stdout.close()
            if child.wait() != 0 or broken is not None:
                said.seek(0)
                last = said.read().decode(errors="replace").strip().splitlines()[-1:]
                raise RunnerError(f"reading {table} failed in the warehouse {self._shown_url}: "
                                  f"{last[0] if last else broken or f'the reader exited {child.returncode}'}; "
                                  "check the column names and the where clause")
        finally:
            if child.poll() is None:  # the consumer stopped early (or failed): the reader goes with it
                child.kill()
                child.wait()
            for pipe in (child.stdin, child.stdout, said):
                pipe.close()

    def _postgres_batches(self, uri: str, sql: str, table: str):
        """Arrow batches of ``sql`` from PostgreSQL's ADBC driver (binary COPY), in this process."""
        import adbc_driver_manager as adbc
        import adbc_driver_postgresql
        import pyarrow as pa

        handles = []
        try:
            handles.append(adbc_driver_postgresql.connect(uri))
            handles.append(adbc.AdbcConnection(handles[-1]))
            handles.append(statement := adbc.AdbcStatement(handles[-1]))
            statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(ARROW_BATCH_BYTES)})
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            with pa.RecordBatchReader.from_stream(stream) as reader:
                yield from reader
        except adbc.Error as exc:
            raise self._failed(f"reading {table}", exc, "check the column names and the where clause") from exc
        finally:
            for handle in reversed(handles):
                handle.close()

    def _postgres_literal_query(self, table, names, condition, order, params) -> str:
        """The read as one SQL text, its parameters written in by psycopg as it would send them (so that
        ``applied_on >= :start`` with a string compares as before: ADBC would bind the string as text)."""
        import psycopg

        query = sa.select(*(sa.column(name) for name in names)).select_from(sa.table(table))
        if condition is not None:
            query = query.where(condition)
        compiled = query.order_by(*(sa.column(name) for name in order)).compile(dialect=self._engine.dialect)
        with self._connect() as conn:
            values = compiled.construct_params(params or {})
            return psycopg.ClientCursor(conn.connection.driver_connection).mogrify(compiled.string, values)

    def _query_columns(self, table: str) -> list[str]:
        """The columns a query's ``*`` stands for: the table's in the warehouse, every one of them checked
        (a column the dictionary does not declare is refused); the declared ones of a table not yet written."""
        with self._connect() as conn:
            inspector = sa.inspect(conn)
            if inspector.has_table(table):
                return [column["name"] for column in inspector.get_columns(table)]
        return list(self._declaration(table, "read").table(table).columns)

    def _columns(self, table: str) -> list[str]:
        with self._connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(table):
                raise RunnerError(f"no table {table!r} in the warehouse {self._shown_url}; tables: "
                                  f"{sorted(inspector.get_table_names())}; write it first (e.g. run the ingest)")
            return [column["name"] for column in inspector.get_columns(table)]

    def _ensure_table(self, conn: sa.Connection, table: str, spec: TableSpec) -> sa.Table:
        """The table as declared (types, NOT NULL, unique key), created with its indexes if missing; for
        ``predictions``, its tables and view (:func:`_ensure_predictions`)."""
        if table == PREDICTIONS:
            _ensure_predictions(conn)
            return sa.table(PREDICTIONS, *(sa.column(name, SQL_TYPES[column.type])
                                           for name, column in spec.columns.items()))
        sql_table = sa.Table(table, sa.MetaData(), *(
            sa.Column(name, SQL_TYPES[column.type], nullable=column.nullable) for name, column in spec.columns.items()
        ))
        if spec.key:
            sa.Index(f"ux_{table}_key", *(sql_table.c[name] for name in spec.key), unique=True)
        indexes = RUN_TABLE_INDEXES if table in (PREDICTIONS, MONITORING_METRICS) else \
            (("received_at",), ("model_name",)) if table == REQUESTS else ()
        for names in indexes:
            sa.Index(f"ix_{table}_{'_'.join(names)}", *(sql_table.c[name] for name in names))
        sql_table.create(conn, checkfirst=True)
        if table == MONITORING_METRICS:
            _add_namespace(conn, sql_table.name)
        for index in sql_table.indexes:
            index.create(conn, checkfirst=True)
        return sql_table

    def _delete_keys(self, conn: sa.Connection, sql_table: sa.Table, keys: pd.DataFrame) -> None:
        keys = keys.drop_duplicates()
        key_columns = [sql_table.c[name] for name in keys.columns]
        step = max(1, self._max_parameters() // len(key_columns))
        for start in range(0, len(keys), step):
            part = keys.iloc[start:start + step]
            if len(key_columns) == 1:
                condition = key_columns[0].in_(part.iloc[:, 0].tolist())
            else:
                condition = sa.tuple_(*key_columns).in_(list(part.itertuples(index=False, name=None)))
            conn.execute(sa.delete(sql_table).where(condition))

    def _insert(self, conn: sa.Connection, table: str, frame: pd.DataFrame, spec: TableSpec | None,
                constants: dict[str, pd.Series] | None = None, bulk: _Bulk | None = None) -> int:
        """Insert ``frame``'s rows, each with ``constants`` (one-value series with the dictionary's dtype: a run's
        columns), in the transaction of ``conn``; returns rows inserted.

        A table the dictionary declares goes in bulk, from Arrow columns, on the transaction's own connection:
        sqlite by INSERT statements of up to :data:`CHUNK_ROWS` rows each, their values bound at once (values stored
        as SQLAlchemy stores them: dates and times as its text); PostgreSQL (psycopg) by ``COPY ... FROM STDIN
        (FORMAT BINARY)``, when the table's columns have the types the runner creates. Anything else goes
        through pandas' ``to_sql`` (not ``method="multi"``: SQLAlchemy compiles every multi-row VALUES
        statement anew, which made inserts 8-13x slower). ``bulk``: the writer :func:`_bulk_writer` made for ``conn``
        and ``table`` (a transaction inserting many chunks makes it once).
        """
        constants = constants or {}
        names = list(spec.columns) if spec else list(frame.columns)
        bulk = bulk or (_bulk_writer(conn, table, spec) if spec else None)
        if bulk is not None:
            with _driver_errors(conn, f"inserting into {table}"):
                bulk.send(bulk.encode(frame, constants))
            return len(frame)
        if constants:
            frame = frame.assign(**{name: value.iloc[0] for name, value in constants.items()})[names]
        types = {name: SQL_TYPES[spec.columns[name].type] for name in frame.columns} if spec else None
        frame.to_sql(table, conn, if_exists="append", index=False, chunksize=CHUNK_ROWS, dtype=types)
        return len(frame)

    def _max_parameters(self) -> int:
        """Bound parameters one statement may carry (sqlite: :func:`_sqlite_max_parameters`), for key deletes."""
        return _sqlite_max_parameters() if self._engine.dialect.name == "sqlite" else 30000


@contextlib.contextmanager
def read_ahead(items: Iterable[T], depth: int = 2, *, name: str = "runner-read-ahead") -> Iterator[Iterator[T]]:
    """``items`` drawn by a thread of their own, at most ``depth`` ahead of the consumer: a bounded stage of a
    pipeline (scoring reads the next chunks while it predicts, and predicts while it writes).

    An exception raised while drawing is raised to the consumer, where it would have been raised without the
    thread. Leaving the block stops the thread before the next item, closes ``items`` (a generator's ``finally``
    runs) and waits for it; so a consumer that fails (a write rolled back) leaves nothing running.
    """
    handoff: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # noqa: BLE001 (raised again in the consumer)
            put((_END, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        while True:
            item, error = handoff.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()


_END = object()  # what read_ahead's thread hands over after the last item


def _validated(contract: DataDictionary, table: str, rows: pd.DataFrame, run: dict) -> pd.DataFrame:
    """``rows`` (a run's own columns) validated against the dictionary's declaration of those columns only, once
    the run's columns were validated with its first rows; when they break it (a number with a fraction in an int
    column too, which pandera's schema would cut), the whole rows are validated again for the dictionary's usual
    error, naming every failure."""
    try:
        validated = contract.schema(table, list(rows.columns)).validate(rows, lazy=True)
    except Exception as exc:  # pandera's SchemaErrors: the dictionary's own validation says it in its words
        contract.validate(table, rows.assign(**run)[list(contract.table(table).columns)])
        raise RunnerError(f"{table} rows break the data dictionary: {str(exc).strip().splitlines()[0]}") from exc
    if not contract.fractions(table, rows).empty:
        contract.validate(table, rows.assign(**run)[list(contract.table(table).columns)])  # raises, naming them
    return validated


def _in_namespace(namespace: str | None) -> list:
    return [] if namespace is None else [sa.column("namespace", sa.Text) == namespace]


def _driver_insert(conn: sa.Connection, sql_table: sa.Table, rows: list[dict[str, Any]]) -> tuple[str, list]:
    """(the INSERT in the driver's own words, its parameters): one ``executemany`` with SQLAlchemy's conversions
    of the values (its bind processors: e.g. sqlite's text for a datetime) and none of its per-row bookkeeping."""
    compiled = sql_table.insert().compile(dialect=conn.dialect)
    names = list(compiled.positiontup) if compiled.positional else [column.name for column in sql_table.columns]
    convert = {name: sql_table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
               for name in names}
    values = [[convert[name](row.get(name)) if convert[name] else row.get(name) for name in names] for row in rows]
    if compiled.positional:
        return compiled.string, [tuple(value) for value in values]
    return compiled.string, [dict(zip(names, value)) for value in values]


def _add_namespace(conn: sa.Connection, table: str) -> None:
    """Give a run table written before namespaces existed its ``namespace`` column; its rows are production's."""
    if "namespace" in {column["name"] for column in sa.inspect(conn).get_columns(table)}:
        return
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(sa.text(f"ALTER TABLE {quote(table)} ADD COLUMN namespace TEXT NOT NULL DEFAULT '{PRODUCTION}'"))


def _matched(name: str, run: dict):
    """A run's value of column ``name`` as a run table compares it (a date as a date)."""
    return pd.Timestamp(run[name]).date() if name == "as_of" else run[name]


def _clear_rows(conn: sa.Connection, sql_table: sa.Table, run: dict, scope: tuple[str, ...],
                supersede: tuple[str, ...]) -> dict[str, int]:
    """Deletes the rows of ``sql_table`` that match ``run`` on ``scope``, and those of other runs that match it on
    ``supersede`` (when given); returns how many rows each other run lost."""
    conn.execute(sa.delete(sql_table).where(*(sql_table.c[name] == _matched(name, run) for name in scope)))
    if not supersede:
        return {}
    others = sa.and_(*(sql_table.c[name] == _matched(name, run) for name in supersede),
                     sql_table.c.run_id != run["run_id"])
    counts = conn.execute(sa.select(sql_table.c.run_id, sa.func.count()).where(others)
                          .group_by(sql_table.c.run_id).order_by(sql_table.c.run_id))
    replaced = {str(run_id): int(rows) for run_id, rows in counts}
    if replaced:
        conn.execute(sa.delete(sql_table).where(others))
    return replaced


def _clear_batches(conn: sa.Connection, batches: sa.Table, scores: sa.Table, run: dict, scope: tuple[str, ...],
                   supersede: tuple[str, ...]) -> dict[str, int]:
    """:func:`_clear_rows` for predictions: the batches that match, and their scores."""
    gone = sa.and_(*(batches.c[name] == _matched(name, run) for name in scope))
    replaced: dict[str, int] = {}
    if supersede:
        others = sa.and_(*(batches.c[name] == _matched(name, run) for name in supersede),
                         batches.c.run_id != run["run_id"])
        counts = conn.execute(sa.select(batches.c.run_id, sa.func.sum(batches.c.row_count)).where(others)
                              .group_by(batches.c.run_id).order_by(batches.c.run_id))
        replaced = {str(run_id): int(rows) for run_id, rows in counts if rows}
        gone = sa.or_(gone, others)
    numbers = [number for number, in conn.execute(sa.select(batches.c.batch).where(gone))]
    for start in range(0, len(numbers), 1000):
        conn.execute(sa.delete(scores).where(scores.c.batch.in_(numbers[start:start + 1000])))
    if numbers:
        conn.execute(sa.delete(batches).where(gone))
    return replaced


def _prediction_tables() -> tuple[sa.Table, sa.Table]:
    """(``prediction_batches``, ``prediction_scores``): the tables behind the ``predictions`` view."""
    metadata = sa.MetaData()
    batches = sa.Table(
        PREDICTION_BATCHES, metadata,
        # sqlite: INTEGER PRIMARY KEY is the rowid, numbered by the database; PostgreSQL: BIGSERIAL
        sa.Column("batch", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        *(sa.Column(name, SQL_TYPES[_PREDICTION_COLUMNS[name][0]], nullable=False) for name in _BATCH_COLUMNS),
        sa.Column("row_count", sa.BigInteger, nullable=False),
    )
    for names in RUN_TABLE_INDEXES:
        sa.Index(f"ix_{PREDICTION_BATCHES}_{'_'.join(names)}", *(batches.c[name] for name in names))
    scores = sa.Table(PREDICTION_SCORES, metadata, *(
        sa.Column(name, SQL_TYPES[column.type], nullable=False)
        for name, column in STORAGE.table(PREDICTION_SCORES).columns.items()))
    sa.Index(f"ix_{PREDICTION_SCORES}_batch", scores.c.batch)
    return batches, scores


def _ensure_predictions(conn: sa.Connection) -> None:
    """Creates ``predictions``' tables and view where missing. A ``predictions`` table of a runner before batches
    (one row per score, every column on it) is moved into them, in the caller's transaction, then dropped."""
    inspector = sa.inspect(conn)
    tables, views = set(inspector.get_table_names()), set(inspector.get_view_names())
    if PREDICTIONS in views and {PREDICTION_BATCHES, PREDICTION_SCORES} <= tables:
        return
    if PREDICTIONS not in views and tables & set(STORAGE_TABLES):  # the view comes with them: these are not ours
        raise RunnerError(_not_ours(sorted(tables & set(STORAGE_TABLES))))
    batches, scores = _prediction_tables()
    batches.metadata.create_all(conn, checkfirst=True)
    quote = conn.dialect.identifier_preparer.quote
    if PREDICTIONS in tables:
        _add_namespace(conn, PREDICTIONS)
        listed = ", ".join(quote(name) for name in _BATCH_COLUMNS)
        conn.execute(sa.text(
            f"INSERT INTO {PREDICTION_BATCHES} ({listed}, row_count) SELECT {listed}, COUNT(*) FROM {PREDICTIONS} "
            f"GROUP BY {listed} ORDER BY MIN(scored_at), {listed}"))
        joined = " AND ".join(f"b.{quote(name)} = p.{quote(name)}" for name in _BATCH_COLUMNS)
        conn.execute(sa.text(
            f"INSERT INTO {PREDICTION_SCORES} (batch, entity_id, score) SELECT b.batch, p.entity_id, p.score "
            f"FROM {PREDICTIONS} p JOIN {PREDICTION_BATCHES} b ON {joined}"))
        conn.execute(sa.text(f"DROP TABLE {PREDICTIONS}"))
        log.info("moved the predictions table into %s and %s (the view predictions shows them as before)",
                 PREDICTION_BATCHES, PREDICTION_SCORES)
    if PREDICTIONS not in views:
        conn.execute(sa.text(f"CREATE VIEW {PREDICTIONS} AS {_PREDICTIONS_VIEW}"))


def _not_ours(tables: list[str]) -> str:
    """Why predictions cannot be stored: tables under the runner's storage names that it did not make."""
    names = " and ".join(repr(table) for table in tables)
    return (f"the warehouse has a table {names} that the runner did not make, and the runner keeps predictions under "
            f"{'that name' if len(tables) == 1 else 'those names'}; rename yours (in the warehouse and the data "
            f"dictionary), then run again")


def _now() -> pd.Timestamp:
    """Now in UTC, naive, to the second (how the run tables store times)."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")


def _busy_timeout(given: float | None) -> float:
    """Seconds one attempt of a write waits for another writer's lock: ``given``, else the environment's."""
    if given is None:
        return _setting(ENV_WAREHOUSE_BUSY_TIMEOUT, parse_duration)
    if not isinstance(given, (int, float)) or isinstance(given, bool) or not 0 <= given < float("inf"):
        raise RunnerError(f"busy_timeout must be seconds, 0 or more, got {given!r}")
    return float(given)


def _write_attempts(given: int | None) -> int:
    """Attempts a write has against transient failures (1: no retry): ``given``, else the environment's."""
    if given is None:
        return _setting(ENV_WAREHOUSE_WRITE_ATTEMPTS, _attempts)
    return _attempts(given)


def _attempts(value) -> int:
    try:
        attempts = int(str(value).strip()) if not isinstance(value, (bool, float)) else None
    except ValueError:
        attempts = None
    if attempts is None or not 1 <= attempts <= 100:
        raise ValueError(f"expected a whole number of attempts from 1 (no retry) to 100, got {value!r}")
    return attempts


def _setting(variable: EnvVar, parse: Callable):
    """The variable's value (its default when unset), read by ``parse``; a bad value names the variable."""
    value = variable.get() or variable.default
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"{exc}; unset it for the default, {variable.default}", variable.name) from None


def _transient(exc: BaseException) -> str | None:
    """What kind of transient failure ``exc`` is, or None (running it again would fail the same way).

    ``lock``: another writer holds the lock still (sqlite busy or locked; PostgreSQL lock_not_available after
    ``lock_timeout``); ``conflict``: the database broke a deadlock or a serialization failure by failing this
    transaction; ``connection``: the connection was lost (SQLAlchemy invalidated it, or SQLSTATE class 08 or
    the server shutting down). Constraint violations, missing tables or columns and the like are None.
    """
    if isinstance(exc, DatabaseError) and exc.__cause__ is not None:  # pandas wraps the database's error
        exc = exc.__cause__
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        state = str(state)
        return SQLSTATES.get(state) or ("connection" if state.startswith("08") else None)
    if exc.connection_invalidated:
        return "connection"
    code = getattr(orig, "sqlite_errorcode", None)  # sqlite: SQLITE_BUSY 5, SQLITE_LOCKED 6, with extended codes
    if isinstance(code, int):
        return "lock" if code & 0xFF in (5, 6) else None
    return "lock" if isinstance(exc, sa.exc.OperationalError) and str(orig).lower().startswith(SQLITE_LOCKS) else None


def _detail(exc: BaseException) -> str:
    """The database's own words for ``exc``, on one line (PostgreSQL adds DETAIL and HINT lines)."""
    if isinstance(exc, DatabaseError) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _create_engine(url: str, busy_timeout: float) -> sa.Engine:
    shown = url
    try:
        parsed = sa.make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() != "sqlite":
            return sa.create_engine(parsed)
        engine = sa.create_engine(parsed, connect_args={"timeout": busy_timeout})
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise RunnerError(f"cannot use the warehouse URL {shown!r}: {exc}; check RUNNER_WAREHOUSE_URL "
                          "or stores.warehouse in runner.yaml (and that the database's driver is installed)") from exc
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(conn: sa.Connection) -> None:
    """A write starts ``BEGIN IMMEDIATE``: it takes the write lock before anything else, waiting for another
    writer's up to the busy timeout. A deferred ``BEGIN`` that reads first and writes later cannot wait: its
    upgrade to a writer fails at once with "database is locked" when another writer came in between."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("runner_write") else "BEGIN")


def _sqlite_on_connect(dbapi_connection, connection_record) -> None:
    """Let SQLAlchemy emit BEGIN (so DDL is transactional too) and use WAL (readers never block the writer)."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


# -- bulk data as Arrow: chunked reads through ADBC, inserts from Arrow columns on the transaction's connection --

SQLITE_READER = """\
import json, sys
import adbc_driver_manager as adbc, adbc_driver_sqlite
import pyarrow as pa, pyarrow.ipc as ipc
job = json.loads(sys.stdin.readline())
connection = adbc.AdbcConnection(adbc_driver_sqlite.connect(job["path"]))
setting = adbc.AdbcStatement(connection)
setting.set_sql_query("PRAGMA busy_timeout = %d" % job["busy_ms"])
setting.execute_update()
setting.close()
statement = adbc.AdbcStatement(connection)
statement.set_options(**{"adbc.sqlite.query.batch_rows": str(job["rows"])})
statement.set_sql_query(job["sql"])
if job["params"]:
    statement.bind(pa.record_batch([pa.array([value]) for value in job["params"]],
                                   names=[str(i) for i in range(len(job["params"]))]))
reader = pa.RecordBatchReader.from_stream(statement.execute_query()[0])
with ipc.new_stream(sys.stdout.buffer, reader.schema) as stream:
    for batch in reader:
        stream.write_batch(batch)
"""  # the child process that reads a sqlite warehouse through ADBC: a job (JSON) on stdin, an Arrow stream on stdout
ARROW_BATCH_BYTES = 8 << 20  # PostgreSQL's ADBC batches (its reads are cut by bytes; rows are re-cut to chunksize)
_SQLITE_ZERO = {"float": "0.0", "string": "''", "category": "''", "date": "''", "datetime": "''"}
_COPY_TYPES = {"int": "int8", "float": "float8", "string": "text", "category": "text", "bool": "bool", "date": "date",
               "datetime": "timestamp"}  # PostgreSQL's names of the types SQL_TYPES creates


def _adbc_target(url: sa.URL) -> tuple[str, str] | None:
    """(backend, what its ADBC driver connects to) for a warehouse with an Arrow path, else None: a sqlite file
    named by its path, or PostgreSQL through psycopg (the same URL, for libpq)."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if not database or database == ":memory:" or database.startswith("file:") or url.query:
            return None
        return "sqlite", str(Path(database).expanduser())
    if backend == "postgresql" and url.get_driver_name() == "psycopg":
        return "postgresql", url.set(drivername="postgresql").render_as_string(hide_password=False)
    return None


def _sqlite_arrow_query(table, names, specs, condition, order, params, dialect) -> tuple[str, tuple, list]:
    """(SQL, its positional parameters, [(value column, null flag column)]) of a read for sqlite's ADBC driver.

    The driver gives each column the type of the values in its first batch, and NULL has none: a nullable column
    whose first batch is all NULL would become int64 and fail on its first text or real. So such a column is read
    as ``coalesce(column, <zero of its type>)`` with a flag ``column IS NULL`` beside it, and its nulls put back
    from the flag (:func:`_with_nulls`). A float column holding integers (a table the runner did not create) is
    read as real, as SQLAlchemy's float would have it."""
    items, flagged = [], []
    for name, spec in zip(names, specs):
        column = value = sa.column(name)
        if spec.type == "float":
            value = sa.case((sa.func.typeof(column) == "integer", sa.cast(column, sa.REAL)), else_=column)
        if spec.nullable and spec.type in _SQLITE_ZERO:
            flagged.append((len(items), len(items) + 1))
            zero = sa.literal_column(_SQLITE_ZERO[spec.type])
            items.append(sa.func.coalesce(value, zero).label(f"_runner_{len(items)}"))
            items.append(column.is_(None).label(f"_runner_{len(items)}"))
        else:
            items.append(value.label(f"_runner_{len(items)}"))
    query = sa.select(*items).select_from(sa.table(table))
    if condition is not None:
        query = query.where(condition)
    compiled = query.order_by(*(sa.column(name) for name in order)).compile(dialect=dialect)
    values = compiled.construct_params(params or {})
    return compiled.string, tuple(values[name] for name in compiled.positiontup or ()), flagged


def _frames(batches, flagged: list[tuple[int, int]], names: list[str], chunksize: int,
            conform: Callable[[pd.DataFrame], pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Frames of ``chunksize`` rows (the last one fewer; one empty frame when nothing matched, as pandas gives)
    from Arrow batches, nulls put back, named ``names``, with the dictionary's dtypes (``conform``)."""
    empty = True
    for table in _rechunked(_with_nulls(batches, flagged), chunksize):
        empty = False
        yield conform(_to_frame(table, names))
    if empty:
        yield conform(pd.DataFrame({name: pd.Series(dtype=object) for name in names}))


def _with_nulls(batches, flagged: list[tuple[int, int]]):
    """The batches with each flagged column's nulls put back and the flag columns dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    flags = {flag for _, flag in flagged}
    for batch in batches:
        if flagged:
            columns = list(batch.columns)
            for value, flag in flagged:
                columns[value] = pc.if_else(pc.cast(columns[flag], pa.bool_()),
                                            pa.scalar(None, columns[value].type), columns[value])
            batch = pa.RecordBatch.from_arrays([column for i, column in enumerate(columns) if i not in flags],
                                               names=[n for i, n in enumerate(batch.schema.names) if i not in flags])
        yield batch


def _rechunked(batches, rows: int):
    """Arrow tables of exactly ``rows`` rows (the last one fewer) from batches of any size."""
    import pyarrow as pa

    pending, count = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _to_frame(data, names: list[str]) -> pd.DataFrame:
    """Arrow data as a frame named ``names``: integers as pandas' nullable Int64 (never through float, which would
    round ids beyond 2**53), dates as datetime64; the dictionary's dtypes follow (``conform``)."""
    import pyarrow as pa

    frame = data.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get, date_as_object=False)
    frame.columns = names
    return frame


@dataclass(frozen=True)
class _Bulk:
    """Inserting in bulk into one table on one transaction's connection (see :meth:`Warehouse._insert`), in two
    halves: ``encode(frame, constants)`` makes the rows as the driver takes them, touching no connection (so it may
    run a stage ahead, in a thread of its own), and ``send(encoded)`` inserts them on the connection."""

    encode: Callable[[pd.DataFrame, dict[str, pd.Series]], list]
    send: Callable[[list], None]


def _bulk_writer(conn: sa.Connection, table: str, spec: TableSpec) -> _Bulk | None:
    """The :class:`_Bulk` insert into ``table`` on ``conn``, or None (another database or driver; on PostgreSQL a
    table whose column types are not the ones the runner creates, or a client encoding other than UTF-8)."""
    dialect = conn.dialect
    names = list(spec.columns)
    kinds = [spec.columns[name].type for name in names]
    quote = dialect.identifier_preparer.quote
    listed = ", ".join(quote(name) for name in names)
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        # Many rows a statement (INSERT ... VALUES (?, ?), (?, ?), ...), as many as its parameters allow: the driver's
        # executemany steps each row on its own, giving up the GIL and taking it back every time, and beside a
        # thread that wants it (scoring's prediction) each row then waits for that thread's turn (a convoy; see
        # docs/design/benchmarks.md). One statement of many rows takes it back once, and binds in one call.
        width = len(names)
        per_statement = max(1, min(CHUNK_ROWS, _sqlite_max_parameters() // width))
        row = f"({', '.join('?' * width)})"

        def encode_sqlite(frame: pd.DataFrame, constants: dict[str, pd.Series]) -> list:
            fixed = {name: _sqlite_values(value, spec.columns[name].type)[0] for name, value in constants.items()}
            return [tuple(chain.from_iterable(zip(*(repeat(fixed[name]) if name in fixed else
                                                    _sqlite_values(part[name], kind)
                                                    for name, kind in zip(names, kinds)))))
                    for part in _parts(frame, per_statement)]

        def send_sqlite(encoded: list) -> None:
            for values in encoded:  # through SQLAlchemy (its events, its errors), which hands the values on as they are
                rows = len(values) // width
                conn.exec_driver_sql(f"INSERT INTO {quote(table)} ({listed}) VALUES {', '.join([row] * rows)}", values)

        return _Bulk(encode_sqlite, send_sqlite)
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        found = dict(conn.execute(sa.text(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"),
            {"table": quote(table)}).all())
        if [found.get(name) for name in names] != [_COPY_TYPES[kind] for kind in kinds]:
            return None  # a table made otherwise: its types decide, through SQLAlchemy
        raw = conn.connection.driver_connection
        if raw.info.encoding != "utf-8":  # binary text goes in the client's encoding: Arrow's is UTF-8
            return None
        sql = f"COPY {quote(table)} ({listed}) FROM STDIN (FORMAT BINARY)"

        def encode_postgres(frame: pd.DataFrame, constants: dict[str, pd.Series]) -> list:
            fixed = {name: _copy_column(_arrow(value), spec.columns[name].type) for name, value in constants.items()}
            return [_copy_rows([_repeated(fixed[name], len(part)) if name in fixed else
                                _copy_column(_arrow(part[name]), kind) for name, kind in zip(names, kinds)])
                    for part in _parts(frame)]

        def send_postgres(encoded: list) -> None:
            with raw.cursor() as cursor, cursor.copy(sql) as copy:
                copy.write(_COPY_SIGNATURE)
                for rows in encoded:
                    copy.write(rows)
                copy.write(_COPY_TRAILER)

        return _Bulk(encode_postgres, send_postgres)
    return None


def _parts(frame: pd.DataFrame, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """``frame`` in parts of at most ``rows`` rows."""
    for start in range(0, len(frame), rows):
        yield frame.iloc[start:start + rows]


def _sqlite_max_parameters() -> int:
    """Bound parameters one sqlite statement may carry (32766 since SQLite 3.32, 999 before)."""
    import sqlite3

    return 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def _arrow(values: pd.Series):
    """A column with the dictionary's dtype as Arrow: every missing value null (NaN included, as pandas' ``to_sql``
    writes it), times to the microsecond (as SQLAlchemy passes them)."""
    import pyarrow as pa

    array = pa.array(values, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):  # pandas' Arrow-backed strings (a chunk per frame they came from)
        array = array.combine_chunks()
    return array.cast(pa.timestamp("us"), safe=False) if pa.types.is_timestamp(array.type) else array


def _sqlite_values(values: pd.Series, kind: str) -> list:
    """A column as Python values for sqlite's driver: None for a missing value, dates and times as the text
    SQLAlchemy stores for them there (``2026-01-31``, ``2026-01-31 06:00:00.000000``)."""
    array = _arrow(values)
    if kind in ("date", "datetime"):
        import pyarrow.compute as pc

        array = pc.strftime(array, "%Y-%m-%d" if kind == "date" else "%Y-%m-%d %H:%M:%S")
    return array.to_pylist()


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # PostgreSQL's binary COPY: signature, flags, no extension
_COPY_TRAILER = b"\xff\xff"
_COPY_EPOCH_DAYS = 10957  # PostgreSQL counts dates and times from 2000-01-01, Arrow from 1970-01-01
_COPY_WIDTHS = {"int": ">i8", "float": ">f8", "bool": "u1", "date": ">i4", "datetime": ">i8"}


def _copy_column(array, kind: str) -> list:
    """An Arrow column as PostgreSQL's binary COPY fields, in two Arrow binary columns: each value's length (4 bytes,
    big-endian; -1 for a null), and its bytes (null for a null: :func:`_copy_rows` skips it). int8, float8 and bool
    as big-endian bytes, dates as days and times as microseconds since 2000-01-01, text as its UTF-8."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind not in _COPY_WIDTHS:  # string, category: Arrow's UTF-8 as it is
        data = array.cast(pa.binary())
        lengths = pc.fill_null(pc.binary_length(data), -1).to_numpy(zero_copy_only=False)
        return [_fixed_binary(lengths.astype(">i4")), data]
    valid = ~array.is_null().to_numpy(zero_copy_only=False)
    if kind == "date":
        array = pc.subtract(array.cast(pa.date32()).cast(pa.int32()), _COPY_EPOCH_DAYS)
    elif kind == "datetime":
        array = pc.subtract(array.cast(pa.int64()), _COPY_EPOCH_DAYS * 86_400_000_000)
    values = pc.fill_null(array, pa.scalar(0, array.type) if kind != "bool" else False).to_numpy(zero_copy_only=False)
    width = np.dtype(_COPY_WIDTHS[kind])
    lengths = np.where(valid, width.itemsize, -1).astype(">i4")
    return [_fixed_binary(lengths), _fixed_binary(values.astype(width), None if valid.all() else valid)]


def _fixed_binary(values, valid=None):
    """Each element of a numpy array as an Arrow binary value of its bytes (null where ``valid`` is False)."""
    import pyarrow as pa

    mask = None if valid is None else pa.array(valid).buffers()[1]
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(values.dtype.itemsize), len(values),
                                                [mask, pa.py_buffer(values)]).cast(pa.binary())


def _repeated(column: list, rows: int) -> list:
    """A one-value :func:`_copy_column` as ``rows`` rows of that value."""
    import pyarrow as pa

    return [pa.repeat(part[0], rows) for part in column]


def _copy_rows(columns: list) -> memoryview:
    """Rows of PostgreSQL's binary COPY (a field count, then each field's length and bytes) from
    :func:`_copy_column` columns: joined row by row by Arrow, no Python object per row or value."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = len(columns[0][0])
    count = pa.repeat(pa.scalar(len(columns).to_bytes(2, "big"), pa.binary()), rows)
    joined = pc.binary_join_element_wise(count, *chain.from_iterable(columns), b"", null_handling="skip")
    offsets = np.frombuffer(joined.buffers()[1], np.int32)[joined.offset:joined.offset + rows + 1]
    return memoryview(joined.buffers()[2])[offsets[0]:offsets[-1]]


@contextlib.contextmanager
def _driver_errors(conn: sa.Connection, statement: str) -> Iterator[None]:
    """The driver's own errors, raised by what runs on its connection past SQLAlchemy, as SQLAlchemy raises them
    (a ``DBAPIError`` with ``orig``; a lost connection invalidated), so that every write fails and retries alike."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(statement, None, exc, dbapi.Error, connection_invalidated=lost,
                                         dialect=conn.dialect) from exc
