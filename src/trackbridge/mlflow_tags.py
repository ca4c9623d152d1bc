"""The MLflow tags trackbridge writes on a run and reads back (DESIGN §6).

Names only, no MLflow import: the mirror writes them, the MLflow event
source reads them, and both import this one list.
"""

RUN_ID_TAG = "trackbridge.run_id"  # the run's trackbridge id: the link back to runs/<id>/
VERSION_TAG = "trackbridge.version"
ERROR_TAG = "trackbridge.error"  # "Type: message" of a failed run (run.json's error)
MAX_EPOCHS_TAG = "trackbridge.max_epochs"  # optional; read when present
MAX_TAG_VALUE_LENGTH = 8000  # MLflow's limit on a tag value
