"""Live-stream benchmark: latency, fan-out and idle capacity of the live API while a real training runs.

Two servers, side by side in the same run (``--servers``):

- ``asgi``: ``trackbridge serve`` (the ASGI app under uvicorn: one asyncio loop, one pass per batch);
- ``gthread``: ``create_app()`` under gunicorn's ``gthread`` worker (a thread per stream), the server
  ``trackbridge serve`` ran before.

For each server, client count (0 = the baseline) and round, in fresh processes:

1. start the server on a temporary runs root (pinned with ``taskset`` to ``--server-cpus``);
2. start a real Lightning training under the trackbridge stack (a tiny regressor, ``--epochs``
   epochs of ``--batches`` batches, ``--sleep`` seconds of sleep per batch standing in for GPU work),
   pinned to ``--train-cpus``;
3. as soon as its run directory exists, open N SSE streams from this process (raw asyncio sockets,
   pinned to the server's CPUs: server and clients share them) and read every event until the server
   ends each stream;
4. record: events delivered per client (all of them?), the latency of every ``epoch_end`` from the
   event's own ``time`` (stamped when the record is written, just before the append to events.jsonl)
   to its receipt by each client, the server's CPU time per delivered event, its peak RSS, and the
   training's wall time.

``--idle N`` then opens N streams of a run that never ends and measures the server's RSS with all of
them open and the latency of ``/health`` meanwhile.

    python bench/bench_stream.py --servers asgi,gthread --clients 0,100,500,1000 --idle 10000 \
        --train-cpus 0 --server-cpus 1 --epochs 10 --batches 10 --sleep 0.1 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve()


# -- the training (run in its own process: python bench_stream.py --train ...) ----------
def train(
    runs_root: str, run_id: str, epochs: int, batches: int, sleep: float, go_file: str, pin: set[int] | None
) -> None:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from harness import linear_regressor
    from trackbridge import TrackingConfig, build_callbacks

    class Work(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            time.sleep(sleep)

    torch.manual_seed(0)
    x = torch.randn(batches * 16, 8)
    y = x.sum(dim=1, keepdim=True)
    config = TrackingConfig(
        task="regression", run_id=run_id, runs_root=runs_root, early_stopping_patience=0,
        mlflow=False, hyperparameters={"max_epochs": epochs},
    )
    if pin is not None:
        os.sched_setaffinity(0, pin)
    stack = build_callbacks(config)  # creates the run directory: the clients can connect now
    while not os.path.exists(go_file):  # the clients are connected: start
        time.sleep(0.01)
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[*stack, Work()], logger=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=5, num_sanity_val_steps=0,
    )
    trainer.fit(
        linear_regressor(8),
        train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=16),
        val_dataloaders=DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16),
    )


# -- the clients ---------------------------------------------------------------------------
class Client:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.latencies: list[float] = []
        self.ended = False
        self.connected = False
        self.error: str | None = None


_ID = re.compile(rb"^id: (\d+)$", re.M)
_EPOCH_END_TIME = re.compile(rb'"type": "epoch_end", "run_id": "[^"]*", "time": "([^"]+)"')


class _StreamProtocol(asyncio.Protocol):
    """One SSE client as a bare protocol: a callback per read, a regex per frame (no task, no JSON parse),
    so that the clients, which share the server's core, cost as little of it as they can."""

    def __init__(self, request: bytes, client: Client, done: asyncio.Future) -> None:
        self.request, self.client, self.done = request, client, done
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.client.connected = True
        *frames, self.buffer = (self.buffer + data).split(b"\n\n")
        for frame in frames:
            found = _ID.search(frame)
            if found is None:
                continue
            self.client.ids.append(int(found.group(1)))
            stamp = _EPOCH_END_TIME.search(frame)
            if stamp is not None:
                self.client.latencies.append(now - _epoch_seconds(stamp.group(1).decode()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.ended = exc is None  # the server closed the stream (after the terminal event)
        if not self.done.done():
            self.done.set_result(None)


async def read_stream(port: int, run_id: str, client: Client, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    request = f"GET /api/training/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _StreamProtocol(request.encode(), client, done), "127.0.0.1", port), 30
        )
        try:
            await asyncio.wait_for(done, timeout)
        finally:
            transport.close()
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        client.error = f"{type(exc).__name__}: {exc}"


def _epoch_seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- one measurement --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(port: int, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("trackbridge serve did not start")


def tree_cpu(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0.0


def tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0


def server_command(server: str, port: int, runs_root: Path, streams: int, args: argparse.Namespace) -> list[str]:
    if server == "asgi":
        command = [sys.executable, "-m", "trackbridge", "serve", "--port", str(port), "--runs-root", str(runs_root),
                   "--max-streams", str(streams + 64), "--no-access-log"]
    elif server == "gthread":
        threads = streams + 64
        command = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
                   "--threads", str(threads), "--worker-connections", str(threads + 256), "--bind", f"127.0.0.1:{port}",
                   "--graceful-timeout", "3", "--log-level", "warning", "trackbridge.web:create_app()"]
    else:
        raise SystemExit(f"unknown server {server!r}; choose asgi or gthread")
    return (["taskset", "-c", args.server_cpus] if args.server_cpus else []) + command


def start_server(server: str, runs_root: Path, streams: int, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        server_command(server, port, runs_root, streams, args), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "TRACKBRIDGE_RUNS_ROOT": str(runs_root)},
    )
    wait_http(port)
    return proc, port


def measure(server: str, n_clients: int, args: argparse.Namespace, workdir: Path, label: str) -> dict[str, Any]:
    runs_root = workdir / label / "runs"
    runs_root.mkdir(parents=True)
    serve, port = start_server(server, runs_root, n_clients, args)
    try:
        rss_idle = tree_rss(serve.pid)
        run_id = "bench"
        go_file = runs_root.parent / "go"
        training = subprocess.Popen(
            [sys.executable, str(HERE), "--train", "--runs-root", str(runs_root), "--run-id", run_id,
             "--epochs", str(args.epochs), "--batches", str(args.batches), "--sleep", str(args.sleep),
             "--go-file", str(go_file), *(["--train-cpus", args.train_cpus] if args.train_cpus else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        while not (runs_root / run_id / "run.json").exists():
            if training.poll() is not None:
                raise RuntimeError("the training exited before creating its run")
            time.sleep(0.02)
        clients = [Client() for _ in range(n_clients)]
        peak = {"rss": rss_idle}
        connect = {"s": 0.0}
        cpu: dict[str, float] = {"server0": tree_cpu(serve.pid), "client0": time.process_time()}

        async def main() -> None:
            async def sample_rss() -> None:
                while True:
                    peak["rss"] = max(peak["rss"], tree_rss(serve.pid))
                    await asyncio.sleep(0.25)

            sampler = asyncio.create_task(sample_rss())
            readers = asyncio.gather(*(read_stream(port, run_id, c, args.timeout) for c in clients))
            started = time.monotonic()
            while not all(c.connected or c.error for c in clients) and time.monotonic() - started < args.timeout:
                await asyncio.sleep(0.05)
            connect["s"] = time.monotonic() - started
            cpu["server0"], cpu["client0"] = tree_cpu(serve.pid), time.process_time()
            go_file.touch()  # every stream is open: the training starts its epochs
            await readers
            cpu["server"] = tree_cpu(serve.pid) - cpu["server0"]
            cpu["client"] = time.process_time() - cpu["client0"]
            while training.poll() is None:
                await asyncio.sleep(0.1)
            sampler.cancel()

        asyncio.run(main())
        training.wait(timeout=args.timeout)
        run = json.loads((runs_root / run_id / "run.json").read_text())
        events = [json.loads(line) for line in (runs_root / run_id / "events.jsonl").read_text().splitlines()]
    finally:
        os.killpg(serve.pid, 15)
        serve.wait(timeout=30)
    expected = [e["id"] for e in events]
    latencies = sorted(x for c in clients for x in c.latencies)
    delivered = sum(len(c.ids) for c in clients)
    server_cpu = cpu.get("server", tree_cpu(serve.pid) - cpu["server0"])
    return {
        "server": server,
        "clients": n_clients,
        "training_s": _epoch_seconds(run["completed_at"]) - _epoch_seconds(run["started_at"]),
        "status": run["status"],
        "events": len(expected),
        "clients_complete": sum(1 for c in clients if c.ids == expected and c.ended),
        "errors": sorted({c.error for c in clients if c.error})[:3],
        "delivered": delivered,
        "expected": len(expected) * n_clients,
        "latency_p50_ms": _pct(latencies, 50) * 1000 if latencies else None,
        "latency_p99_ms": _pct(latencies, 99) * 1000 if latencies else None,
        "latency_max_ms": latencies[-1] * 1000 if latencies else None,
        "connect_all_s": connect["s"],
        "latency_by_epoch_ms": [
            [round(_pct(sorted(c.latencies[i] for c in clients if len(c.latencies) > i), q) * 1000, 1) for q in (50, 99)]
            for i in range(max((len(c.latencies) for c in clients), default=0))
        ],
        "server_cpu_s": server_cpu,
        "server_us_per_event": server_cpu / delivered * 1e6 if delivered else None,
        "client_cpu_s": cpu.get("client", 0.0),
        "rss_idle_mb": rss_idle / 2**20,
        "rss_peak_mb": peak["rss"] / 2**20,
    }


async def hold_idle_stream(port: int, run_id: str, opened: list, release: asyncio.Event) -> None:
    """Open one stream of a run that never ends, read its first bytes, and keep it open until released."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
        writer.write(f"GET /api/training/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        first = await asyncio.wait_for(reader.read(4096), 120)
        opened.append(first.startswith(b"HTTP/1.1 200"))
        await release.wait()
        writer.close()
    except (OSError, asyncio.TimeoutError) as exc:
        opened.append(False)
        del exc


def measure_idle(server: str, n_streams: int, args: argparse.Namespace, workdir: Path, label: str) -> dict[str, Any]:
    """N open streams of a pending run: the server's RSS and /health's latency meanwhile."""
    import urllib.request

    from trackbridge.record import RunDirectory

    runs_root = workdir / label / "runs"
    RunDirectory(runs_root, "waiting").create({"task": "regression"})  # pending: its streams never end
    serve, port = start_server(server, runs_root, n_streams, args)
    result: dict[str, Any] = {"server": server, "idle_streams": n_streams}
    try:
        rss_before = tree_rss(serve.pid)

        def health_ms() -> float:
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as response:
                response.read()
            return (time.monotonic() - started) * 1000

        async def main() -> None:
            opened: list = []
            release = asyncio.Event()
            started = time.monotonic()
            tasks = []
            for i in range(n_streams):
                tasks.append(asyncio.create_task(hold_idle_stream(port, "waiting", opened, release)))
                if i % 200 == 199:  # a steady storm, not one burst beyond the listen backlog
                    await asyncio.sleep(0.05)
            while len(opened) < n_streams and time.monotonic() - started < args.timeout:
                await asyncio.sleep(0.1)
            result["open_all_s"] = time.monotonic() - started
            result["opened"] = sum(opened)
            await asyncio.sleep(2.0)
            loop = asyncio.get_running_loop()
            samples = [await loop.run_in_executor(None, health_ms) for _ in range(10)]
            result["health_ms_max"] = max(samples)
            result["health_ms_median"] = statistics.median(samples)
            result["rss_idle_mb"] = rss_before / 2**20
            result["rss_open_mb"] = tree_rss(serve.pid) / 2**20
            release.set()
            await asyncio.gather(*tasks)

        asyncio.run(main())
    finally:
        os.killpg(serve.pid, 15)
        serve.wait(timeout=60)
    return result


def _cpus(spec: str | None) -> set[int] | None:
    return {int(c) for c in spec.split(",")} if spec else None


def _pct(values: list[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values) + 0.5) - 1))
    return values[index]


def summarize(results: list[dict[str, Any]]) -> str:
    lines = [
        "| server | clients | events delivered | streams complete | latency p50 / p99 / max (ms) | server CPU per event (µs) "
        "| server RSS idle → peak (MB) | training (s, median) | vs no clients |",
        "|---|---:|---|---|---|---:|---|---:|---:|",
    ]
    servers = sorted({r["server"] for r in results if "clients" in r})
    for server in servers:
        by_n: dict[int, list[dict[str, Any]]] = {}
        for r in results:
            if r.get("server") == server and "clients" in r:
                by_n.setdefault(r["clients"], []).append(r)
        base_rows = by_n.get(0) or [r for rows in by_n.values() for r in rows]
        base = statistics.median(r["training_s"] for r in base_rows)
        for n, rows in sorted(by_n.items()):
            train_s = statistics.median(r["training_s"] for r in rows)
            spread = f"{min(r['training_s'] for r in rows):.2f}–{max(r['training_s'] for r in rows):.2f}"
            if n == 0:
                lines.append(f"| {server} | 0 | – | – | – | – | {rows[0]['rss_idle_mb']:.0f} | {train_s:.2f} ({spread}) | 1.000 |")
                continue
            delivered = sum(r["delivered"] for r in rows)
            expected = sum(r["expected"] for r in rows)
            complete = sum(r["clients_complete"] for r in rows)
            p50 = statistics.median(r["latency_p50_ms"] for r in rows if r["latency_p50_ms"] is not None)
            p99 = max(r["latency_p99_ms"] for r in rows if r["latency_p99_ms"] is not None)
            worst = max(r["latency_max_ms"] for r in rows if r["latency_max_ms"] is not None)
            cpu = sum(r["server_cpu_s"] for r in rows) / max(1, delivered) * 1e6
            rss = f"{statistics.median(r['rss_idle_mb'] for r in rows):.0f} → {max(r['rss_peak_mb'] for r in rows):.0f}"
            lines.append(
                f"| {server} | {n} | {delivered}/{expected} | {complete}/{n * len(rows)} | {p50:.1f} / {p99:.1f} / {worst:.1f} "
                f"| {cpu:.1f} | {rss} | {train_s:.2f} ({spread}) | {train_s / base:.3f} |"
            )
    idle = [r for r in results if "idle_streams" in r]
    if idle:
        lines += ["", "| server | idle streams | opened | time to open all (s) | /health median / max (ms) | server RSS idle → with all open (MB) |",
                  "|---|---:|---:|---:|---|---|"]
        for r in idle:
            lines.append(
                f"| {r['server']} | {r['idle_streams']} | {r.get('opened', 0)} | {r.get('open_all_s', 0):.1f} "
                f"| {r.get('health_ms_median', float('nan')):.1f} / {r.get('health_ms_max', float('nan')):.1f} "
                f"| {r.get('rss_idle_mb', 0):.0f} → {r.get('rss_open_mb', 0):.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="asgi,gthread", help="comma-separated: asgi (trackbridge serve), gthread")
    parser.add_argument("--clients", default="0,100,500,1000", help="comma-separated client counts (0 = baseline)")
    parser.add_argument("--idle", type=int, default=0, help="also hold this many idle streams (0: skip)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds of sleep per batch (stands in for GPU work)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs-root", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--go-file", help=argparse.SUPPRESS)
    parser.add_argument("--train-cpus", default=None, help="pin the training to these CPUs (e.g. '0')")
    parser.add_argument("--server-cpus", default=None,
                        help="pin the server and all clients to these CPUs (e.g. '1'); default: no pinning")
    args = parser.parse_args()
    if args.train:
        train(args.runs_root, args.run_id, args.epochs, args.batches, args.sleep, args.go_file,
              _cpus(args.train_cpus))
        return

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the clients' sockets here, the server's there
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if args.server_cpus:
        os.sched_setaffinity(0, _cpus(args.server_cpus))  # the clients share the server's CPUs
    results = []
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        for round_ in range(args.rounds):
            for n in counts:  # alternate configurations within each round
                for server in servers:
                    result = measure(server, n, args, Path(tmp), f"r{round_}-{server}-n{n}")
                    results.append(result)
                    print(json.dumps(result), flush=True)
                    load.append(os.getloadavg())
        if args.idle:
            for server in servers:
                try:
                    result = measure_idle(server, args.idle, args, Path(tmp), f"idle-{server}")
                except (OSError, RuntimeError, TimeoutError) as exc:  # e.g. a server that cannot start that many threads
                    result = {"server": server, "idle_streams": args.idle, "error": f"{type(exc).__name__}: {exc}"}
                results.append(result)
                print(json.dumps(result), flush=True)
                load.append(os.getloadavg())
    print()
    pinning = (f"training on CPU {args.train_cpus or 'any'}, server and clients on CPU {args.server_cpus}"
               if args.server_cpus else "no pinning")
    print(f"{os.cpu_count()} CPUs ({pinning}); {args.epochs} epochs x {args.batches} batches, "
          f"{args.sleep} s sleep per batch; {args.rounds} rounds; load average (1 min) during the run "
          f"{min(l[0] for l in load):.2f}–{max(l[0] for l in load):.2f}")
    print(summarize(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "load": load}, indent=2))


if __name__ == "__main__":
    main()
