"""Fan-out: 16 independent small notebooks in one pipeline, serial against two at once on this machine and on a
Dask cluster of two workers.

Three ways to run the same pipeline, alternating round by round so drift in machine load hits all alike:

* ``serial``: ``runner run --max-workers 1``;
* ``local x2``: ``runner run --max-workers 2`` (two step processes at once on this machine);
* ``dask x2``: ``runner run --executor dask --max-workers 2`` on a ``LocalCluster`` of two worker processes with one
  thread each, started by this script (every attempt goes through the scheduler; the project's files are packed
  into the run store; the worker writes the step's files).

The stores are this machine's folders for all three (``shared_filesystem: true`` for Dask), so what differs is
the executor, not S3 or PostgreSQL. Each way runs once to warm up (MLflow's database, the workers' first step
processes), then ``--repeat`` times. Reported: the median wall time of each way, its speed-up over serial (goal
>= 1.8 for two at once on 2 cores), and the median time of one step as its run records it (start to end of the
step, retries' waits included) for local x2 and dask x2: the difference is what the Dask path costs per step.

    .venv/bin/python bench/fanout.py [--repeat 3] [--steps 16]

Prints a table and writes bench/results/fanout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "notebooks" / "glues_values.ipynb"
BIN = Path(sys.executable).parent
CLUSTER = """
import sys
from distributed import LocalCluster

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, scheduler_port=0)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()
cluster.close()
"""


def run(command: list[str], env: dict[str, str], home: Path) -> tuple[float, list[float]]:
    """Wall seconds of one `runner run`, and the duration of each of its steps from its run record."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    run_id = done.stdout.strip().splitlines()[-1].split()[1]
    record = json.loads((home / "runs" / "fanout" / run_id / "run.json").read_text())
    return wall, [step["duration_s"] for step in record["steps"].values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    address = cluster.stdout.readline().decode().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp)
            steps = "".join(f"      n{i:02d}: {{notebook: {NOTEBOOK}, parameters: {{base: {i}}}}}\n"
                            for i in range(args.steps))
            (project / "runner.yaml").write_text(
                f"executors:\n  dask: {{address: '{address}', shared_filesystem: true}}\n"
                f"pipelines:\n  fanout:\n    steps:\n{steps}")
            home = project / ".runner"
            env = {**os.environ, "RUNNER_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
            base = [str(BIN / "runner"), "run", "fanout", "--config", str(project / "runner.yaml")]
            ways = {
                "serial": base + ["--max-workers", "1"],
                "local x2": base + ["--max-workers", "2"],
                "dask x2": base + ["--max-workers", "2", "--executor", "dask"],
            }
            for command in ways.values():  # warm-up
                run(command, env, home)
            results: dict[str, list[tuple[float, list[float]]]] = {way: [] for way in ways}
            for _ in range(args.repeat):
                for way, command in ways.items():
                    results[way].append(run(command, env, home))
    finally:
        cluster.stdin.close()
        cluster.wait(timeout=60)
    wall = {way: statistics.median(w for w, _ in runs) for way, runs in results.items()}
    per_step = {way: statistics.median(d for _, durations in runs for d in durations) for way, runs in results.items()}
    print(f"{args.steps} independent steps, median of {args.repeat} runs each (after one warm-up run)")
    print(f"{'':<10}{'wall s':>8}{'speed-up':>10}{'step s':>8}")
    for way in ways:
        print(f"{way:<10}{wall[way]:>8.1f}{wall['serial'] / wall[way]:>10.2f}{per_step[way]:>8.2f}")
    cost = per_step["dask x2"] - per_step["local x2"]
    print(f"the Dask path costs {cost * 1000:+.0f} ms per step against local x2 (median step time as recorded)")
    out = ROOT / "bench" / "results" / "fanout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "repeat": args.repeat, "wall_median_s": wall,
                               "speedup_vs_serial": {way: wall["serial"] / wall[way] for way in ways},
                               "step_median_s": per_step, "dask_cost_per_step_s": cost,
                               "runs": {way: [{"wall_s": w, "steps_s": d} for w, d in runs]
                                        for way, runs in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
