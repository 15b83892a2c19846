"""How a registered classifier is served: MLflow pyfunc ``predict`` returns the positive class's probability.

A credit score (or a churn score) is ``predict_proba(X)[:, 1]``, not a class label. MLflow's sklearn
flavor can only expose a whole method (``predict`` or the two-column ``predict_proba``), so
:mod:`runner.tracking.tracker` logs this file as an MLflow "model from code" with the fitted estimator as its
artifact. MLflow runs this file to load the model: it imports nothing from ``runner``, so a scoring
server (``mlflow models serve``) needs only MLflow, pandas and scikit-learn. Inputs are checked
against the signature logged with the version (a ``pd.DataFrame`` hint asks MLflow for no more).
"""

import mlflow.models
import mlflow.sklearn
import pandas as pd
from mlflow.pyfunc import PythonModel

ESTIMATOR = "estimator"  # the artifact holding the fitted scikit-learn estimator (sklearn flavor)


class PositiveClassProbability(PythonModel):
    """``predict(X)`` is the probability of the positive class (``classes_[1]``), one float per row."""

    def load_context(self, context):
        self.estimator = mlflow.sklearn.load_model(context.artifacts[ESTIMATOR])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.estimator.predict_proba(model_input)[:, 1]


mlflow.models.set_model(PositiveClassProbability())
