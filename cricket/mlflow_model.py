"""Model code for MLflow's "models from code": logged as the pyfunc's python_model.

MLflow copies this file into the model and runs it on load; nothing is pickled.
"""

from mlflow.models import set_model

from cricket.pyfunc import CricketPyfunc

set_model(CricketPyfunc())
