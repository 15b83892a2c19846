"""Drift checks: ``runner.monitoring.drift`` against Evidently's ``DataDriftPreset`` on the same data.

Data: a reference frame (training time) and a current frame (the batch being monitored), 20
columns each: 15 numeric (normal, lognormal, integer counts, a 0..4 count, bounded shares and
rates, a bimodal and an exponential one) and 5 categorical (3 to 12 levels, strings), with a few
percent missing in several columns. The current frame drifts on a known subset (the last field
of ``NUMERIC`` and ``CATEGORICAL``): four numeric columns from clearly (normed Wasserstein about
0.3 to 0.4) to borderline (0.12), one numeric below any threshold (0.05), a missing-rate rise,
two categorical share shifts (one large, one small) and a new level in 1% of rows. Generated
once per work folder with numpy's ``default_rng(seed)`` (deterministic), a million rows at a time
(so 10 million rows are made in the memory of one million), and written to Parquet with pyarrow,
a row group per million, without pandas metadata, so each side reads it with its own pandas.

What is timed, each measurement in a fresh process (reading the Parquet files is not, but in ``stream``):

* ``ours: compare``: ``monitoring.compare(profile, current, Thresholds())`` with the profile made
  from the reference beforehand and read from JSON, which is what a monitor step does.
* ``ours: profile + compare``: ``monitoring.profile(reference, ...)`` then ``compare``; the
  fairest match for Evidently, which reads the reference rows every time.
* ``ours: stream``: ``compare`` over the current batch in chunks of ``--chunk-rows`` rows
  (``pyarrow.parquet.ParquetFile.iter_batches``), never held whole, as a monitor step does with
  ``nb.stream``. Its timed part includes reading and decoding the Parquet file (``pre_buffer=False``:
  pyarrow's default keeps the buffers of every row group read), which the other modes do before the
  clock starts; its peak RSS is the one that should stay flat in rows.
* ``Evidently``: ``Dataset.from_pandas`` for both frames (the same numeric and categorical
  columns as ours), ``Report([DataDriftPreset()], include_tests=True).run(current, reference)``
  and ``snapshot.dict()``, from which the per-column drift verdicts and stattests are read.
  Evidently 0.7 does not import with pandas 3, so it runs in its own virtual environment,
  ``bench/.venv-evidently`` (created on first use, pinned by ``EVIDENTLY_PINS``).

Memory: peak RSS is the process's ``VmHWM`` (/proc/self/status), not ``ru_maxrss``, which Linux
carries over ``exec`` from the forking parent. Each measurement records the RSS after loading
its data, the process's peak (loading included: the goal is judged on this one), and the peak
of the timed part alone (``VmHWM`` reset through /proc/self/clear_refs after loading).

Evidently gets the whole frames and is stopped when it runs longer than ``--evidently-timeout``
seconds or its RSS passes ``--evidently-max-rss-gib`` (watched from this process twice a second);
the table then says so, with how far it got.

Verdicts: ours is the ``wasserstein`` finding for numeric columns and ``jensen_shannon`` for
categorical ones, drift when its severity is not ``ok``; Evidently's is its per-column
``ValueDrift`` test. Goal (from the issue): at least 10x faster, at most a third of Evidently's
peak RSS, the same verdicts on every column. When a goal is missed (or with ``--cprofile``) our
timed part is run once more under cProfile and the top functions are printed.

    .venv/bin/python bench/monitoring.py [--rows-reference 200000] [--rows-current 1000000]
        [--repeat 3] [--workdir DIR] [--quick] [--only ours|evidently] [--cprofile]
        [--modes compare,profile+compare,stream,evidently] [--chunk-rows 250000]
        [--evidently-timeout 900] [--evidently-max-rss-gib 16] [--evidently-repeat N]

Prints a table and writes bench/results/monitoring.json.
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
EVIDENTLY_VENV = ROOT / "bench" / ".venv-evidently"
EVIDENTLY_PINS = ["evidently==0.7.23", "pandas>=2.2,<3", "pyarrow>=15"]
RESULT = "RESULT "  # prefix of the measurement's line on stdout
GENERATOR = 2  # bump when the data changes, so work folders set up before are not reused
PART_ROWS = 1_000_000  # rows generated (and written as one row group) at a time
GOAL_SPEEDUP, GOAL_MEMORY = 10.0, 1 / 3

# name -> (generator, share missing in reference, in current, change in the current frame or "")
NUMERIC = {
    "income": ("lognormal", 0.03, 0.03, "scale x1.25"),
    "age": ("normal", 0.0, 0.0, "mean +0.30 sd"),
    "balance": ("normal", 0.01, 0.01, "sd x1.2"),
    "amount": ("normal", 0.0, 0.0, "mean +0.12 sd (borderline)"),
    "score": ("normal", 0.0, 0.0, "mean +0.05 sd (below thresholds)"),
    "credit_limit": ("lognormal", 0.02, 0.12, "missing 2% -> 12%"),
    "tenure_months": ("poisson36", 0.05, 0.05, ""),
    "dependents": ("count0to4", 0.0, 0.0, ""),
    "utilization": ("beta", 0.02, 0.02, ""),
    "num_accounts": ("poisson4", 0.0, 0.0, ""),
    "days_past_due": ("zero_inflated", 0.0, 0.0, ""),
    "interest_rate": ("uniform", 0.0, 0.0, ""),
    "debt_ratio": ("gamma", 0.04, 0.04, ""),
    "location": ("bimodal", 0.0, 0.0, ""),
    "session_minutes": ("exponential", 0.01, 0.01, ""),
}
# name -> (levels, reference shares, current shares, missing share, change or "")
CATEGORICAL = {
    "channel": (["web", "branch", "phone"], [0.6, 0.3, 0.1], [0.4, 0.36, 0.24], 0.0, "shares shifted"),
    "segment": (["a", "b", "c", "d"], [0.4, 0.3, 0.2, 0.1], [0.33, 0.3, 0.22, 0.15], 0.0,
                "shares shifted a little"),
    "product": (["card", "loan", "mortgage", "auto", "student", "crypto"], [0.3, 0.25, 0.2, 0.15, 0.1, 0.0],
                [0.297, 0.2475, 0.198, 0.1485, 0.099, 0.01], 0.0, "new level 'crypto' in 1%"),
    "device": (["ios", "android", "windows", "mac", "linux", "other"], [0.3, 0.35, 0.2, 0.08, 0.02, 0.05],
               [0.3, 0.35, 0.2, 0.08, 0.02, 0.05], 0.02, ""),
    "region": ([f"r{i:02d}" for i in range(12)], [1 / 12] * 12, [1 / 12] * 12, 0.03, ""),
}


def _numeric(rng, kind: str, n: int, change: str):
    """One numeric column; ``change`` is applied to the current frame's draw."""
    import numpy as np

    shift = {"mean +0.30 sd": 0.30, "mean +0.12 sd (borderline)": 0.12, "mean +0.05 sd (below thresholds)": 0.05}
    scale = {"scale x1.25": 1.25}.get(change, 1.0)
    sd = 1.2 if change == "sd x1.2" else 1.0
    z = rng.standard_normal(n)
    return {
        "lognormal": lambda: scale * np.exp(10.5 + 0.6 * z),
        "normal": lambda: 100.0 + 15.0 * (sd * z + shift.get(change, 0.0)),
        "poisson36": lambda: rng.poisson(36, n).astype(float),
        "count0to4": lambda: rng.choice(5, n, p=[0.4, 0.3, 0.17, 0.1, 0.03]).astype(float),
        "beta": lambda: rng.beta(2, 5, n),
        "poisson4": lambda: rng.poisson(4, n).astype(float),
        "zero_inflated": lambda: np.where(rng.random(n) < 0.85, 0.0, rng.geometric(0.05, n)),
        "uniform": lambda: rng.uniform(0.02, 0.30, n).round(4),
        "gamma": lambda: rng.gamma(2.0, 0.15, n),
        "bimodal": lambda: np.where(rng.random(n) < 0.4, 40.0 + 2.0 * z, 52.0 + 3.0 * z),
        "exponential": lambda: rng.exponential(20.0, n),
    }[kind]()


def frame_table(rows: int, seed: int, current: bool, part: int = 0):
    """Part ``part`` of the reference (``current=False``) or current frame as a pyarrow Table."""
    import numpy as np
    import pyarrow as pa

    columns = {}
    for index, (name, (kind, missing_ref, missing_cur, change)) in enumerate(NUMERIC.items()):
        rng = np.random.default_rng([seed, index, int(current), part])
        values = _numeric(rng, kind, rows, change if current else "")
        missing = rng.random(rows) < (missing_cur if current else missing_ref)
        columns[name] = pa.array(values, mask=missing) if missing.any() else pa.array(values)
    for index, (name, (levels, ref_shares, cur_shares, missing_share, _)) in enumerate(CATEGORICAL.items(), 100):
        rng = np.random.default_rng([seed, index, int(current), part])
        shares = np.array(cur_shares if current else ref_shares)
        codes = rng.choice(len(levels), rows, p=shares / shares.sum())
        missing = rng.random(rows) < missing_share
        strings = pa.DictionaryArray.from_arrays(pa.array(codes, mask=missing), pa.array(levels))
        columns[name] = strings.cast(pa.string())  # plain strings, as a warehouse would hand them over
    return pa.table(columns)


def setup(workdir: Path, rows_reference: int, rows_current: int, seed: int) -> dict:
    """Write reference.parquet and current.parquet into ``workdir`` (in a process of its own)."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    for name, rows, current in (("reference", rows_reference, False), ("current", rows_current, True)):
        writer = None
        for part, start in enumerate(range(0, rows, PART_ROWS)):
            table = frame_table(min(PART_ROWS, rows - start), seed, current, part)
            writer = writer or pq.ParquetWriter(workdir / f"{name}.parquet", table.schema)
            writer.write_table(table, row_group_size=PART_ROWS)
        writer.close()
    info = {"rows_reference": rows_reference, "rows_current": rows_current, "seed": seed, "generator": GENERATOR,
            "setup_s": time.perf_counter() - started}
    (workdir / "setup.json").write_text(json.dumps(info, indent=2))
    return info


def make_profile(workdir: Path) -> dict:
    """The training-time step: profile the reference and store it as JSON (in a process of its own)."""
    import pandas as pd

    from runner import monitoring

    reference = pd.read_parquet(workdir / "reference.parquet")
    started = time.perf_counter()
    profile = monitoring.profile(reference, numeric=list(NUMERIC), categorical=list(CATEGORICAL))
    text = json.dumps(profile)
    (workdir / "profile.json").write_text(text)
    return {"profile_s": time.perf_counter() - started, "profile_bytes": len(text.encode())}


def _memory_mib(field: str) -> float:
    """A field of /proc/self/status in MiB (VmRSS: now, VmHWM: peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(path: Path):
    """A Parquet file as a pandas frame, the same way for both tools: Arrow's buffers are released
    column by column as they are converted (``self_destruct``), so loading does not hold the data twice."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas(self_destruct=True, split_blocks=True)


def _loaded() -> dict:
    """RSS now and peak so far, then reset the peak so that the timed part's own peak can be read.

    Arrow's allocator keeps the buffers freed while Parquet became pandas (some 250 MiB at full size);
    they are handed back first, on both sides alike, so that "RSS loaded" is the data, not that cache.
    """
    import gc

    import pyarrow

    gc.collect()
    pyarrow.default_memory_pool().release_unused()
    memory = {"rss_loaded_mib": _memory_mib("VmRSS"), "peak_loading_mib": _memory_mib("VmHWM")}
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    return memory


def _peaks(memory: dict) -> dict:
    timed = _memory_mib("VmHWM")
    return {**memory, "peak_timed_mib": timed, "peak_rss_mib": max(timed, memory["peak_loading_mib"])}


def measure_ours(workdir: Path, mode: str, cprofile: bool = False, chunk_rows: int = 250_000) -> dict:
    """One measurement of runner.monitoring.drift in this process; ``mode`` is "compare", "profile+compare"
    or "stream" (the current batch read and judged in chunks of ``chunk_rows``)."""
    import pyarrow.parquet as pq

    from runner import monitoring
    from runner.config import Thresholds

    thresholds = Thresholds()
    path = workdir / "current.parquet"
    current = load(path) if mode != "stream" else None
    reference = load(workdir / "reference.parquet") if mode == "profile+compare" else None
    stored = json.loads((workdir / "profile.json").read_text()) if reference is None else None
    memory = _loaded()
    profiler = None
    if cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    if reference is not None:
        stored = monitoring.profile(reference, numeric=list(NUMERIC), categorical=list(CATEGORICAL))
    if current is None:  # never whole: Arrow record batches straight from the file; pre_buffer (pyarrow's default)
        # keeps every row group's buffers read so far: 1.1 GiB peak at 10M rows, 0.4 GiB without
        current = pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=chunk_rows,
                                                                      columns=[*NUMERIC, *CATEGORICAL])
    findings = monitoring.compare(stored, current, thresholds, outputs=())  # "score" here is an input column
    seconds = time.perf_counter() - started
    result = {"tool": f"ours: {mode}", "seconds": seconds, **_peaks(memory)}
    if profiler is not None:
        profiler.disable()
        result["hot_spots"] = _hot_spots(profiler, seconds)
    verdicts, other = {}, []
    for row in findings.itertuples(index=False):
        wanted = "wasserstein" if row.feature in NUMERIC else "jensen_shannon"
        if row.statistic == wanted:
            verdicts[row.feature] = {"drift": row.severity != "ok", "severity": row.severity,
                                     "method": wanted, "score": float(row.value)}
        elif row.severity != "ok":
            other.append({"feature": row.feature, "statistic": row.statistic, "value": float(row.value),
                          "severity": row.severity, "detail": row.detail})
    every = [[row.feature, row.statistic, row.severity, float(row.value)] for row in findings.itertuples(index=False)]
    return {**result, "verdicts": verdicts, "other_findings": other, "findings": len(findings), "all": every}


def _hot_spots(profiler, seconds: float, top: int = 12) -> dict:
    """Most own time (any function), and cumulative time of each function in runner/monitoring.py."""
    import pstats

    def where(file: str, line: int, name: str) -> str:
        file = file.split("site-packages/")[-1].removeprefix(str(ROOT) + "/")
        return f"{file}:{line}({name})"

    rows = [{"function": where(*key), "calls": calls, "own_s": own, "cumulative_s": cum, "own_share": own / seconds,
             "cumulative_share": cum / seconds}
            for key, (_, calls, own, cum, _) in pstats.Stats(profiler).stats.items()]
    return {"own": sorted(rows, key=lambda row: row["own_s"], reverse=True)[:top],
            "ours": sorted((row for row in rows if row["function"].startswith("runner/monitoring/")),
                           key=lambda row: row["cumulative_s"], reverse=True)}


def measure_evidently(workdir: Path) -> dict:
    """One measurement of Evidently's DataDriftPreset in this process (the Evidently environment)."""
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference = load(workdir / "reference.parquet")
    current = load(workdir / "current.parquet")
    memory = _loaded()
    started = time.perf_counter()
    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    report = snapshot.dict()
    seconds = time.perf_counter() - started
    result = {"tool": "evidently", "version": evidently.__version__, "pandas": pd.__version__, "seconds": seconds,
              **_peaks(memory)}
    tests = {test["metric_config"]["metric_id"]: test["status"] for test in report["tests"] if test["id"] == "drift"}
    verdicts = {}
    for metric in report["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            status = tests[metric["id"]]
            verdicts[config["column"]] = {"drift": status == "FAIL", "status": status, "method": config["method"],
                                          "threshold": config["threshold"], "score": float(metric["value"])}
    return {**result, "verdicts": verdicts}


def in_process(python: str, workdir: Path, *args: str, timeout: float | None = None,
               max_rss_mib: float | None = None) -> dict:
    """Run this file with ``args`` in a fresh process of ``python`` and return its RESULT line.

    With ``timeout`` or ``max_rss_mib``, the process is watched twice a second and killed past either;
    the result is then ``{"stopped": why, "seconds": ..., "peak_rss_mib": ...}`` (the largest RSS seen).
    """
    env = {**os.environ, "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([python, __file__, *args, "--workdir", str(workdir)], stdout=out, stderr=err,
                                   text=True, env=env)
        started, seen, stopped = time.monotonic(), 0.0, None
        while process.poll() is None:
            time.sleep(0.5)
            seen = max(seen, _rss_of(process.pid))
            if timeout and time.monotonic() - started > timeout:
                stopped = f"still running after {timeout:.0f} s"
            elif max_rss_mib and seen > max_rss_mib:
                stopped = f"RSS past {max_rss_mib / 1024:.0f} GiB"
            if stopped:
                process.kill()
                process.wait()
                return {"stopped": stopped, "seconds": time.monotonic() - started, "peak_rss_mib": seen}
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode:
        sys.exit(f"{' '.join(args)} failed ({process.returncode}):\n{stdout[-2000:]}{stderr[-4000:]}")
    return json.loads([line for line in stdout.splitlines() if line.startswith(RESULT)][-1][len(RESULT):])


def _rss_of(pid: int) -> float:
    """A process's resident memory in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def evidently_python(venv: Path) -> str:
    """The Evidently environment's interpreter; created (python3 -m venv + pip) on first use."""
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if python.is_file() and marker.is_file() and marker.read_text().split() == EVIDENTLY_PINS:
        return str(python)
    print(f"creating {venv} with {' '.join(EVIDENTLY_PINS)} (once)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    for command in ([base, "-m", "venv", str(venv)],
                    [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                    [str(python), "-m", "pip", "install", "--quiet", *EVIDENTLY_PINS]):
        if subprocess.run(command).returncode:
            sys.exit(f"could not set up the Evidently environment: {' '.join(command)} failed")
    marker.write_text("\n".join(EVIDENTLY_PINS))
    return str(python)


def prepared(workdir: Path | None, rows_reference: int, rows_current: int, seed: int):
    """The work folder (set up, or reused when set up for the same sizes and seed) and its set-up info."""
    temporary = None
    if workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="bench-monitoring-")
        workdir = Path(temporary.name)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    marker = workdir / "setup.json"
    wanted = {"rows_reference": rows_reference, "rows_current": rows_current, "seed": seed, "generator": GENERATOR}
    if marker.is_file() and all(json.loads(marker.read_text()).get(k) == v for k, v in wanted.items()):
        return workdir, {**json.loads(marker.read_text()), "reused": True}, temporary
    marker.unlink(missing_ok=True)
    info = in_process(sys.executable, workdir, "--setup", "--rows-reference", str(rows_reference),
                      "--rows-current", str(rows_current), "--seed", str(seed))
    return workdir, {**info, "reused": False}, temporary


def agreement(ours: dict, theirs: dict) -> list[dict]:
    """Per column: both verdicts and scores, and whether they agree."""
    rows = []
    for column in [*NUMERIC, *CATEGORICAL]:
        mine, other = ours.get(column), theirs.get(column)
        change = NUMERIC[column][3] if column in NUMERIC else CATEGORICAL[column][4]
        rows.append({"column": column, "change": change or "none",
                     "ours_drift": mine and mine["drift"], "ours_score": mine and mine["score"],
                     "evidently_drift": other and other["drift"], "evidently_score": other and other["score"],
                     "evidently_method": other and other["method"],
                     "agree": bool(mine and other and mine["drift"] == other["drift"])})
    return rows


def same_findings(streamed: list, whole: list, tolerance: float = 1e-9) -> dict:
    """Whether the streamed findings are the in-memory ones: same rows and severities, values within
    ``tolerance`` (relative), and the largest relative difference seen."""
    import math

    mine = {(f, s): (severity, value) for f, s, severity, value in streamed}
    theirs = {(f, s): (severity, value) for f, s, severity, value in whole}
    worst = 0.0
    for key in mine.keys() & theirs.keys():
        a, b = mine[key][1], theirs[key][1]
        if not (math.isnan(a) and math.isnan(b)):
            worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
    same = mine.keys() == theirs.keys() and all(mine[k][0] == theirs[k][0] for k in mine) and worst <= tolerance
    return {"same": same, "rows": len(mine), "largest_relative_difference": worst}


ALL_MODES = ["compare", "profile+compare", "stream", "evidently"]
OURS = ALL_MODES[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-reference", type=int)
    parser.add_argument("--rows-current", type=int)
    parser.add_argument("--repeat", type=int, default=3, help="measurements per tool; medians reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20,000 reference and 100,000 current rows")
    parser.add_argument("--workdir", type=Path, help="set up here, or reuse a folder set up for the same sizes")
    parser.add_argument("--only", choices=["ours", "evidently"], help="measure one side only")
    parser.add_argument("--modes", help=f"comma-separated, of {','.join(ALL_MODES)} (default: all)")
    parser.add_argument("--chunk-rows", type=int, default=250_000, help="rows per chunk of the stream mode")
    parser.add_argument("--evidently-timeout", type=float, default=900, help="seconds before Evidently is stopped")
    parser.add_argument("--evidently-max-rss-gib", type=float, default=16, help="RSS at which Evidently is stopped")
    parser.add_argument("--evidently-repeat", type=int, help="measurements of Evidently (default: --repeat)")
    parser.add_argument("--cprofile", action="store_true", help="profile our timed part even when goals are met")
    parser.add_argument("--evidently-venv", type=Path, default=EVIDENTLY_VENV)
    parser.add_argument("--measure", choices=ALL_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        print(RESULT + json.dumps(setup(args.workdir, args.rows_reference, args.rows_current, args.seed)))
        return
    if args.make_profile:
        print(RESULT + json.dumps(make_profile(args.workdir)))
        return
    if args.measure:
        measured = (measure_evidently(args.workdir) if args.measure == "evidently"
                    else measure_ours(args.workdir, args.measure, args.cprofile, args.chunk_rows))
        print(RESULT + json.dumps(measured))
        return
    rows_reference = args.rows_reference or (20_000 if args.quick else 200_000)
    rows_current = args.rows_current or (100_000 if args.quick else 1_000_000)
    if min(rows_reference, rows_current) < 2_000 or args.repeat < 1:
        parser.error("each frame needs at least 2,000 rows (Evidently picks other tests at 1,000 or fewer)")
    modes = args.modes.split(",") if args.modes else ALL_MODES
    if set(modes) - set(ALL_MODES):
        parser.error(f"--modes: unknown {sorted(set(modes) - set(ALL_MODES))}; known: {ALL_MODES}")
    modes = [m for m in ALL_MODES if m in modes and (args.only is None or (m == "evidently") == (args.only == "evidently"))]
    wall, load_before = time.perf_counter(), os.getloadavg()
    workdir, info, temporary = prepared(args.workdir, rows_reference, rows_current, args.seed)
    try:
        python = {mode: sys.executable for mode in OURS}
        if "evidently" in modes:
            python["evidently"] = evidently_python(args.evidently_venv)
        if {"compare", "stream"} & set(modes):
            info.update(in_process(sys.executable, workdir, "--make-profile"))
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        for _ in range(args.repeat):  # alternating, so drift in machine load hits every tool alike
            for mode in modes:
                if mode == "evidently":
                    if (runs[mode] and "stopped" in runs[mode][-1]) or len(runs[mode]) >= (args.evidently_repeat
                                                                                  or args.repeat):
                        continue  # stopped once: not again
                    runs[mode].append(in_process(python[mode], workdir, "--measure", mode,
                                                 timeout=args.evidently_timeout,
                                                 max_rss_mib=args.evidently_max_rss_gib * 1024))
                else:
                    runs[mode].append(in_process(python[mode], workdir, "--measure", mode, "--chunk-rows",
                                                 str(args.chunk_rows)))
        summary = {}
        for mode, measured in runs.items():
            if "stopped" in measured[-1]:
                summary[mode] = dict(measured[-1])
                continue
            summary[mode] = {"seconds": statistics.median(m["seconds"] for m in measured),
                             **{key: max(m[key] for m in measured)
                                for key in ("rss_loaded_mib", "peak_timed_mib", "peak_rss_mib")}}
        goals, table, checks = {}, [], {}
        ours_run = [mode for mode in OURS if mode in runs]
        if "compare" in runs and "stream" in runs:
            checks["stream_vs_in_memory"] = same_findings(runs["stream"][-1]["all"], runs["compare"][-1]["all"])
        if "evidently" in runs:
            theirs = summary["evidently"]
            for mode in ours_run:
                mine = summary[mode]
                goals[mode] = {"speedup": theirs["seconds"] / mine["seconds"],
                               "peak_ratio": mine["peak_rss_mib"] / theirs["peak_rss_mib"],
                               "bound": "stopped" in theirs}
                if "stopped" not in theirs:
                    goals[mode]["timed_peak_ratio"] = mine["peak_timed_mib"] / theirs["peak_timed_mib"]
            if "stopped" not in theirs and ours_run:
                verdicts = runs["stream" if "stream" in runs else ours_run[0]][-1]["verdicts"]
                table = agreement(verdicts, runs["evidently"][-1]["verdicts"])
            for mode in ours_run:
                goals[mode]["met"] = (goals[mode]["speedup"] >= GOAL_SPEEDUP and goals[mode]["peak_ratio"]
                                      <= GOAL_MEMORY and all(row["agree"] for row in table))
        hot = {}
        if ours_run and (args.cprofile or not all(goal["met"] for goal in goals.values())):
            for mode in ours_run:
                hot[mode] = in_process(sys.executable, workdir, "--measure", mode, "--cprofile", "--chunk-rows",
                                       str(args.chunk_rows))["hot_spots"]
    finally:
        if temporary is not None:
            temporary.cleanup()
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    report(args, rows_reference, rows_current, info, runs, summary, goals, table, checks, hot, load,
           time.perf_counter() - wall)


def report(args, rows_reference, rows_current, info, runs, summary, goals, table, checks, hot, load, wall_s) -> None:
    """Print the table and write bench/results/monitoring.json (monitoring-<rows>.json for other sizes)."""
    names = {"compare": "ours: compare (stored profile)", "profile+compare": "ours: profile + compare",
             "stream": f"ours: stream ({args.chunk_rows:,}-row chunks)",
             "evidently": f"Evidently {EVIDENTLY_PINS[0].split('==')[1]} DataDriftPreset"}
    how = "reused" if info["reused"] else f"generated in {info['setup_s']:.0f}s"
    theirs = f" (Evidently {len(runs['evidently'])})" if "evidently" in runs else ""
    print(f"{rows_reference:,} reference and {rows_current:,} current rows x {len(NUMERIC) + len(CATEGORICAL)} "
          f"columns ({how}); median seconds of {args.repeat} run(s){theirs}, each in a fresh process; RSS in MiB; load "
          f"average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after ({load['cpus']} CPUs)")
    print(f"{'':<44}{'seconds':>9}{'RSS loaded':>12}{'peak timed':>12}{'checks +':>10}{'peak RSS':>10}"
          f"{'speedup':>9}{'peak/Ev':>9}")
    for mode, row in summary.items():
        if "stopped" in row:
            print(f"{names[mode]:<44}{row['seconds']:>9.0f}{'':>12}{'':>12}{'':>10}{row['peak_rss_mib']:>10.0f}"
                  f"   stopped: {row['stopped']} (seconds and peak RSS are as far as it got)")
            continue
        goal = goals.get(mode, {})
        bound = ">=" if goal.get("bound") else ""
        speed = f"{bound}{goal['speedup']:.1f}x" if goal else ""
        memory = f"{'<=' if bound else ''}{goal['peak_ratio']:.2f}" if goal else ""
        added = row["peak_timed_mib"] - row["rss_loaded_mib"]
        print(f"{names[mode]:<44}{row['seconds']:>9.2f}{row['rss_loaded_mib']:>12.0f}{row['peak_timed_mib']:>12.0f}"
              f"{added:>10.0f}{row['peak_rss_mib']:>10.0f}{speed:>9}{memory:>9}")
    if "stream_vs_in_memory" in checks:
        check = checks["stream_vs_in_memory"]
        print(f"stream vs compare in memory: {'the same' if check['same'] else 'NOT the same'} {check['rows']} findings "
              f"(severities; values within 1e-9 relative, largest difference {check['largest_relative_difference']:.1e})")
    if goals:
        agreeing = sum(row["agree"] for row in table)
        print(f"goal: >= {GOAL_SPEEDUP:.0f}x faster, peak RSS (whole process, loading included) <= 1/3 of Evidently's,"
              " same verdicts; " + (f"verdicts agree on {agreeing} of {len(table)} columns" if table
                                    else "Evidently gave no verdicts"))
        for mode, goal in goals.items():
            print(f"  {names[mode]}: {'met' if goal['met'] else 'NOT met'} ({goal['speedup']:.1f}x faster, peak RSS "
                  f"{goal['peak_ratio']:.2f} of Evidently's" + (f"; timed part's peak alone "
                  f"{goal['timed_peak_ratio']:.2f})" if "timed_peak_ratio" in goal else ", bounds: Evidently stopped)"))
    if table:
        print(f"{'column':<16}{'change':<34}{'ours':>6}{'score':>8}{'Evidently':>10}{'score':>8}  method")
        for row in table:
            flag = {True: "drift", False: "-", None: "?"}
            print(f"{row['column']:<16}{row['change']:<34}{flag[row['ours_drift']]:>6}{row['ours_score'] or 0:>8.3f}"
                  f"{flag[row['evidently_drift']]:>10}{row['evidently_score'] or 0:>8.3f}  {row['evidently_method']}"
                  f"{'' if row['agree'] else '   <- DISAGREE'}")
    ours_last = next((runs[mode][-1] for mode in OURS if mode in runs), None)
    if ours_last and ours_last["other_findings"]:
        print("our other findings: " + "; ".join(f"{f['feature']} {f['statistic']} {f['severity']}"
                                                  for f in ours_last["other_findings"]))
    for mode, spots in hot.items():
        print(f"hot spots, {names[mode]} (cProfile; share of the timed part):")
        for spot in spots["ours"] + spots["own"]:
            print(f"  {spot['cumulative_share']:>6.1%} cum {spot['own_share']:>6.1%} own {spot['calls']:>8} calls  "
                  f"{spot['function']}")
    name = "monitoring.json" if rows_current == 1_000_000 else f"monitoring-{rows_current}.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "rows_reference": rows_reference, "rows_current": rows_current, "repeat": args.repeat, "seed": args.seed,
        "chunk_rows": args.chunk_rows, "load": load, "setup": info, "evidently_pins": EVIDENTLY_PINS,
        "summary": summary, "goals": goals, "verdicts": table, "checks": checks, "runs": runs, "hot_spots": hot,
        "wall_s": wall_s,
    }, indent=2, default=str))
    print(f"wrote {out.relative_to(ROOT)}; wall time {wall_s:.0f}s")


if __name__ == "__main__":
    main()
