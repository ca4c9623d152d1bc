"""Benchmark: what trackbridge costs the training thread, per step and per epoch (issue 14).

    python bench/bench_overhead.py --rounds 5

Four workloads, every (variant, workload) in a fresh process, variants
alternating (shuffled) within each round:

  steps    a one-layer model, batch 1: 800 steps in 2 epochs, log_every_n_steps=1
  steps2   the same, 1,600 steps in 2 epochs
  epochs   the same model: 200 steps in 40 epochs
  anchor   the classification reference model, 5 epochs x 50 steps, every-step logging

Variants (each with Lightning's two ModelCheckpoints, best and last):

  none          no logger, nothing else: the baseline
  local         trackbridge with the mirror off: build_callbacks(mlflow=False, early_stopping_patience=0),
                Trainer(callbacks=stack, logger=stack.logger)
  full          trackbridge with the MLflow mirror, to a real `mlflow server` on 127.0.0.1
  full_proxy    the same through bench/delay_proxy.py (+20 ms per request: a remote server)
  full_media    `full` with the task figures on (media_every_n_epochs=1, the default; the other
                trackbridge variants run with 0: their figures' cost is bench_media.py's subject)
  mlflow        Lightning's MLFlowLogger (synchronous), direct
  mlflow_async  MLFlowLogger(synchronous=False), direct
  csv           Lightning's CSVLogger

From the medians of the per-round differences to ``none`` of the training
thread's CPU time in the loop (``on_train_start`` to ``on_train_end``, timed
by the first callback with ``time.thread_time``: wall time on a shared VM
varies by more than the effect) on the three micro workloads (d_steps = F + 800 s + 2 e, d_steps2 =
F + 1600 s + 2 e, d_epochs = F + 200 s + 40 e) the script solves for ``s``,
the cost per step, ``e``, the cost per epoch, and ``F``, what the loop pays
once, in CPU of the training thread itself. What the other threads (the
record writer, the MLflow worker, the system sampler) spend in the loop is
its own column: on a busy machine that CPU, and their GIL, come out of the
training's share. Without steps2 it solves for s and e with F = 0. What happens outside the loop (setup, the
end-of-fit flush) is its own column: fit minus loop, against ``none``.
For the trackbridge variants it checks that MLflow holds every point of the
local record exactly once. Then, in this process, the writer's cost per
epoch when metrics.json already holds 10 and 5,000 epochs, and the machine's
load during the run.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import count_points, linear_regressor, load_average, median_range, report, run_child, start_proxy, start_server, stop  # noqa: E402

VARIANTS = ("none", "local", "full", "full_proxy", "full_media", "mlflow", "mlflow_async", "csv")
WORKLOADS = {"steps": (800, 2), "steps2": (1600, 2), "epochs": (200, 40), "anchor": (250, 5)}


# -- one training, in a fresh process ------------------------------------------
def child(variant: str, workload: str, uri: str | None, workdir: Path) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import lightning.pytorch as pl
    import mlflow  # noqa: F401  (imported before the clock in every variant)
    import torch

    torch.set_num_threads(1)
    from trackbridge.callbacks.checkpoints import best_checkpoint, last_checkpoint

    steps, epochs = WORKLOADS[workload]
    if workload == "anchor":
        from trackbridge.reference import build_reference

        pl.seed_everything(0, verbose=False)
        module, data = build_reference("classification", seed=0, steps_per_epoch=steps // epochs)
        fit_args: dict = {"datamodule": data}
        task, monitor, mode = "classification", "val_accuracy", "max"
    else:
        module, fit_args = _micro(steps // epochs)
        task, monitor, mode = "regression", "val_mae", "min"
    ckpts = workdir / "checkpoints"
    callbacks: list = [best_checkpoint(ckpts, monitor, mode), last_checkpoint(ckpts)]
    logger: object = False
    stack = None
    if variant in ("local", "full", "full_proxy", "full_media"):
        from trackbridge import TrackingConfig, build_callbacks

        stack = build_callbacks(TrackingConfig(
            task=task, runs_root=workdir / "runs", tracking_uri=uri, experiment="bench",
            mlflow=variant != "local", early_stopping_patience=0,
            media_every_n_epochs=1 if variant == "full_media" else 0,
        ))
        callbacks, logger = list(stack), stack.logger
    elif variant in ("mlflow", "mlflow_async"):
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name="bench", tracking_uri=uri, synchronous=variant == "mlflow")
    elif variant == "csv":
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(workdir / "csv")
    timer = LoopTimer()
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[timer, *callbacks], logger=logger, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, default_root_dir=workdir,
    )
    start = time.perf_counter()
    trainer.fit(module, **fit_args)
    result: dict = {"fit_s": time.perf_counter() - start, "loop_s": timer.loop_s, "loop_cpu_s": timer.loop_cpu_s,
                    "background_cpu_s": timer.background_cpu_s,
                    "mlflow_run_id": None, "expected_points": None}
    if stack is not None and variant != "local":
        from trackbridge.mirror.backlog import record_points

        stack.close()
        result["mlflow_run_id"] = stack.run_dir.read_run()["mlflow"]["run_id"]
        result["expected_points"] = len(record_points(stack.run_dir))
    return result


def LoopTimer():
    """A callback, first in the list: from ``on_train_start`` to ``on_train_end``, before any other's end."""
    import lightning.pytorch as pl

    class _LoopTimer(pl.Callback):
        loop_s = loop_cpu_s = 0.0
        background_cpu_s = 0.0  # CPU of every other thread of the process during the loop (the GIL they take)

        def on_train_start(self, trainer, pl_module) -> None:
            self._threads = _others_cpu()
            self._start, self._cpu = time.perf_counter(), time.thread_time()

        def on_train_end(self, trainer, pl_module) -> None:
            self.loop_s = time.perf_counter() - self._start
            self.loop_cpu_s = time.thread_time() - self._cpu
            after = _others_cpu()
            self.background_cpu_s = sum(cpu - self._threads.get(tid, 0.0) for tid, cpu in after.items())

    return _LoopTimer()


def _others_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process but the calling one."""
    import threading

    import psutil

    me = threading.get_native_id()
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads() if t.id != me}


def _micro(per_epoch: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(per_epoch, 4, generator=generator)
    y = x.sum(1, keepdim=True)
    train = DataLoader(TensorDataset(x, y), batch_size=1)
    val = DataLoader(TensorDataset(x[:2], y[:2]), batch_size=2)
    return linear_regressor(4), {"train_dataloaders": train, "val_dataloaders": val}


# -- the writer at 10 and 5,000 epochs ------------------------------------------------
def _busy(seconds: float) -> None:
    """Pure-Python work holding the GIL, like a training thread between hooks."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


def writer_cost(history: int, epochs: int = 40, epoch_s: float = 0.02) -> tuple[float, float]:
    """What writing one epoch record costs a busy training thread when metrics.json holds ``history`` epochs.

    Returns (training-thread ms per epoch, writer wall ms per epoch): the
    first is the slowdown of a GIL-bound loop (``epoch_s`` of work per epoch)
    while the writer rewrites metrics.json in the background, against the
    same loop with no writer; the second the writer's own time per epoch,
    fsync included.
    """
    from trackbridge.callbacks.record_writer import RecordWriter
    from trackbridge.record import RunDirectory
    from trackbridge.record.clock import utc_now_iso
    from trackbridge.record.jsonio import write_json_atomic

    root = Path(tempfile.mkdtemp(prefix="bench-writer-"))
    try:
        run_dir = RunDirectory(root, "long")
        run_dir.create({})
        record = {"train_loss": 0.123456, "val_loss": 0.234567, "val_mae": 0.345678, "lr": 0.001,
                  "duration_s": 1.25, "time/data_wait_s": 0.01, "time/step_s": 1.2,
                  "throughput/samples_per_s": 2048.0}
        write_json_atomic(run_dir.metrics_json, {"epochs": [
            {"epoch": i, **record, "time": utc_now_iso()} for i in range(1, history + 1)]})
        writer = RecordWriter(run_dir, heartbeat_s=None)
        writer.start()
        start = time.perf_counter()
        for _ in range(epochs):
            _busy(epoch_s)
        alone = time.perf_counter() - start
        start = time.perf_counter()
        for epoch in range(history + 1, history + epochs + 1):
            _busy(epoch_s)
            writer.epoch({"epoch": epoch, **record, "time": utc_now_iso()})
        writer.flush()
        with_writer = time.perf_counter() - start
        flushed = time.perf_counter()
        for epoch in range(history + epochs + 1, history + epochs + 11):
            writer.epoch({"epoch": epoch, **record, "time": utc_now_iso()})
            writer.flush()
        own = (time.perf_counter() - flushed) / 10
        writer.close()
        return max(0.0, with_writer - alone) / epochs * 1e3, own * 1e3
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the parent ---------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs every variant once [5]")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of steps, steps2, epochs, anchor")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay the proxy adds per request [20]")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        report(child(args.child, args.workload, args.uri or None, Path(args.workdir)))
        return

    from mlflow.tracking import MlflowClient

    variants = [v for v in args.variants.split(",") if v]
    if "none" not in variants:
        variants.insert(0, "none")
    workloads = [w for w in args.workloads.split(",") if w]
    scratch = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    server, url = start_server(scratch)
    proxy, proxy_url = start_proxy(url, args.delay_ms)
    uris = {"full": url, "full_proxy": proxy_url, "full_media": url, "mlflow": url, "mlflow_async": url}
    client = MlflowClient(url)
    rows: list[dict] = []
    loads = [load_average()]
    try:
        print(f"mlflow server {url}, proxy {proxy_url} (+{args.delay_ms:g} ms), load {loads[0]}", file=sys.stderr)
        cases = [(v, w) for v in variants for w in workloads]
        for round_index in range(args.rounds):
            random.Random(round_index).shuffle(cases)
            for variant, workload in cases:
                result = run_child(__file__, [variant, "--workload", workload, "--uri", uris.get(variant, "")], scratch)
                row = {"round": round_index, "variant": variant, "workload": workload, "fit_s": result["fit_s"],
                       "loop_s": result["loop_s"], "loop_cpu_s": result["loop_cpu_s"],
                       "background_cpu_s": result["background_cpu_s"]}
                if result["mlflow_run_id"]:
                    row["points"], row["dup"] = count_points(client, result["mlflow_run_id"])
                    row["expected"] = result["expected_points"]
                rows.append(row)
                print(f"round {round_index + 1}: {variant:<13} {workload:<7} {result['fit_s']:.3f} s",
                      file=sys.stderr, flush=True)
            loads.append(load_average())
    finally:
        stop(proxy, server)
        shutil.rmtree(scratch, ignore_errors=True)
    long_runs = {n: writer_cost(n) for n in (10, 5000)}
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "writer": long_runs, "load": loads}, indent=1))
    print(table(rows, variants, workloads, args.rounds, args.delay_ms, long_runs, loads))


def solve_costs(deltas: dict[str, float]) -> tuple[float, float, float]:
    """(s per step, e per epoch, F once) from the loop-time differences of the micro workloads."""
    (n1, m1), (n3, m3) = WORKLOADS["steps"], WORKLOADS["epochs"]
    if "steps2" in deltas:
        n2, m2 = WORKLOADS["steps2"]
        assert m2 == m1
        s = (deltas["steps2"] - deltas["steps"]) / (n2 - n1)
        e = ((deltas["epochs"] - n3 * s) - (deltas["steps"] - n1 * s)) / (m3 - m1)
        return s, e, deltas["steps"] - n1 * s - m1 * e
    e = (deltas["epochs"] - deltas["steps"] * n3 / n1) / (m3 - m1 * n3 / n1)
    return (deltas["steps"] - m1 * e) / n1, e, 0.0


def table(rows, variants, workloads, rounds, delay_ms, long_runs, loads) -> str:
    fit: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    loop: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    loop_cpu: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    checks: dict[str, list[dict]] = defaultdict(list)
    background: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        background[row["variant"]].append(row.get("background_cpu_s", 0.0))
        fit[(row["variant"], row["workload"])][row["round"]] = row["fit_s"]
        loop[(row["variant"], row["workload"])][row["round"]] = row["loop_s"]
        loop_cpu[(row["variant"], row["workload"])][row["round"]] = row["loop_cpu_s"]
        if "points" in row:
            checks[row["variant"]].append(row)
    lines = [
        f"{rounds} rounds; medians (min–max); ratio = fit time / `none` fit time of the same round; "
        f"proxy +{delay_ms:g} ms per request; load average during the run: {', '.join(loads)}",
        "",
        "| variant | " + " | ".join(f"{w}: fit s | {w}: ratio" for w in workloads)
        + " | µs / step | ms / epoch | once in the loop, ms | outside the loop, ms | other threads' CPU in the loop, ms "
        "| MLflow points: exactly once |",
        "|---|" + "---:|---:|" * len(workloads) + "---:|---:|---:|---:|---:|---|",
    ]
    for variant in variants:
        cells = []
        deltas: dict[str, float] = {}
        outside: list[float] = []
        for workload in workloads:
            mine, base = fit[(variant, workload)], fit[("none", workload)]
            ratios = [mine[r] / base[r] for r in mine if r in base]
            cells += [f"{statistics.median(mine.values()):.3f}", median_range(ratios)]
            in_loop, base_loop = loop[(variant, workload)], loop[("none", workload)]
            cpu, base_cpu = loop_cpu[(variant, workload)], loop_cpu[("none", workload)]
            deltas[workload] = statistics.median(cpu[r] - base_cpu[r] for r in cpu if r in base_cpu)
            outside += [(mine[r] - in_loop[r]) - (base[r] - base_loop[r]) for r in mine if r in base]
        per_step = per_epoch = once_in_loop = end = "–"
        if variant != "none" and "steps" in deltas and "epochs" in deltas:
            # the loop's own cost: setup before on_train_start and the end-of-fit flush are outside it
            s, e, fixed = solve_costs(deltas)
            per_step, per_epoch = f"{s * 1e6:.1f}", f"{e * 1e3:.2f}"
            once_in_loop = f"{fixed * 1e3:.0f}" if "steps2" in deltas else "–"
        if variant != "none" and outside:
            end = f"{statistics.median(outside) * 1e3:.0f}"
        once = "–"
        if checks.get(variant):
            ok = all(r["dup"] == 0 and r["points"] == r["expected"] for r in checks[variant])
            once = ("yes" if ok else "NO") + " (" + ", ".join(
                sorted({f"{r['points']}/{r['expected']}" for r in checks[variant]})) + ")"
        others = f"{statistics.median(background[variant]) * 1e3:.0f}" if background[variant] else "–"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {per_step} | {per_epoch} | {once_in_loop} | {end} | {others} | {once} |")
    lines += ["", "Long runs: one epoch record written while metrics.json already holds N epochs "
              "(a GIL-bound loop of 20 ms per epoch stands in for the training thread):", "",
              "| N | training-thread ms / epoch | writer ms / epoch (fsync included) |", "|---:|---:|---:|"]
    for n, (cost, own) in long_runs.items():
        lines.append(f"| {n} | {cost:.2f} | {own:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
