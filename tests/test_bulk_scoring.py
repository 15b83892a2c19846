"""Scoring moves its data in bulk (issue 16): chunked reads come as Arrow batches (ADBC; sqlite's in a reader process
of its own), predictions and dictionary tables go in from Arrow columns (sqlite: INSERTs of thousands of rows each;
PostgreSQL: binary COPY), and ``nb.score`` overlaps reading, predicting and writing. Each test runs on a sqlite
file and on a database of its own on the session's PostgreSQL; what it asserts is read back with a connection of the
test's own (sqlite3, psycopg), never through the warehouse under test."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import psycopg
import pytest
import sqlalchemy as sa
import yaml

from postgres_server import conninfo, own_database

from runner import nb
from runner.data import DataDictionary, Warehouse
from runner.data.warehouse import read_ahead
from runner.errors import DataContractError, RunnerError

PURPOSE = "lending"
COLUMN = {"description": "a column", "pii": False, "allowed_purposes": ["any"]}
EVENTS = {  # every type of the dictionary, most of them nullable
    "event_id": {"type": "int", "nullable": False},
    "amount": {"type": "float", "nullable": True},
    "count": {"type": "int", "nullable": True},
    "label": {"type": "string", "nullable": True},
    "kind": {"type": "category", "nullable": False, "levels": ["a", "b'quote", "ünï"]},
    "flag": {"type": "bool", "nullable": False},
    "happened_on": {"type": "date", "nullable": False},
    "happened_at": {"type": "datetime", "nullable": True},
}
LOANS = {"loan_id": {"type": "string", "nullable": False}, "income": {"type": "float", "nullable": True},
         "term": {"type": "int", "nullable": False}, "month": {"type": "string", "nullable": False},
         "channel": {"type": "string", "nullable": True}}
DICTIONARY = {
    "purposes": {PURPOSE: "Deciding on loans."},
    "tables": {
        "events": {"description": "events, one row each", "owner": "tests", "key": ["event_id"],
                   "columns": {name: {**COLUMN, **column} for name, column in EVENTS.items()}},
        "loans": {"description": "loans to score", "owner": "tests", "key": ["loan_id"],
                  "columns": {name: {**COLUMN, **column} for name, column in LOANS.items()}},
    },
}
HOSTILE = ["it's", 'say "hi"', "a,b;c\td", "line\nbreak", "ünïcödé ✓ 中文", "x" * 20_000, "", "back\\slash",
           "%(x)s ?"]


# -- the two warehouses --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def url(backend, tmp_path, request) -> Iterator[str]:
    """A sqlite file, or a database of this test's own on the session's PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    with own_database(request.getfixturevalue("postgres_url")) as own:
        yield own


def rows(url: str, sql: str) -> list[tuple]:
    """What the database holds, read with a connection of the test's own ([] when the table was never created)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sa.make_url(url).database) as db:
            try:
                return db.execute(sql).fetchall()
            except sqlite3.OperationalError as exc:
                assert "no such table" in str(exc)
                return []
    with psycopg.connect(conninfo(url), autocommit=True) as db:
        try:
            return db.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def run_sql(url: str, *statements: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(sa.make_url(url).database) as db:
            for statement in statements:
                db.execute(statement)
        return
    with psycopg.connect(conninfo(url), autocommit=True) as db:
        for statement in statements:
            db.execute(statement)


@pytest.fixture
def dictionary() -> DataDictionary:
    return DataDictionary.from_dict(DICTIONARY, source="tests/test_bulk_scoring.py")


def events() -> pd.DataFrame:
    """Twelve events whose first four have every nullable column empty (a reader that guessed the types from its
    first batch would take them for integers), then hostile text, NaN and times to the microsecond."""
    n = 12
    return pd.DataFrame({
        "event_id": [10**15 + i for i in range(n)],  # beyond 2**53 once read through a float
        "amount": [None] * 4 + [1.5, float("nan"), -0.0, 1e308, 1 / 3, 2.5e-300, 7.0, 123456.789],
        "count": [None] * 4 + [0, -1, 2**62, None, 5, 6, 7, 8],
        "label": [None] * 4 + HOSTILE[:8],
        "kind": ["a", "b'quote", "ünï", "a"] * 3,
        "flag": [True, False] * 6,
        "happened_on": pd.to_datetime([f"2026-01-{day:02d}" for day in range(1, n + 1)]),
        "happened_at": [None] * 4 + list(pd.to_datetime(
            ["2026-01-05 06:07:08.123456", "2026-01-06", "1999-12-31 23:59:59.999999", "2026-01-08 12:00:00",
             "2026-01-09 00:00:01", "2026-01-10 10:10:10.5", "2026-01-11 11:11:11", "2026-01-12 12:12:12"],
            format="ISO8601")),
    })


# -- chunked reads as Arrow ------------------------------------------------------------------------------------------


def test_a_chunked_read_gives_the_frames_of_the_whole_read_with_every_type_null_and_hostile_value(url, dictionary):
    store = Warehouse(url, dictionary, purpose=PURPOSE)
    assert store.write_table("events", events()) == 12
    whole = store.read_table("events")
    chunks = list(store.read_table("events", chunksize=4))
    assert [len(chunk) for chunk in chunks] == [4, 4, 4]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    expected = dictionary.validate("events", events().assign(amount=lambda f: f["amount"].where(f["amount"].notna())))
    pd.testing.assert_frame_equal(whole, expected)
    assert whole["event_id"].iloc[3] == 10**15 + 3 and whole["count"].iloc[6] == 2**62
    assert list(whole["label"].iloc[4:]) == HOSTILE[:8] and whole["label"].iloc[:4].isna().all()
    assert str(whole["count"].dtype) == "Int64" and str(whole["happened_at"].dtype) == "datetime64[ns]"

    later = list(store.read_table("events", ["event_id", "label"], where="event_id >= :first AND kind <> :kind",
                                  params={"first": 10**15 + 5, "kind": "b'quote"}, order_by=["label"], chunksize=2))
    expected = whole[(whole["event_id"] >= 10**15 + 5) & (whole["kind"] != "b'quote")].sort_values("label")
    assert [value for chunk in later for value in chunk["label"]] == list(expected["label"])
    where = "label LIKE :pattern OR label LIKE '%,b;%'"  # a parameter and a literal % (psycopg's own sign)
    like = list(store.read_table("events", ["label"], where=where, params={"pattern": "%hi%"}, chunksize=4))
    assert [value for chunk in like for value in chunk["label"]] == ['say "hi"', "a,b;c\td"]
    nothing = list(store.read_table("events", ["event_id", "happened_on"], where="event_id < 0", chunksize=4))
    assert len(nothing) == 1 and nothing[0].empty and str(nothing[0]["happened_on"].dtype) == "datetime64[ns]"


def test_bulk_writes_store_values_as_the_database_would_through_sqlalchemy(url, backend, dictionary):
    store = Warehouse(url, dictionary)
    store.write_table("events", events())
    stored = rows(url, "SELECT event_id, amount, count, label, kind, flag, happened_on, happened_at FROM events "
                       "WHERE event_id IN (1000000000000004, 1000000000000005) ORDER BY event_id")
    if backend == "sqlite":  # SQLAlchemy's text for dates and times, 1/0 for booleans, NULL for NaN
        assert stored == [
            (10**15 + 4, 1.5, 0, "it's", "a", 1, "2026-01-05", "2026-01-05 06:07:08.123456"),
            (10**15 + 5, None, -1, 'say "hi"', "b'quote", 0, "2026-01-06", "2026-01-06 00:00:00.000000")]
    else:
        assert stored == [
            (10**15 + 4, 1.5, 0, "it's", "a", True, dt.date(2026, 1, 5), dt.datetime(2026, 1, 5, 6, 7, 8, 123456)),
            (10**15 + 5, None, -1, 'say "hi"', "b'quote", False, dt.date(2026, 1, 6), dt.datetime(2026, 1, 6))]
    assert rows(url, "SELECT COUNT(*), COUNT(amount), COUNT(label), SUM(LENGTH(label)) FROM events") == [
        (12, 7, 8, sum(len(text) for text in HOSTILE[:8]))]


def test_scores_pieced_together_from_several_frames_are_written_whole(url):
    pieces = [pd.Series(HOSTILE[:5], dtype="str"), pd.Series([None], dtype="str").fillna("z"),
              pd.Series(HOSTILE[5:], dtype="str")]  # pandas keeps Arrow-backed text in a chunk per piece
    scores = pd.DataFrame({"entity_id": pd.concat(pieces, ignore_index=True), "score": np.linspace(0, 1, 10)})
    Warehouse(url).write_predictions(scores, run_id="r", model_name="m", model_version="1", as_of="2026-01-31")
    assert rows(url, "SELECT entity_id, score FROM predictions ORDER BY score") == list(
        zip([*HOSTILE[:5], "z", *HOSTILE[5:]], np.linspace(0, 1, 10).tolist()))


def test_sqlite_takes_thousands_of_scores_a_statement_and_keeps_each_value(tmp_path):
    """sqlite's driver gives the interpreter up and takes it back for each row of an executemany, and beside a busy
    thread (scoring's model) each row then waits for its turn: scores go in as statements of thousands of rows, as
    many as sqlite's parameters allow, and every value lands in its row."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO"):
            sent.append((statement.split("(")[0].split()[-1].strip('"'), executemany))

    ids = [f"{HOSTILE[i % len(HOSTILE)]}-{i}" for i in range(12_000)]
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        Warehouse(url).write_predictions(pd.DataFrame({"entity_id": ids, "score": np.arange(12_000) / 12_000}),
                                         run_id="r", model_name="m", model_version="1", as_of="2026-01-31")
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    assert sent == [("prediction_batches", False), *[("prediction_scores", False)] * 3], sent
    assert rows(url, "SELECT entity_id, score FROM predictions ORDER BY score") == [
        (entity, i / 12_000) for i, entity in enumerate(ids)]


def test_a_date_given_as_text_compares_as_before_in_a_chunked_read(url, dictionary):
    store = Warehouse(url, dictionary, purpose=PURPOSE)
    store.write_table("events", events())
    where, params = "happened_on >= :since AND label IS NOT NULL", {"since": "2026-01-08"}
    chunked = pd.concat(store.read_table("events", ["event_id"], where=where, params=params, chunksize=5))
    assert list(chunked["event_id"]) == [10**15 + i for i in range(7, 12)]
    assert list(store.read_table("events", ["event_id"], where=where, params=params)["event_id"]) == \
        list(chunked["event_id"])


def test_a_table_made_by_hand_with_other_types_is_written_through_sqlalchemy(url, backend, dictionary):
    run_sql(url, "CREATE TABLE loans (loan_id VARCHAR(40) NOT NULL, income REAL, term INTEGER NOT NULL, "
                 "month VARCHAR(7) NOT NULL, channel VARCHAR(10))")
    store = Warehouse(url, dictionary)
    assert store.write_table("loans", pd.DataFrame({"loan_id": ["L1", "L2"], "income": [10.5, None],
                                                    "term": [12, 24], "month": "2026-01", "channel": "web"})) == 2
    assert rows(url, "SELECT loan_id, income, term FROM loans ORDER BY loan_id") == [("L1", 10.5, 12),
                                                                                   ("L2", None, 24)]


def test_a_chunked_read_stopped_early_ends_its_reader(tmp_path, dictionary):
    store = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}", dictionary, purpose=PURPOSE)
    store.write_table("events", events())
    chunks = store.read_table("events", ["event_id"], chunksize=2)
    assert len(next(chunks)) == 2
    assert readers()  # sqlite's ADBC driver runs in a process of its own
    chunks.close()
    assert not readers()


def test_a_reader_that_fails_midway_fails_the_read_with_the_drivers_words(tmp_path, dictionary):
    store = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}", dictionary, purpose=PURPOSE)
    store.write_table("events", events())
    run_sql(store.url, "UPDATE events SET count = 'many' WHERE event_id = 1000000000000010")  # by hand, past it
    chunks = store.read_table("events", ["event_id", "count"], chunksize=4)
    assert [len(next(chunks)) for _ in range(2)] == [4, 4]
    with pytest.raises(RunnerError, match=r"reading events failed in the warehouse sqlite:///.*: .*[Tt]ype mismatch"):
        next(chunks)
    assert not readers()


def readers() -> list[psutil.Process]:
    """sqlite's reader processes still running below this one (an ended one, a zombie not yet reaped, is not)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "adbc_driver_sqlite" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended while being looked at, or a zombie (psutil.ZombieProcess)
            continue
    return found


# -- predictions: nb.score end to end -------------------------------------------------------------------------------


class Model:
    """A fitted model as nb.score sees one: ``feature_names_in_`` and ``predict_proba``; it can fail at a call."""

    feature_names_in_ = np.array(["income", "term"])

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("model crashed")
        positive = 1 / (1 + np.exp(-(frame["income"].fillna(0).to_numpy() / 1000 - frame["term"].to_numpy() / 12)))
        return np.column_stack([1 - positive, positive])


def loans(n: int) -> pd.DataFrame:
    ids = [f"{HOSTILE[i % len(HOSTILE)][:50]}#{i}" for i in range(n)]
    return pd.DataFrame({"loan_id": ids, "income": [None if i % 5 == 0 else 900.0 + i for i in range(n)],
                         "term": [12 * (1 + i % 3) for i in range(n)], "month": "2026-01",
                         "channel": [None if i % 4 == 0 else HOSTILE[i % 6] for i in range(n)]})


@pytest.fixture
def scoring(url, tmp_path, monkeypatch, dictionary) -> Warehouse:
    """A project whose warehouse (``url``) holds 50 loans; this process is the score step of run r2."""
    (tmp_path / "dictionary.yaml").write_text(yaml.safe_dump(DICTIONARY, allow_unicode=True))
    (tmp_path / "runner.yaml").write_text(yaml.safe_dump({
        "dictionary": "dictionary.yaml",
        "pipelines": {"lend": {"purpose": PURPOSE, "steps": {"score": {"notebook": "score.ipynb"}}}}}))
    for name, value in {"RUNNER_CONFIG": tmp_path / "runner.yaml", "RUNNER_WAREHOUSE_URL": url, "RUNNER_RUN_ID": "r2",
                        "RUNNER_PIPELINE": "lend", "RUNNER_STEP": "score", "RUNNER_AS_OF": "2026-01-31"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(nb, "_context", None)
    store = Warehouse(url, dictionary)
    store.write_table("loans", loans(50))
    return store


def test_score_writes_every_row_with_its_lineage_in_one_transaction(scoring, url):
    model = Model()
    done = nb.score(model, "lender", "3", "loans", where="month = :month", params={"month": "2026-01"}, chunksize=7)
    assert done["rows"] == 50 and model.calls == 8
    stored = pd.DataFrame(rows(url, "SELECT run_id, model_name, model_version, as_of, entity_id, score, scored_at, "
                                    "namespace FROM predictions ORDER BY entity_id"),
                          columns=["run_id", "model_name", "model_version", "as_of", "entity_id", "score", "scored_at",
                                   "namespace"])
    frame = loans(50).sort_values("loan_id")
    assert list(stored["entity_id"]) == list(frame["loan_id"])
    assert list(stored["score"]) == list(Model().predict_proba(frame)[:, 1])  # exactly: no float went through text
    assert set(stored["run_id"]) == {"r2"} and set(stored["model_name"]) == {"lender"}
    assert set(stored["model_version"]) == {"3"} and set(stored["namespace"]) == {"production"}
    assert {str(value) for value in stored["as_of"]} == {"2026-01-31"}
    assert stored["scored_at"].nunique() == 1 and str(stored["scored_at"].iloc[0]).startswith(
        str(dt.datetime.now(dt.timezone.utc).year))
    back = scoring.read_predictions(run_id="r2")
    assert len(back) == 50 and str(back["scored_at"].dtype) == "datetime64[ns]"


class TextModel(Model):
    """A model of a text feature, which keeps each frame it is given."""

    feature_names_in_ = np.array(["income", "channel"])

    def __init__(self):
        super().__init__()
        self.seen: list[pd.DataFrame] = []

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.seen.append(frame.copy())
        positive = frame["channel"].fillna("").str.len().to_numpy() / 20_000
        return np.column_stack([1 - positive, positive])


def test_score_gives_the_model_text_as_python_strings_with_the_same_dtype_and_values(scoring, url):
    """Text features reach the model in pandas' Python-backed storage (scikit-learn's encoders then take the strings
    as they are, instead of making one per value from Arrow): dtype ``str`` still, every value and NaN the same."""
    model = TextModel()
    nb.score(model, "lender", "3", "loans", chunksize=7)
    given = pd.concat(model.seen, ignore_index=True)
    assert {str(frame["channel"].dtype) for frame in model.seen} == {"str"}
    assert {frame["channel"].dtype.storage for frame in model.seen} == {"python"}
    loaded = nb.load("loans", columns=["income", "channel"])
    assert loaded["channel"].dtype.storage == "pyarrow"  # what a notebook's own read gives stays as it was
    pd.testing.assert_frame_equal(given, loaded, check_dtype=False)
    assert given["channel"].isna().sum() == 13 and set(given["channel"].dropna()) == set(HOSTILE[:6])
    stored = rows(url, "SELECT entity_id, score FROM predictions ORDER BY entity_id")
    expected = loans(50).sort_values("loan_id")
    assert [score for _, score in stored] == list(expected["channel"].fillna("").str.len() / 20_000)


def test_a_model_failing_midway_leaves_no_row_of_the_run_and_the_earlier_run_whole(scoring, url):
    scoring.write_predictions(pd.DataFrame({"entity_id": ["old"], "score": 0.5}), run_id="r1", model_name="lender",
                              model_version="3", as_of="2026-01-31")
    with pytest.raises(RuntimeError, match="model crashed"):
        nb.score(Model(fail_at=4), "lender", "3", "loans", chunksize=7)
    assert rows(url, "SELECT run_id, entity_id FROM predictions") == [("r1", "old")]
    assert not readers() and not stages()


def stages() -> list[threading.Thread]:
    """The pipeline's threads still alive: reading, predicting, preparing the write."""
    return [thread for thread in threading.enumerate() if thread.name.startswith(("runner-score", "runner-write"))]


def test_a_database_failure_midway_rolls_the_run_back(scoring, url, backend):
    scoring.write_predictions(pd.DataFrame({"entity_id": ["old"], "score": 0.5}), run_id="r1", model_name="lender",
                              model_version="3", as_of="2026-01-31")
    refused = loans(50)["loan_id"].iloc[40]  # in the sixth chunk of seven rows
    quoted = refused.replace("'", "''")
    if backend == "sqlite":
        run_sql(url, f"CREATE TRIGGER refuse BEFORE INSERT ON prediction_scores WHEN NEW.entity_id = '{quoted}' "
                     "BEGIN SELECT RAISE(ABORT, 'entity refused'); END")
    else:
        run_sql(url, f"ALTER TABLE prediction_scores ADD CONSTRAINT refuse CHECK (entity_id <> '{quoted}')")
    with pytest.raises(RunnerError, match="entity refused|violates check constraint"):
        nb.score(Model(), "lender", "3", "loans", chunksize=7)
    assert rows(url, "SELECT run_id, entity_id FROM predictions") == [("r1", "old")]
    assert not readers() and not stages()


def test_a_score_breaking_the_dictionary_in_a_later_chunk_is_named_and_nothing_is_written(scoring, url):
    class Broken(Model):
        def predict_proba(self, frame):
            scores = super().predict_proba(frame)
            if self.calls == 3:
                scores[1, 1] = float("nan")
                scores[2, 1] = 1.5
            return scores

    with pytest.raises(DataContractError, match=r"predictions breaks the data dictionary: score: .*1\.5"):
        nb.score(Broken(), "lender", "3", "loans", chunksize=7)
    assert rows(url, "SELECT COUNT(*) FROM predictions") in ([], [(0,)])  # the table's creation went too


# -- the pipeline's stages -------------------------------------------------------------------------------------------


def test_read_ahead_hands_over_what_the_thread_raises_and_stops_it_when_the_consumer_leaves():
    closed = threading.Event()

    def numbers():
        try:
            yield from range(1000)
        finally:
            closed.set()

    with read_ahead(numbers(), depth=2) as ahead:
        assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    assert closed.is_set()

    def breaks():
        yield 1
        raise ValueError("bad chunk")

    with pytest.raises(ValueError, match="bad chunk"), read_ahead(breaks()) as ahead:
        assert list(ahead) == [1]
