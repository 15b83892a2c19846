"""The review site at scale: a build over 500 runs, then what one more run (or one fewer) costs.

The runs are written straight into a run store: each run's ``run.json`` and, for each step, a small
executed notebook (``<step>.ipynb``, valid nbformat with parameters, outputs, scraps and, in a failed
step, papermill's error cell) and its page (``<step>.html``, rendered by nbconvert as a run renders it).
No kernel starts: only the site is measured. Three pipelines take turns; about one run in 23 fails.

Phases, each ``runner.review.site.build`` into the same folder, timed in this process:

* ``full``: the first build (every page, every notebook copied, every diff rendered);
* ``nothing new``: the same store again;
* ``one new run``: one run added to the store (``--profile`` prints cProfile's top functions of this one);
* ``one run removed``: a run in the middle of one pipeline's history deleted from the store;
* ``one new run, CLI``: another run added, then ``runner review build`` in a process of its own (what a
  person or a scheduled job waits for: the interpreter and the imports included).

For each phase the table gives the seconds, what the build says it did, and what changed on disk, seen
independently of the build (files whose size or modification time changed, added, removed).

    flock /tmp/bench.lock .venv/bin/python bench/review.py [--runs 500] [--page-size 50] [--profile]

Prints a table and writes bench/results/review.json. ``tests/test_review_scale.py`` writes its runs with
this module's :func:`write_runs` (with plain pages instead of nbconvert's, to stay fast).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ("credit", "churn", "fraud")
START = datetime(2025, 1, 1, 6, tzinfo=timezone.utc)


# -- the run store ------------------------------------------------------------------------------
def write_project(folder: Path, pipelines: tuple[str, ...] = PIPELINES) -> Path:
    """A project whose runner.yaml names ``pipelines`` (steps train and score) and keeps its stores in ``folder/.runner``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "runner.yaml"
    config.write_text(yaml.safe_dump({
        "stores": {"home": str(folder / ".runner")},
        "pipelines": {name: {"steps": {"train": {"notebook": f"notebooks/{name}/train.ipynb"},
                                       "score": {"notebook": f"notebooks/{name}/score.ipynb", "needs": ["train"]}}}
                      for name in pipelines},
    }, sort_keys=False))
    return config


def write_runs(store, count: int, pipelines: tuple[str, ...] = PIPELINES, html: str = "nbconvert",
               first: int = 0) -> list:
    """Runs ``first`` to ``first + count - 1`` (see :func:`write_run`), oldest first."""
    return [write_run(store, index, pipelines[index % len(pipelines)], html=html) for index in range(first, first + count)]


def write_run(store, index: int, pipeline: str, html: str = "nbconvert", failed: bool | None = None):
    """Run number ``index`` of the generated history (a run every 3 hours from :data:`START`): its record and,
    per step that ran, an executed notebook and its page (``html``: "nbconvert" as a run renders it, or
    "plain", a small page of its own). The same index always gives the same run."""
    from runner.store.records import GitState, RunRecord, StepError, StepRecord

    rng = random.Random(index)
    when = START + timedelta(hours=3 * index)
    run_id = f"{when:%Y%m%dT%H%M%S}-{rng.getrandbits(24):06x}"
    failed = index % 23 == 7 if failed is None else failed
    as_of = when.date().isoformat()
    auc = round(0.78 + 0.03 * rng.random() - (0.1 if index % 97 == 50 else 0.0), 4)
    folder = Path(store.run_dir(pipeline, run_id))
    folder.mkdir(parents=True, exist_ok=True)

    def at(seconds: float) -> str:
        return (when + timedelta(seconds=seconds)).isoformat()

    train_parameters = {"as_of": as_of, "max_depth": 3 + index % 3, "learning_rate": 0.1, "features": "income,age,debt"}
    train_scraps = {"auc": auc, "rows_trained": 20_000 + rng.randrange(2_000), "champion": auc > 0.8,
                    "model_uri": f"models:/{pipeline}/{index + 1}"}
    error = StepError(ename="ValueError", evalue=f"column 'income' has {rng.randrange(2, 90)} values below 0",
                      cell_index=4) if failed else None
    train = StepRecord(
        name="train", notebook=f"notebooks/{pipeline}/train.ipynb", notebook_sha256="ab" * 32,
        parameters=train_parameters, status="failed" if failed else "succeeded",
        started_at=at(1), ended_at=at(31), duration_s=30.0 + rng.random(), error=error,
        scraps={} if failed else train_scraps, mlflow_run_id=f"{index:016x}{1:016x}",
        output="train.ipynb", html="train.html", snapshots=["sha256:" + "cd" * 32],
    )
    _write_notebook(folder, "train", train_parameters, {} if failed else train_scraps, error, html)
    score_parameters = {"as_of": as_of, "threshold": 0.5}
    score_scraps = {"rows_scored": 5_000 + rng.randrange(500), "mean_score": round(0.2 + 0.05 * rng.random(), 4)}
    if failed:
        score = StepRecord(name="score", notebook=f"notebooks/{pipeline}/score.ipynb", notebook_sha256="ef" * 32,
                           needs=["train"], parameters=score_parameters, status="skipped")
    else:
        score = StepRecord(
            name="score", notebook=f"notebooks/{pipeline}/score.ipynb", notebook_sha256="ef" * 32, needs=["train"],
            parameters=score_parameters, status="succeeded", started_at=at(32), ended_at=at(44),
            duration_s=12.0 + rng.random(), scraps=score_scraps, mlflow_run_id=f"{index:016x}{2:016x}",
            output="score.ipynb", html="score.html",
        )
        _write_notebook(folder, "score", score_parameters, score_scraps, None, html)
    record = RunRecord(
        run_id=run_id, pipeline=pipeline, as_of=as_of, trigger="schedule" if index % 5 else "manual",
        status="failed" if failed else "succeeded", created_at=when.isoformat(), ended_at=at(45), duration_s=45.0,
        git=GitState(commit=f"{index // 40:040x}", dirty=False), mlflow_experiment_id="1",
        mlflow_run_id=f"{index:032x}", steps={"train": train, "score": score},
    )
    store.write(record)
    return record


def _write_notebook(folder: Path, step: str, parameters: dict, scraps: dict, error, html: str) -> None:
    """An executed notebook as papermill and scrapbook leave it, and its page."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    cells = []
    if error is not None:  # papermill puts a banner with an anchor on top, and one above the failing cell
        cells.append(new_markdown_cell('<span style="color:red; font-family:Helvetica Neue, Helvetica, Arial, '
                                       'sans-serif; font-size:2em;">An Exception was encountered at '
                                       '<a href="#papermill-error-cell">In [4]</a>.</span>'))
    cells.append(new_markdown_cell(f"# {step}\n\nA generated notebook of the review benchmark."))
    defaults = new_code_cell("\n".join(f"{name} = None" for name in parameters), execution_count=1)
    defaults.metadata["tags"] = ["parameters"]
    injected = new_code_cell("# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items()),
                             execution_count=2)
    injected.metadata["tags"] = ["injected-parameters"]
    cells += [defaults, injected]
    load = new_code_cell("import scrapbook as sb\nframe = load(as_of)\nprint(len(frame), 'rows')", execution_count=3)
    load.outputs = [new_output("stream", name="stdout", text=f"{20_000 + len(parameters)} rows\n")]
    cells.append(load)
    if error is not None:
        cells.append(new_markdown_cell('<span id="papermill-error-cell" style="color:red; font-size:2em;">'
                                       'Execution using papermill encountered an exception here.</span>'))
        failing = new_code_cell("check(frame)", execution_count=4)
        failing.outputs = [new_output("error", ename=error.ename, evalue=error.evalue,
                                      traceback=[f"{error.ename}: {error.evalue}"])]
        cells.append(failing)
    else:
        glue = new_code_cell("\n".join(f"sb.glue({name!r}, {name})" for name in scraps), execution_count=4)
        glue.outputs = [new_output("display_data", data={
            "application/scrapbook.scrap.json+json": {"name": name, "data": value, "encoder": "json", "version": 1}},
            metadata={"scrapbook": {"name": name, "data": True, "display": False}}) for name, value in scraps.items()]
        cells.append(glue)
    for cell in cells:
        cell.metadata["papermill"] = {"status": "completed", "duration": 0.5, "exception": False}
    book = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}, "papermill": {"parameters": parameters}})
    text = nbformat.writes(book)
    (folder / f"{step}.ipynb").write_text(text, encoding="utf-8")
    (folder / f"{step}.html").write_text(_page(book, html), encoding="utf-8")


def _page(book, html: str) -> str:
    if html == "nbconvert":
        import warnings

        with warnings.catch_warnings():  # nbconvert has no way to show a scrap's output; neither has a run's page
            warnings.simplefilter("ignore", UserWarning)
            return _exporter().from_notebook_node(book)[0]
    import html as markup

    cells = "".join(f'<div class="cell"><pre>{markup.escape(cell.source)}</pre></div>' for cell in book.cells)
    cells = cells.replace("&lt;span id=&quot;papermill-error-cell&quot;", '<span id="papermill-error-cell"></span>&lt;span')
    return f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>notebook</title></head><body>{cells}</body></html>\n"


_EXPORTER = None


def _exporter():
    global _EXPORTER
    if _EXPORTER is None:
        from nbconvert import HTMLExporter

        _EXPORTER = HTMLExporter(embed_images=True)
    return _EXPORTER


def remove_run(store, record) -> None:
    shutil.rmtree(store.run_dir(record.pipeline, record.run_id))


# -- what changed on disk -----------------------------------------------------------------------
def site_files(out: Path) -> dict[str, tuple[int, int]]:
    """Every file of the site (but the build's own notes): its path inside ``out``, modification time and size."""
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = Path(folder) / name
            relative = path.relative_to(out).as_posix()
            if not relative.startswith("."):
                stat = path.stat()
                found[relative] = (stat.st_mtime_ns, stat.st_size)
    return found


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    return {
        "rewritten": sorted(p for p in after if p in before and after[p] != before[p]),
        "added": sorted(p for p in after if p not in before),
        "removed": sorted(p for p in before if p not in after),
    }


# -- the benchmark ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions of the one-new-run build")
    parser.add_argument("--keep", action="store_true", help="keep the store and the site (their folder is printed)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    from runner.config import load_config
    from runner.review.site import Site
    from runner.store.records import RunStore

    base = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        config = load_config(write_project(base / "project"))
        store = RunStore(config.stores.runs)
        started = time.perf_counter()
        records = write_runs(store, args.runs)
        generated = time.perf_counter() - started
        print(f"generated {args.runs} runs ({2 * args.runs - sum(r.status == 'failed' for r in records)} notebooks) "
              f"in {generated:.1f} s in {store.url}", flush=True)
        out = base / "site"
        rows = []

        def phase(name: str, profile: bool = False, cli: bool = False) -> None:
            before = site_files(out) if out.exists() else {}
            site = Site(load_config(config.source), page_size=args.page_size)  # as `runner review build` starts
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started = time.perf_counter()
            if cli:
                said = subprocess.run([str(Path(sys.executable).with_name("runner")), "review", "build", "--config",
                                       str(config.source), "--out", str(out), "--page-size", str(args.page_size)],
                                      capture_output=True, text=True, check=True).stdout
                written, removed = (int(re.search(rf"(\d+) {what}", said).group(1)) for what in ("file", "removed"))
                result = {"runs": int(re.search(r"of (\d+) run", said).group(1)), "written": written,
                          "removed": removed, "notebooks": int(re.search(r"(\d+) notebook", said).group(1)),
                          "diffs": int(re.search(r"(\d+) diff", said).group(1))}
            else:
                built = site.build(out)
                result = {"runs": built.runs, "written": len(built.written), "removed": len(built.removed),
                          "notebooks": built.notebooks, "diffs": built.diffs}
            seconds = time.perf_counter() - started
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            seen = changes(before, site_files(out))
            rows.append({"phase": name, "seconds": round(seconds, 3), "runs": result["runs"],
                         "files_written": result["written"], "files_removed": result["removed"],
                         "notebooks_copied": result["notebooks"], "diffs_rendered": result["diffs"],
                         **{f"files_{kind}": len(paths) for kind, paths in seen.items()},
                         "files_rewritten_or_added": seen["rewritten"] + seen["added"] if name != "full" else [],
                         "files_removed_list": seen["removed"]})
            print(f"{name}: {seconds:.2f} s", flush=True)

        phase("full")
        phase("nothing new")
        write_run(store, args.runs, PIPELINES[args.runs % len(PIPELINES)], html="nbconvert")
        phase("one new run", profile=args.profile)
        middle = [r for r in records if r.pipeline == PIPELINES[0]][len(records) // 6]
        remove_run(store, middle)
        phase("one run removed")
        write_run(store, args.runs + 1, PIPELINES[(args.runs + 1) % len(PIPELINES)], html="nbconvert")
        phase("one new run, CLI", cli=True)
        load = os.getloadavg()
        report(rows, load)
        target = ROOT / "bench" / "results" / "review.json"
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps({"runs": args.runs, "page_size": args.page_size,
                                      "load_average_1_5_15": [round(x, 2) for x in load],
                                      "generated_s": round(generated, 1), "phases": rows}, indent=2))
        print(f"wrote {target.relative_to(ROOT)}")
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def report(rows: list[dict], load: tuple[float, float, float]) -> None:
    print()
    print("| phase | s | files written | files removed | notebooks copied | diffs rendered | on disk: rewritten, added, removed |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        disk = f"{row['files_rewritten']}, {row['files_added']}, {row['files_removed']}"
        print(f"| {row['phase']} | {row['seconds']:.2f} | {row['files_written']} | {row['files_removed']} | "
              f"{row['notebooks_copied']} | {row['diffs_rendered']} | {disk} |")
    for row in rows[2:]:
        print(f"\n{row['phase']}: written or added {row['files_rewritten_or_added']}, removed {row['files_removed_list']}")
    print(f"\nload average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
