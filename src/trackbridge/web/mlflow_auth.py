"""MlflowAuthorizer: the live API authorized by MLflow's own users and experiment permissions.

For ``mlflow server --app-name trackbridge-auth``, which runs MLflow's
basic-auth app (``mlflow.server.auth``) with the live routes mounted. A
request must carry HTTP Basic credentials of an MLflow user (401 otherwise,
with MLflow's own realm, so a browser's login is shared with the MLflow UI);
a run's routes need the user's permission on the run's MLflow experiment
(run.json ``mlflow.experiment_id``): READ for its stream, metrics and media,
EDIT or MANAGE to stop or register it. Admins see everything; a run that is
not mirrored to MLflow (no experiment) is for admins only. Permissions are
resolved by MLflow's own rules (explicit grants, roles, the configured
``default_permission``), remembered for a couple of seconds.

This module is the one place trackbridge reaches into ``mlflow.server.auth``.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from typing import Any, Mapping

from .auth import Principal
from .http import ApiError, ApiRequest
from .routes import Access

CHALLENGE = {"WWW-Authenticate": 'Basic realm="mlflow"'}
UNAUTHENTICATED = "missing or wrong MLflow credentials: send HTTP Basic auth of an MLflow user"
_PERMISSION_TTL_S = 2.0


class _NoPermission:
    can_read = False
    can_update = False


_NONE = _NoPermission()


class MlflowAuthorizer:
    """Authenticates MLflow users (basic auth) and checks their experiment permissions."""

    per_run = True
    token = None

    def __init__(self) -> None:
        from mlflow.server import auth  # the basic-auth app: needs `pip install mlflow[auth]`

        self._auth = auth
        self._permissions: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def authenticate(self, request: ApiRequest) -> Principal:
        header = request.headers.get("authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise ApiError(401, UNAUTHENTICATED, CHALLENGE)
        try:
            username, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, UNAUTHENTICATED, CHALLENGE) from None
        user = self._auth._authenticate_cached(username, password) if sep else None
        if user is None:
            raise ApiError(401, UNAUTHENTICATED, CHALLENGE)
        # Browsers resend basic credentials by themselves: they are not proof against a cross-site page.
        return Principal(name=username, admin=bool(user.is_admin), explicit=False, via="basic")

    def can(self, principal: Principal, access: Access, run: Mapping[str, Any] | None) -> bool:
        if principal.admin or access in (Access.PUBLIC, Access.SIGNED_IN):
            return True
        mlflow = (run or {}).get("mlflow")
        experiment_id = mlflow.get("experiment_id") if isinstance(mlflow, dict) else None
        if experiment_id is None or principal.name is None:
            return False
        permission = self._permission(str(experiment_id), principal.name)
        return bool(permission.can_update if access is Access.EDIT else permission.can_read)

    def _permission(self, experiment_id: str, username: str) -> Any:
        key = (username, experiment_id)
        now = time.monotonic()
        with self._lock:
            cached = self._permissions.get(key)
        if cached is not None and now - cached[0] < _PERMISSION_TTL_S:
            return cached[1]
        try:
            permission = self._auth._get_experiment_permission(experiment_id, username)
        except Exception:  # MlflowException (an experiment MLflow does not know), a store error: deny
            permission = self._auth.NO_PERMISSIONS if hasattr(self._auth, "NO_PERMISSIONS") else _NONE
        with self._lock:
            self._permissions[key] = (now, permission)
        return permission
