"""Two writers at once on real sqlite files: the second waits for the lock, transient failures re-run the
whole transaction, and the last failure names the lock. Every outcome is read back from the file itself."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from runner.data import DataDictionary, Warehouse
from runner.errors import ConfigError, RunnerError

ORDERS = DataDictionary.from_dict({
    "purposes": {"fulfilment": "Shipping what was ordered."},
    "tables": {"orders": {
        "description": "orders, one row each", "owner": "shop", "key": ["order_id"],
        "columns": {
            "order_id": {"type": "int", "description": "id of the order", "nullable": False, "pii": False,
                         "allowed_purposes": ["any"]},
            "amount": {"type": "float", "description": "what it costs", "nullable": False, "pii": False,
                       "allowed_purposes": ["any"]},
            "customer": {"type": "string", "description": "who ordered", "nullable": False, "pii": False,
                         "allowed_purposes": ["any"]},
        },
    }},
}, source="tests/test_contention.py")
COLUMNS_HINT = "check the table's columns"


def orders(*ids: int, amount: float = 10.0, customer: str = "ada") -> pd.DataFrame:
    return pd.DataFrame({"order_id": list(ids), "amount": amount, "customer": customer})


def scores(*entities: str) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": list(entities), "score": 0.5})


def rows(path: Path, sql: str) -> list[tuple]:
    """What the sqlite file holds, read with a connection of the test's own."""
    with sqlite3.connect(path) as db:
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:  # the table was never created
            assert "no such table" in str(exc)
            return []


class Statements:
    """Every statement a warehouse sends to one sqlite file, seen where SQLAlchemy hands it to the driver; and
    faults the driver raises there, as it would (the only fake: the error, at the edge)."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sent: list[str] = []
        self.faults: list[list] = []  # [prefix, error, first match that fails, how many fail, matches so far]

    def fail(self, prefix: str, error: Exception, *, at: int = 1, times: int = 1) -> None:
        """Raise ``error`` at the ``at``-th statement starting with ``prefix``, and at the ``times - 1`` after it."""
        self.faults.append([prefix, error, at, times, 0])

    @property
    def attempts(self) -> int:
        """Write transactions begun (each attempt of a write begins one)."""
        return sum(statement.startswith("BEGIN IMMEDIATE") for statement in self.sent)

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if conn.engine.url.database != self.path:
            return
        self.sent.append(statement)
        for fault in self.faults:
            if statement.startswith(fault[0]):
                fault[4] += 1
                if fault[2] <= fault[4] < fault[2] + fault[3]:
                    raise fault[1]


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "shop.db"


@pytest.fixture
def statements(db) -> Iterator[Statements]:
    seen = Statements(db)
    sa.event.listen(sa.Engine, "before_cursor_execute", seen)
    yield seen
    sa.event.remove(sa.Engine, "before_cursor_execute", seen)


def warehouse(db: Path, **settings) -> Warehouse:
    return Warehouse(f"sqlite:///{db}", ORDERS, **settings)


class Holder:
    """Another writer: a raw sqlite3 connection in a thread of its own, inside ``BEGIN IMMEDIATE`` with its own
    orders inserted, until ``release`` is set (or ``hold`` seconds passed); then it commits."""

    def __init__(self, db: Path, ids: tuple[int, ...], hold: float):
        self.held, self.release = threading.Event(), threading.Event()
        self.committing_at: float | None = None
        self.thread = threading.Thread(target=self._hold, args=(db, ids, hold), daemon=True)

    def _hold(self, db: Path, ids: tuple[int, ...], hold: float) -> None:
        writer = sqlite3.connect(db, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO orders (order_id, amount, customer) VALUES (?, 99.0, 'holder')",
                           [(i,) for i in ids])
        self.held.set()
        self.release.wait(hold)
        self.committing_at = time.monotonic()
        writer.execute("COMMIT")
        writer.close()


@contextmanager
def holding(db: Path, ids: tuple[int, ...], hold: float) -> Iterator[Holder]:
    holder = Holder(db, ids, hold)
    holder.thread.start()
    assert holder.held.wait(5), "the other writer never got the lock"
    try:
        yield holder
    finally:
        holder.release.set()
        holder.thread.join(10)


def write(store: Warehouse, kind: str, ids: tuple[int, ...]) -> int:
    if kind == "table":
        return store.write_table("orders", orders(*ids))
    return store.write_predictions([scores(*map(str, ids[:1])), scores(*map(str, ids[1:]))], run_id="run-2",
                                   model_name="m", model_version="1", as_of="2026-02-28")


def written(db: Path, kind: str) -> list:
    if kind == "table":
        return [order for order, in rows(db, "SELECT order_id FROM orders WHERE customer = 'ada' ORDER BY order_id")]
    return [int(entity) for entity, in rows(db, "SELECT entity_id FROM predictions ORDER BY entity_id")]


@pytest.mark.parametrize("kind", ["table", "predictions"])
def test_a_second_writer_waits_for_the_first_and_both_writes_are_kept(db, statements, kind):
    store = warehouse(db, busy_timeout=10, write_attempts=1)  # no retry: it must wait
    store.write_table("orders", orders(1))
    with holding(db, (2, 3), hold=0.4) as holder:
        # readers never wait for a writer (WAL)
        assert list(store.read_table("orders", purpose="fulfilment")["order_id"]) == [1]
        assert write(store, kind, (4, 5, 6)) == 3
        done = time.monotonic()
    assert holder.committing_at is not None and done > holder.committing_at  # it waited for the commit
    assert statements.attempts == 2  # the first write, and this one
    assert rows(db, "SELECT order_id, customer FROM orders WHERE customer = 'holder' ORDER BY order_id") == [
        (2, "holder"), (3, "holder")]
    assert written(db, kind) == ([1, 4, 5, 6] if kind == "table" else [4, 5, 6])


@pytest.mark.parametrize("kind", ["table", "predictions"])
def test_a_lock_held_past_the_busy_timeout_fails_naming_the_lock_and_writes_nothing(db, statements, monkeypatch,
                                                                                    kind):
    monkeypatch.setenv("RUNNER_WAREHOUSE_BUSY_TIMEOUT", "0.2s")
    monkeypatch.setenv("RUNNER_WAREHOUSE_WRITE_ATTEMPTS", "3")
    store = warehouse(db)
    store.write_table("orders", orders(1))
    before = statements.attempts
    with holding(db, (2,), hold=30) as holder:
        started = time.monotonic()
        with pytest.raises(RunnerError) as raised:
            write(store, kind, (7, 8, 9))
        took = time.monotonic() - started
        holder.release.set()  # the other writer commits only now
    message = str(raised.value)
    assert f"the warehouse sqlite:///{db} is locked by another writer" in message
    assert "over 3 attempts (database is locked)" in message and "nothing was written" in message
    assert "raise RUNNER_WAREHOUSE_BUSY_TIMEOUT (now 0.2 s per attempt)" in message
    assert COLUMNS_HINT not in message and "\n" not in message
    assert took >= 0.5  # three waits of 0.2 s for the lock, not an error at once
    assert statements.attempts - before == 3
    assert rows(db, "SELECT order_id, customer FROM orders ORDER BY order_id") == [(1, "ada"), (2, "holder")]
    assert written(db, kind) == ([1] if kind == "table" else [])


def test_a_transient_error_midway_reruns_the_whole_transaction(db, statements):
    store = warehouse(db, busy_timeout=1, write_attempts=3)
    store.write_table("orders", orders(1, 2, 3))
    # the keys 2 and 3 are deleted, then the insert meets a lock: the retry must start over, not go on
    statements.fail("INSERT INTO orders", sqlite3.OperationalError("database is locked"))
    assert store.write_table("orders", orders(2, 3, 4, amount=20.0)) == 3
    assert statements.attempts == 1 + 2
    assert rows(db, "SELECT order_id, amount FROM orders ORDER BY order_id") == [
        (1, 10.0), (2, 20.0), (3, 20.0), (4, 20.0)]

    # scores in two chunks: the second chunk's insert fails once; the first chunk is not written twice
    statements.fail("INSERT INTO prediction_scores", sqlite3.OperationalError("database is locked"), at=2)
    assert store.write_predictions([scores("a", "b"), scores("c")], run_id="r1", model_name="m", model_version="1",
                                   as_of="2026-02-28") == 3
    assert statements.attempts == 3 + 2
    assert rows(db, "SELECT entity_id, COUNT(*) FROM predictions GROUP BY entity_id ORDER BY entity_id") == [
        ("a", 1), ("b", 1), ("c", 1)]


@pytest.mark.parametrize("schema, error", [
    ("CREATE TABLE orders (order_id BIGINT NOT NULL, amount FLOAT NOT NULL)", "no column named customer"),
    ("CREATE TABLE orders (order_id BIGINT NOT NULL, amount FLOAT NOT NULL CHECK (amount < 100), "
     "customer TEXT NOT NULL DEFAULT 'old')", "CHECK constraint failed: amount < 100"),
])
def test_errors_that_are_not_transient_are_not_retried(db, statements, schema, error):
    with sqlite3.connect(db) as made:
        made.execute(schema)
        made.execute("INSERT INTO orders (order_id, amount) VALUES (1, 5.0)")
    store = warehouse(db, busy_timeout=1, write_attempts=5)
    with pytest.raises(RunnerError, match=f"{error}; nothing was written; {COLUMNS_HINT}"):
        store.write_table("orders", orders(1, 2, amount=500.0))
    assert statements.attempts == 1
    assert rows(db, "SELECT order_id, amount FROM orders") == [(1, 5.0)]


def test_scores_from_an_iterator_already_drawn_are_not_written_again(db, statements):
    store = warehouse(db, busy_timeout=1, write_attempts=5)
    drawn = []

    def chunks():
        for chunk in (scores("a"), scores("b")):
            drawn.append(chunk)
            yield chunk

    statements.fail("INSERT INTO prediction_scores", sqlite3.OperationalError("database is locked"), at=2)
    with pytest.raises(RunnerError) as raised:
        store.write_predictions(chunks(), run_id="r1", model_name="m", model_version="1", as_of="2026-02-28")
    message = str(raised.value)
    assert "is locked by another writer" in message and "over 1 attempt (database is locked)" in message
    assert "an iterator already partly drawn, so the write could not be run again" in message
    assert "nothing was written" in message and COLUMNS_HINT not in message
    assert statements.attempts == 1 and len(drawn) == 2
    assert rows(db, "SELECT * FROM predictions") == []


class PostgresError(sqlite3.OperationalError):
    """What psycopg (``sqlstate``) or psycopg2 (``pgcode``) raises: the driver's error with its SQLSTATE."""

    def __init__(self, message: str, sqlstate: str, attribute: str = "sqlstate"):
        super().__init__(message)
        setattr(self, attribute, sqlstate)


@pytest.mark.parametrize("sqlstate, attribute", [("40001", "sqlstate"), ("40P01", "pgcode"), ("55P03", "sqlstate"),
                                                 ("08006", "pgcode")])
def test_postgresql_transient_sqlstates_are_retried(db, statements, sqlstate, attribute):
    store = warehouse(db, busy_timeout=1, write_attempts=2)
    statements.fail("INSERT INTO orders", PostgresError(f"error {sqlstate}", sqlstate, attribute))
    assert store.write_table("orders", orders(1, 2)) == 2
    assert statements.attempts == 2
    assert rows(db, "SELECT order_id FROM orders ORDER BY order_id") == [(1,), (2,)]


@pytest.mark.parametrize("sqlstate, words", [
    ("40P01", "conflicted with another writer's transaction in 2 attempts (deadlock detected); nothing was written; "
              "try again when the other write finishes, or raise RUNNER_WAREHOUSE_WRITE_ATTEMPTS (now 2)"),
    ("55P03", "is locked by another writer"),
    ("08006", "lost its connection to the warehouse"),
])
def test_the_last_postgresql_failure_says_what_it_met(db, statements, sqlstate, words):
    store = warehouse(db, busy_timeout=1, write_attempts=2)
    statements.fail("INSERT INTO orders", PostgresError("deadlock detected\nDETAIL:  Process 7 waits for ShareLock",
                                                        sqlstate), times=99)
    with pytest.raises(RunnerError) as raised:
        store.write_table("orders", orders(1))
    assert words in str(raised.value) and "\n" not in str(raised.value) and COLUMNS_HINT not in str(raised.value)
    assert statements.attempts == 2
    assert rows(db, "SELECT * FROM orders") == []


def test_a_constraint_sqlstate_is_not_retried(db, statements):
    store = warehouse(db, busy_timeout=1, write_attempts=3)
    statements.fail("INSERT INTO orders", PostgresError("duplicate key value violates unique constraint", "23505"))
    with pytest.raises(RunnerError, match=f"duplicate key value violates unique constraint; nothing was written"):
        store.write_table("orders", orders(1))
    assert statements.attempts == 1


def test_a_connection_lost_during_the_commit_is_not_retried(db, statements):
    store = warehouse(db, busy_timeout=1, write_attempts=3)

    def lost(conn) -> None:
        if conn.engine.url.database == str(db):
            raise sa.exc.OperationalError("COMMIT", None, sqlite3.OperationalError("server closed the connection "
                                                                                   "unexpectedly"),
                                          connection_invalidated=True)

    sa.event.listen(sa.Engine, "commit", lost)
    try:
        with pytest.raises(RunnerError) as raised:
            store.write_table("orders", orders(1))
    finally:
        sa.event.remove(sa.Engine, "commit", lost)
    assert "during the commit: whether the rows were written is unknown" in str(raised.value)
    assert statements.attempts == 1


def test_the_settings_come_from_the_environment_and_a_bad_value_names_its_variable(db, monkeypatch):
    defaults = warehouse(db)
    assert (defaults.busy_timeout, defaults.write_attempts) == (30.0, 4)
    monkeypatch.setenv("RUNNER_WAREHOUSE_BUSY_TIMEOUT", "2m")
    monkeypatch.setenv("RUNNER_WAREHOUSE_WRITE_ATTEMPTS", "1")
    assert (warehouse(db).busy_timeout, warehouse(db).write_attempts) == (120.0, 1)
    assert warehouse(db, busy_timeout=0.5, write_attempts=2).busy_timeout == 0.5
    for variable, value in (("RUNNER_WAREHOUSE_BUSY_TIMEOUT", "soon"), ("RUNNER_WAREHOUSE_WRITE_ATTEMPTS", "0"),
                            ("RUNNER_WAREHOUSE_WRITE_ATTEMPTS", "many")):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as raised:
            warehouse(db)
        assert str(raised.value).startswith(f"{variable}: ") and repr(value) in str(raised.value)
        monkeypatch.delenv(variable)
