"""Monitoring reads the pull traffic (issue 15, item 4): the monitor template with ``source = "requests"`` judges
what `runner serve` answered (the warehouse's `requests` table) against the version's reference profile.

A project of its own (a `flats` table, a `letting` purpose, a `quarter` category, model `rent_risk`) trains a
model through `runner run`; request rows are written with `Warehouse.write_requests`, as the server's request
log does; the monitor step is made by `runner new monitor` from the template and executed by `runner run`.
The records asserted on are the system's: `monitoring_metrics`, the run record's scraps and statuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import write_notebook
import sqlalchemy as sa
import yaml

from runner.monitoring.usage import from_api, request_findings, request_usage

DICTIONARY = {
    "purposes": {"letting": "Letting flats: the rent arrears model."},
    "tables": {"flats": {"description": "Flats let, one row each.", "owner": "lettings", "key": ["flat_id"],
                         "columns": {
        "flat_id": {"type": "string", "description": "id", "nullable": False, "pii": False,
                    "allowed_purposes": ["any"]},
        "rooms": {"type": "int", "description": "rooms", "nullable": False, "pii": False, "min": 1, "max": 12,
                  "allowed_purposes": ["any"]},
        "rent": {"type": "float", "description": "monthly rent", "nullable": True, "pii": False, "min": 0,
                 "allowed_purposes": ["any"]},
        "quarter": {"type": "category", "description": "city quarter", "levels": ["old_town", "harbour", "hills"],
                    "nullable": False, "pii": False, "allowed_purposes": ["any"]},
        "month": {"type": "string", "description": "YYYY-MM", "nullable": False, "pii": False,
                  "allowed_purposes": ["any"]},
        "arrears": {"type": "int", "description": "fell into arrears", "nullable": True, "pii": False, "min": 0,
                    "max": 1, "allowed_purposes": ["any"]},
    }}},
}
TRAIN = [
    ("parameters", "rows = 600"),
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression\n"
    "from sklearn.compose import make_column_transformer\nfrom sklearn.pipeline import make_pipeline\n"
    "from sklearn.preprocessing import OneHotEncoder\nfrom runner import nb",
    "def flats(seed):\n    rng = np.random.default_rng(seed)\n"
    "    X = pd.DataFrame({'rooms': rng.integers(1, 5, rows), 'rent': rng.gamma(4.0, 200.0, rows),\n"
    "                      'quarter': rng.choice(['old_town', 'harbour', 'hills'], rows)})\n"
    "    y = ((X['rent'] > 900).astype(int) ^ (rng.random(rows) < 0.1)).astype(int)\n    return X, y",
    "X, y = flats(1)\nmodel = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown='ignore'), "
    "['quarter']), remainder='passthrough'), LogisticRegression(max_iter=500)).fit(X, y)",
    "nb.save_model(model, 'rent_risk', X, flats(2), reference=X, table='flats')",
]


def cli(*args: str, env: dict, ok: bool = True):
    from click.testing import CliRunner

    from runner.cli import main

    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, f"runner {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


class Lettings:
    def __init__(self, root: Path):
        self.root, self.home, self.config = root, root / ".runner", str(root / "runner.yaml")
        self.env = {"RUNNER_HOME": str(self.home), "RUNNER_USER": "ci", "RUNNER_CONFIG": None,
                    "MLFLOW_TRACKING_URI": None, "MLFLOW_RUN_ID": None, "MLFLOW_EXPERIMENT_ID": None}

    def cli(self, command: str, *args: str, ok: bool = True):
        return cli(command, "--config", self.config, *args, env=self.env, ok=ok)

    def run(self, pipeline: str, *args: str, ok: bool = True) -> dict:
        done = self.cli("run", pipeline, *args, ok=ok)
        return json.loads(self.cli("show", done.stdout.split()[1], "--json").stdout)

    def sql(self, query: str) -> pd.DataFrame:
        engine = sa.create_engine(f"sqlite:///{self.home / 'warehouse.db'}")
        with engine.connect() as conn:
            return pd.read_sql(sa.text(query), conn)

    def write_requests(self, frame: pd.DataFrame) -> int:
        from runner.data.warehouse import Warehouse

        return Warehouse(f"sqlite:///{self.home / 'warehouse.db'}").write_requests(frame)


def requests_of(month: str, rng, *, count: int, rows: int, version: str = "1", rooms=(1, 5), rejected: int = 0,
                errors: int = 0, slow: float | None = None) -> pd.DataFrame:
    """``count`` requests of ``rows`` rows each in ``month`` as the server logs them; the first ``rejected`` and the
    next ``errors`` requests were refused (one row each); ``slow``: the last request took that many ms."""
    records = []
    start = pd.Timestamp(f"{month}-01")
    for number in range(count):
        base = {"request_id": f"{month}-{number}", "received_at": start + pd.Timedelta(hours=number),
                "model_name": "rent_risk", "model_version": version, "alias": "champion",
                "latency_ms": float(slow if slow and number == count - 1 else rng.uniform(2, 20)), "flags": None}
        if number < rejected + errors:
            kind = "rejected" if number < rejected else "error"
            records.append({**base, "row": 0, "inputs": '{"dataframe_split": "not a frame"', "score": None,
                            "status": kind, "error": "flats.rooms: 40 is above the maximum 12"})
            continue
        for row in range(rows):
            inputs = {"rooms": int(rng.integers(*rooms)), "rent": float(rng.gamma(4.0, 200.0)),
                      "quarter": str(rng.choice(["old_town", "harbour", "hills"]))}
            records.append({**base, "row": row, "inputs": json.dumps(inputs), "score": float(rng.uniform(0.1, 0.6)),
                            "status": "ok", "error": None})
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def lettings(tmp_path_factory, migrated_mlflow_db) -> Lettings:
    import shutil

    root = tmp_path_factory.mktemp("lettings")
    (root / ".runner").mkdir()
    shutil.copy(migrated_mlflow_db, root / ".runner" / "mlflow.db")
    (root / "data").mkdir()
    (root / "data" / "dictionary.yaml").write_text(yaml.safe_dump(DICTIONARY, sort_keys=False))
    write_notebook(root / "train.ipynb", TRAIN)
    (root / "runner.yaml").write_text(yaml.safe_dump({
        "pipelines": {"rent_train": {"purpose": "letting", "steps": {"train": {"notebook": "train.ipynb"}}}},
    }, sort_keys=False))
    project = Lettings(root)
    assert project.run("rent_train")["status"] == "succeeded"
    # the monitor step, made from the template by `runner new`, in a pipeline of its own: no score step
    project.cli("new", "monitor", "watch", "--pipeline", "rent_api", "--purpose", "letting", "--table", "flats",
                "--model", "rent_risk")
    rng = np.random.default_rng(7)
    project.write_requests(pd.concat([
        # February: rooms far above training's 1-4, 6 of 40 requests refused, one request of 3 s
        requests_of("2026-02", rng, count=40, rows=10, rooms=(7, 12), rejected=4, errors=2, slow=3000.0),
        # requests of January and April stay out of the months judged below
        requests_of("2026-01", rng, count=5, rows=2), requests_of("2026-04", rng, count=5, rows=2),
    ], ignore_index=True))
    return project


def test_request_usage_counts_requests_not_rows_and_judges_error_rate_and_latency():
    rows = pd.DataFrame({"request_id": ["a", "a", "a", "b", "c", "d"], "row": [0, 1, 2, 0, 0, 0],
                         "status": ["ok", "ok", "ok", "rejected", "error", "ok"],
                         "latency_ms": [30.0, 30.0, 30.0, 1.0, 900.0, 10.0], "flags": [None, "new level", None, None,
                                                                                      None, None]})
    usage = request_usage(rows)
    assert usage | {} == {**usage, "requests": 4, "rows": 4, "rejected": 1, "errors": 1, "error_rate": 0.5,
                          "rejected_rate": 0.25, "failed_rate": 0.25, "flagged_rows": 1}
    assert usage["latency_p50_ms"] == pytest.approx(np.percentile([30, 1, 900, 10], 50))  # one latency per request
    found = request_findings(usage, window="2026-02").set_index("statistic")
    assert found.loc["error_rate", "severity"] == "alert" and found.loc["error_rate", "feature"] == "api"
    assert "1 rejected (400/422), 1 failed (500)" in found.loc["error_rate", "detail"]
    assert found.loc["latency_p99_ms", "severity"] == "warn"  # ~873 ms: above 500, below 2000
    assert set(found.loc[["requests", "rejected_rate", "failed_rate", "latency_p50_ms"], "severity"]) == {"ok"}
    nothing = request_findings(request_usage(rows.iloc[:0]), window="2026-03")
    assert nothing[["statistic", "value", "severity"]].values.tolist() == [["requests", 0.0, "warn"]]
    assert "no requests to the API in 2026-03" in nothing["detail"].iloc[0]
    assert list(from_api(found.reset_index().assign(feature="rooms"))["feature"].unique()) == ["api:rooms"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_monitor_template_judges_the_api_traffic_of_its_month(lettings):
    made = nbformat.read(lettings.root / "notebooks" / "rent_api" / "watch.ipynb", 4)
    assert made.metadata["runner"]["template"] == "monitor"
    record = lettings.run("rent_api", "--as-of", "2026-02-28", "-p", "watch.source=requests")
    step = record["steps"]["watch"]
    assert record["status"] == step["status"] == "succeeded"
    scraps = step["scraps"]  # glued by the executed notebook: it ran, not only parsed
    assert scraps["api_requests"] == 40 and scraps["rows_monitored"] == scraps["scores_monitored"] == 34 * 10
    assert scraps["api_error_rate"] == pytest.approx(6 / 40) and scraps["api_latency_p99_ms"] > 500
    assert scraps["status"] == "alert" and "api:rooms" in scraps["drifted_features"]
    assert any(reason.startswith("alert: api: ") and "4 rejected (400/422), 2 failed (500)" in reason
               for reason in scraps["reasons"])

    metrics = lettings.sql(f"SELECT * FROM monitoring_metrics WHERE run_id = '{record['run_id']}'")
    assert set(metrics[["pipeline", "step", "model_name", "model_version"]].itertuples(index=False, name=None)) == {
        ("rent_api", "watch", "rent_risk", "1")}
    api = metrics[metrics["feature"] == "api"].set_index("statistic")
    assert api.loc["requests", "value"] == 40 and api.loc["error_rate", "severity"] == "alert"
    assert api.loc["rejected_rate", "value"] == pytest.approx(4 / 40)
    assert api.loc["failed_rate", "value"] == pytest.approx(2 / 40)
    assert api.loc["latency_p99_ms", "severity"] in ("warn", "alert")
    assert api.loc["latency_p50_ms", "value"] < 25
    rooms = metrics[metrics["feature"] == "api:rooms"].set_index("statistic")
    assert rooms.loc["psi", "severity"] == "alert" and rooms.loc["out_of_range", "severity"] == "ok"
    assert {"api:rent", "api:quarter", "api:score"} <= set(metrics["feature"])
    assert not set(metrics["feature"]) & {"rooms", "usage", "score"}, "requests only: nothing of a batch"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_month_without_requests_says_so(lettings):
    record = lettings.run("rent_api", "--as-of", "2026-03-31", "-p", "watch.source=requests")
    step = record["steps"]["watch"]
    assert record["status"] == step["status"] == "succeeded"
    assert step["scraps"]["api_requests"] == 0 and step["scraps"]["rows_monitored"] == 0
    assert step["scraps"]["status"] == "warn"
    assert step["scraps"]["reasons"] == [
        "warn: api: no requests to the API in 2026-03: nothing to judge; if `runner serve` ran, its /health says "
        "whether the request log wrote (requests 0)"]
    metrics = lettings.sql(f"SELECT feature, statistic, value, severity FROM monitoring_metrics "
                           f"WHERE run_id = '{record['run_id']}'")
    assert metrics.values.tolist() == [["api", "requests", 0.0, "warn"]]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_monitoring_report_covers_the_batch_and_the_api(lettings):
    """source = "both": the pipeline's batch scores (a score step made by `runner new score`) and the API's
    traffic of the same month are judged in one run, each against the version's reference profile."""
    from runner.data import DataDictionary, Warehouse

    rng = np.random.default_rng(11)
    batch = pd.DataFrame({"flat_id": [f"f{n}" for n in range(120)], "rooms": rng.integers(1, 5, 120),
                          "rent": rng.gamma(4.0, 200.0, 120), "quarter": rng.choice(["old_town", "harbour"], 120),
                          "month": "2026-02", "arrears": None})
    dictionary = DataDictionary.load(lettings.root / "data" / "dictionary.yaml")
    Warehouse(f"sqlite:///{lettings.home / 'warehouse.db'}", dictionary).write_table("flats", batch)
    for kind, name in (("score", "score"), ("monitor", "watch")):
        lettings.cli("new", kind, name, "--pipeline", "rent_both", "--purpose", "letting", "--table", "flats",
                     "--model", "rent_risk")

    record = lettings.run("rent_both", "--as-of", "2026-02-28", "-p", "watch.source=both")
    scored, watch = record["steps"]["score"], record["steps"]["watch"]
    assert record["status"] == scored["status"] == watch["status"] == "succeeded"
    assert watch["scraps"]["rows_monitored"] == 120 + 34 * 10  # the month's batch and the API's answered rows
    assert watch["scraps"]["scores_monitored"] == 120 + 34 * 10
    assert watch["scraps"]["api_requests"] == 40 and watch["scraps"]["status"] == "alert"
    assert "api:rooms" in watch["scraps"]["drifted_features"]
    assert "rooms" not in watch["scraps"]["drifted_features"]

    metrics = lettings.sql(f"SELECT feature, statistic, value, severity FROM monitoring_metrics "
                           f"WHERE run_id = '{record['run_id']}'")
    psi = metrics[metrics["statistic"] == "psi"].set_index("feature")["severity"]
    assert psi["rooms"] == "ok" and psi["api:rooms"] == "alert"  # the batch is like training, the API is not
    assert {"score", "usage", "api", "api:score"} <= set(metrics["feature"])
    assert lettings.sql(f"SELECT count(*) AS n FROM predictions WHERE run_id = '{record['run_id']}'")["n"][0] == 120
