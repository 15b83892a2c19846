"""The starter project ``runner init`` writes: its runner.yaml, data dictionary and example data.

The example is a customer-churn model on generated data (numpy, nothing to download): a year of
monthly customer rows up to the current month, with a label, two categorical columns, a column with
missing values, an e-mail address that the dictionary keeps out of modelling (PII, GDPR purpose
limitation) and a few rows that break the dictionary, so the ingest shows what it refuses.
Everything here is the user's to change; nothing in the runner depends on these names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TABLE, KEY, LABEL, MODEL, PURPOSE = "customers", "customer_id", "churned", "churn", "churn_modelling"
SOURCE = f"data/example/{TABLE}.csv"
# (pipeline, step, template kind): what runner.yaml declares, in the order to run it
STEPS = (
    ("churn_ingest", "ingest", "ingest"),
    ("churn_train", "train", "train"),
    ("churn_score", "score", "score"),
    ("churn_score", "monitor", "monitor"),
    ("churn_backtest", "backtest", "backtest"),
)

RUNNER_YAML = """\
# yaml-language-server: $schema=schemas/runner.schema.json
# Notebook Runner project (made by `runner init`). Every key: the runner.yaml reference (docs/reference/config.md);
# your editor checks this file against schemas/runner.schema.json.
#
# Try it, in this order:  runner validate
#                         runner run churn_ingest
#                         runner run churn_train
#                         runner run churn_score
#                         runner run churn_backtest
# Then look: runner runs, runner show RUN_ID, runner models churn, runner review build.

dictionary: data/dictionary.yaml   # the data dictionary: tables, columns, PII, allowed purposes

defaults:
  # What the notebooks import, imported once by the kernels' fork server: each step's kernel starts with them
  preload: [scrapbook, pandas, sklearn.ensemble, sklearn.pipeline, sklearn.compose, sklearn.impute,
            sklearn.preprocessing, sklearn.model_selection, sklearn.metrics, matplotlib.pyplot, mlflow,
            mlflow.sklearn, mlflow.pyfunc, mlflow.store.tracking.sqlalchemy_store,
            mlflow.store.model_registry.sqlalchemy_store, skops.io, runner.nb, runner.data, runner.monitoring]

pipelines:
  churn_ingest:                      # a month of customers from data/example/customers.csv into the warehouse
    purpose: churn_modelling         # what the data is used for: a purpose of data/dictionary.yaml
    steps:
      ingest:
        notebook: notebooks/churn_ingest/ingest.ipynb
        parameters: {months: 12}     # as_of's month and the 11 before it; keyed rows are replaced, so reruns are safe

  churn_train:                       # learn `churned` from the labelled months before as_of's month
    purpose: churn_modelling
    steps:
      train: {notebook: notebooks/churn_train/train.ipynb, timeout: 30m}

  churn_score:                       # score as_of's month with the champion, then monitor inputs, scores and usage
    purpose: churn_modelling
    steps:
      score: {notebook: notebooks/churn_score/score.ipynb, retries: 1, retry_delay: 10s}
      monitor: {notebook: notebooks/churn_score/monitor.ipynb, needs: [score]}

  churn_backtest:                    # every version on the labelled month (labels come with the example data)
    purpose: churn_modelling
    steps:
      backtest: {notebook: notebooks/churn_backtest/backtest.ipynb}
    # schedule: {cron: "0 6 L * *", timezone: UTC}   # `runner scheduler` would run it at each month-end

models:
  churn: {metric: auc, higher_is_better: true, margin: 0.005}   # a new version must beat the champion by this

monitoring:
  fail_on: null                      # `warn` or `alert` to fail the monitor step (after saving its findings)
  # thresholds: {psi: {warn: 0.1, alert: 0.25}}                # effect sizes; docs/guides/monitoring.md lists them all

# notify: {webhook: https://hooks.example.com/churn, events: [alert, failure]}
# stores:                            # defaults: everything under .runner/ (sqlite, files)
#   warehouse: postgresql://user@db/warehouse
#   tracking: http://mlflow.internal:5000
"""

DICTIONARY_YAML = """\
# yaml-language-server: $schema=../schemas/dictionary.schema.json
# The data dictionary: every table and column the notebooks read or write (the data dictionary reference,
# docs/reference/dictionary.md, explains each key; schemas/dictionary.schema.json lets your editor check this file).
# Writes are validated against it (nothing is written if a row breaks it) and a column is only read for
# a pipeline whose `purpose:` the column's allowed_purposes include.

purposes:                               # every purpose a pipeline may declare, with what it means
  churn_modelling: Training and running the churn model, and monitoring it.
  customer_contact: Contacting a customer about their own account.

tables:
  customers:                            # the table name in the warehouse
    description: One row per customer and month, as exported from the billing system.
    owner: customer-analytics           # who answers questions about it (columns inherit it)
    key: [customer_id]                  # re-ingesting a row with the same key replaces it
    columns:
      customer_id:
        type: string                    # int, float, string, category, bool, date, datetime
        description: Id of the customer in this month's export (C<YYYY-MM>-<number>).
        nullable: false
        pii: false
        pattern: '^C\\d{4}-\\d{2}-\\d{5}$'  # string columns: a regular expression every value matches
        allowed_purposes: [any]         # `any`, or purposes declared above
      month:
        type: string
        description: Month of the export (YYYY-MM).
        nullable: false
        pii: false
        pattern: '^\\d{4}-(0[1-9]|1[0-2])$'
        allowed_purposes: [any]
      tenure_months:
        type: int
        description: Months since the customer signed up.
        nullable: false
        pii: false
        min: 0                          # int and float columns: the range of valid values
        max: 600
        allowed_purposes: [any]
      monthly_spend:
        type: float
        description: Amount billed this month in EUR; missing when billing had no data.
        nullable: true                  # missing values allowed
        pii: false
        min: 0
        max: 100000
        allowed_purposes: [any]
      support_calls:
        type: int
        description: Calls to support in the last 90 days.
        nullable: false
        pii: false
        min: 0
        max: 200
        allowed_purposes: [any]
      plan:
        type: category
        description: The customer's subscription plan.
        levels: [basic, plus, premium]  # category columns: every allowed value
        nullable: false
        pii: false
        allowed_purposes: [any]
      region:
        type: category
        description: Region of the billing address.
        levels: [north, south, east, west]
        nullable: false
        pii: false
        allowed_purposes: [any]
      email:
        type: string
        description: The customer's e-mail address.
        nullable: false
        pii: true                       # personal data
        owner: customer-data            # a column may name its own owner
        allowed_purposes: [customer_contact]
        rule: "GDPR Art. 5(1)(b) purpose limitation: collected to contact the customer, not for modelling"
      churned:
        type: int
        description: 1 if the customer cancelled within two months of the export, else 0; the label.
        nullable: true                  # unknown until observed
        pii: false
        min: 0
        max: 1
        allowed_purposes: [churn_modelling]
"""

GITIGNORE = """\
# Notebook Runner's embedded stores (warehouse, MLflow, run records, snapshots): data, not code
.runner/
.ipynb_checkpoints/
"""

PLANS = ("basic", "plus", "premium")
REGIONS = ("north", "south", "east", "west")


def example_customers(last_month: str, months: int = 12, rows_per_month: int = 400, seed: int = 7) -> pd.DataFrame:
    """Generated churn data: ``months`` months of customers ending with ``last_month`` (YYYY-MM).

    Churn depends on support calls, tenure, spend and plan through a logistic model, so a classifier
    learns something real (holdout AUC about 0.8). About one row in 200 breaks the dictionary (a
    negative spend or an unknown plan) and is refused at ingest.
    """
    rng = np.random.default_rng(seed)
    end = pd.Period(last_month, freq="M")
    frames = []
    for back in reversed(range(months)):
        month = str(end - back)
        n = rows_per_month
        tenure = rng.gamma(2.0, 18.0, n).round().clip(0, 600).astype(int)
        plan = rng.choice(PLANS, n, p=[0.5, 0.35, 0.15])
        spend = (rng.lognormal(3.4, 0.5, n) * np.select([plan == "plus", plan == "premium"], [1.6, 2.8], 1.0)).round(2)
        calls = rng.poisson(1.2, n)
        logit = -1.0 + 0.9 * calls - 0.06 * tenure + 0.006 * spend + np.where(plan == "basic", 1.0, 0.0)
        churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        frame = pd.DataFrame({
            "customer_id": [f"C{month}-{i:05d}" for i in range(n)],
            "month": month,
            "tenure_months": tenure,
            "monthly_spend": np.where(rng.random(n) < 0.03, np.nan, spend),
            "support_calls": calls,
            "plan": plan,
            "region": rng.choice(REGIONS, n),
            "email": [f"customer{i}.{month}@example.com" for i in range(n)],
            "churned": churned,
        })
        broken = rng.random(n) < 0.005
        frame.loc[broken, "monthly_spend"] = -1.0
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
