"""The MLflow pyfunc face of a ModelBundle: score a DataFrame of (series, time, value).

Logged with MLflow's *models from code* (``cricket/mlflow_model.py``), so MLflow
pickles nothing: the model is this class plus the bundle folder (JSON + arrays) as
an artifact, loaded with :meth:`cricket.model.ModelBundle.load`.

    model = mlflow.pyfunc.load_model("models:/cricket-waveform@champion")
    scores = model.predict(frame)   # columns series, time, value
"""


from typing import Any

import mlflow.pyfunc
import pandas as pd

from cricket.model import ModelBundle, score_dataframe

BUNDLE_ARTIFACT = "bundle"


def signature() -> Any:
    """The model's input and output columns, shown on the version's page in the MLflow UI.

    The inputs are typed ``any``: MLflow's schema enforcement would refuse time
    zone-aware times (every series here has them), integer values (counters) and
    integer series names, all of which :func:`cricket.model.score_dataframe` accepts and
    checks itself. The outputs are typed as ``score_dataframe`` returns them."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), name) for name in ("series", "time", "value")])
    outputs = Schema([
        ColSpec("string", "series"),
        ColSpec(AnyType(), "time"),
        *(ColSpec("double", c) for c in ("value", "reconstruction", "error", "score")),
        ColSpec("boolean", "anomalous"),
        ColSpec("string", "detector"),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs)


class CricketPyfunc(mlflow.pyfunc.PythonModel):
    """Scores each series with its own detector (or the fleet one)."""

    def __init__(self) -> None:
        self.bundle: ModelBundle | None = None

    def load_context(self, context: Any) -> None:
        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(
        self, context, model_input: pd.DataFrame, params=None  # noqa: ANN001
    ) -> pd.DataFrame:
        """Columns series, time, value in; series, time, value, reconstruction, error,
        score, anomalous, detector out. (MLflow does no schema inference for a
        DataFrame type hint: the columns are checked by ``score_dataframe``.)"""
        if self.bundle is None:
            self.load_context(context)
        assert self.bundle is not None
        return score_dataframe(self.bundle, model_input)
