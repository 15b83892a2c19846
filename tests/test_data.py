"""The data layer on real sqlite files: warehouse writes and reads, the dictionary, snapshots."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from runner.data.dictionary import DataDictionary
from runner.data.snapshots import SnapshotStore
from runner.data.warehouse import Warehouse
from runner.demo.generate import generate_month
from runner.errors import ConfigError, DataContractError, RunnerError

ROOT = Path(__file__).resolve().parents[1]
DICTIONARY = ROOT / "data" / "dictionary.yaml"
SCORING = "credit_scoring"  # the purpose reads here are for, unless a test says otherwise


@pytest.fixture(scope="module")
def dictionary() -> DataDictionary:
    return DataDictionary.load(DICTIONARY)


@pytest.fixture
def warehouse(tmp_path, dictionary) -> Warehouse:
    return Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}", dictionary)


@pytest.fixture(scope="module")
def month() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_month("2026-02", n=200, drift=None)


def count(warehouse: Warehouse, table: str) -> int:
    return int(warehouse.for_purpose(SCORING).read_sql(f"SELECT COUNT(*) AS n FROM {table}")["n"].iloc[0])


def rows(warehouse: Warehouse, sql: str) -> list[tuple]:
    """What the database itself holds, past the runner (its storage tables are not the dictionary's)."""
    with sa.create_engine(warehouse.url).connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(sql))]


def scores(apps: pd.DataFrame, value: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": apps["application_id"], "score": value})


# -- warehouse ---------------------------------------------------------------------------------


def test_round_trip_gives_the_dictionary_dtypes(warehouse, dictionary, month):
    apps, outcomes = month
    assert warehouse.write_table("applications", apps) == len(apps)
    assert warehouse.write_table("outcomes", outcomes) == len(outcomes)
    back = warehouse.read_table("applications", unchecked="test: the round trip of every column")
    expected = dictionary.validate("applications", apps)
    pd.testing.assert_frame_equal(back.sort_values("application_id").reset_index(drop=True), expected)
    assert str(back["applied_on"].dtype) == "datetime64[ns]" and str(back["purpose"].dtype) == "str"
    assert str(warehouse.read_table("outcomes", purpose=SCORING)["defaulted"].dtype) == "int64"
    # dates are stored as ISO dates, so SQL comparisons with '2026-02-28' work
    stored = warehouse.for_purpose(SCORING).read_sql("SELECT MIN(applied_on) AS first FROM applications")["first"].iloc[0]
    assert stored == apps["applied_on"].min().date().isoformat()
    assert warehouse.tables() == ["applications", "outcomes"]


def test_where_takes_named_parameters(warehouse, month):
    apps, _ = month
    warehouse.write_table("applications", apps)
    old = warehouse.read_table("applications", ["application_id", "age"], where="age >= :age", params={"age": 60},
                               purpose=SCORING)
    assert list(old.columns) == ["application_id", "age"]
    assert len(old) == (apps["age"] >= 60).sum() and (old["age"] >= 60).all()


def test_breaking_the_dictionary_lists_failures_and_writes_nothing(warehouse, month):
    apps, _ = month
    warehouse.write_table("applications", apps)
    bad = generate_month("2026-03", n=50, drift=None)[0]
    bad.loc[[0, 1, 2], "income"] = [-5.0, -1.0, -5.0]
    bad.loc[[3, 4], "purpose"] = "crypto"
    for mode in ("append", "replace"):
        with pytest.raises(DataContractError) as raised:
            warehouse.write_table("applications", bad, mode=mode)
        message = str(raised.value)
        assert "applications breaks the data dictionary" in message
        assert "income: greater_than_or_equal_to(0) failed for 3 rows (e.g. -5.0, -1.0)" in message
        assert "purpose: isin([" in message and "failed for 2 rows (e.g. 'crypto')" in message
        assert "update" in message and "dictionary.yaml" in message
        assert count(warehouse, "applications") == len(apps)
    failures = {(f["column"], f["check"].split("(")[0]): f for f in raised.value.failures}
    assert failures[("income", "greater_than_or_equal_to")]["count"] == 3
    assert failures[("income", "greater_than_or_equal_to")]["examples"] == [-5.0, -1.0]
    assert failures[("purpose", "isin")]["examples"] == ["crypto"]


def test_missing_and_undeclared_columns_are_named(dictionary, month):
    apps, _ = month
    with pytest.raises(DataContractError) as raised:
        dictionary.validate("applications", apps.drop(columns=["income"]).assign(shoe_size=42))
    message = str(raised.value)
    assert "income: declared column missing from the frame" in message
    assert "shoe_size: column not declared in the dictionary" in message
    with pytest.raises(DataContractError) as raised:  # a value that cannot be converted is reported once
        dictionary.validate("applications", apps.assign(age=apps["age"].astype(str).where(apps.index > 0, "old")))
    assert raised.value.failures == [{"column": "age", "check": "coerce_dtype('int64')", "count": 1, "examples": ["old"]}]


def test_split_valid_keeps_the_rows_that_fit(dictionary):
    apps = generate_month("2026-03", n=50, drift=None)[0]
    apps.loc[[5, 9], "purpose"] = "crypto"
    apps.loc[9, "age"] = 12
    valid, rejected = dictionary.split_valid("applications", apps)
    assert len(valid) == 48 and list(rejected.index) == [5, 9]
    assert rejected.loc[9, "reason"].count(";") == 1 and "purpose: isin" in rejected.loc[5, "reason"]
    assert str(valid["applied_on"].dtype) == "datetime64[ns]"


def test_a_purpose_may_not_read_columns_it_is_not_allowed(warehouse, month):
    apps, _ = month
    warehouse.write_table("applications", apps)
    with pytest.raises(DataContractError) as raised:
        warehouse.read_table("applications", ["application_id", "gender"], purpose="credit_scoring")
    message = str(raised.value)
    assert "applications.gender may be used for ['analytics'] only, not for 'credit_scoring'" in message
    assert "GDPR Art. 9" in message and "email" not in message
    with pytest.raises(DataContractError, match="applications.email"):
        warehouse.read_table("applications", purpose="credit_scoring")  # all columns: email and gender too
    assert len(warehouse.read_table("applications", ["income", "purpose"], purpose="credit_scoring")) == len(apps)
    assert len(warehouse.read_table("applications", ["gender"], purpose="analytics")) == len(apps)
    with pytest.raises(DataContractError, match="unknown purpose 'marketing'"):
        warehouse.read_table("applications", ["income"], purpose="marketing")


def test_reingesting_a_batch_replaces_rows_by_key(warehouse, month):
    apps, outcomes = month
    warehouse.write_table("applications", apps)
    warehouse.write_table("applications", apps)
    assert count(warehouse, "applications") == len(apps)
    corrected = apps.head(10).assign(income=1234.0)
    warehouse.write_table("applications", corrected)
    assert count(warehouse, "applications") == len(apps)
    back = warehouse.read_table("applications", ["application_id", "income"], where="income = 1234", purpose=SCORING)
    assert sorted(back["application_id"]) == sorted(corrected["application_id"])
    with pytest.raises(DataContractError, match="duplicate key"):
        warehouse.write_table("outcomes", pd.concat([outcomes.head(3), outcomes.head(1)]))


def test_reads_come_in_a_stable_order_whatever_order_the_rows_were_written_in(warehouse, month):
    from runner.data.snapshots import SnapshotStore

    apps, _ = month
    warehouse.write_table("applications", apps.sample(frac=1, random_state=1))
    first = warehouse.read_table("applications", ["application_id", "income", "purpose"], purpose=SCORING)
    assert list(first["application_id"]) == sorted(apps["application_id"])  # by the declared key
    warehouse.write_table("applications", apps.sample(frac=1, random_state=2))  # a re-ingest that only reorders
    again = warehouse.read_table("applications", ["application_id", "income", "purpose"], purpose=SCORING)
    pd.testing.assert_frame_equal(first, again)
    store = SnapshotStore(warehouse.url.removeprefix("sqlite:///") + ".snapshots")
    assert store.save(first) == store.save(again)
    by_income = warehouse.read_table("applications", ["application_id", "income"], order_by=["income", "application_id"],
                                     purpose=SCORING)
    assert by_income["income"].dropna().is_monotonic_increasing
    with pytest.raises(DataContractError, match=r"\['no_such_column'\] are not declared"):
        warehouse.read_table("applications", ["application_id"], order_by=["no_such_column"], purpose=SCORING)


def test_replace_mode_replaces_the_table(warehouse, month):
    apps, _ = month
    warehouse.write_table("applications", apps)
    warehouse.write_table("applications", apps.head(7), mode="replace")
    assert count(warehouse, "applications") == 7


def test_a_failed_replace_keeps_the_old_table(warehouse, month, monkeypatch):
    # sqlite's driver would commit the DROP on its own; the warehouse makes DDL part of the transaction
    warehouse.write_table("outcomes", month[1])

    def insert_fails(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT INTO outcomes ...", {}, Exception("disk I/O error"))

    monkeypatch.setattr(Warehouse, "_insert", insert_fails)
    with pytest.raises(RunnerError, match="disk I/O error; nothing was written"):
        warehouse.write_table("outcomes", month[1].head(3), mode="replace")
    assert count(warehouse, "outcomes") == len(month[1])


def test_chunked_read_is_an_iterator_of_frames(warehouse, month):
    apps, _ = month
    warehouse.write_table("applications", apps)
    chunks = warehouse.read_table("applications", ["application_id", "applied_on"], chunksize=70, purpose=SCORING)
    assert isinstance(chunks, Iterator)
    sizes = []
    for chunk in chunks:
        assert str(chunk["applied_on"].dtype) == "datetime64[ns]"
        sizes.append(len(chunk))
    assert sizes == [70, 70, 60]


def test_write_predictions_from_a_chunked_read_and_twice_is_idempotent(warehouse, month):
    apps, _ = month
    warehouse.write_table("applications", apps)

    def scored():  # the scoring notebook's shape: read chunks while the predictions transaction is open
        for chunk in warehouse.read_table("applications", ["application_id"], chunksize=64, purpose=SCORING):
            yield scores(chunk, 0.25)

    for _ in range(2):
        assert warehouse.write_predictions(scored(), run_id="r1", model_name="credit", model_version="3",
                                           as_of="2026-02-28") == len(apps)
        assert count(warehouse, "predictions") == len(apps)
    written = warehouse.read_predictions(run_id="r1")
    assert set(written.columns) == {"run_id", "model_name", "model_version", "as_of", "entity_id", "score", "scored_at",
                                    "namespace"}
    assert (written["namespace"] == "production").all()
    assert (written["model_version"] == "3").all() and (written["as_of"] == pd.Timestamp("2026-02-28")).all()
    assert len(warehouse.read_predictions(as_of="2026-02-28")) == len(apps)
    assert warehouse.read_predictions(as_of="2026-03-31").empty
    inspector = sa.inspect(sa.create_engine(warehouse.url))  # the run's columns once, in its batch; scores by batch
    assert "predictions" in inspector.get_view_names() and "predictions" not in inspector.get_table_names()
    assert [column["name"] for column in inspector.get_columns("prediction_scores")] == ["batch", "entity_id", "score"]
    assert {tuple(index["column_names"]) for index in inspector.get_indexes("prediction_batches")} == {("run_id",),
                                                                                                     ("as_of",)}
    assert [index["column_names"] for index in inspector.get_indexes("prediction_scores")] == [["batch"]]
    # the second write replaced the first's batch and scores: one batch, counting its rows, and no orphan score
    assert rows(warehouse, "SELECT run_id, row_count FROM prediction_batches") == [("r1", len(apps))]
    assert rows(warehouse, "SELECT COUNT(*) FROM prediction_scores") == [(len(apps),)]


def test_scores_written_by_hand_stay_out_of_productions_view(warehouse, month):
    apps, _ = month
    warehouse.write_predictions(scores(apps), run_id="prod", model_name="m", model_version="1", as_of="2026-02-28")
    warehouse.write_predictions(scores(apps), run_id="interactive-1", model_name="m", model_version="1",
                                as_of="2026-02-28", namespace="user:bob")
    assert set(warehouse.read_predictions(as_of="2026-02-28")["run_id"]) == {"prod"}
    assert set(warehouse.read_predictions(namespace="user:bob")["run_id"]) == {"interactive-1"}
    assert count(warehouse, "predictions") == 2 * len(apps)


def test_a_predictions_table_from_before_namespaces_is_production(warehouse):
    engine = sa.create_engine(warehouse.url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE predictions (run_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version "
                             "TEXT NOT NULL, as_of DATE NOT NULL, entity_id TEXT NOT NULL, score FLOAT NOT NULL, "
                             "scored_at DATETIME NOT NULL)"))
        conn.execute(sa.text("INSERT INTO predictions VALUES ('old', 'm', '1', '2026-01-31', 'a', 0.5, "
                             "'2026-01-31 06:00:00')"))
    old = warehouse.read_predictions()
    assert list(old["run_id"]) == ["old"] and list(old["namespace"]) == ["production"]


def test_a_predictions_table_of_an_earlier_runner_moves_into_batches_and_reads_as_before(warehouse, month):
    """A warehouse an earlier runner wrote (one predictions table, every column on each row, two runs, one by hand,
    one run written in two goes): its first read moves the rows into batches, exactly; a rerun then replaces the
    other run's production scores as it did."""
    apps, _ = month
    ids = apps["application_id"].head(4).tolist()
    engine = sa.create_engine(warehouse.url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE predictions (run_id TEXT NOT NULL, model_name TEXT NOT NULL, model_version "
                             "TEXT NOT NULL, as_of DATE NOT NULL, entity_id TEXT NOT NULL, score FLOAT NOT NULL, "
                             "scored_at DATETIME NOT NULL, namespace TEXT NOT NULL)"))
        conn.execute(sa.text("CREATE INDEX ix_predictions_run_id ON predictions (run_id)"))
        values = [("prod-1", "1", ids[0], 0.125, "06:00:00", "production"), ("prod-1", "1", ids[1], 0.25, "06:00:00",
                  "production"), ("prod-1", "1", ids[2], 1 / 3, "06:00:05", "production"),
                  ("mine", "2", ids[0], 0.5, "07:00:00", "user:bob")]
        for run_id, version, entity, score, at, namespace in values:
            conn.execute(sa.text("INSERT INTO predictions VALUES (:run, 'm', :version, '2026-01-31', :entity, :score, "
                                 ":at, :namespace)"), {"run": run_id, "version": version, "entity": entity,
                                                       "score": score, "at": f"2026-01-31 {at}.000000",
                                                       "namespace": namespace})
    before = pd.read_sql("SELECT * FROM predictions ORDER BY run_id, entity_id", engine)
    after = warehouse.read_predictions(namespace=None).sort_values(["run_id", "entity_id"], ignore_index=True)
    inspector = sa.inspect(engine)
    assert "predictions" in inspector.get_view_names() and "predictions" not in inspector.get_table_names()
    assert rows(warehouse, "SELECT run_id, scored_at, row_count FROM prediction_batches ORDER BY batch") == [
        ("prod-1", "2026-01-31 06:00:00.000000", 2), ("prod-1", "2026-01-31 06:00:05.000000", 1),
        ("mine", "2026-01-31 07:00:00.000000", 1)]
    assert after["score"].tolist() == before["score"].tolist() == [0.5, 0.125, 0.25, 1 / 3]
    assert after["entity_id"].tolist() == before["entity_id"].tolist()
    assert after["namespace"].tolist() == ["user:bob", "production", "production", "production"]
    assert after["scored_at"].tolist() == pd.to_datetime(before["scored_at"]).tolist()
    assert warehouse.write_predictions(scores(apps.head(3), 0.75), run_id="prod-2", model_name="m", model_version="1",
                                       as_of="2026-01-31") == 3
    assert sorted(set(warehouse.read_predictions(namespace=None)["run_id"])) == ["mine", "prod-2"]
    assert rows(warehouse, "SELECT COUNT(*) FROM prediction_scores") == [(4,)]


def test_a_table_of_the_users_own_under_a_storage_name_is_named_and_left_alone(tmp_path, month):
    """A team whose warehouse already has a table called prediction_scores (theirs, other columns) gets one line
    naming it when predictions are first written, and their table keeps its rows; a dictionary declaring one of the
    runner's storage names cannot read or write it through the runner."""
    apps, _ = month
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE prediction_scores (customer TEXT, churn REAL)"))
        conn.execute(sa.text("INSERT INTO prediction_scores VALUES ('c1', 0.9), ('c2', 0.1)"))
    theirs = DataDictionary.from_dict({"purposes": {"churn": "churn"}, "tables": {"prediction_scores": {
        "description": "a team's own scores", "owner": "team", "columns": {
            name: {"type": kind, "description": name, "nullable": True, "pii": False, "allowed_purposes": ["any"]}
            for name, kind in (("customer", "string"), ("churn", "float"))}}}})
    warehouse = Warehouse(url, theirs)
    with pytest.raises(RunnerError) as raised:
        warehouse.write_predictions(scores(apps.head(3)), run_id="r", model_name="m", model_version="1",
                                    as_of="2026-01-31")
    assert "'prediction_scores'" in str(raised.value) and "rename yours" in str(raised.value)
    with pytest.raises(DataContractError, match="cannot write 'prediction_scores': the runner keeps predictions"):
        warehouse.write_table("prediction_scores", pd.DataFrame({"customer": ["c3"], "churn": [0.5]}))
    with pytest.raises(DataContractError, match="cannot read 'prediction_scores'"):
        warehouse.for_purpose("churn").read_table("prediction_scores")
    with pytest.raises(DataContractError, match="cannot read 'prediction_scores'"):
        warehouse.for_purpose("churn").read_sql("SELECT customer FROM prediction_scores")
    assert rows(warehouse, "SELECT * FROM prediction_scores ORDER BY customer") == [("c1", 0.9), ("c2", 0.1)]
    inspector = sa.inspect(sa.create_engine(url))
    assert inspector.get_table_names() == ["prediction_scores"] and inspector.get_view_names() == []


def test_a_fraction_in_an_int_column_is_refused_not_cut_and_nothing_is_written(warehouse, month):
    """pandera alone converts 30.5 months to 30 without a word: the write names the column and the value."""
    apps, _ = month
    broken = apps.astype({"term_months": float})
    broken.loc[3, "term_months"] = 30.5
    with pytest.raises(DataContractError, match=r"term_months: .* failed for 1 rows \(e\.g\. 30\.5\)"):
        warehouse.write_table("applications", broken)
    assert "applications" not in warehouse.tables()
    assert warehouse.write_table("applications", apps.astype({"term_months": float})) == len(apps)  # whole: kept
    assert rows(warehouse, "SELECT typeof(term_months), COUNT(*) FROM applications GROUP BY 1") == [
        ("integer", len(apps))]


def test_a_run_tables_later_chunks_refuse_a_fraction_in_an_int_column_too():
    """After a run's first chunk, the run tables validate the rows' own columns only (the fast path): that path
    refuses 2.5 in an int column as the whole validation does, rather than let pandera cut it to 2."""
    from runner.data.warehouse import _validated

    contract = DataDictionary.from_dict({"purposes": {"p": "a purpose"}, "tables": {"counts": {
        "description": "a run table", "owner": "o", "columns": {
            "run_id": {"type": "string", "description": "r", "nullable": False, "pii": False,
                       "allowed_purposes": ["any"]},
            "count": {"type": "int", "description": "c", "nullable": False, "pii": False,
                      "allowed_purposes": ["any"]}}}}})
    run = {"run_id": "r1"}
    assert _validated(contract, "counts", pd.DataFrame({"count": [1.0, 2.0]}), run)["count"].tolist() == [1, 2]
    with pytest.raises(DataContractError, match=r"count: .* failed for 1 rows \(e\.g\. 2\.5\)"):
        _validated(contract, "counts", pd.DataFrame({"count": [1.0, 2.5]}), run)


def test_write_predictions_is_all_or_nothing(warehouse, month):
    apps, _ = month
    warehouse.write_predictions(scores(apps), run_id="r1", model_name="m", model_version="1", as_of="2026-02-28")

    def breaks_after_two_chunks(run_apps):
        yield scores(run_apps.iloc[:50])
        yield scores(run_apps.iloc[50:100])
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        warehouse.write_predictions(breaks_after_two_chunks(apps), run_id="r2", model_name="m", model_version="1",
                                    as_of="2026-02-28")
    assert warehouse.read_predictions(run_id="r2").empty
    with pytest.raises(RuntimeError):  # a failed rewrite of r1 leaves r1 as it was
        warehouse.write_predictions(breaks_after_two_chunks(apps), run_id="r1", model_name="m", model_version="2",
                                    as_of="2026-02-28")
    kept = warehouse.read_predictions(run_id="r1")
    assert len(kept) == len(apps) and (kept["model_version"] == "1").all()
    with pytest.raises(DataContractError, match="score: less_than_or_equal_to"):
        warehouse.write_predictions([scores(apps, 0.3), scores(apps, 1.5)], run_id="r3", model_name="m",
                                    model_version="1", as_of="2026-02-28")
    assert count(warehouse, "predictions") == len(apps)


def test_predictions_without_a_dictionary(tmp_path, month):
    plain = Warehouse(f"sqlite:///{tmp_path / 'plain.db'}")
    assert plain.read_predictions().empty
    plain.write_predictions(scores(month[0]), run_id="r", model_name="m", model_version="1", as_of="2026-02-28")
    assert len(plain.read_predictions(run_id="r")) == len(month[0])
    # without a dictionary nothing could check another table: it is neither written nor read
    with pytest.raises(DataContractError, match="cannot write 'anything': this warehouse has no data dictionary"):
        plain.write_table("anything", pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(DataContractError, match="cannot read 'applications': this warehouse has no data dictionary"):
        plain.read_table("applications", purpose=SCORING)


def test_unknown_tables_and_columns(warehouse, month):
    with pytest.raises(RunnerError, match="no table 'applications'"):
        warehouse.read_table("applications", purpose=SCORING)
    warehouse.write_table("applications", month[0])
    with pytest.raises(DataContractError, match=r"\['shoe_size'\] are not declared in the data dictionary"):
        warehouse.read_table("applications", ["application_id", "shoe_size"], purpose=SCORING)
    with pytest.raises(DataContractError, match=r"\['no_such_column'\] are not declared in the data dictionary"):
        warehouse.read_table("applications", ["age"], where="no_such_column > 1", purpose=SCORING)
    with pytest.raises(RunnerError, match="reading applications failed in the warehouse.*no such column: shoe_size"):
        warehouse.read_table("applications", ["age"], unchecked="test: a column the table does not have",
                             where="shoe_size > 1")


def test_bad_or_unreachable_urls_say_what_to_check(tmp_path):
    with pytest.raises(RunnerError, match="RUNNER_WAREHOUSE_URL") as raised:
        Warehouse("nosuchdatabase://somewhere/db")
    assert "nosuchdatabase://somewhere/db" in str(raised.value)
    with pytest.raises(RunnerError) as raised:
        Warehouse("postgresql://user:secret@127.0.0.1:1/db").tables()
    assert "127.0.0.1" in str(raised.value) and "secret" not in str(raised.value)
    folder_url = f"sqlite:///{tmp_path}"  # a folder, not a database file
    with pytest.raises(RunnerError, match="cannot reach the warehouse") as raised:
        Warehouse(folder_url).tables()
    assert str(tmp_path) in str(raised.value) and "stores.warehouse" in str(raised.value)


# -- data dictionary ---------------------------------------------------------------------------


def test_the_project_dictionary_declares_pii_and_owners(dictionary):
    assert dictionary.pii_columns("applications") == ["email", "gender"]
    assert set(dictionary.purposes) == {"credit_scoring", "monitoring", "analytics", "customer_contact"}
    assert dictionary.tables["applications"].columns["income"].owner == "credit-risk-data"  # inherited
    assert dictionary.tables["applications"].columns["email"].owner == "customer-data"


def write_dictionary(tmp_path: Path, column: dict, **table) -> Path:
    path = tmp_path / "dictionary.yaml"
    raw = {"purposes": {"credit_scoring": "decisions"},
           "tables": {"t": {"description": "a table", "owner": "me", **table, "columns": {"c": column}}}}
    path.write_text(yaml.safe_dump(raw))
    return path


GOOD_COLUMN = {"type": "int", "description": "a column", "nullable": False, "pii": False, "allowed_purposes": ["any"]}


@pytest.mark.parametrize("change, key, words", [
    ({"type": "integer"}, "tables.t.columns.c.type", "Input should be"),
    ({"allowed_purposes": ["marketing"]}, "tables.t.columns.c.allowed_purposes", "unknown purpose"),
    ({"type": "category"}, "tables.t.columns.c", "needs 'levels'"),
    ({"colour": "red"}, "tables.t.columns.c.colour", "unknown key"),
    ({"pii": None}, "tables.t.columns.c.pii", ""),
])
def test_dictionary_errors_name_the_file_and_key(tmp_path, change, key, words):
    path = write_dictionary(tmp_path, {**GOOD_COLUMN, **change})
    with pytest.raises(ConfigError) as raised:
        DataDictionary.load(path)
    assert raised.value.source == str(path) and raised.value.key == key
    assert words in raised.value.message


def test_dictionary_needs_an_owner_and_valid_yaml(tmp_path):
    path = write_dictionary(tmp_path, GOOD_COLUMN, owner=None)
    with pytest.raises(ConfigError) as raised:
        DataDictionary.load(path)
    assert raised.value.key == "tables.t.columns.c.owner"
    path.write_text("tables: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        DataDictionary.load(path)
    with pytest.raises(ConfigError, match="file not found"):
        DataDictionary.load(tmp_path / "missing.yaml")


# -- snapshots ---------------------------------------------------------------------------------

SAVE_IN_ANOTHER_PROCESS = """
import sys
from runner.data.snapshots import SnapshotStore
from runner.demo.generate import generate_month
print(SnapshotStore(sys.argv[1]).save(generate_month("2026-02", n=200, drift=None)[0]))
"""


def test_snapshots_are_content_addressed(tmp_path, month):
    store = SnapshotStore(tmp_path / "snapshots")
    apps, outcomes = month
    digest = store.save(apps)
    path = store.path(digest)
    assert path == tmp_path / "snapshots" / digest[:2] / f"{digest}.parquet"
    written_at = path.stat().st_mtime_ns
    assert store.save(apps.copy()) == digest
    other = subprocess.run([sys.executable, "-c", SAVE_IN_ANOTHER_PROCESS, str(store.root)],
                           capture_output=True, text=True, check=True)
    assert other.stdout.strip() == digest
    assert store.list() == [digest] and path.stat().st_mtime_ns == written_at  # stored once
    pd.testing.assert_frame_equal(store.load(digest), apps)
    changed = apps.assign(income=apps["income"].fillna(0) + 1)
    assert store.save(changed) != digest and store.save(outcomes) != digest
    assert len(store.list()) == 3


def test_the_digest_ignores_the_index_and_string_storage(tmp_path, month):
    store = SnapshotStore(tmp_path)
    apps, _ = month
    digest = store.save(apps)
    assert store.save(apps.iloc[::-1].iloc[::-1]) == digest
    assert store.save(apps.astype({"purpose": "object"})) == digest
    assert store.save(apps.astype({"purpose": "category"})) == digest
    assert store.save(apps.iloc[1:]) != digest


def test_unknown_snapshot_and_export(tmp_path, month):
    store = SnapshotStore(tmp_path / "snapshots")
    unknown = "0" * 64
    with pytest.raises(RunnerError) as raised:
        store.load(unknown)
    assert unknown in str(raised.value) and str(store.root) in str(raised.value) and ".list()" in str(raised.value)
    with pytest.raises(RunnerError, match="not a snapshot digest"):
        store.path("../../etc/passwd")
    digest = store.save(month[1])
    out = store.export(digest, tmp_path / "out" / "training.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), month[1])


def test_monitoring_metrics_hold_one_row_per_run_feature_and_statistic(warehouse):
    findings = pd.DataFrame({
        "feature": ["income", "income", "purpose"], "statistic": ["psi", "ks", "new_level"],
        "value": [0.31, 0.12, float("nan")], "p_value": [float("nan"), 1e-9, float("nan")],
        "severity": ["alert", "ok", "warn"], "detail": ["median 41,200 -> 52,300", "", "new level 'crypto'"],
    })
    run = {"pipeline": "credit_score", "step": "monitor", "model_name": "credit_default", "model_version": "3"}
    assert warehouse.write_monitoring_metrics(findings, run_id="r1", as_of="2026-01-31", **run) == 3
    assert warehouse.write_monitoring_metrics(findings.head(2), run_id="r1", as_of="2026-01-31", **run) == 2
    warehouse.write_monitoring_metrics(findings.head(1), run_id="r2", as_of="2026-02-28", **run)
    warehouse.write_monitoring_metrics(findings.head(1), run_id="r2", as_of="2026-02-28", **{**run, "step": "backtest"})
    stored = warehouse.read_monitoring_metrics("credit_score")
    assert sorted(stored["run_id"]) == ["r1", "r1", "r2", "r2"]  # r1's rows replaced, r2's steps kept apart
    earlier = warehouse.read_monitoring_metrics("credit_score", before="2026-02-01")
    assert set(earlier["run_id"]) == {"r1"} and earlier["p_value"].isna().sum() == 1
    assert warehouse.read_monitoring_metrics("other").empty
    with pytest.raises(DataContractError, match="severity"):
        warehouse.write_monitoring_metrics(findings.drop(columns="severity"), run_id="r3", as_of="2026-03-31", **run)
