"""``trackbridge serve``: the live API (and the dashboard) on a production server (gunicorn gthread)."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

import click

from .errors import usage_error
from .options import resolve_runs_root, runs_root_option


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback exposes your runs: set TRACKBRIDGE_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Port to listen on.")
@runs_root_option
@click.option("--threads", type=click.IntRange(min=4), default=1024, show_default=True,
              help="Concurrent requests per worker; each live stream or WebSocket holds one.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--tracking-uri", metavar="URI",
              help="MLflow tracking URI for runs not readable from --runs-root. [default: $MLFLOW_TRACKING_URI, else none]")
def command(host: str, port: int, runs_root: str | None, threads: int, workers: int, tracking_uri: str | None) -> None:
    """Serve the live API: SSE and WebSocket streams of runs, the runs list, stop and register.

    \b
    Routes:
      GET  /api/runs                      runs, newest first, with MLflow UI links
      GET  /api/runs/RUN_ID[/metrics]     run.json / metrics.json
      POST /api/runs/RUN_ID/stop          stop a run at its next batch
      POST /api/runs/RUN_ID/register      register its best.ckpt {"name": ..., "alias": ...}
      GET  /api/training/RUN_ID/stream    server-sent events (Last-Event-ID resumes)
      WS   /api/training/RUN_ID/ws        the same events; send {"type": "stop"} to stop

    \b
    Set TRACKBRIDGE_TOKEN to require 'Authorization: Bearer <token>' (or ?token=)
    on every route, TRACKBRIDGE_CORS_ORIGINS to let other origins' pages call it.
    """
    from ..web.app import create_app
    from ..web.serve import serve, server_options
    from ..web.settings import TOKEN_ENV

    root = resolve_runs_root(runs_root)
    _check_port_free(host, port)
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not _is_loopback(host):
        click.echo(f"warning: listening on {host} with no {TOKEN_ENV}: anyone who can reach it can stop runs", err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"trackbridge serve: http://{shown}:{port}/  (runs root {os.path.abspath(root)}"
               f"{', token required' if token else ''}; Ctrl-C stops)")
    serve(
        lambda: create_app(root, tracking_uri=tracking_uri),
        server_options(host, port, threads=threads, workers=workers),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise usage_error(f"port {port} on {host} is in use; pick another with --port") from None
            raise usage_error(f"cannot listen on {host}:{port}: {exc.strerror}") from None
