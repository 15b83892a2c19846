"""Backtesting: registered model versions judged on newly labelled data, the champion against the rest.

When the labels of a scored month arrive, every registered version scores the same labelled rows,
so older versions serve as benchmarks for the champion. :func:`evaluate` gives the figures for one
set of scores, :func:`findings` turns a table of them into monitoring findings (the same columns
as :func:`runner.monitoring.drift.compare`): each version's figures, the champion's drop against its
own holdout at training time, and any version that beats the champion by the model's margin.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

from runner.config import Thresholds
from runner.monitoring.drift import COLUMNS, sort_findings

CALIBRATION_BINS = 10
FIGURES = ("auc", "ks", "brier", "calibration_error")


def evaluate(y_true, scores) -> dict[str, float]:
    """AUC, KS (largest gap between the ROC curve and the diagonal), Brier score, calibration.

    ``calibration_error`` is the expected calibration error over :data:`CALIBRATION_BINS` bins of
    equal size by score: the row-weighted mean of |mean score - observed rate| per bin.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(scores, dtype=float)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(f"backtesting needs labels of both classes; got {len(y)} rows, {int(y.sum())} positive")
    fpr, tpr, _ = roc_curve(y, p)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, CALIBRATION_BINS)
    gaps = np.array([abs(p[b].mean() - y[b].mean()) for b in bins if len(b)])
    sizes = np.array([len(b) for b in bins if len(b)])
    return {
        "auc": float(roc_auc_score(y, p)),
        "ks": float(np.max(tpr - fpr)),
        "brier": float(brier_score_loss(y, p)),
        "calibration_error": float(np.sum(gaps * sizes) / sizes.sum()),
        "predicted_rate": float(p.mean()),
        "observed_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def calibration_table(y_true, scores, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Mean score and observed rate per bin of equal size by score (for a reliability plot)."""
    frame = pd.DataFrame({"y": np.asarray(y_true, dtype=int), "p": np.asarray(scores, dtype=float)})
    frame["bin"] = pd.qcut(frame["p"].rank(method="first"), bins, labels=False)
    return frame.groupby("bin").agg(predicted=("p", "mean"), observed=("y", "mean"), rows=("y", "size"))


def findings(results: pd.DataFrame, champion: str, *, margin: float = 0.0, thresholds: Thresholds = Thresholds(),
             holdout_auc: Mapping[str, float] | None = None, month: str = "",
             saw_labels: Collection[str] = ()) -> pd.DataFrame:
    """Monitoring findings from ``results``: one row per version (index: ``v3``, ``served v2``...), columns :data:`FIGURES`.

    ``champion`` is the champion's row label; ``holdout_auc`` maps row labels to the AUC measured
    on the holdout at training time (the champion's drop is judged by ``thresholds.performance_drop``).
    A version that beats the champion's AUC by at least ``margin`` is a ``warn`` finding: consider promoting it.
    Versions in ``saw_labels`` were trained on these labels: their figures are shown but judge nothing,
    and when the champion is one of them there is no fair judgement of it this month.
    """
    rows = []
    for label, figures in results.iterrows():
        for name in FIGURES:
            rows.append((f"model:{label}", "model", name, float(figures[name]), np.nan, "ok",
                         "trained on these labels" if label in saw_labels else ""))
    if champion in saw_labels:
        rows.append((f"model:{champion}", "model", "judged", 0.0, np.nan, "ok",
                     f"champion {champion} was trained on {month or 'these'} labels: no fair backtest this month"))
        return sort_findings(pd.DataFrame(rows, columns=COLUMNS))
    best = results["auc"].drop([champion, *saw_labels], errors="ignore")
    best = best[[not str(label).startswith("served") for label in best.index]]
    ours = float(results.loc[champion, "auc"])
    trained = (holdout_auc or {}).get(champion)
    if trained is not None:
        drop = trained - ours
        levels = thresholds.performance_drop
        severity = "alert" if drop >= levels.alert else "warn" if drop >= levels.warn and drop > 0 else "ok"
        rows.append((f"model:{champion}", "model", "auc_drop", drop, np.nan, severity,
                     f"champion {champion}: AUC {ours:.3f} on {month or 'new'} labels vs {trained:.3f} on its holdout"))
    if len(best):
        label, auc = best.idxmax(), float(best.max())
        gain = auc - ours
        severity = "warn" if gain >= max(margin, 1e-12) else "ok"
        rows.append((f"model:{label}", "model", "beats_champion", gain, np.nan, severity,
                     f"{label} {'beats' if severity == 'warn' else 'does not beat'} champion {champion} on "
                     f"{month or 'new'} labels: AUC {auc:.3f} vs {ours:.3f} (margin {margin})"))
    return sort_findings(pd.DataFrame(rows, columns=COLUMNS))

