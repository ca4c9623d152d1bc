"""The MLflow mirror (DESIGN §6).

One writer of MLflow runs (:mod:`.writer`), driven by the live worker
(:mod:`.worker`: queue, linger, backoff, deadline) and by sync (:mod:`.sync`:
the diff of :mod:`.backlog`, then replay); the registry (:mod:`.registry`)
registers. :mod:`.backend` makes the bounded MLflow calls, :mod:`.errors`
classifies their failures, :mod:`.cursor` keeps what reached MLflow in
run.json, :mod:`.mapping`, :mod:`.media` and :mod:`.datasets` turn the record
into MLflow's entities, :mod:`.conventions` holds MLflow's naming rules.

Importing this package does not import MLflow; the modules that talk to
MLflow import it when a run is mirrored, synced or registered.
"""

from .uri import default_tracking_uri, mlflow_ui_base, mlflow_ui_url, resolve_tracking_uri

__all__ = ["default_tracking_uri", "mlflow_ui_base", "mlflow_ui_url", "resolve_tracking_uri"]
