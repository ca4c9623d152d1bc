"""``trackbridge serve``: the live API and the dashboard on an asyncio server (uvicorn), one process."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket

import click

from .errors import usage_error
from .options import resolve_runs_root, runs_root_option


def _route_help() -> str:
    from ..web.routes import ROUTES, Kind

    lines = []
    for route in ROUTES:
        if route.group != "api":
            continue
        method = "WS  " if route.kind is Kind.WEBSOCKET else f"{route.methods[0]:<4}"
        lines.append(f"  {method} {route.path:<38} {route.summary}")
    return "\n".join(lines)


class _ServeCommand(click.Command):
    """Fills the route list into the help when it is shown (the table lives in the web layer)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        help_text = self.help
        self.help = (help_text or "").replace("{routes}", _route_help().replace("\n", "\n    ").lstrip())
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = help_text


@click.command("serve", cls=_ServeCommand)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback exposes your runs: set TRACKBRIDGE_TOKEN.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Port to listen on.")
@runs_root_option
@click.option("--tracking-uri", metavar="URI",
              help="MLflow tracking URI for runs not readable from --runs-root. [default: $MLFLOW_TRACKING_URI, else none]")
@click.option("--allowed-hosts", metavar="HOSTS",
              help="Comma-separated Host names (or fnmatch patterns, or '*') served besides localhost, 127.0.0.1, "
                   "[::1] and the bind address. [default: $TRACKBRIDGE_ALLOWED_HOSTS]")
@click.option("--max-streams", type=click.IntRange(min=1), default=None,
              help="Open SSE streams and WebSockets at most; beyond, 503 with Retry-After. "
                   "[default: $TRACKBRIDGE_MAX_STREAMS, else 10000, within the open-files limit]")
@click.option("--max-body", "max_body_bytes", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="Largest request body in bytes; larger ones get 413 before they are read.")
@click.option("--header-timeout", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="Seconds a connection may take to send its request headers before it is closed.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log each request (tokens redacted).")
def command(host: str, port: int, runs_root: str | None, tracking_uri: str | None, allowed_hosts: str | None,
            max_streams: int | None, max_body_bytes: int, header_timeout: float, access_log: bool) -> None:
    """Serve the live API: SSE and WebSocket streams of runs, the runs list, stop and register.

    \b
    Routes:
    {routes}

    \b
    Set TRACKBRIDGE_TOKEN to require 'Authorization: Bearer <token>' (or ?token=, which the dashboard
    exchanges for a cookie) on every route, TRACKBRIDGE_CORS_ORIGINS to let other origins' pages call it.
    """
    from ..web.api import LiveApi
    from ..web.serve import serve, stream_capacity
    from ..web.settings import TOKEN_ENV, WebSettings

    root = resolve_runs_root(runs_root)
    _check_port_free(host, port)
    options = {"max_streams": max_streams} if max_streams is not None else {}
    try:
        settings = WebSettings.resolve(
            root, tracking_uri=tracking_uri, allowed_hosts=_bind_hosts(host, allowed_hosts),
            max_body_bytes=max_body_bytes, **options,
        )
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    capacity = stream_capacity(settings.max_streams)
    if capacity < settings.max_streams:
        click.echo(f"warning: the open-files limit allows {capacity} streams, not {settings.max_streams}", err=True)
        settings = dataclasses.replace(settings, max_streams=capacity)
    if settings.token is None and not _is_loopback(host):
        click.echo(f"warning: listening on {host} with no {TOKEN_ENV}: anyone who can reach it can stop runs", err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"trackbridge serve: http://{shown}:{port}/  (runs root {os.path.abspath(root)}"
               f"{', token required' if settings.token else ''}; Ctrl-C stops)")
    serve(LiveApi(settings), host, port, access_log=access_log, header_timeout_s=header_timeout)


def _bind_hosts(host: str, extra: str | None) -> str:
    """--allowed-hosts (else TRACKBRIDGE_ALLOWED_HOSTS) plus the bind address itself."""
    from ..web.settings import ALLOWED_HOSTS_ENV

    hosts = extra if extra is not None else os.environ.get(ALLOWED_HOSTS_ENV, "")
    if host not in ("0.0.0.0", "::", ""):
        hosts = f"{hosts},{f'[{host}]' if ':' in host else host}"
    return hosts


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
