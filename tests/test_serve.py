"""`runner serve` (issue 15): a real server process on 127.0.0.1, real HTTP requests, a model a pipeline of this
test registered, its project's own names (a `members` table, a `retention` purpose, a `plan` category).

The records asserted on are the system's: the warehouse's `requests` table, MLflow's registry, the server's
`/health`, `/version` and answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import write_notebook

DICTIONARY = {
    "purposes": {"retention": "Keeping members: the churn model.", "marketing": "Offers to members."},
    "tables": {"members": {"description": "Members, one row each.", "owner": "club", "columns": {
        "member_id": {"type": "string", "description": "id", "nullable": False, "pii": False,
                      "allowed_purposes": ["any"]},
        "visits": {"type": "int", "description": "visits last month", "nullable": False, "pii": False, "min": 0,
                   "max": 100, "allowed_purposes": ["any"]},
        "spend": {"type": "float", "description": "spend last month", "nullable": True, "pii": False, "min": 0,
                  "allowed_purposes": ["any"]},
        "plan": {"type": "category", "description": "membership plan", "levels": ["basic", "plus", "family", "gold"],
                 "nullable": False, "pii": False, "allowed_purposes": ["any"]},
        "phone": {"type": "string", "description": "phone number", "nullable": True, "pii": True,
                  "allowed_purposes": ["marketing"], "rule": "collected for offers only"},
        "left": {"type": "int", "description": "left within a month", "nullable": True, "pii": False, "min": 0,
                 "max": 1, "allowed_purposes": ["any"]},
    }}},
}
TRAIN = [
    ("parameters", 'seed = 0\nrows = 400'),
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression\nfrom runner import nb",
    "def members(seed):\n    rng = np.random.default_rng(seed)\n"
    "    X = pd.DataFrame({'visits': rng.integers(0, 30, rows), 'spend': rng.gamma(2.0, 20.0, rows),\n"
    "                      'plan': rng.choice(['basic', 'plus', 'family'], rows)})\n"
    "    y = ((X['visits'] < 8).astype(int) ^ (rng.random(rows) < 0.1)).astype(int)\n    return X, y",
    "X, y = members(seed)\nholdout = members(seed + 1)\n"
    "from sklearn.compose import make_column_transformer\nfrom sklearn.pipeline import make_pipeline\n"
    "from sklearn.preprocessing import OneHotEncoder\n"
    "model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown='ignore'), ['plan']),\n"
    "                                              remainder='passthrough'), LogisticRegression(max_iter=500))\n"
    "model.fit(X, y)",
    "decision = nb.save_model(model, 'retain', X, holdout, reference=X, table='members')",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, migrated_mlflow_db):
    """A project whose `train` pipeline (purpose retention) registered `retain` v1 (champion) and v2 (challenger
    or champion, whatever the registry decided); the stores in the project's .runner."""
    import shutil

    root = tmp_path_factory.mktemp("club")
    home = root / ".runner"
    home.mkdir()
    shutil.copy(migrated_mlflow_db, home / "mlflow.db")
    (root / "data").mkdir()
    (root / "data" / "dictionary.yaml").write_text(yaml.safe_dump(DICTIONARY, sort_keys=False))
    write_notebook(root / "train.ipynb", TRAIN)
    (root / "runner.yaml").write_text(yaml.safe_dump({
        "models": {"retain": {"metric": "auc", "margin": 0.5}},  # v2 stays challenger: the test promotes it
        "pipelines": {"train": {"purpose": "retention", "steps": {"train": {"notebook": "train.ipynb"}}}},
    }, sort_keys=False))
    env = {**os.environ, "RUNNER_HOME": str(home), "RUNNER_USER": "ci"}
    for name in ("RUNNER_CONFIG", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    script = str(Path(sys.executable).with_name("runner"))
    for seed in (0, 5):
        done = subprocess.run([script, "run", "train", "-p", f"train.seed={seed}", "--config",
                               str(root / "runner.yaml")], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    return root, env


class Server:
    def __init__(self, root: Path, env: dict, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"serve-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(Path(sys.executable).with_name("runner")), "serve", "retain",
                                          "--port", str(self.port), "--config", str(root / "runner.yaml"), *args],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(trained):
    root, env = trained
    running = Server(root, env, "--refresh", "1s")
    yield running
    running.stop()


def requests_rows(root: Path, where: str = "1=1") -> list[dict]:
    with sqlite3.connect(root / ".runner" / "warehouse.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(f"SELECT * FROM requests WHERE {where} ORDER BY received_at, row")]


def logged(root: Path, request_id: str, rows: int, timeout: float = 15) -> list[dict]:
    """The request's rows once the background writer wrote them."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(sqlite3.OperationalError):
            found = requests_rows(root, f"request_id = '{request_id}'")
            if len(found) >= rows:
                return found
        assert time.monotonic() < deadline, f"request {request_id} not logged"
        time.sleep(0.2)


ROWS = [{"visits": 3, "spend": 12.5, "plan": "basic"}, {"visits": 25, "spend": 80.0, "plan": "family"}]


@pytest.mark.slow
def test_every_mlflow_format_is_scored_by_the_champion_and_logged(trained, server, monkeypatch):
    root, _ = trained
    from mlflow import MlflowClient
    import mlflow

    tracking = f"sqlite:///{root / '.runner' / 'mlflow.db'}"
    champion = MlflowClient(tracking).get_model_version_by_alias("retain", "champion")
    version = str(champion.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)  # not mlflow.set_tracking_uri: it outlives the test
    model = mlflow.pyfunc.load_model(f"models:/retain/{version}")
    import pandas as pd

    expected = [pytest.approx(float(x)) for x in model.predict(pd.DataFrame(ROWS))]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": list(ROWS[0]), "data": [list(r.values()) for r in ROWS]}},
        "dataframe_records": {"dataframe_records": ROWS},
        "instances": {"instances": ROWS},
        "inputs": {"inputs": {name: [r[name] for r in ROWS] for name in ROWS[0]}},
    }
    for kind, body in bodies.items():
        answer = httpx.post(f"{server.url}/invocations", json=body, headers={"X-Request-ID": f"req-{kind}"})
        assert answer.status_code == 200, (kind, answer.text)
        data = answer.json()
        assert data["predictions"] == expected, kind
        assert data["model"] == {"name": "retain", "version": version, "alias": "champion"}
        assert answer.headers["x-request-id"] == data["request_id"] == f"req-{kind}"
        rows = logged(root, f"req-{kind}", 2)
        assert [row["status"] for row in rows] == ["ok", "ok"]
        assert [row["score"] for row in rows] == expected
        assert json.loads(rows[0]["inputs"]) == ROWS[0] and rows[0]["model_version"] == version
    shown = httpx.get(f"{server.url}/version").json()
    assert shown["version"] == version and shown["training_data_digest"] == champion.tags["training_data_digest"]
    assert shown["inputs"] == ["visits", "spend", "plan"]


@pytest.mark.slow
def test_bad_requests_get_one_readable_message_per_problem_and_are_logged(trained, server):
    root, _ = trained
    cases = {
        "missing": ([{"visits": 3, "plan": "basic"}], 422, ["column 'spend' is missing"]),
        "range": ([{"visits": -2, "spend": 1.0, "plan": "basic"}, {"visits": 3, "spend": 1.0, "plan": "platinum"}],
                  422, ["row 0: visits: -2 is below the minimum 0",
                        "row 1: plan: 'platinum' is not one of basic, plus, family, gold"]),
        "purpose": ([{**ROWS[0], "phone": "+31 6 1234"}], 422,
                    ["column 'phone' may be used for ['marketing'] only, not for 'retention' (collected for offers "
                     "only); leave it out of the request"]),
        "unknown": ([{**ROWS[0], "shoe_size": 44}], 422, ["column 'shoe_size' is not an input of model retain"]),
    }
    for name, (rows, status, expected) in cases.items():
        answer = httpx.post(f"{server.url}/invocations", json={"dataframe_records": rows},
                            headers={"X-Request-ID": f"bad-{name}"})
        assert answer.status_code == status, (name, answer.text)
        problems = answer.json()["problems"]
        for text in expected:
            assert any(problem.startswith(text) for problem in problems), (name, problems)
        assert "Traceback" not in answer.text
        [row] = logged(root, f"bad-{name}", 1)
        assert row["status"] == "rejected" and row["score"] is None and expected[0] in row["error"]
    answer = httpx.post(f"{server.url}/invocations", content=b"{not json", headers={"X-Request-ID": "bad-json"})
    assert answer.status_code == 400 and answer.json()["error"].startswith("the body is not JSON")


@pytest.mark.slow
def test_a_level_the_dictionary_allows_but_training_never_saw_is_scored_and_flagged(trained, server):
    root, _ = trained
    answer = httpx.post(f"{server.url}/invocations", json={"dataframe_records": [ROWS[0], {**ROWS[1], "plan": "gold"}]},
                        headers={"X-Request-ID": "new-level"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["flags"] == {"1": ["plan: new level 'gold' (not seen in training)"]}
    first, second = logged(root, "new-level", 2)
    assert first["flags"] is None and second["flags"] == "plan: new level 'gold' (not seen in training)"


@pytest.mark.slow
def test_a_request_id_sent_twice_counts_twice_and_one_that_is_not_an_id_is_replaced(trained, server):
    """A caller that reuses its X-Request-ID makes two requests, not one of four rows; a header that is not an
    id (5,000 characters, quotes and spaces) is not stored: the request gets an id of the server's, returned."""
    from runner.data.warehouse import Warehouse
    from runner.monitoring.usage import request_usage

    root, _ = trained
    for _ in range(2):
        answer = httpx.post(f"{server.url}/invocations", json={"dataframe_records": ROWS},
                            headers={"X-Request-ID": "again-7f3a"})
        assert answer.status_code == 200 and answer.headers["x-request-id"] == "again-7f3a"
    logged(root, "again-7f3a", 4)
    usage = request_usage(Warehouse(f"sqlite:///{root / '.runner' / 'warehouse.db'}").read_requests("retain").pipe(
        lambda rows: rows[rows["request_id"] == "again-7f3a"]))
    assert usage["requests"] == 2 and usage["rows"] == 4
    for hostile in ("x" * 5000, 'it\'s "quoted" -- ;', "has spaces in it", "ünïcödé-id"):
        answer = httpx.post(f"{server.url}/invocations", json={"dataframe_records": ROWS[:1]},
                            headers={"X-Request-ID": hostile.encode()})
        given = answer.headers["x-request-id"]
        assert answer.status_code == 200 and given == answer.json()["request_id"]
        assert len(given) == 32 and int(given, 16) >= 0
        assert [row["status"] for row in logged(root, given, 1)] == ["ok"]
    assert not requests_rows(root, "length(request_id) > 128")


@pytest.mark.slow
def test_the_alias_moving_mid_traffic_switches_the_version_without_dropping_a_request(trained, server):
    """Requests keep coming while `runner promote` moves the champion to v2: every one is answered 200, the
    answers go from v1 to v2 within the refresh interval and stay there, and the switch is in the server's log."""
    root, env = trained
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / '.runner' / 'mlflow.db'}")
    before = str(client.get_model_version_by_alias("retain", "champion").version)
    other = "2" if before == "1" else "1"
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                answer = http.post("/invocations", json={"dataframe_records": ROWS[:1]})
                answers.append((answer.status_code, answer.json().get("model", {}).get("version")))

    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(traffic) for _ in range(2)]
        time.sleep(1.5)
        promoted = subprocess.run([str(Path(sys.executable).with_name("runner")), "promote", "retain", other,
                                   "--reason", "test: the server follows the alias", "--config",
                                   str(root / "runner.yaml")], env=env, capture_output=True, text=True)
        assert promoted.returncode == 0, promoted.stderr
        moved = time.monotonic()
        while not answers or answers[-1][1] != other:
            assert time.monotonic() - moved < 20, "the server did not follow the alias"
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for future in running:
            future.result()
    assert {status for status, _ in answers} == {200}
    versions = [version for _, version in answers]
    switch = versions.index(other)
    assert set(versions[:switch]) == {before} and set(versions[switch:]) == {other}  # one switch, never back
    assert f"now serving v{other} (was v{before})" in server.log.read_text()
    assert httpx.get(f"{server.url}/version").json()["version"] == other


@pytest.mark.slow
def test_with_the_warehouse_locked_requests_are_answered_kept_and_written_once_it_is_free(trained, monkeypatch):
    """Another connection holds the warehouse's write lock: requests are answered, /health says the request log
    is failing and holds them; once the lock is released every one of them is written, none lost."""
    root, env = trained
    env = {**env, "RUNNER_WAREHOUSE_BUSY_TIMEOUT": "0.2s", "RUNNER_WAREHOUSE_WRITE_ATTEMPTS": "1"}
    running = Server(root, env, "--refresh", "60s")
    try:
        warm = httpx.post(f"{running.url}/invocations", json={"dataframe_records": ROWS},
                          headers={"X-Request-ID": "before-lock"})
        assert warm.status_code == 200
        logged(root, "before-lock", 2)  # the table exists
        holder = sqlite3.connect(root / ".runner" / "warehouse.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for n in range(5):
                answer = httpx.post(f"{running.url}/invocations", json={"dataframe_records": ROWS},
                                    headers={"X-Request-ID": f"locked-{n}"})
                assert answer.status_code == 200
            deadline = time.monotonic() + 20
            while not (health := httpx.get(f"{running.url}/health").json())["request_log"]["failing"]:
                assert time.monotonic() < deadline, health
                time.sleep(0.2)
            assert health["status"] == "degraded" and health["request_log"]["queued"] == 10
            assert "locked" in health["request_log"]["last_error"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for n in range(5):
            logged(root, f"locked-{n}", 2, timeout=30)
        health = httpx.get(f"{running.url}/health").json()
        assert health["status"] == "ok" and health["request_log"]["queued"] == 0
        assert health["request_log"]["dropped"] == health["request_log"]["lost"] == 0
    finally:
        running.stop()


@pytest.mark.slow
def test_sigterm_answers_the_requests_in_flight_and_writes_the_log_before_exiting(trained):
    root, env = trained
    running = Server(root, env, "--refresh", "60s")
    batch = [ROWS[n % 2] for n in range(2000)]  # a request that takes a moment

    def send(n: int) -> int:
        return httpx.post(f"{running.url}/invocations", json={"dataframe_records": batch},
                          headers={"X-Request-ID": f"flight-{n}"}, timeout=60).status_code

    with ThreadPoolExecutor(4) as pool:
        sent = [pool.submit(send, n) for n in range(4)]
        # Long enough for four 2,000-row bodies to reach the server on a loaded machine: a request still being
        # uploaded when SIGTERM comes is one uvicorn never started, and it drops the connection (seen at 0.3 s).
        time.sleep(1.0)
        code = running.stop()
        statuses = [future.result() for future in sent]
    # uvicorn ends by the signal it was stopped with, once it stopped gracefully (systemd counts that as clean)
    assert statuses == [200] * 4 and code == -signal.SIGTERM
    for n in range(4):
        assert len(requests_rows(root, f"request_id = 'flight-{n}'")) == 2000  # written before the process ended
    assert "request log flushed" in running.log.read_text()


def test_a_model_without_the_alias_or_a_malformed_name_is_one_line_before_listening(project):
    from conftest import step

    project.write({"p": {"steps": {"a": step("ok")}}})
    done = project.cli("serve", "nosuch")
    assert done.exit_code == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no version of model 'nosuch' holds the alias 'champion'; `runner models nosuch` lists the versions, "
        "`runner promote` sets the alias")
    assert "on http://" not in done.stderr  # it never said it was listening
    done = project.cli("serve", "retain@")
    assert done.exit_code == 2 and "MODEL must be NAME or NAME@ALIAS" in done.stderr
