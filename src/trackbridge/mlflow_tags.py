"""The MLflow tags trackbridge writes on a run and reads back (DESIGN §6).

Names only, no MLflow import: the mirror writes them, the MLflow event
source reads them, and both import this one list. MLflow's own names are
spelled out here (as :mod:`mlflow.utils.mlflow_tags` defines them) so the
record side can use them without importing MLflow.
"""

RUN_ID_TAG = "trackbridge.run_id"  # the run's trackbridge id: the link back to runs/<id>/
VERSION_TAG = "trackbridge.version"
ERROR_TAG = "trackbridge.error"  # "Type: message" of a failed run (run.json's error)
MAX_EPOCHS_TAG = "trackbridge.max_epochs"  # optional; read when present
MAX_TAG_VALUE_LENGTH = 8000  # MLflow's limit on a tag value

# MLflow's own tags
NOTE_TAG = "mlflow.note.content"  # the run's description, shown on its page
LOGGED_IMAGES_TAG = "mlflow.loggedImages"  # the run has step-aware images (its UI shows the Images tab)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # an experiment tag: which UI MLflow 3 shows
EXPERIMENT_KIND = "custom_model_development"  # "model training", not GenAI evaluations
