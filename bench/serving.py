"""Serving: `runner serve` (request log on) against `mlflow models serve` on the same registered model version.

The script builds a throwaway project in a temp dir (a data dictionary, a training notebook calling
``nb.save_model``, one ``runner run`` registering ``retain`` v1 as champion), then serves that same version two
ways, each in its own process on 127.0.0.1 and a free port, one after the other:

* ``runner``: ``runner serve retain`` (defaults: 1 worker, request log on, ``--sample 1.0``);
* ``mlflow``: ``mlflow models serve -m models:/retain/<version> --env-manager local -w 1`` (MLFLOW_TRACKING_URI
  the project's sqlite tracking database). Both are FastAPI on uvicorn with one worker process.

The load is closed-loop: ``--clients`` threads (default 4), each with its own keep-alive ``httpx.Client``, send
the next request as soon as the last is answered, for ``--duration`` seconds per payload. The bodies are encoded
once beforehand, so the client's per-request work is the same for both servers; the client runs in this
process on the same 2 cores, so it takes CPU from both servers alike (its CPU share is printed). Two payloads,
both ``dataframe_split``: one row and 100 rows. Before measuring, each server gets ``--warmup`` requests of each
payload. Measured, client-side: requests/s, rows/s, latency p50 and p99 of each request.

Each round runs both servers, alternating which goes first, so drift in machine load hits both; reported are
the medians over ``--repeat`` rounds and the median of the per-round ratios runner/mlflow. After each runner
round the server is stopped with SIGTERM (it flushes its request log) and the rows the round added to the
warehouse's ``requests`` table are counted with sqlite3: they must equal the rows the round sent (warm-up
included). Goals (issue 15): runner's throughput >= mlflow's with logging on; runner's single-row p99 < 50 ms.

    .venv/bin/python bench/serving.py [--repeat 3] [--duration 10] [--clients 4]

Prints a table and writes bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import nbformat
import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "retain"
DICTIONARY = {
    "purposes": {"retention": "Keeping members: the churn model."},
    "tables": {"members": {"description": "Members, one row each.", "owner": "club", "columns": {
        "member_id": {"type": "string", "description": "id", "nullable": False, "pii": False,
                      "allowed_purposes": ["any"]},
        "visits": {"type": "int", "description": "visits last month", "nullable": False, "pii": False, "min": 0,
                   "max": 100, "allowed_purposes": ["any"]},
        "spend": {"type": "float", "description": "spend last month", "nullable": True, "pii": False, "min": 0,
                  "allowed_purposes": ["any"]},
        "plan": {"type": "category", "description": "membership plan", "levels": ["basic", "plus", "family", "gold"],
                 "nullable": False, "pii": False, "allowed_purposes": ["any"]},
        "left": {"type": "int", "description": "left within a month", "nullable": True, "pii": False, "min": 0,
                 "max": 1, "allowed_purposes": ["any"]},
    }}},
}
TRAIN = [
    ("parameters", "seed = 0\nrows = 400"),
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
SERVERS = ("runner", "mlflow")


# -- the project ---------------------------------------------------------------------------------------------


def notebook(path: Path, cells) -> None:
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in cells:
        code = nbformat.v4.new_code_cell(cell[1] if isinstance(cell, tuple) else cell)
        if isinstance(cell, tuple):
            code.metadata["tags"] = [cell[0]]
        book.cells.append(code)
    nbformat.write(book, path)


def build_project(root: Path) -> tuple[dict[str, str], str]:
    """The project's environment for `runner`, and the registered champion version of ``retain``."""
    home = root / ".runner"
    home.mkdir()
    (root / "data").mkdir()
    (root / "data" / "dictionary.yaml").write_text(yaml.safe_dump(DICTIONARY, sort_keys=False))
    notebook(root / "train.ipynb", TRAIN)
    (root / "runner.yaml").write_text(yaml.safe_dump({
        "models": {MODEL: {"metric": "auc"}},
        "pipelines": {"train": {"purpose": "retention", "steps": {"train": {"notebook": "train.ipynb"}}}},
    }, sort_keys=False))
    env = {**os.environ, "RUNNER_HOME": str(home), "RUNNER_USER": "bench",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for name in ("RUNNER_CONFIG", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                 "RUNNER_WAREHOUSE_URL"):
        env.pop(name, None)
    done = subprocess.run([str(BIN / "runner"), "run", "train", "--config", str(root / "runner.yaml")], env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        sys.exit(f"runner run train failed:\n{done.stdout}\n{done.stderr}")
    from mlflow import MlflowClient

    version = MlflowClient(tracking_uri(root)).get_model_version_by_alias(MODEL, "champion").version
    return env, str(version)


def tracking_uri(root: Path) -> str:
    return f"sqlite:///{root / '.runner' / 'mlflow.db'}"


def warehouse_rows(root: Path) -> int:
    path = root / ".runner" / "warehouse.db"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'requests'").fetchone():
            return 0
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]


# -- the servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One server process (its own session, so SIGTERM reaches uvicorn under `mlflow models serve` too)."""

    def __init__(self, kind: str, root: Path, env: dict[str, str], version: str):
        self.kind, self.port = kind, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{kind}-{self.port}.log"
        if kind == "runner":
            command = [str(BIN / "runner"), "serve", MODEL, "--port", str(self.port), "--config",
                       str(root / "runner.yaml")]
        else:
            command = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/{version}", "--env-manager",
                       "local", "-p", str(self.port), "--host", "127.0.0.1", "-w", "1"]
            env = {**env, "MLFLOW_TRACKING_URI": tracking_uri(root)}
        started = time.perf_counter()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"{kind} server did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.startup_s = time.perf_counter() - started

    def cpu_s(self) -> float:
        """CPU seconds of the server's processes so far (mlflow's CLI and its uvicorn child)."""
        total = 0.0
        with contextlib.suppress(psutil.Error):
            main = psutil.Process(self.proc.pid)
            for proc in [main, *main.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


# -- the load ------------------------------------------------------------------------------------------------


def body(rows: int, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    plans = ["basic", "plus", "family"]
    data = [[int(rng.integers(0, 30)), round(float(rng.gamma(2.0, 20.0)), 2), plans[int(rng.integers(0, 3))]]
            for _ in range(rows)]
    return json.dumps({"dataframe_split": {"columns": ["visits", "spend", "plan"], "data": data}}).encode()


HEADERS = {"content-type": "application/json"}


def load(url: str, payload: bytes, clients: int, duration: float) -> dict:
    """Closed-loop load for ``duration`` seconds: latencies (s) of answered requests, failures, wall time."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    start_gate = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30, headers=HEADERS) as http:
            http.get("/ping")  # the connection is open before the clock starts
            start_gate.wait()
            mine = latencies[n]
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                answer = http.post("/invocations", content=payload)
                took = time.perf_counter() - sent
                if answer.status_code == 200:
                    mine.append(took)
                else:
                    failures[n] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + duration
    start_gate.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"latencies": [x for mine in latencies for x in mine], "failures": sum(failures), "wall_s": wall,
            "client_cpu_s": time.process_time() - cpu}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(server: Server, payloads: dict[str, tuple[int, bytes]], args) -> tuple[dict, int]:
    """Warm-up, then the load of each payload: per payload the figures; and the rows answered in all."""
    rows_sent = 0
    with httpx.Client(base_url=server.url, timeout=30, headers=HEADERS) as http:
        for rows, payload in payloads.values():
            for _ in range(args.warmup):
                answer = http.post("/invocations", content=payload)
                if answer.status_code != 200:
                    sys.exit(f"{server.kind} answered {answer.status_code}: {answer.text[:500]}")
                rows_sent += rows
    figures = {}
    for name, (rows, payload) in payloads.items():
        cpu = server.cpu_s()
        got = load(server.url, payload, args.clients, args.duration)
        server_cpu = server.cpu_s() - cpu
        done = len(got["latencies"])
        rows_sent += done * rows
        figures[name] = {
            "requests": done, "failures": got["failures"], "wall_s": got["wall_s"],
            "rps": done / got["wall_s"], "rows_per_s": done * rows / got["wall_s"],
            "p50_ms": percentile(got["latencies"], 50) * 1000, "p99_ms": percentile(got["latencies"], 99) * 1000,
            "server_cpu_ms_per_request": server_cpu / done * 1000 if done else float("nan"),
            "client_cpu_share": got["client_cpu_s"] / got["wall_s"],
        }
    return figures, rows_sent


def predictions(url: str, payload: bytes) -> list[float]:
    answer = httpx.post(f"{url}/invocations", content=payload, headers=HEADERS, timeout=30)
    answer.raise_for_status()
    return [float(x) for x in answer.json()["predictions"]]


# -- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per payload and server")
    parser.add_argument("--clients", type=int, default=4, help="concurrent closed-loop clients")
    parser.add_argument("--warmup", type=int, default=30, help="requests of each payload before measuring")
    args = parser.parse_args()
    payloads = {"1 row": (1, body(1)), "100 rows": (100, body(100))}
    began = time.perf_counter()
    rounds: list[dict] = []
    checks: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        env, version = build_project(root)
        print(f"project built and {MODEL} v{version} registered in {time.perf_counter() - began:.0f} s; "
              f"{args.clients} clients, {args.duration:.0f} s per payload, {args.repeat} rounds", flush=True)
        scores: dict[str, list[float]] = {}
        for n in range(args.repeat):
            order = SERVERS if n % 2 == 0 else SERVERS[::-1]
            this: dict = {"order": list(order)}
            for kind in order:
                before = warehouse_rows(root) if kind == "runner" else 0
                server = Server(kind, root, env, version)
                try:
                    figures, rows_sent = measure(server, payloads, args)
                    if n == 0:  # the same version answers the same: checked once
                        scores[kind] = predictions(server.url, payloads["100 rows"][1])
                        rows_sent += 100
                finally:
                    code = server.stop()
                this[kind] = {**figures, "startup_s": server.startup_s}
                line = "  ".join(f"{name}: {f['rps']:.0f} req/s p50 {f['p50_ms']:.1f} ms p99 {f['p99_ms']:.1f} ms"
                                 for name, f in figures.items())
                print(f"round {n + 1} {kind:<7}{line}", flush=True)
                if kind == "runner":
                    written = warehouse_rows(root) - before
                    flushed = "request log flushed" in server.log.read_text()
                    checks.append({"round": n + 1, "rows_sent": rows_sent, "rows_logged": written,
                                   "exit_code": code, "flushed_message": flushed})
                    print(f"round {n + 1} runner  requests table: {written} rows logged, {rows_sent} rows sent "
                          f"({'equal' if written == rows_sent else 'DIFFERENT'}), exit {code}", flush=True)
            rounds.append(this)
        same_scores = bool(np.allclose(scores["runner"], scores["mlflow"], rtol=1e-9, atol=1e-12))

    def med(kind: str, payload: str, key: str) -> float:
        return statistics.median(r[kind][payload][key] for r in rounds)

    def ratio(payload: str, key: str) -> float:
        return statistics.median(r["runner"][payload][key] / r["mlflow"][payload][key] for r in rounds)

    summary: dict = {}
    print()
    print(f"medians over {args.repeat} alternating rounds; {args.clients} closed-loop clients, "
          f"{args.duration:.0f} s each; dataframe_split")
    header = (f"{'payload':<10}{'server':<8}{'req/s':>9}{'rows/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'srv cpu ms/req':>16}{'client cpu':>12}")
    print(header)
    print("-" * len(header))
    for payload in payloads:
        summary[payload] = {}
        for kind in SERVERS:
            figures = {key: med(kind, payload, key) for key in ("rps", "rows_per_s", "p50_ms", "p99_ms",
                                                                "server_cpu_ms_per_request", "client_cpu_share")}
            summary[payload][kind] = figures
            print(f"{payload:<10}{kind:<8}{figures['rps']:>9.0f}{figures['rows_per_s']:>10.0f}"
                  f"{figures['p50_ms']:>9.1f}{figures['p99_ms']:>9.1f}{figures['server_cpu_ms_per_request']:>16.2f}"
                  f"{figures['client_cpu_share']:>11.0%}")
        ratios = {key: ratio(payload, key) for key in ("rps", "p50_ms", "p99_ms")}
        summary[payload]["ratio_runner_over_mlflow"] = ratios
        print(f"{payload:<10}{'ratio':<8}{ratios['rps']:>9.2f}{ratios['rps']:>10.2f}{ratios['p50_ms']:>9.2f}"
              f"{ratios['p99_ms']:>9.2f}   (runner/mlflow, median of per-round ratios)")
    throughput_met = all(summary[p]["ratio_runner_over_mlflow"]["rps"] >= 1.0 for p in payloads)
    p99_single = summary["1 row"]["runner"]["p99_ms"]
    p99_met = p99_single < 50
    logged_ok = all(c["rows_logged"] == c["rows_sent"] for c in checks)
    print()
    print(f"requests table == rows sent after SIGTERM, every runner round: {'yes' if logged_ok else 'NO'} "
          f"({', '.join(str(c['rows_logged']) + '/' + str(c['rows_sent']) for c in checks)})")
    print(f"same predictions from both servers (100 rows): {'yes' if same_scores else 'NO'}")
    print(f"goal: runner throughput >= mlflow's with logging on (both payloads): {'met' if throughput_met else 'NOT met'}")
    print(f"goal: runner single-row p99 < 50 ms: {'met' if p99_met else 'NOT met'} ({p99_single:.1f} ms)")
    print(f"total {time.perf_counter() - began:.0f} s")
    out = ROOT / "bench" / "results" / "serving.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "repeat": args.repeat, "duration_s": args.duration, "clients": args.clients, "warmup": args.warmup,
        "cores": os.cpu_count(), "summary": summary, "rounds": rounds, "request_log_checks": checks,
        "same_predictions": same_scores,
        "goals": {"throughput_at_least_mlflow": throughput_met, "single_row_p99_under_50ms": p99_met,
                  "requests_table_complete": logged_ok},
    }, indent=2))


if __name__ == "__main__":
    main()
