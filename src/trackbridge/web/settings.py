"""WebSettings: what the live API needs to know, resolved once from arguments, then the environment.

The MLflow plugin takes no arguments (``mlflow server`` has no options of
ours), so the environment names below are the plugin's whole configuration;
``trackbridge serve`` and :func:`~trackbridge.web.create_app` accept the same
values as arguments, which win.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

RUNS_ROOT_ENV = "TRACKBRIDGE_RUNS_ROOT"
TOKEN_ENV = "TRACKBRIDGE_TOKEN"
CORS_ORIGINS_ENV = "TRACKBRIDGE_CORS_ORIGINS"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_RUNS_ROOT = "runs"


@dataclass(frozen=True)
class WebSettings:
    """How the live API is served.

    ``token``: when set, every route needs it (``Authorization: Bearer`` or
    ``?token=``). ``cors_origins``: origins allowed to call the API from a
    browser (``*`` for any); empty means no CORS headers at all.
    ``tracking_uri``: where to find runs this server cannot read from disk
    (None: nowhere). ``heartbeat_s``: idle time before an SSE comment line.
    ``poll_interval_s``: how often a watched events.jsonl is looked at.
    ``dead_run_check_s``: at most one dead-run sweep per this many seconds.
    """

    runs_root: Path
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    tracking_uri: str | None = None
    heartbeat_s: float = 15.0
    poll_interval_s: float = 0.02
    mlflow_poll_interval_s: float = 2.0
    dead_run_check_s: float = 5.0

    def __post_init__(self) -> None:
        if self.token is not None and not self.token:
            raise ValueError("`token` must be a non-empty string or None")
        for name in ("heartbeat_s", "poll_interval_s", "mlflow_poll_interval_s", "dead_run_check_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}")

    @classmethod
    def resolve(
        cls,
        runs_root: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        cors_origins: str | Iterable[str] | None = None,
        tracking_uri: str | None = None,
        environ: Mapping[str, str] | None = None,
        **options: float,
    ) -> "WebSettings":
        """Arguments first, then ``TRACKBRIDGE_RUNS_ROOT`` / ``TRACKBRIDGE_TOKEN`` /
        ``TRACKBRIDGE_CORS_ORIGINS`` (comma-separated) / ``MLFLOW_TRACKING_URI``, then defaults.

        Read when called, never at import time.
        """
        env = os.environ if environ is None else environ
        origins = cors_origins if cors_origins is not None else env.get(CORS_ORIGINS_ENV, "")
        if isinstance(origins, str):
            origins = origins.split(",")
        return cls(
            runs_root=Path(runs_root or env.get(RUNS_ROOT_ENV) or DEFAULT_RUNS_ROOT),
            token=token or env.get(TOKEN_ENV) or None,
            cors_origins=tuple(o.strip().rstrip("/") for o in origins if o.strip()),
            tracking_uri=tracking_uri or env.get(TRACKING_URI_ENV) or None,
            **options,
        )
