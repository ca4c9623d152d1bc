"""The MLflow mirror (DESIGN §6): URIs and mapping, the background worker, sync, the registry.

Importing this package does not import MLflow; :mod:`.worker`, :mod:`.sync`
and :mod:`.registry` do, when a run is mirrored, synced or registered.
"""

from .uri import default_tracking_uri, mlflow_ui_base, mlflow_ui_url, resolve_tracking_uri

__all__ = ["default_tracking_uri", "mlflow_ui_base", "mlflow_ui_url", "resolve_tracking_uri"]
