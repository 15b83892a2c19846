"""Overhead of `runner run` against the bare `papermill` CLI on the same small notebook.

Both run the notebook in a fresh process each time, alternating, so drift in machine load
hits both alike. The runner does more per run (parameter contract, run record, MLflow parent
and child runs, scraps, HTML rendering): this measures what that costs.

    .venv/bin/python bench/overhead.py [--repeat 7] [--pipeline-steps 10] [--pipeline-repeat 3]

Also: a pipeline of ``--pipeline-steps`` steps of the notebook, one after another, against as many bare
papermill calls in a row. The overhead per step is the median over pairs of (runner - papermill) / steps.

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


def pipeline_yaml(steps: int) -> str:
    """A pipeline ``bench`` of ``steps`` steps of the notebook, each after the one before."""
    lines = ["pipelines:", "  bench:", "    steps:"]
    for number in range(1, steps + 1):
        needs = f", needs: [s{number - 1}]" if number > 1 else ""
        lines.append(f"      s{number}: {{notebook: {NOTEBOOK}, parameters: {{base: 3}}{needs}}}")
    return "\n".join(lines) + "\n"


def measure(steps: int, repeat: int, tmp: Path) -> list[tuple[float, float]]:
    """``repeat`` alternating pairs (runner run of a ``steps``-step pipeline, ``steps`` bare papermill calls)."""
    project = tmp / f"steps-{steps}"
    project.mkdir()
    (project / "runner.yaml").write_text(pipeline_yaml(steps))
    env = {**os.environ, "RUNNER_HOME": str(project / ".runner"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    runner = [str(BIN / "runner"), "run", "bench", "--config", str(project / "runner.yaml")]
    papermill = [str(BIN / "papermill"), str(NOTEBOOK), str(project / "out.ipynb"), "-p", "base", "3",
                 "-k", "python3", "--no-progress-bar"]

    def papermill_calls() -> float:
        return sum(timed(papermill, env) for _ in range(steps))

    timed(runner, env)  # warm-up: creates the MLflow database and the kernelspec
    papermill_calls()
    return [(timed(runner, env), papermill_calls()) for _ in range(repeat)]


def summary(pairs: list[tuple[float, float]], steps: int) -> dict:
    ratios = [r / p for r, p in pairs]
    return {"steps": steps, "pairs_s": pairs, "runner_median_s": statistics.median(r for r, _ in pairs),
            "papermill_median_s": statistics.median(p for _, p in pairs), "median_ratio": statistics.median(ratios),
            "max_ratio": max(ratios),
            "overhead_ms_per_step": statistics.median((r - p) / steps * 1000 for r, p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="pairs of the one-step run")
    parser.add_argument("--pipeline-steps", type=int, default=10, help="steps of the pipeline measured too (0: not)")
    parser.add_argument("--pipeline-repeat", type=int, default=3, help="pairs of the pipeline run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [summary(measure(1, args.repeat, Path(tmp)), 1)]
        if args.pipeline_steps:
            results.append(summary(measure(args.pipeline_steps, args.pipeline_repeat, Path(tmp)), args.pipeline_steps))
    print(f"{'':<28}{'pairs':>6}{'runner s':>10}{'papermill s':>12}{'median ratio':>14}{'max ratio':>11}"
          f"{'overhead ms/step':>18}")
    for result in results:
        label = "one step" if result["steps"] == 1 else f"{result['steps']}-step pipeline vs calls"
        print(f"{label:<28}{len(result['pairs_s']):>6}{result['runner_median_s']:>10.2f}"
              f"{result['papermill_median_s']:>12.2f}{result['median_ratio']:>14.2f}{result['max_ratio']:>11.2f}"
              f"{result['overhead_ms_per_step']:>18.0f}")
    one = results[0]
    met = one["median_ratio"] <= 1.10 and one["overhead_ms_per_step"] < 500
    print("goal (issue 16): the one-step median ratio <= 1.10 in every run of --repeat 7, and under 500 ms per step: "
          f"{'met' if met else 'NOT met'} in this run (single pairs vary with the machine's load: max above)")
    out = ROOT / "bench" / "results" / "overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
