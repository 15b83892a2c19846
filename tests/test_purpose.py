"""The purpose rule cannot be walked around (issue 12, item 5).

Each way the trial got past it, refused with the rule that forbids it, in one line: a ``where=``
on a forbidden column, UNION and sub-queries in ``where``, raw SQL through ``read_sql``, a pipeline
without a purpose, a missing dictionary; and writes to tables the dictionary does not declare.
What stays allowed is shown next to each refusal. The SQL is parsed with sqlglot on a real sqlite
warehouse; a real run checks the notebook API under the runner.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import CREDIT_DICTIONARY, GENDER_RULE, step
from nbformat.v4 import new_code_cell, new_notebook

from runner import nb
from runner.config import load_config
from runner.data import DataDictionary, Warehouse
from runner.demo.generate import generate_month
from runner.errors import ConfigError, DataContractError, RunnerError
from runner.store.records import RunStore

ROOT = Path(__file__).resolve().parents[1]
DICTIONARY = CREDIT_DICTIONARY
SCORING = "credit_scoring"


@pytest.fixture(scope="module")
def dictionary(credit_dictionary) -> DataDictionary:
    return credit_dictionary


@pytest.fixture(scope="module")
def month() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_month("2026-02", n=120, drift=None)


def fill(path: Path, dictionary: DataDictionary, month: tuple[pd.DataFrame, pd.DataFrame]) -> str:
    """The URL of a warehouse at ``path`` holding a month of applications and outcomes, and a score."""
    url = f"sqlite:///{path}"
    plain = Warehouse(url, dictionary)
    plain.write_table("applications", month[0])
    plain.write_table("outcomes", month[1])
    plain.write_predictions(pd.DataFrame({"entity_id": ["A1"], "score": [0.5]}), run_id="r", model_name="m",
                            model_version="1", as_of="2026-02-28")
    return url


@pytest.fixture(scope="module")
def filled(tmp_path_factory, dictionary, month) -> str:
    return fill(tmp_path_factory.mktemp("purpose") / "warehouse.db", dictionary, month)


@pytest.fixture
def scoring(filled, dictionary) -> Warehouse:
    return Warehouse(filled, dictionary, purpose=SCORING)


def refusal(call) -> str:
    """The one line a refused read says."""
    with pytest.raises(DataContractError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    return message


# -- 1. where= is a condition over the table's own columns the purpose allows ----------------------


def test_a_where_on_a_forbidden_column_is_refused_with_its_rule(scoring):
    message = refusal(lambda: scoring.read_table("applications", ["income"], where="gender = 'female'"))
    assert message == GENDER_RULE
    quoted = refusal(lambda: scoring.read_table("applications", ["income"], where='"gender" = :g', params={"g": "f"}))
    assert quoted == GENDER_RULE  # quoting, brackets and case tricks are identifiers all the same
    assert refusal(lambda: scoring.read_table("applications", ["income"], where="[gender] = 'f'")) == GENDER_RULE
    assert "applications.email may be used for ['customer_contact'] only" in refusal(
        lambda: scoring.read_table("applications", ["income"], where="lower(email) LIKE '%@example.com'"))


@pytest.mark.parametrize("where, words", [
    ("income > 0 UNION SELECT gender FROM applications", "holds UNION: a condition may not combine queries"),
    ("1 = 1 INTERSECT SELECT 1", "holds INTERSECT"),
    ("application_id IN (SELECT application_id FROM applications WHERE gender = 'female')",
     "holds a sub-query (SELECT): a condition may only test columns of applications"),
    ("EXISTS (SELECT 1 FROM outcomes)", "holds a sub-query (SELECT)"),
    ("income > 0; DROP TABLE outcomes", "holds ';': a condition is one expression, never several statements"),
    ("income > 0 -- ; DROP TABLE outcomes\n; SELECT 1", "holds ';'"),
    ("outcomes.defaulted = 1", "names outcomes.defaulted, a column of another table: a condition may only use "
                               "columns of applications"),
    ("main.applications.gender = 'f'", "a column of another table"),
    ("load_extension('x') IS NULL", "calls load_extension(): a condition may call only lower, upper, coalesce, substr"),
    ("date(applied_on) > '2026-01-01'", "calls date()"),
    ("CAST(income AS TEXT) = '1'", "calls cast()"),
    ("income > ?", "holds the parameter ?: give parameters by name (:name, with params={'name': value})"),
    ("income >", "is not one condition"),
])
def test_a_where_that_is_more_than_a_condition_is_refused(scoring, where, words):
    message = refusal(lambda: scoring.read_table("applications", ["income"], where=where))
    assert message.startswith(f"applications: where= {where!r} ") and words in message


@pytest.mark.parametrize("where, params, expected", [
    ("month >= :first AND month < :last", {"first": "2026-02", "last": "2026-03"}, lambda a: a["month"] >= "2026-02"),
    ("income BETWEEN 30000 AND 60000 OR income IS NULL", None,
     lambda a: a["income"].between(30000, 60000) | a["income"].isna()),
    ("upper(region) IN ('NORTH', 'EAST') AND NOT purpose LIKE 'home%'", None,
     lambda a: a["region"].isin(["north", "east"]) & ~a["purpose"].str.startswith("home")),
    ("coalesce(employment_years, 0) * 2 >= :twice AND substr(month, 1, 4) = '2026'", {"twice": 10},
     lambda a: a["employment_years"].fillna(0) * 2 >= 10),
    ("applications.age <> 40 -- a comment runs nowhere", None, lambda a: a["age"] != 40),
])
def test_conditions_over_allowed_columns_still_work(scoring, month, where, params, expected):
    back = scoring.read_table("applications", ["application_id"], where=where, params=params)
    assert sorted(back["application_id"]) == sorted(month[0].loc[expected(month[0]), "application_id"])


def test_order_by_is_checked_like_columns(scoring):
    assert refusal(lambda: scoring.read_table("applications", ["income"], order_by=["gender"])) == GENDER_RULE
    assert scoring.read_table("applications", ["income"], order_by=["age", "application_id"])["income"].size == 120


# -- 2. read_sql is parsed: every table declared, every column allowed -------------------------------


def test_select_star_is_every_column_and_refused_when_one_is_not_allowed(scoring):
    message = refusal(lambda: scoring.read_sql("select * from applications"))
    assert message.startswith("applications.email may be used for ['customer_contact'] only, not for 'credit_scoring'")
    assert "applications.gender may be used for ['analytics'] only" in message
    assert "applications.gender" in refusal(lambda: scoring.read_sql("SELECT a.* FROM applications a"))


@pytest.mark.parametrize("sql", [
    "SELECT income FROM applications WHERE gender = 'female'",
    "SELECT income FROM applications WHERE application_id IN (SELECT application_id FROM applications "
    "WHERE gender = 'female')",
    "SELECT income FROM applications a WHERE EXISTS (SELECT 1 FROM outcomes o WHERE o.application_id = "
    "a.application_id AND a.gender = 'female')",
    "WITH g AS (SELECT application_id, gender AS harmless FROM applications) SELECT harmless FROM g",
    "SELECT income FROM applications UNION SELECT gender FROM applications",
    "SELECT gender, COUNT(*) AS n FROM applications GROUP BY 1",
    "SELECT o.defaulted FROM outcomes o JOIN applications a ON a.application_id = o.application_id "
    "ORDER BY a.gender",
    "SELECT AVG(CASE WHEN gender = 'female' THEN income END) AS gap FROM applications",
])
def test_a_forbidden_column_anywhere_in_a_query_is_refused(scoring, sql):
    assert refusal(lambda: scoring.read_sql(sql)) == GENDER_RULE


@pytest.mark.parametrize("sql, words", [
    ("SELECT income FROM loans", "table 'loans' is not declared in the data dictionary"),
    ("SELECT name FROM sqlite_master", "table 'sqlite_master' is not declared"),
    ("SELECT income FROM main.applications", "names a table of another schema or database"),
    ("SELECT income FROM applications; SELECT gender FROM applications", "read_sql: 2 statements"),
    ("DELETE FROM outcomes", "read_sql: DELETE is not a read"),
    ("WITH gone AS (DELETE FROM outcomes RETURNING *) SELECT * FROM gone", "holds DELETE; read_sql only reads"),
    ("PRAGMA table_info(applications)", "PRAGMA is not a read"),
    ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH is not a read"),
    ("SELECT load_extension('evil')", "load_extension() is a function the SQL parser does not know"),
    ("SELECT * FROM json_each('[1]')", "reads from a function, not from a table of the data dictionary"),
    ("SELECT shoe_size FROM applications", "Column 'shoe_size' could not be resolved"),
    ("SELEC income FROM applications", "read_sql:"),
])
def test_queries_beyond_declared_tables_and_plain_reads_are_refused(scoring, sql, words):
    assert words in refusal(lambda: scoring.read_sql(sql))


def test_queries_over_allowed_columns_still_work(scoring, month):
    apps, outcomes = month
    joined = scoring.read_sql(
        "WITH late AS (SELECT application_id FROM outcomes WHERE defaulted = :d) "
        "SELECT a.application_id, a.income, julianday(a.applied_on) AS day FROM applications a "
        "JOIN late USING (application_id) ORDER BY a.application_id", {"d": 1})
    assert list(joined["application_id"]) == sorted(outcomes.loc[outcomes["defaulted"] == 1, "application_id"])
    counts = scoring.read_sql("SELECT month, COUNT(*) AS n FROM applications GROUP BY month")
    assert counts.to_dict("records") == [{"month": "2026-02", "n": len(apps)}]
    # what runs is the statement as parsed: a comment hides nothing from the check, and runs nowhere
    hidden = scoring.read_sql("SELECT income /* , gender */ FROM applications -- , email")
    assert list(hidden.columns) == ["income"]
    assert scoring.read_sql("SELECT COUNT(*) AS n FROM predictions")["n"].iloc[0] == 1  # a run table


# -- the purpose travels with the warehouse; without one, an explicit logged override --------------


def test_a_warehouse_for_a_purpose_is_never_turned_to_another(scoring):
    assert "reads for 'credit_scoring', not for 'analytics'" in refusal(
        lambda: scoring.read_table("applications", ["gender"], purpose="analytics"))
    assert "cannot be turned to 'analytics'" in refusal(lambda: scoring.for_purpose("analytics"))
    assert "unchecked= refused: this warehouse reads for 'credit_scoring'" in refusal(
        lambda: scoring.read_sql("SELECT gender FROM applications", unchecked="just this once"))


def test_without_a_purpose_reads_need_an_explicit_logged_override(filled, dictionary, caplog):
    plain = Warehouse(filled, dictionary)
    assert refusal(lambda: plain.read_sql("SELECT income FROM applications")) == (
        "cannot read applications: this warehouse has no purpose; open it for one (Warehouse(url, dictionary, "
        "purpose=...) or .for_purpose(...)), or pass unchecked='why' to read without the purpose rule (logged)")
    assert "cannot read applications" in refusal(lambda: plain.read_table("applications", ["income"]))
    assert "needs the reason" in refusal(lambda: plain.read_sql("SELECT income FROM applications", unchecked=" "))
    heard = []
    audited = plain.for_purpose(None, on_unchecked=lambda reason, what: heard.append((reason, what)))
    with caplog.at_level(logging.WARNING, logger="runner.data.warehouse"):
        frame = audited.read_sql("SELECT gender, COUNT(*) AS n FROM applications GROUP BY gender",
                                 unchecked="fairness audit ticket 7")
    assert frame["n"].sum() == 120
    assert heard == [("fairness audit ticket 7", "SELECT gender, COUNT(*) AS n FROM applications GROUP BY gender")]
    assert "unchecked read of the warehouse" in caplog.text and "fairness audit ticket 7" in caplog.text
    assert plain.read_sql("SELECT score FROM predictions")["score"].tolist() == [0.5]  # run tables need no purpose


# -- 4. writes: only declared tables; the quarantine keeps PII to its own purposes ---------------------


def test_writes_to_undeclared_tables_are_refused(tmp_path, dictionary, month):
    store = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}", dictionary)
    message = refusal(lambda: store.write_table("quarantine", month[0].head(3)))
    assert message.startswith("table 'quarantine' is not declared in the data dictionary")
    assert "quarantine" not in store.tables()
    assert store.write_table("monitoring_metrics", pd.DataFrame({  # a run table of the runner
        "run_id": ["r"], "pipeline": ["p"], "step": ["monitor"], "as_of": ["2026-02-28"], "model_name": ["m"],
        "model_version": ["1"], "feature": ["score"], "statistic": ["psi"], "value": [0.1], "p_value": [None],
        "severity": ["ok"], "detail": [None], "computed_at": [pd.Timestamp("2026-02-28 06:00")],
        "namespace": ["production"]})) == 1
    with pytest.raises(RunnerError, match="predictions are written by a run's write_predictions"):
        store.write_table("predictions", pd.DataFrame({"entity_id": ["a"], "score": [0.5]}))
    assert store.write_predictions(pd.DataFrame({"entity_id": ["a"], "score": [0.5]}), run_id="r", model_name="m",
                                   model_version="1", as_of="2026-02-28") == 1


def test_rejected_rows_keep_their_pii_to_its_own_purposes(tmp_path, dictionary):
    apps = generate_month("2026-08", n=300)[0]  # drifted: a loan purpose the dictionary does not know
    _, rejected = dictionary.split_valid("applications", apps)
    assert len(rejected) and set(dictionary.pii_columns("rejected_applications")) == {"email", "gender"}
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    Warehouse(url, dictionary).write_table("rejected_applications", rejected.assign(ingested_by_run="r1"))
    for purpose in ("monitoring", SCORING):
        seen = Warehouse(url, dictionary, purpose=purpose).read_table("rejected_applications",
                                                                     ["application_id", "purpose", "income"])
        assert set(seen["purpose"]) == {"crypto"}
        assert "rejected_applications.email may be used for ['customer_contact'] only" in refusal(
            lambda: Warehouse(url, dictionary, purpose=purpose).read_sql("SELECT * FROM rejected_applications"))
    contact = Warehouse(url, dictionary, purpose="customer_contact")
    assert len(contact.read_table("rejected_applications", ["application_id", "email"])) == len(rejected)


# -- 3. the notebook API: the pipeline's purpose, or nothing; no dictionary, no reads or writes --------


@pytest.fixture
def kernel_of(project, dictionary, month, monkeypatch):
    """nb as a step of pipeline ``name`` sees it (under the runner: no MLflow run by hand)."""
    fill(project.home / "warehouse.db", dictionary, month)
    project.write({"scored": {"purpose": SCORING, "steps": {"a": step("ok")}},
                   "unpurposed": {"steps": {"a": step("ok")}}}, dictionary=str(DICTIONARY))
    glued: dict = {}
    monkeypatch.setattr(nb, "glue", lambda name, value: glued.__setitem__(name, value))
    monkeypatch.setattr(nb, "_recorded", {})
    monkeypatch.setenv("RUNNER_CONFIG", str(project.config))
    monkeypatch.setenv("RUNNER_RUN_ID", "20260228T060000-abcdef")

    def enter(name: str) -> dict:
        monkeypatch.setenv("RUNNER_PIPELINE", name)
        monkeypatch.setattr(nb, "_context", None)
        nb.context()
        return glued

    return enter


def test_the_notebook_api_reads_for_the_pipelines_purpose_only(kernel_of):
    kernel_of("scored")
    assert len(nb.load("applications", ["income"], where="month = :m", params={"m": "2026-02"})) == 120
    assert refusal(lambda: nb.load("applications", ["income"], where="gender = 'female'")) == GENDER_RULE
    assert refusal(lambda: nb.warehouse().read_sql("SELECT gender FROM applications")) == GENDER_RULE
    assert "cannot be turned to 'analytics'" in refusal(lambda: nb.warehouse().for_purpose("analytics"))
    assert "table 'quarantine' is not declared" in refusal(lambda: nb.save("quarantine", pd.DataFrame({"a": [1]})))
    assert "table 'quarantine' is not declared" in refusal(
        lambda: nb.warehouse().write_table("quarantine", pd.DataFrame({"a": [1]})))


def test_a_pipeline_without_a_purpose_reads_nothing_unchecked_silently(kernel_of, project):
    glued = kernel_of("unpurposed")
    expected = (f"cannot read applications: pipeline 'unpurposed' declares no purpose; add `purpose:` (one of "
                f"['analytics', 'credit_scoring', 'customer_contact', 'monitoring']) to pipelines.unpurposed in "
                f"{project.config}, so the data dictionary can check what it reads")
    assert refusal(lambda: nb.load("applications", ["income"])) == expected
    assert refusal(lambda: nb.warehouse().read_sql("SELECT income FROM applications")) == expected
    assert "declares no purpose" in refusal(lambda: nb.warehouse().read_table("applications", ["income"],
                                                                             purpose="analytics"))
    assert len(nb.load("predictions")) == 1  # the runner's run tables are for any purpose
    counted = nb.warehouse().read_sql("SELECT COUNT(*) AS n FROM applications", unchecked="row count for the README")
    assert counted["n"].iloc[0] == 120
    assert glued["unchecked_reads"] == [{"reason": "row count for the README",
                                         "read": "SELECT COUNT(*) AS n FROM applications"}]


def test_by_hand_a_notebook_of_no_pipeline_has_no_purpose(kernel_of):
    kernel_of("exploring")
    assert "no pipeline of" in refusal(lambda: nb.load("applications", ["income"]))


@pytest.mark.parametrize("problem", ["missing", "broken"])
def test_without_a_dictionary_the_notebook_api_neither_reads_nor_writes(kernel_of, project, problem):
    kernel_of("scored")
    path = project.root / "data" / "dictionnary.yaml"
    if problem == "broken":
        path.parent.mkdir()
        path.write_text("tables: [unclosed")
    config = project.config.read_text().replace(str(DICTIONARY), "data/dictionnary.yaml")
    project.config.write_text(config)
    nb._context = None
    nb.context()
    calls = {"nb.load('applications')": lambda: nb.load("applications", ["income"]),
             "nb.save('outcomes')": lambda: nb.save("outcomes", pd.DataFrame({"application_id": ["A1"]})),
             "nb.split_valid('applications')": lambda: nb.split_valid("applications", pd.DataFrame())}
    for action, call in calls.items():
        with pytest.raises(ConfigError) as raised:
            call()
        message = str(raised.value)
        if problem == "missing":
            assert message == (f"{project.config}: {action} refused: there is no data dictionary at {path}, so "
                               "nothing would be checked; create it (see the data dictionary reference, docs/reference/dictionary.md) or "
                               "fix the `dictionary:` key")
        else:
            assert message.startswith(f"{path}:") and "not valid YAML" in message


# -- the run itself ------------------------------------------------------------------------------------


def test_a_run_without_a_purpose_is_refused_its_reads_and_records_the_override(project, dictionary, month):
    notebook = new_notebook(cells=[
        new_code_cell('as_of = "2026-02-28"', metadata={"tags": ["parameters"]}),
        new_code_cell("from runner import nb\nfrom runner.errors import DataContractError\nnb.context()\n"
                      "try:\n    nb.load('applications', columns=['income'])\nexcept DataContractError as refused:\n"
                      "    nb.glue('refused', str(refused))"),
        new_code_cell("n = nb.warehouse().read_sql('SELECT COUNT(*) AS n FROM applications', "
                      "unchecked='volume check')['n'].iloc[0]\nnb.glue('rows', int(n))"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = project.root / "reads.ipynb"
    nbformat.write(notebook, str(path))
    project.write({"unpurposed": {"steps": {"reads": {"notebook": str(path)}}}}, dictionary=str(DICTIONARY))
    fill(project.home / "warehouse.db", dictionary, month)
    validated = project.cli("validate")
    assert validated.exit_code == 2 and "pipeline 'unpurposed' declares no purpose; add `purpose:`" in validated.stderr
    assert project.cli("run", "unpurposed").exit_code == 0
    record = RunStore(load_config(project.config).stores.runs).list("unpurposed")[0]
    scraps = record.steps["reads"].scraps
    assert scraps["refused"].startswith("cannot read applications: pipeline 'unpurposed' declares no purpose; add "
                                        "`purpose:`")
    assert scraps["rows"] == 120
    assert scraps["unchecked_reads"] == [{"reason": "volume check", "read": "SELECT COUNT(*) AS n FROM applications"}]
