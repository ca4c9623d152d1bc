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
from typing import Any, Iterable, Mapping

RUNS_ROOT_ENV = "TRACKBRIDGE_RUNS_ROOT"
TOKEN_ENV = "TRACKBRIDGE_TOKEN"
CORS_ORIGINS_ENV = "TRACKBRIDGE_CORS_ORIGINS"
ALLOWED_HOSTS_ENV = "TRACKBRIDGE_ALLOWED_HOSTS"
MAX_STREAMS_ENV = "TRACKBRIDGE_MAX_STREAMS"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_RUNS_ROOT = "runs"
DEFAULT_MAX_STREAMS = 10_000
DEFAULT_MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class WebSettings:
    """How the live API is served.

    ``token``: when set, every route needs it (``Authorization: Bearer``,
    ``?token=`` or the page's cookie). ``cors_origins``: origins allowed to
    call the API from a browser (``*`` for any); empty means no CORS headers.
    ``allowed_hosts``: Host names served besides localhost, 127.0.0.1, [::1]
    and the connection's own address (see :mod:`.hosts`). ``tracking_uri``:
    where to find runs this server cannot read from disk (None: nowhere).
    ``heartbeat_s``: idle time before an SSE comment line.
    ``poll_interval_s``: how often a watched events.jsonl is looked at.
    ``dead_run_check_s``: how often a stream asks whether its run's process died.
    ``stale_after_s``: the heartbeat limit of the liveness judge (default:
    ``TRACKBRIDGE_STALE_AFTER_S``, else 120 s). ``max_streams``: open SSE
    streams and WebSockets per process; beyond, 503 with ``Retry-After``.
    ``max_body_bytes``: larger request bodies get 413 before they are read.
    """

    runs_root: Path
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    tracking_uri: str | None = None
    heartbeat_s: float = 15.0
    poll_interval_s: float = 0.02
    mlflow_poll_interval_s: float = 2.0
    dead_run_check_s: float = 5.0
    stale_after_s: float | None = None
    max_streams: int = DEFAULT_MAX_STREAMS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    retry_after_s: int = 5

    def __post_init__(self) -> None:
        if self.token is not None and not self.token:
            raise ValueError("`token` must be a non-empty string or None")
        for name in ("heartbeat_s", "poll_interval_s", "mlflow_poll_interval_s", "dead_run_check_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}")
        if self.stale_after_s is not None and self.stale_after_s <= 0:
            raise ValueError(f"`stale_after_s` must be > 0 or None, got {self.stale_after_s}")
        for name in ("max_streams", "max_body_bytes", "retry_after_s"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {getattr(self, name)!r}")

    @classmethod
    def resolve(
        cls,
        runs_root: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        cors_origins: str | Iterable[str] | None = None,
        allowed_hosts: str | Iterable[str] | None = None,
        tracking_uri: str | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> "WebSettings":
        """Arguments first, then ``TRACKBRIDGE_RUNS_ROOT`` / ``TRACKBRIDGE_TOKEN`` /
        ``TRACKBRIDGE_CORS_ORIGINS`` / ``TRACKBRIDGE_ALLOWED_HOSTS`` (comma-separated) /
        ``TRACKBRIDGE_MAX_STREAMS`` / ``MLFLOW_TRACKING_URI``, then defaults.

        Read when called, never at import time.
        """
        env = os.environ if environ is None else environ
        origins = cors_origins if cors_origins is not None else env.get(CORS_ORIGINS_ENV, "")
        hosts = allowed_hosts if allowed_hosts is not None else env.get(ALLOWED_HOSTS_ENV, "")
        if MAX_STREAMS_ENV in env and "max_streams" not in options:
            try:
                options["max_streams"] = int(env[MAX_STREAMS_ENV])
            except ValueError:
                raise ValueError(f"{MAX_STREAMS_ENV} must be an integer, got {env[MAX_STREAMS_ENV]!r}") from None
        return cls(
            runs_root=Path(runs_root or env.get(RUNS_ROOT_ENV) or DEFAULT_RUNS_ROOT),
            token=token or env.get(TOKEN_ENV) or None,
            cors_origins=_split(origins, strip_slash=True),
            allowed_hosts=_split(hosts),
            tracking_uri=tracking_uri or env.get(TRACKING_URI_ENV) or None,
            **options,
        )


def _split(value: str | Iterable[str], *, strip_slash: bool = False) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    cleaned = (item.strip() for item in items)
    return tuple((item.rstrip("/") if strip_slash else item) for item in cleaned if item)
