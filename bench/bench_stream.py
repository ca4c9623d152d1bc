"""Live-stream benchmark: latency and fan-out of `trackbridge serve` while a real training runs.

For each client count (0 = the baseline) and round, in fresh processes:

1. start ``trackbridge serve`` on a temporary runs root;
2. start a real Lightning training under the trackbridge stack (a tiny
   regressor, ``--epochs`` epochs of ``--batches`` batches, ``--sleep``
   seconds of sleep per batch standing in for GPU work);
3. as soon as its run directory exists, open N SSE streams from one asyncio
   process (raw sockets: the clients' own CPU cost stays small) and read
   every event until the server ends each stream;
4. record: events delivered per client (all of them?), the latency of every
   ``epoch_end`` from the event's own ``time`` (stamped when the record is
   written, just before the append to events.jsonl) to its receipt by each
   client, the server's peak RSS (gunicorn master + worker), and the
   training's wall time from run.json (``started_at`` → ``completed_at``).

The slowdown is the median training time with N clients over the median with
none. Everything runs on one machine, so clients, server and training share
its cores: a slowdown there is CPU contention, not the training waiting on
anyone (it never talks to the server).

    python bench/bench_stream.py                      # 0, 100, 500, 1000 clients, 2 rounds
    python bench/bench_stream.py --clients 0,100 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

    from trackbridge import TrackingConfig, build_callbacks

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(8, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            pred = self.net(x)
            self.log("val_loss", torch.nn.functional.mse_loss(pred, y))
            self.log("val_mae", (pred - y).abs().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

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
        Tiny(),
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


async def read_stream(port: int, run_id: str, client: Client, timeout: float) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
        writer.write(f"GET /api/training/{run_id}/stream HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        deadline = time.monotonic() + timeout
        buffer = b""
        while True:  # bulk reads and a split: the clients' CPU is not what is measured
            chunk = await asyncio.wait_for(reader.read(65536), max(1.0, deadline - time.monotonic()))
            client.connected = True
            if not chunk:
                client.ended = True  # the server closed the stream (after the terminal event)
                break
            now = time.time()
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                start = frame.find(b"data: ")
                if start < 0:
                    continue
                event = json.loads(frame[start + 6:frame.index(b"\n", start) if b"\n" in frame[start:] else None])
                client.ids.append(event["id"])
                if event["type"] == "epoch_end":
                    client.latencies.append(now - _epoch_seconds(event["time"]))
        writer.close()
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


def measure(n_clients: int, args: argparse.Namespace, workdir: Path, label: str) -> dict[str, Any]:
    runs_root = workdir / label / "runs"
    runs_root.mkdir(parents=True)
    port = free_port()
    if args.server_cmd:
        command = [a.format(port=port, runs_root=runs_root) for a in args.server_cmd.split()]
    else:
        command = [sys.executable, "-m", "trackbridge", "serve", "--port", str(port), "--runs-root", str(runs_root),
                   "--threads", str(max(64, n_clients + 64))]
    serve = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "TRACKBRIDGE_RUNS_ROOT": str(runs_root)},
    )
    try:
        wait_http(port)
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
    return {
        "clients": n_clients,
        "training_s": _epoch_seconds(run["completed_at"]) - _epoch_seconds(run["started_at"]),
        "status": run["status"],
        "events": len(expected),
        "clients_complete": sum(1 for c in clients if c.ids == expected and c.ended),
        "errors": sorted({c.error for c in clients if c.error})[:3],
        "delivered": sum(len(c.ids) for c in clients),
        "expected": len(expected) * n_clients,
        "latency_p50_ms": _pct(latencies, 50) * 1000 if latencies else None,
        "latency_p99_ms": _pct(latencies, 99) * 1000 if latencies else None,
        "latency_max_ms": latencies[-1] * 1000 if latencies else None,
        "connect_all_s": connect["s"],
        "server_cpu_s": cpu.get("server", tree_cpu(serve.pid) - cpu["server0"]),
        "client_cpu_s": cpu.get("client", 0.0),
        "rss_idle_mb": rss_idle / 2**20,
        "rss_peak_mb": peak["rss"] / 2**20,
    }


def _cpus(spec: str | None) -> set[int] | None:
    return {int(c) for c in spec.split(",")} if spec else None


def _pct(values: list[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * len(values) + 0.5) - 1))
    return values[index]


def summarize(results: list[dict[str, Any]]) -> str:
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_n.setdefault(r["clients"], []).append(r)
    base = statistics.median(r["training_s"] for r in by_n.get(0, results))
    lines = [
        "| clients | events delivered | streams complete | latency p50 / p99 / max (ms) | server RSS idle → peak (MB) | training (s, median) | vs no clients |",
        "|---:|---|---|---|---|---:|---:|",
    ]
    for n, rows in sorted(by_n.items()):
        train_s = statistics.median(r["training_s"] for r in rows)
        spread = f"{min(r['training_s'] for r in rows):.2f}–{max(r['training_s'] for r in rows):.2f}"
        if n == 0:
            lines.append(f"| 0 | – | – | – | {rows[0]['rss_idle_mb']:.0f} | {train_s:.2f} ({spread}) | 1.000 |")
            continue
        delivered = sum(r["delivered"] for r in rows)
        expected = sum(r["expected"] for r in rows)
        complete = sum(r["clients_complete"] for r in rows)
        p50 = statistics.median(r["latency_p50_ms"] for r in rows)
        p99 = max(r["latency_p99_ms"] for r in rows)
        worst = max(r["latency_max_ms"] for r in rows)
        rss = f"{statistics.median(r['rss_idle_mb'] for r in rows):.0f} → {max(r['rss_peak_mb'] for r in rows):.0f}"
        lines.append(
            f"| {n} | {delivered}/{expected} | {complete}/{n * len(rows)} | {p50:.1f} / {p99:.1f} / {worst:.1f} "
            f"| {rss} | {train_s:.2f} ({spread}) | {train_s / base:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="0,100,500,1000", help="comma-separated client counts (0 = baseline)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds of sleep per batch (stands in for GPU work)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--server-cmd", help="serve with this command instead ({port} and {runs_root} are filled in)")
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs-root", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--go-file", help=argparse.SUPPRESS)
    parser.add_argument("--train-cpus", default=None,
                        help="pin the training to these CPUs (e.g. '0') and server + clients to the others; "
                             "default: no pinning")
    args = parser.parse_args()
    if args.train:
        train(args.runs_root, args.run_id, args.epochs, args.batches, args.sleep, args.go_file,
              _cpus(args.train_cpus))
        return

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1000 sockets here, 1000 in the server
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    counts = [int(c) for c in args.clients.split(",")]
    train_cpus = _cpus(args.train_cpus)
    if train_cpus:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - train_cpus)  # the server inherits it
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        for round_ in range(args.rounds):
            for n in counts:  # alternate configurations within each round
                result = measure(n, args, Path(tmp), f"r{round_}-n{n}")
                results.append(result)
                print(json.dumps(result), flush=True)
    print()
    pinning = f"training pinned to CPU {args.train_cpus}, server and clients to the rest" if train_cpus else "no pinning"
    print(f"{os.cpu_count()} CPUs ({pinning}); {args.epochs} epochs x {args.batches} batches, "
          f"{args.sleep} s sleep per batch; {args.rounds} rounds")
    print(summarize(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
