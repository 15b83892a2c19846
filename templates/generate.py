"""Write the notebook templates of ``runner new`` and ``runner init`` (``templates/notebooks/<kind>.ipynb``).

Edit the cells here, then run ``.venv/bin/python templates/generate.py``. In the cells ``{{pipeline}}``,
``{{name}}`` (the step), ``{{table}}``, ``{{label}}``, ``{{model}}``, ``{{source}}``, ``{{score_step}}`` and
``{{as_of}}`` (the day the notebook is made, so it runs by hand on current data) are filled in by
:mod:`runner.project.scaffold`. Every template runs unchanged on a project made by ``runner init``
(tests/test_init.py executes each one); names of the user's data come from parameters and the data
dictionary, never from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).parent / "notebooks"

INGEST = [
    ("markdown", """# {{name}}: ingest `{{table}}`

Made by `runner new ingest`. Reads the rows of `as_of`'s month (and of the `months - 1` months before it)
from `source`, checks them against the data dictionary (`data/dictionary.yaml`) and writes them to the
warehouse table `table`. Rows whose key already exists are replaced, so running it again for the same
month is safe. Rows that break the dictionary are refused: with `on_violation = "quarantine"` they are
listed here and the others are written; with `"fail"` nothing is written. Replace the read below with
your own source (a database, an API, a file per day)."""),
    ("parameters", """as_of = "{{as_of}}"          # the run's logical date; `runner run --as-of` sets it
source = "{{source}}"  # a CSV file (relative to the project root) or any URL pandas reads
table = "{{table}}"           # the warehouse table, declared in data/dictionary.yaml
month_column = "month"        # rows are picked by this YYYY-MM column; "" takes every row of the file
months = 1                    # as_of's month and the months before it (12 loads a year of history)
on_violation = "quarantine"   # "quarantine": write the rows that fit; "fail": refuse the whole batch"""),
    ("code", """import pandas as pd

from runner import nb

ctx = nb.context(pipeline="{{pipeline}}", as_of=as_of, step="{{name}}")
path = source if "://" in source else ctx.config.root / source  # relative paths start at the project root
raw = pd.read_csv(path)
last = pd.Period(as_of[:7], freq="M")
wanted = [str(last - back) for back in reversed(range(months))]
batch = raw[raw[month_column].isin(wanted)].reset_index(drop=True) if month_column else raw
if batch.empty:
    raise ValueError(f"no rows of {', '.join(wanted)} in {source}; check as_of, month_column and the file")
print(f"{len(batch):,} rows of {', '.join(wanted) if month_column else 'every month'} from {source}")"""),
    ("markdown", "## Check the batch against the data dictionary"),
    ("code", """valid, rejected = nb.split_valid(table, batch)
if len(rejected) and on_violation == "fail":
    nb.warehouse().dictionary.validate(table, batch)  # raises DataContractError listing every failure
rejected.groupby("reason").size().rename("rows").to_frame() if len(rejected) else "every row fits the dictionary\""""),
    ("markdown", "## Write to the warehouse"),
    ("code", """written = nb.save(table, valid)
nb.glue("rows_written", written)
nb.glue("rows_rejected", len(rejected))
nb.glue("months", wanted)
print(f"wrote {written:,} rows to {table}; refused {len(rejected):,}")"""),
]

TRAIN = [
    ("markdown", """# {{name}}: train a model for `{{pipeline}}`

Made by `runner new train`. Learns `label` from the labelled rows of `table` before `as_of`'s month, with
every column the data dictionary allows for the pipeline's purpose as a feature. Stores the exact training
frame as a snapshot, then `nb.save_model` registers the model with a profile of its data (what monitoring
compares against): the first version becomes the champion, a later one only when it beats the champion
on the same holdout (`models.<name>.margin` in `runner.yaml`), else the challenger. Under the runner the
alias moves when the step succeeds; run by hand, the version stays in your own namespace."""),
    ("parameters", """as_of = "{{as_of}}"          # the run's logical date; `runner run --as-of` sets it
model_name = "{{model}}"      # the registered model; score and monitor load it by this name
table = "{{table}}"           # the warehouse table with the features and the label
label = "{{label}}"           # the 0/1 column to predict
month_column = "month"        # learn from the months before as_of's; "" learns from every row
train_months = 12             # how many months back
holdout_share = 0.25
seed = 7"""),
    ("code", """import matplotlib.pyplot as plt
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import RocCurveDisplay
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from runner import nb

ctx = nb.context(pipeline="{{pipeline}}", as_of=as_of, step="{{name}}")
features = nb.features(table, exclude=[label, month_column])  # the columns this pipeline's purpose may use
numeric, categorical = nb.feature_kinds(features, table)
print(f"features: {', '.join(features)}")"""),
    ("markdown", "## Labelled rows known before `as_of`"),
    ("code", """last = pd.Period(as_of[:7], freq="M")
if month_column:
    frame = nb.load(table, columns=[*features, label], where=f"{month_column} >= :first AND {month_column} < :last",
                    params={"first": str(last - train_months), "last": str(last)})
else:
    frame = nb.load(table, columns=[*features, label])
frame = frame[frame[label].notna()].reset_index(drop=True)
if len(frame) < 100 or frame[label].nunique() < 2:
    raise ValueError(f"only {len(frame)} labelled rows of {table} before {last}: ingest more history first "
                     "(e.g. the ingest with months=12)")
digest = nb.snapshot(frame, name="training", targets=label)  # the exact training data, content-addressed
print(f"{len(frame):,} labelled rows, positive rate {frame[label].mean():.1%}")"""),
    ("markdown", "## Fit on a stratified split, then register: champion or challenger"),
    ("code", """X = frame[features].astype({column: "float64" for column in numeric})
y = frame[label].astype(int)
X_train, X_hold, y_train, y_hold = train_test_split(X, y, test_size=holdout_share, stratify=y, random_state=seed)
prepare = ColumnTransformer([
    ("numeric", "passthrough", numeric),
    ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                                  OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical),
])
model = Pipeline([("prepare", prepare), ("classifier", HistGradientBoostingClassifier(random_state=seed))])
model.fit(X_train, y_train)
fig, ax = plt.subplots(figsize=(5, 4))
RocCurveDisplay.from_estimator(model, X_hold, y_hold, ax=ax)
ax.set_title("ROC on the holdout")
nb.log_figure(fig, "roc")"""),
    ("code", """decision = nb.save_model(model, model_name, X_example=X_train, holdout=(X_hold, y_hold), training_digest=digest,
                         reference=X, table=table)
nb.glue("auc", round(float(decision["value"]), 6))
nb.glue("train_rows", len(X_train))
# The headline: shown here, and first in the executed notebook (the runner copies it to the top)
outcome = decision["decision"] if decision["decision"] in ("champion", "challenger") else "by hand"
nb.headline(outcome, f"{model_name} v{decision['version']}: {decision['metric']} {decision['value']:.4f} on the holdout",
            [decision["reason"]])
pd.Series(decision).to_frame("registered")"""),
]

SCORE = [
    ("markdown", """# {{name}}: score with the `{{model}}` model

Made by `runner new score`. Scores the rows of `as_of`'s month in `table` with the registered version
holding `alias` and writes the scores to the warehouse table `predictions`: all rows of this run or none,
each traceable to the run, the model version and its training data. The entity id is the table's key."""),
    ("parameters", """as_of = "{{as_of}}"          # the run's logical date; scores are written for it
model_name = "{{model}}"      # the registered model to score with
alias = "champion"            # which version: champion or challenger
table = "{{table}}"           # the warehouse table with the rows to score
month_column = "month"        # score the rows of as_of's month; "" scores every row
chunksize = 50000             # rows read, scored and written at a time"""),
    ("code", """import matplotlib.pyplot as plt

from runner import nb

ctx = nb.context(pipeline="{{pipeline}}", as_of=as_of, step="{{name}}")
version, model = nb.model(model_name, alias)
month = as_of[:7]
print(f"scoring {table} ({month if month_column else 'every row'}) with {model_name} v{version['version']} ({alias})")"""),
    ("markdown", "## Score in chunks; all rows or none"),
    ("code", """where, params = (f"{month_column} = :month", {"month": month}) if month_column else (None, None)
scoring = nb.score(model, model_name, version["version"], table, where=where, params=params, chunksize=chunksize)
if scoring["rows"] == 0:
    raise ValueError(f"no rows of {table} for {month}; run the ingest for {as_of} first")
scored = nb.predictions(run_id=ctx.run_id, namespace=ctx.namespace)
nb.glue("rows_scored", scoring["rows"])
nb.glue("latency_ms_per_1k", round(scoring["ms_per_1k"], 3))
nb.glue("score_mean", round(float(scored["score"].mean()), 6))
nb.glue("model_version", version["version"])
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.hist(scored["score"], bins=40)
ax.set(title=f"Scores for {month}", xlabel="score (probability of the positive class)", ylabel="rows")
nb.log_figure(fig, "scores")
print(f"{scoring['rows']:,} scores written, {scoring['ms_per_1k']:.1f} ms per 1,000 rows")"""),
]

MONITOR = [
    ("markdown", """# {{name}}: monitor the `{{model}}` model

Made by `runner new monitor`. Compares what the model saw with the **reference profile** stored with the
model version at training time: drift (PSI, Jensen-Shannon, Wasserstein), missing values, new categorical
levels, values outside the data dictionary, the score distribution, and usage. `source` picks what is
judged: `"batch"`, the rows of `as_of`'s month and the scores this run's `score_step` wrote (usage: rows
against the recent norm, failed runs, latency); `"requests"`, what `runner serve` answered in `as_of`'s
month (the warehouse table `requests`; usage: requests, error rate, latency percentiles; findings named
`api`, `api:<feature>`); `"both"`. No rows or no scores is an alert of its own. Findings go to the
warehouse table `monitoring_metrics`; `warn` and `alert` go to the notifier of `runner.yaml`."""),
    ("parameters", """as_of = "{{as_of}}"          # the run's logical date
model_name = "{{model}}"      # the registered model whose inputs and scores are watched
alias = "champion"            # by hand, or for source="requests": the version to judge (else the score step's)
table = "{{table}}"           # the warehouse table the model scored (its dictionary types the API's inputs)
month_column = "month"        # the batch is as_of's month; "" takes every row
score_step = "{{score_step}}"  # the step of this pipeline that wrote the scores
history_runs = 12             # earlier runs for the usage norms
source = "batch"              # "batch", "requests" (what `runner serve` answered in as_of's month) or "both\""""),
    ("code", """import pandas as pd

from runner import monitoring, nb
from runner.monitoring.usage import from_api, request_findings, usage_findings

if source not in ("batch", "requests", "both"):
    raise ValueError(f"source = {source!r}: use 'batch', 'requests' (the API's traffic) or 'both'")
ctx = nb.context(pipeline="{{pipeline}}", as_of=as_of, step="{{name}}")
thresholds = ctx.config.monitoring.thresholds
# what this run's score step recorded, and which run wrote it (empty by hand, and for the API alone)
scoring = nb.this_run(score_step) if source != "requests" else {}
production = {v["version"]: v for v in nb.versions(model_name)}
if scoring.get("model_version"):
    version = production[str(scoring["model_version"])]
else:
    version = next(v for v in production.values() if alias in v["aliases"])
reference = nb.load_profile(version)
features = [column for column in reference["columns"] if column != "score"]
month = as_of[:7]
judged = {}  # "batch" / "requests": (inputs, scores), each compared with the reference
if source in ("batch", "both"):
    where, params = (f"{month_column} = :month", {"month": month}) if month_column else (None, None)
    batch = nb.load(table, columns=features, where=where, params=params)
    if scoring:
        scored_by = scoring["run_id"]
    else:  # by hand: production's latest scoring of this as_of by the version
        served = nb.predictions(as_of=as_of, model_name=model_name, model_version=version["version"])
        scored_by = served.sort_values("scored_at")["run_id"].iloc[-1] if len(served) else None
    scores = nb.predictions(run_id=scored_by)["score"] if scored_by else pd.Series(dtype=float)
    judged["batch"] = (batch, scores)
    print(f"{month}: {len(batch):,} rows, {len(scores):,} scores by {model_name} v{version['version']}")
if source in ("requests", "both"):  # the API's traffic of as_of's month, by received_at
    since, until = f"{month}-01", (pd.Period(month, "M") + 1).strftime("%Y-%m-01")
    api_inputs, api_scores, api_usage = nb.served_requests(model_name, since, until, version=version["version"],
                                                           table=table, columns=features)
    judged["requests"] = (api_inputs, api_scores)
    print(f"{month}: {api_usage['requests']:,} requests to the API, {len(api_inputs):,} rows answered by "
          f"v{version['version']}")
print(f"reference: {reference['rows']:,} training rows")"""),
    ("markdown", "## Findings, most severe first"),
    ("code", """parts = []
if "batch" in judged:
    parts += [monitoring.compare(reference, batch, thresholds, limits=nb.limits(features, table)),
              monitoring.score_findings(reference, scores, thresholds),
              usage_findings(len(scores), scoring.get("latency_ms_per_1k"),
                             nb.recent_runs(step=score_step, limit=history_runs), thresholds)]
if "requests" in judged:
    parts.append(request_findings(api_usage, thresholds, window=month))
    if api_usage["requests"]:  # no requests at all is one finding above, not an input drift
        parts += [from_api(monitoring.compare(reference, api_inputs, thresholds, limits=nb.limits(features, table))),
                  from_api(monitoring.score_findings(reference, api_scores, thresholds))]
findings = monitoring.sort_findings(pd.concat(parts, ignore_index=True))
status, reasons = monitoring.status(findings), monitoring.reasons(findings)
# The headline: shown here, and first in the executed notebook (the runner copies it to the top).
# Reasons quote your data (levels, column names): nb.headline escapes them, as pandas' own tables do.
# Showing data with IPython's HTML() or a pandas Styler? Escape it: html.escape, .format(escape="html").
nb.headline(status, f"{month}, {model_name} v{version['version']} ({source}): {len(reasons)} finding(s) at "
            "warn or alert", reasons)
shown = findings[findings["severity"] != "ok"]
(shown if len(shown) else findings.head(10))[["severity", "feature", "statistic", "value", "p_value", "detail"]]"""),
    ("markdown", "## Distributions against the reference"),
    ("code", """drifted = []
for name, (inputs, scored) in judged.items():
    prefix, figure = ("api:", "api_") if name == "requests" else ("", "")
    mine = findings[findings["feature"].isin([prefix + feature for feature in features])]
    bad = list(dict.fromkeys(mine.loc[mine["severity"] != "ok", "feature"]))
    drifted += bad
    if not len(inputs):
        continue
    top = mine.sort_values("value", ascending=False)["feature"].drop_duplicates()[:3]
    to_plot = [feature[len(prefix):] for feature in (bad[:6] or list(top))]
    nb.log_figure(monitoring.overlay_figure(reference, inputs, to_plot), f"{figure}overlays")
    if len(scored):
        nb.log_figure(monitoring.score_figure(reference, scored), f"{figure}scores")"""),
    ("markdown", "## Record, notify"),
    ("code", """nb.record_findings(findings, model_name, version["version"])
inputs = [prefix + feature for prefix in ("", "api:") for feature in features]
input_psi = findings.loc[(findings["statistic"] == "psi") & findings["feature"].isin(inputs), "value"]
nb.glue("status", status)
nb.glue("reasons", reasons)
nb.verdict(status, reasons)  # the step's verdict: the review site, `runner runs` and MLflow show it
nb.glue("max_psi", round(float(input_psi.max()), 6) if len(input_psi) else 0.0)
nb.glue("drifted_features", drifted)
nb.glue("rows_monitored", sum(len(rows) for rows, _ in judged.values()))
nb.glue("scores_monitored", sum(len(scored) for _, scored in judged.values()))
if "requests" in judged:
    nb.glue("api_requests", api_usage["requests"])
    if api_usage["requests"]:
        nb.glue("api_error_rate", round(api_usage["error_rate"], 6))
        nb.glue("api_latency_p99_ms", round(api_usage["latency_p99_ms"], 3))
nb.alert(status, reasons, summary=f"{ctx.pipeline} {month}: {status} ({len(reasons)} findings)")
nb.fail_on(status)  # fails the step when runner.yaml sets monitoring.fail_on and the status reaches it"""),
]

BACKTEST = [
    ("markdown", """# {{name}}: backtest every version on newly labelled data

Made by `runner new backtest`. Labels arrive after scoring. This notebook takes the month whose labels are
in (`label_delay_months` before `as_of`), lets **every production version** of the model score the same
labelled rows and evaluates the scores that were actually served then: AUC, KS, Brier, calibration. The
champion is judged against its own holdout AUC; a version that beats it by the model's margin is reported.
Versions trained on these labels are shown, never used as benchmarks."""),
    ("parameters", """as_of = "{{as_of}}"          # the run's logical date
model_name = "{{model}}"      # the registered model
table = "{{table}}"           # the warehouse table with the features and the label
label = "{{label}}"           # the 0/1 outcome, filled in once known
month_column = "month"        # the YYYY-MM column that says which month a row belongs to
label_delay_months = 0        # the month judged is this many months before as_of's (when its labels are complete)
min_labelled = 100            # fewer labelled rows than this: wait for more"""),
    ("code", """import pandas as pd

from runner import monitoring, nb
from runner.monitoring import backtest

ctx = nb.context(pipeline="{{pipeline}}", as_of=as_of, step="{{name}}")
month = str(pd.Period(as_of[:7], freq="M") - label_delay_months)
versions = nb.versions(model_name)
champion = next((f"v{v['version']}" for v in versions if "champion" in v["aliases"]), None)
features = [c for c in nb.load_profile(versions[0])["columns"] if c != "score"] if versions else []
key = nb.key(table)
rows = nb.load(table, columns=[key, *features, label], where=f"{month_column} = :month", params={"month": month})
labelled = rows[rows[label].notna()].reset_index(drop=True)
served = nb.predictions(model_name=model_name)
served = served[served["as_of"].dt.strftime("%Y-%m") == month]
if len(served):  # the month's latest scoring run is what was served
    served = served[served["run_id"] == served.sort_values("scored_at")["run_id"].iloc[-1]]
ready = len(labelled) >= min_labelled and champion is not None and labelled[label].nunique() == 2
print(f"{month}: {len(rows):,} rows, {len(labelled):,} labelled, {len(served):,} served scores; "
      f"{len(versions)} production versions" + ("" if ready else " - not ready yet"))"""),
    ("code", """results, holdout_auc, saw_labels = {}, {}, []
for version in versions if ready else []:
    tag = f"v{version['version']}"
    estimator = nb.load_model(f"models:/{model_name}/{version['version']}")
    results[tag] = backtest.evaluate(labelled[label], estimator.predict_proba(labelled[features])[:, 1])
    if "auc" in version["tags"]:
        holdout_auc[tag] = float(version["tags"]["auc"])
    if version["tags"].get("as_of", "")[:7] > month:  # trained after this month: it may have seen its labels
        saw_labels.append(tag)
if ready and len(served):
    on_served = labelled.assign(entity_id=labelled[key].astype(str)).merge(served[["entity_id", "score"]], on="entity_id")
    if on_served[label].nunique() == 2:
        results["served"] = backtest.evaluate(on_served[label], on_served["score"])
if ready:
    table_of_results = pd.DataFrame(results).T
    found = backtest.findings(table_of_results, champion, margin=ctx.config.model_policy(model_name).margin,
                              thresholds=ctx.config.monitoring.thresholds, holdout_auc=holdout_auc, month=month,
                              saw_labels=saw_labels)
    status, reasons = monitoring.status(found), monitoring.reasons(found)
    nb.headline(status, f"champion {champion} on {month} labels", reasons)  # escaped: reasons quote data
    display_table = table_of_results.assign(note=pd.Series({tag: "trained on these labels" for tag in saw_labels}))
else:
    status, reasons, found, display_table = "waiting for labels", [], None, "not ready yet"
display_table"""),
    ("code", """nb.glue("backtest_month", month)
nb.glue("backtest_status", status)
if ready:
    nb.record_findings(found, model_name, champion[1:])
    nb.glue("champion_auc", round(results[champion]["auc"], 6))
    nb.glue("labelled_rows", len(labelled))
    nb.alert(status, reasons, summary=f"backtest of {model_name} on {month} labels: {status}")
    nb.fail_on(status)"""),
]

# Opens every parameters cell, so that its author finds it at a glance: what the tag does, where values come from.
PARAMETERS_HEADER = """\
# Parameters (this cell is tagged "parameters"): the defaults, for running by hand. A run sets its values in a
# cell papermill adds below this one: from runner.yaml, `runner run -p STEP.NAME=VALUE` and upstream scraps.
# `runner validate NOTEBOOK.ipynb` lists them. Keep one `name = value  # help` per line.
"""

TEMPLATES = {"ingest": INGEST, "train": TRAIN, "score": SCORE, "monitor": MONITOR, "backtest": BACKTEST}


def build(kind: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "runner": {"template": kind},
    }
    for index, (cell_type, source) in enumerate(cells):
        cell_id = f"{kind}-{index}"
        if cell_type == "markdown":
            cell = nbformat.v4.new_markdown_cell(source, id=cell_id)
        else:
            cell = nbformat.v4.new_code_cell(PARAMETERS_HEADER + source if cell_type == "parameters" else source,
                                             id=cell_id)
            if cell_type == "parameters":
                cell.metadata["tags"] = ["parameters"]
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def main(out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for kind, cells in TEMPLATES.items():
        nbformat.write(build(kind, cells), str(out / f"{kind}.ipynb"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
