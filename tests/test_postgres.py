"""The warehouse on a real PostgreSQL (issue 14): the dictionary's writes and purpose-checked reads, predictions all
or none, two writers at once, and a pipeline run through the CLI. The server is a throwaway cluster of this test
session (tests/postgres_server.py); every test gets a database of its own. What the tests assert is read back with
a psycopg connection of the test's own, never through the warehouse under test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import GENDER_RULE
from postgres_server import conninfo, own_database

from runner.cli import main
from runner.data import DataDictionary, Warehouse
from runner.demo.generate import generate_month
from runner.errors import DataContractError, RunnerError

ROOT = Path(__file__).resolve().parents[1]
SCORING = "credit_scoring"


@pytest.fixture(scope="module")
def dictionary(credit_dictionary) -> DataDictionary:
    return credit_dictionary


@pytest.fixture(scope="module")
def month() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_month("2026-02", n=120, drift=None)


@pytest.fixture
def url(postgres_url) -> Iterator[str]:
    """A database of this test's own on the session's server."""
    with own_database(postgres_url) as own:
        yield own


def rows(url: str, sql: str) -> list[tuple]:
    """What the database holds, read with a connection of the test's own ([] when the table was never created)."""
    with psycopg.connect(conninfo(url), autocommit=True) as db:
        try:
            return db.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def scores(ids, value: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": list(ids), "score": value})


def refusal(call) -> str:
    with pytest.raises(DataContractError) as raised:
        call()
    assert "\n" not in str(raised.value)
    return str(raised.value)


# -- writes through the dictionary -----------------------------------------------------------------


def test_a_round_trip_keeps_the_dictionary_types_and_a_violation_writes_nothing(url, dictionary, month):
    apps, outcomes = month
    store = Warehouse(url, dictionary)
    assert store.write_table("applications", apps) == len(apps)
    assert store.write_table("outcomes", outcomes) == len(outcomes)
    back = store.read_table("applications", unchecked="test: the round trip of every column")
    pd.testing.assert_frame_equal(back.reset_index(drop=True), dictionary.validate("applications", apps)
                                  .sort_values("application_id").reset_index(drop=True))
    assert str(store.read_table("outcomes", purpose=SCORING)["defaulted"].dtype) == "int64"
    assert store.tables() == ["applications", "outcomes"]
    types = dict(rows(url, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = "
                           "'applications'"))
    assert types["applied_on"] == "date" and types["income"] == "double precision" and types["age"] == "bigint"

    bad = generate_month("2026-03", n=30, drift=None)[0]
    bad.loc[[0, 1], "income"] = -5.0
    for mode in ("append", "replace"):
        with pytest.raises(DataContractError, match="income: greater_than_or_equal_to"):
            store.write_table("applications", bad, mode=mode)
        assert rows(url, "SELECT COUNT(*) FROM applications") == [(len(apps),)]

    store.write_table("applications", apps.head(10).assign(income=1234.0))  # a re-ingest replaces rows by key
    assert rows(url, "SELECT COUNT(*), SUM((income = 1234)::int) FROM applications") == [(len(apps), 10)]
    store.write_table("applications", apps.head(7), mode="replace")
    assert rows(url, "SELECT COUNT(*) FROM applications") == [(7,)]
    indexes = rows(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'applications'")
    assert indexes == [("ux_applications_key",)]


# -- reads for a purpose: where= and read_sql parsed in PostgreSQL's dialect --------------------------


@pytest.fixture
def scoring(url, dictionary, month) -> Warehouse:
    plain = Warehouse(url, dictionary)
    plain.write_table("applications", month[0])
    plain.write_table("outcomes", month[1])
    plain.write_predictions(scores(["A1"]), run_id="r", model_name="m", model_version="1", as_of="2026-02-28")
    return plain.for_purpose(SCORING)


def test_reads_for_a_purpose_refuse_what_it_may_not_use(scoring, month):
    apps, outcomes = month
    assert refusal(lambda: scoring.read_table("applications", ["application_id", "gender"])) == GENDER_RULE
    assert refusal(lambda: scoring.read_table("applications", ["income"], where='"gender" = :g',
                                              params={"g": "f"})) == GENDER_RULE
    assert refusal(lambda: scoring.read_table("applications", ["income"], where="GENDER ILIKE 'f%'")) == GENDER_RULE
    for where, words in [
        ("income > 0 UNION SELECT gender FROM applications", "holds UNION"),
        ("application_id IN (SELECT application_id FROM applications WHERE gender = 'female')", "holds a sub-query"),
        ("income > 0; DROP TABLE outcomes", "holds ';'"),
        ("public.applications.gender = 'f'", "a column of another table"),
        ("pg_sleep(1) IS NULL", "calls pg_sleep()"),
        ("income::text = '1'", "calls cast()"),
    ]:
        assert words in refusal(lambda: scoring.read_table("applications", ["income"], where=where)), where
    for sql in [
        "SELECT income FROM applications WHERE application_id IN (SELECT application_id FROM applications "
        "WHERE gender = 'female')",
        "SELECT income FROM applications UNION SELECT gender FROM applications",
        'SELECT "Gender" FROM applications',
        "SELECT AVG(CASE WHEN gender = 'female' THEN income END) AS gap FROM applications",
    ]:
        assert GENDER_RULE in refusal(lambda: scoring.read_sql(sql)) or "could not be resolved" in refusal(
            lambda: scoring.read_sql(sql)), sql
    for sql, words in [
        ("SELECT income FROM public.applications", "names a table of another schema or database"),
        ("SELECT usename FROM pg_user", "table 'pg_user' is not declared"),
        ("SELECT pg_read_file('/etc/passwd')", "pg_read_file() is a function the SQL parser does not know"),
        ("SELECT * FROM generate_series(1, 3)", "reads from a function"),
        ("SELECT income FROM applications FOR UPDATE", "read_sql"),
    ]:
        assert words in refusal(lambda: scoring.read_sql(sql)), sql

    old = scoring.read_table("applications", ["application_id", "age"], where="age >= :age AND region ILIKE :r",
                             params={"age": 50, "r": "%"})
    assert sorted(old["application_id"]) == sorted(apps.loc[apps["age"] >= 50, "application_id"])
    late = scoring.read_sql("WITH late AS (SELECT application_id FROM outcomes WHERE defaulted = :d) "
                            "SELECT a.application_id, a.income FROM applications a JOIN late USING (application_id) "
                            "ORDER BY a.application_id", {"d": 1})
    assert list(late["application_id"]) == sorted(outcomes.loc[outcomes["defaulted"] == 1, "application_id"])
    first = scoring.read_sql("SELECT MIN(applied_on) AS first FROM applications")["first"].iloc[0]
    assert str(first) == apps["applied_on"].min().date().isoformat()
    assert scoring.read_sql("SELECT COUNT(*) AS n FROM predictions")["n"].iloc[0] == 1
    chunks = scoring.read_table("applications", ["application_id", "applied_on"], chunksize=50)
    assert [len(chunk) for chunk in chunks] == [50, 50, 20]


# -- predictions: all or none, a rerun replaces the earlier run's rows --------------------------------


def test_predictions_are_written_all_or_none_and_a_rerun_replaces_the_earlier_runs(url, dictionary, month):
    apps, _ = month
    store = Warehouse(url, dictionary)
    ids = list(apps["application_id"])
    store.write_table("applications", apps)

    def scored():  # the scoring notebook's shape: chunks read while the predictions transaction is open
        for chunk in store.read_table("applications", ["application_id"], chunksize=50, purpose=SCORING):
            yield scores(chunk["application_id"], 0.25)

    assert store.write_predictions(scored(), run_id="r1", model_name="m", model_version="1",
                                   as_of="2026-02-28") == len(ids)

    def breaks_midway():
        yield scores(ids[:50])
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        store.write_predictions(breaks_midway(), run_id="r2", model_name="m", model_version="1", as_of="2026-02-28")
    with pytest.raises(DataContractError, match="score: less_than_or_equal_to"):
        store.write_predictions([scores(ids, 0.3), scores(ids, 1.5)], run_id="r2", model_name="m", model_version="1",
                                as_of="2026-02-28")
    assert rows(url, "SELECT run_id, COUNT(*), MIN(score) FROM predictions GROUP BY run_id") == [("r1", len(ids), 0.25)]

    replaced = []
    assert store.write_predictions(scores(ids[:30], 0.75), run_id="r2", model_name="m", model_version="1",
                                   as_of="2026-02-28", on_replaced=replaced.append) == 30
    assert replaced == [{"r1": len(ids)}]
    store.write_predictions(scores(ids[:5]), run_id="by-hand", model_name="m", model_version="1", as_of="2026-02-28",
                            namespace="user:ada")
    assert rows(url, "SELECT run_id, namespace, as_of::text, COUNT(*) FROM predictions GROUP BY 1, 2, 3 ORDER BY 1") \
        == [("by-hand", "user:ada", "2026-02-28", 5), ("r2", "production", "2026-02-28", 30)]
    back = store.read_predictions(as_of="2026-02-28")
    assert set(back["run_id"]) == {"r2"} and str(back["as_of"].dtype) == "datetime64[ns]"
    assert str(back["scored_at"].dtype) == "datetime64[ns]"
    indexes = {name for name, in rows(url, "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'prediction%'")}
    assert indexes == {"prediction_batches_pkey", "ix_prediction_batches_run_id", "ix_prediction_batches_as_of",
                       "ix_prediction_scores_batch"}
    # the replaced run's batch and scores went with it: a batch per write, counting its rows, and no orphan score
    assert rows(url, "SELECT run_id, row_count FROM prediction_batches ORDER BY run_id") == [("by-hand", 5), ("r2", 30)]
    assert rows(url, "SELECT COUNT(*) FROM prediction_scores") == [(35,)]


def test_a_predictions_table_from_before_namespaces_gets_the_column_and_is_production(url):
    with psycopg.connect(conninfo(url), autocommit=True) as db:
        db.execute("CREATE TABLE predictions (run_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT "
                   "NULL, as_of DATE NOT NULL, entity_id TEXT NOT NULL, score FLOAT NOT NULL, scored_at TIMESTAMP NOT "
                   "NULL)")
        db.execute("INSERT INTO predictions VALUES ('old', 'm', '1', '2026-01-31', 'a', 0.5, '2026-01-31 06:00:00')")
    store = Warehouse(url)
    old = store.read_predictions()
    assert list(old["run_id"]) == ["old"] and list(old["namespace"]) == ["production"]
    store.write_predictions(scores(["b"]), run_id="new", model_name="m", model_version="1", as_of="2026-02-28")
    assert rows(url, "SELECT run_id, namespace FROM predictions ORDER BY run_id") == [("new", "production"),
                                                                                      ("old", "production")]


# -- two writers at once: another connection holds a lock ---------------------------------------------

ORDERS = DataDictionary.from_dict({
    "purposes": {"fulfilment": "Shipping what was ordered."},
    "tables": {"orders": {
        "description": "orders, one row each", "owner": "shop", "key": ["order_id"],
        "columns": {
            "order_id": {"type": "int", "description": "id of the order", "nullable": False, "pii": False,
                         "allowed_purposes": ["any"]},
            "customer": {"type": "string", "description": "who ordered", "nullable": False, "pii": False,
                         "allowed_purposes": ["any"]},
        },
    }},
}, source="tests/test_postgres.py")
LOCKS = {  # what the other connection holds, inside its open transaction
    "table": "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE",
    "row": "SELECT * FROM {table} WHERE {key} = '1' FOR UPDATE",
}


class Holder:
    """Another connection (psycopg, a thread of its own) that takes a lock in an open transaction and holds it until
    ``release`` is set (or ``hold`` seconds passed); then it commits."""

    def __init__(self, url: str, sql: str, hold: float):
        self.held, self.release = threading.Event(), threading.Event()
        self.committed_at: float | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._hold, args=(url, sql, hold), daemon=True)

    def _hold(self, url: str, sql: str, hold: float) -> None:
        try:
            with psycopg.connect(conninfo(url)) as other:  # a transaction begins with the first statement
                other.execute(sql)
                self.held.set()
                self.release.wait(hold)
                other.commit()
                self.committed_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 (said by the test)
            self.error = exc
            self.held.set()


@contextmanager
def holding(url: str, sql: str, hold: float) -> Iterator[Holder]:
    holder = Holder(url, sql, hold)
    holder.thread.start()
    assert holder.held.wait(10) and holder.error is None, f"the other connection never got the lock: {holder.error}"
    try:
        yield holder
    finally:
        holder.release.set()
        holder.thread.join(10)


def first_write(url: str, kind: str) -> tuple[Warehouse, str, str]:
    """A warehouse with the table written once (order or entity 1); the table and its key column."""
    store = Warehouse(url, ORDERS)
    if kind == "table":
        store.write_table("orders", pd.DataFrame({"order_id": [1], "customer": "first"}))
        return store, "orders", "order_id"
    store.write_predictions(scores(["1"]), run_id="r1", model_name="m", model_version="1", as_of="2026-02-28")
    return store, "predictions", "entity_id"


def second_write(store: Warehouse, kind: str) -> int:
    if kind == "table":  # order 1 again (its row is deleted and written anew), and two new ones
        return store.write_table("orders", pd.DataFrame({"order_id": [1, 2, 3], "customer": "second"}))
    return store.write_predictions([scores(["1"]), scores(["2", "3"])], run_id="r2", model_name="m",
                                   model_version="1", as_of="2026-02-28")  # replaces r1's row


def written(url: str, kind: str) -> list[tuple]:
    if kind == "table":
        return rows(url, "SELECT order_id, customer FROM orders ORDER BY order_id")
    return rows(url, "SELECT entity_id, run_id FROM predictions ORDER BY entity_id")


@pytest.mark.parametrize("kind", ["table", "predictions"])
@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_write_waits_for_another_connections_lock_and_succeeds_when_it_is_released(url, kind, lock):
    store, table, key = first_write(url, kind)
    store = Warehouse(url, ORDERS, busy_timeout=10, write_attempts=1)  # no retry: it must wait
    with holding(url, LOCKS[lock].format(table=table, key=key), hold=0.5) as holder:
        assert second_write(store, kind) == 3
        done = time.monotonic()
    assert holder.committed_at is not None and done > holder.committed_at  # it waited for the other's commit
    assert written(url, kind) == ([(1, "second"), (2, "second"), (3, "second")] if kind == "table"
                                  else [("1", "r2"), ("2", "r2"), ("3", "r2")])


@pytest.mark.parametrize("kind", ["table", "predictions"])
@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_a_lock_never_released_fails_after_the_attempts_naming_the_lock_and_writes_nothing(url, monkeypatch, kind,
                                                                                           lock):
    store, table, key = first_write(url, kind)
    before = written(url, kind)
    monkeypatch.setenv("RUNNER_WAREHOUSE_BUSY_TIMEOUT", "0.2s")
    monkeypatch.setenv("RUNNER_WAREHOUSE_WRITE_ATTEMPTS", "3")
    store = Warehouse(url, ORDERS)
    with holding(url, LOCKS[lock].format(table=table, key=key), hold=60):
        started = time.monotonic()
        with pytest.raises(RunnerError) as raised:
            second_write(store, kind)
        took = time.monotonic() - started
    message = str(raised.value)
    shown = sa.make_url(url).render_as_string(hide_password=True)
    assert message.startswith(f"the warehouse {shown} is locked by another writer: writing table {table!r} waited ")
    assert "over 3 attempts (canceling statement due to lock timeout); nothing was written" in message
    assert message.endswith("or raise RUNNER_WAREHOUSE_BUSY_TIMEOUT (now 0.2 s per attempt)")
    assert "\n" not in message and "check the table's columns" not in message
    assert took >= 0.6  # three waits of 0.2 s for the lock, not an error at once
    assert written(url, kind) == before


# -- a pipeline through the CLI, its warehouse on PostgreSQL ------------------------------------------


@pytest.mark.slow
def test_the_starter_projects_ingest_writes_to_postgresql(url, tmp_path):
    """`runner init`, then its churn_ingest pipeline with RUNNER_WAREHOUSE_URL on PostgreSQL: the rows are in PostgreSQL
    (read with psycopg), nothing in a sqlite warehouse, and the run record says it succeeded. (Train and score
    too passed here, in 128 s: too long for every run; the warehouse calls they make are tested above.)"""
    root = tmp_path / "churn"
    env = {"RUNNER_HOME": str(tmp_path / ".runner"), "RUNNER_USER": "ci", "RUNNER_WAREHOUSE_URL": url,
           "RUNNER_CONFIG": None, "MLFLOW_TRACKING_URI": None, "MLFLOW_RUN_ID": None, "MLFLOW_EXPERIMENT_ID": None}

    def runner(*args: str):
        done = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert done.exit_code == 0, f"runner {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done

    def run(pipeline: str) -> str:
        run_id = runner("run", pipeline, "--config", config).stdout.split()[1]  # "run <id> <status> in ..."
        record = json.loads(runner("show", run_id, "--config", config, "--json").stdout)
        assert record["status"] == "succeeded", record
        return run_id

    runner("init", str(root))
    config = str(root / "runner.yaml")
    run("churn_ingest")
    customers, months, keys = rows(url, "SELECT COUNT(*), COUNT(DISTINCT month), COUNT(DISTINCT customer_id) "
                                        "FROM customers")[0]
    assert customers > 0 and months == 12 and keys == customers
    assert not (tmp_path / ".runner" / "warehouse.db").exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_served_requests_are_written_through_the_driver_with_their_values_intact(backend, url, tmp_path):
    """write_requests hands rows to the driver's executemany itself (SQLAlchemy's conversions, none of its
    per-row work): times, nulls, hostile text and floats come back as written on both databases."""
    target = url if backend == "postgresql" else f"sqlite:///{tmp_path / 'w.db'}"
    warehouse = Warehouse(target)
    at = pd.Timestamp("2026-03-01 12:00:00")  # no microseconds: sqlite's text form must still read back
    hostile = "it's \"quoted\"; DROP TABLE requests; -- é ✓ " + "x" * 5000
    written = warehouse.write_requests([
        {"request_id": "a", "row": 0, "received_at": at.to_pydatetime(), "model_name": "m", "model_version": "3",
         "alias": "champion", "inputs": json.dumps({"text": hostile}), "score": 0.1234567890123456,
         "latency_ms": 2.5, "status": "ok", "error": None, "flags": "plan: new level 'gold'"},
        {"request_id": "b", "row": 0, "received_at": at + pd.Timedelta(microseconds=7), "model_name": "m",
         "model_version": "3", "alias": "champion", "inputs": None, "score": None, "latency_ms": 1.0,
         "status": "rejected", "error": hostile, "flags": None},
    ])
    assert written == 2
    back = warehouse.read_requests("m").set_index("request_id")
    assert back.loc["a", "received_at"] == at
    assert back.loc["b", "received_at"] == at + pd.Timedelta(microseconds=7)
    assert json.loads(back.loc["a", "inputs"]) == {"text": hostile}
    assert back.loc["a", "score"] == 0.1234567890123456
    assert pd.isna(back.loc["b", "score"]) and back.loc["b", "error"] == hostile
    assert back.loc["a", "flags"] == "plan: new level 'gold'"
    assert len(warehouse.read_requests("other")) == 0
