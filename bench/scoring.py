"""Scoring throughput and memory: the score step's code path against raw ``predict_proba``.

``runner``: ``runner.nb.score`` as the score notebook calls it: chunked reads of the month's
applications from the warehouse, ``predict_proba`` per chunk, chunked writes into
``predictions`` in one transaction. ``raw``: ``predict_proba`` on the same rows already in
memory (reading them is not timed). Each measurement runs in a fresh process so its peak RSS is
its own; ``runner`` runs at a quarter of the rows and at all of them, to show that its memory
does not grow with rows.

    .venv/bin/python bench/scoring.py [--rows 1000000] [--chunksize 20000]

Prints a table and writes bench/results/scoring.json. Data generation and the warehouse are
set up once per invocation, in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MONTH = "2026-01"
NUMERIC = ["age", "income", "loan_amount", "term_months", "employment_years", "debt_to_income",
           "credit_history_months", "num_open_loans"]
CATEGORICAL = ["purpose", "home_ownership", "region"]


def setup(workdir: Path, rows: int) -> None:
    """runner.yaml, a warehouse with ``rows`` applications in one month, and a fitted model."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from runner.data import DataDictionary, Warehouse
    from runner.demodata import generate_month

    (workdir / "runner.yaml").write_text(
        f"dictionary: {ROOT / 'data' / 'dictionary.yaml'}\n"
        "pipelines:\n  credit_score:\n    purpose: credit_scoring\n"
        f"    steps:\n      score: {{notebook: {ROOT / 'notebooks' / 'credit' / 'score.ipynb'}}}\n"
    )
    warehouse = Warehouse(f"sqlite:///{workdir / '.runner' / 'warehouse.db'}",
                          DataDictionary.load(ROOT / "data" / "dictionary.yaml"))
    (workdir / ".runner").mkdir(exist_ok=True)
    batch, written, index = 200_000, 0, 0
    training = None
    while written < rows:
        month = str(pd.Period("2020-01", freq="M") + index)  # unique application ids per generated month
        apps, outcomes = generate_month(month, n=min(batch, rows - written), seed=index, drift=None)
        if training is None:
            training = apps.head(20_000).merge(outcomes[["application_id", "defaulted"]], on="application_id")
        warehouse.write_table("applications", apps.assign(month=MONTH))
        written += len(apps)
        index += 1
    model = Pipeline([
        ("prepare", ColumnTransformer([
            ("numeric", "passthrough", NUMERIC),
            ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                                          OneHotEncoder(handle_unknown="ignore", sparse_output=False)), CATEGORICAL),
        ])),
        ("classifier", HistGradientBoostingClassifier(max_iter=50, random_state=0)),
    ]).fit(training[NUMERIC + CATEGORICAL], training["defaulted"])
    (workdir / "model.pkl").write_bytes(pickle.dumps(model))


def measure(workdir: Path, kind: str, rows: int, chunksize: int) -> dict:
    """One measurement in this process: seconds and peak RSS."""
    os.environ.update({
        "RUNNER_CONFIG": str(workdir / "runner.yaml"), "RUNNER_HOME": str(workdir / ".runner"),
        "RUNNER_RUN_ID": f"bench-{kind}-{rows}", "RUNNER_PIPELINE": "credit_score", "RUNNER_AS_OF": "2026-01-31",
    })
    from runner import nb

    model = pickle.loads((workdir / "model.pkl").read_bytes())
    nb.warehouse().tables()  # connecting and importing the data layer is not what we measure
    limit = f"rowid <= {rows} AND month = :month"  # the first `rows` applications
    if kind == "raw":
        frame = nb.load("applications", columns=list(model.feature_names_in_), where=limit, params={"month": MONTH})
        started = time.perf_counter()
        model.predict_proba(frame)[:, 1]
        seconds = time.perf_counter() - started
        written = len(frame)
    else:
        result = nb.score(model, "credit_default", "1", where=limit, params={"month": MONTH}, chunksize=chunksize)
        seconds, written = result["total_s"], result["rows"]
        stored = nb.warehouse().read_sql("SELECT COUNT(*) AS n FROM predictions WHERE run_id = :r",
                                         {"r": os.environ["RUNNER_RUN_ID"]})["n"].iloc[0]
        assert stored == written == rows, (stored, written, rows)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "rows": written, "seconds": seconds, "peak_rss_mib": peak_mib}


def in_process(workdir: Path, kind: str, rows: int, chunksize: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--rows", str(rows), "--chunksize", str(chunksize),
         "--workdir", str(workdir)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunksize", type=int, default=20_000)
    parser.add_argument("--measure", choices=["raw", "runner"])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.workdir, args.measure, args.rows, args.chunksize)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        setup(workdir, args.rows)
        setup_s = time.perf_counter() - started
        results = [
            in_process(workdir, "raw", args.rows, args.chunksize),
            in_process(workdir, "runner", args.rows // 4, args.chunksize),
            in_process(workdir, "runner", args.rows, args.chunksize),
        ]
    print(f"set-up (generate, validate and write {args.rows:,} applications, fit a model): {setup_s:.0f}s")
    print(f"{'mode':<8}{'rows':>11}{'seconds':>10}{'rows/s':>12}{'peak RSS MiB':>15}")
    for r in results:
        print(f"{r['kind']:<8}{r['rows']:>11,}{r['seconds']:>10.2f}{r['rows'] / r['seconds']:>12,.0f}"
              f"{r['peak_rss_mib']:>15.0f}")
    raw, quarter, full = results
    ratio = (full["rows"] / full["seconds"]) / (raw["rows"] / raw["seconds"])
    print(f"throughput ratio runner/raw = {ratio:.3f} (raw: predict_proba on an in-memory frame; runner also "
          "reads from and writes to the warehouse)")
    print(f"runner peak RSS at {quarter['rows']:,} vs {full['rows']:,} rows: "
          f"{quarter['peak_rss_mib']:.0f} MiB vs {full['peak_rss_mib']:.0f} MiB")
    out = ROOT / "bench" / "results" / "scoring.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "chunksize": args.chunksize, "setup_s": setup_s,
                               "results": results, "throughput_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
