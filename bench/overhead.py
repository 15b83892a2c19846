"""Overhead of `runner run` against the bare `papermill` CLI on the same small notebook.

Both run the notebook in a fresh process each time, alternating, so drift in machine load
hits both alike. The runner does more per run (parameter contract, run record, MLflow parent
and child runs, scraps, HTML rendering): this measures what that costs.

    .venv/bin/python bench/overhead.py [--repeat 7]

Prints a table and writes bench/results/overhead.json.
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


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "runner.yaml").write_text(
            f"pipelines:\n  bench:\n    steps:\n      glue: {{notebook: {NOTEBOOK}, parameters: {{base: 3}}}}\n"
        )
        env = {**os.environ, "RUNNER_HOME": str(project / ".runner"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        runner = [str(BIN / "runner"), "run", "bench", "--config", str(project / "runner.yaml")]
        papermill = [str(BIN / "papermill"), str(NOTEBOOK), str(project / "out.ipynb"), "-p", "base", "3",
                     "-k", "python3", "--no-progress-bar"]
        timed(runner, env)  # warm-up: creates the MLflow database and the kernelspec
        timed(papermill, env)
        pairs = [(timed(runner, env), timed(papermill, env)) for _ in range(args.repeat)]
    runner_s = statistics.median(r for r, _ in pairs)
    papermill_s = statistics.median(p for _, p in pairs)
    ratio = statistics.median(r / p for r, p in pairs)
    print(f"{'':<18}{'median s':>10}")
    print(f"{'bare papermill':<18}{papermill_s:>10.2f}")
    print(f"{'runner run':<18}{runner_s:>10.2f}")
    print(f"median ratio runner/papermill over {args.repeat} alternating pairs: {ratio:.2f} (goal <= 1.10)")
    out = ROOT / "bench" / "results" / "overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeat": args.repeat, "pairs_s": pairs, "runner_median_s": runner_s,
                               "papermill_median_s": papermill_s, "median_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
