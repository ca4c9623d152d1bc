"""A loopback HTTP reverse proxy that adds a fixed delay to every request: a remote server, simulated.

    python bench/delay_proxy.py --upstream http://127.0.0.1:5000 --port 5100 --delay-ms 20

Each request (keep-alive connections included) waits ``--delay-ms`` before it
is forwarded, so a client that makes N sequential requests pays N × delay, as
it would over a 20 ms round trip. Bodies are forwarded whole (MLflow's REST
calls and artifact uploads send a Content-Length). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def forward(local: threading.local, upstream: urllib.parse.SplitResult, method: str, path: str,
            request_headers: object, body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
    """Send one request upstream on this thread's kept-alive connection (retried once on a stale one).

    Returns ``(status, reason, headers without hop-by-hop ones and Content-Length, body)``,
    or None when the upstream cannot be reached. tests/fault_proxy.py forwards with it too.
    """
    headers = {k: v for k, v in request_headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
    headers["Host"] = upstream.netloc
    for attempt in (1, 2):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            break
        except (OSError, http.client.HTTPException):
            conn.close()
            local.conn = None
            if attempt == 2:
                return None
    kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
    return response.status, response.reason, kept, payload


def make_handler(upstream: urllib.parse.SplitResult, delay_s: float) -> type[BaseHTTPRequestHandler]:
    local = threading.local()  # one upstream connection per proxy thread

    class DelayHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
        # would add ~40 ms to every response, on top of the delay we mean to add.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            time.sleep(delay_s)
            answer = forward(local, upstream, self.command, self.path, self.headers, body)
            if answer is None:
                self.send_error(502, "upstream unreachable")
                return
            status, reason, headers, payload = answer
            self.send_response(status, reason)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    return DelayHandler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="added to every request [20]")
    args = parser.parse_args(argv)
    upstream = urllib.parse.urlsplit(args.upstream)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(upstream, args.delay_ms / 1000))
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)  # the parent reads this line
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
