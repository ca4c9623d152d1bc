"""Benchmark: what MLflow tracking costs a tiny Lightning training (issue 3), trackbridge vs the usual tools.

    python bench/bench_mirror.py --rounds 5

One tiny model (the classification reference model, 5 epochs x 50 steps, CPU),
each variant in a fresh process, variants alternating within each round:

  baseline            Lightning, no logger, the same two ModelCheckpoints (best, last), nothing else
  trackbridge         the whole trackbridge stack (build_callbacks), MLflow mirror on
  trackbridge_local   the same stack with the mirror off (mlflow=False): the local record's share
  mlflowlogger        lightning's MLFlowLogger (synchronous)
  mlflowlogger_async  MLFlowLogger(synchronous=False)
  autolog             mlflow.pytorch.autolog(log_models=False): its per-epoch checkpoint logging on,
                      the final model logging off (that infers pip requirements, ~10 s, no other variant does it)

each against a real ``mlflow server`` on 127.0.0.1, directly and through
bench/delay_proxy.py (+20 ms per request, a remote server), at two logging
intervals: every step (log_every_n_steps=1) and Lightning's default (50).
At one interval every variant is asked to send the same step points.

Reported per variant: median ``Trainer.fit`` time, the median and min-max of
its ratio to the baseline of the same round, the median ratio of the time
from fit's start to the process's very end ("to exit": work deferred to
interpreter exit, such as MLflow's asynchronous queue, counts there), and the
metric points that reached the server (for trackbridge, also the points of
the local record it must equal; ``dup`` counts (key, step) pairs MLflow
holds more than once). mlflow is imported before the clock starts in every
variant, baseline included; torch uses one thread in every variant.
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
from harness import count_points, report, run_child, start_proxy, start_server, stop  # noqa: E402

VARIANTS = ("trackbridge", "mlflowlogger", "mlflowlogger_async", "autolog")
LOCAL = "trackbridge_local"  # no server involved: once per round and interval
EPOCHS = 5
STEPS_PER_EPOCH = 50


# -- one training, in a fresh process ------------------------------------------


def child(variant: str, interval: int, uri: str | None, workdir: Path) -> dict:
    import atexit
    import logging
    import warnings

    # Registered first, so it runs last: when the process is done, deferred work included
    # (MLflow's asynchronous logging queue is drained at exit).
    clock: dict[str, float] = {}
    atexit.register(lambda: (workdir / "exit.json").write_text(
        json.dumps({"exit_s": time.perf_counter() - clock["start"]})) if "start" in clock else None)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import lightning.pytorch as pl
    import mlflow  # noqa: F401  (imported before the clock in every variant)
    import torch

    torch.set_num_threads(1)  # the machine is shared: idle intra-op threads spinning only add noise

    from trackbridge.callbacks.checkpoints import best_checkpoint, last_checkpoint
    from trackbridge.reference import build_reference

    pl.seed_everything(0, verbose=False)
    module, data = build_reference("classification", seed=0, steps_per_epoch=STEPS_PER_EPOCH)
    ckpts = workdir / "checkpoints"
    callbacks: list = [best_checkpoint(ckpts, "val_accuracy", "max"), last_checkpoint(ckpts)]
    logger: object = False
    stack = None
    if variant in ("trackbridge", LOCAL):
        from trackbridge import TrackingConfig, build_callbacks

        stack = build_callbacks(TrackingConfig(
            task="classification", runs_root=workdir / "runs", tracking_uri=uri, experiment="bench",
            mlflow=variant == "trackbridge",
        ))
        callbacks = list(stack)
    elif variant in ("mlflowlogger", "mlflowlogger_async"):
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name="bench", tracking_uri=uri,
                              synchronous=variant == "mlflowlogger")
    elif variant == "autolog":
        import mlflow.pytorch

        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("bench")
        mlflow.pytorch.autolog(log_every_n_step=interval, log_models=False, silent=True)
    trainer = pl.Trainer(
        max_epochs=EPOCHS, callbacks=callbacks, logger=logger, log_every_n_steps=interval,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        default_root_dir=workdir,
    )
    start = clock["start"] = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit_s = time.perf_counter() - start

    result: dict = {"fit_s": fit_s, "mlflow_run_id": None, "expected_points": None}
    if variant == "trackbridge":
        from trackbridge.mirror.backlog import record_points

        run = stack.run_dir.read_run()
        result["mlflow_run_id"] = run["mlflow"]["run_id"]
        result["expected_points"] = len(record_points(stack.run_dir))
        result["pending"] = run["mlflow"]["artifacts_pending"]
    elif variant.startswith("mlflowlogger"):
        result["mlflow_run_id"] = logger.run_id
    elif variant == "autolog":
        result["mlflow_run_id"] = mlflow.last_active_run().info.run_id
    return result


# -- the parent: servers, rounds, table ------------------------------------------
def run_variant(variant: str, interval: int, uri: str | None, scratch: Path) -> dict:
    return run_child(__file__, [variant, "--interval", str(interval), "--uri", uri or ""], scratch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs every variant once [5]")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--intervals", default="1,50", help="log_every_n_steps values [1,50]")
    parser.add_argument("--networks", default="direct,proxy", help="direct and/or proxy [direct,proxy]")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay the proxy adds per request [20]")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to PATH")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        report(child(args.child, args.interval, args.uri or None, Path(args.workdir)))
        return

    from mlflow.tracking import MlflowClient

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    intervals = [int(i) for i in args.intervals.split(",")]
    networks = [n for n in args.networks.split(",") if n]
    scratch = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    server, url = start_server(scratch)
    proxy, proxy_url = start_proxy(url, args.delay_ms)
    uris = {"direct": url, "proxy": proxy_url}
    client = MlflowClient(url)
    rows: list[dict] = []
    try:
        print(f"mlflow server {url}, proxy {proxy_url} (+{args.delay_ms:g} ms per request), scratch {scratch}",
              file=sys.stderr)
        cases = [(v, n, i) for v in variants for n in networks for i in intervals]
        for round_index in range(args.rounds):
            base = run_variant("baseline", 1, None, scratch)
            baseline, baseline_exit = base["fit_s"], base["exit_s"]
            rows.append({"round": round_index, "variant": "baseline", "network": "-", "interval": 0,
                         "fit_s": baseline, "ratio": 1.0, "exit_s": baseline_exit, "exit_ratio": 1.0})
            for interval in intervals:
                local = run_variant(LOCAL, interval, None, scratch)
                rows.append({"round": round_index, "variant": LOCAL, "network": "-", "interval": interval,
                             "fit_s": local["fit_s"], "ratio": local["fit_s"] / baseline,
                             "exit_s": local["exit_s"], "exit_ratio": local["exit_s"] / baseline_exit,
                             "points": 0, "dup": 0, "expected": None})
            random.Random(round_index).shuffle(cases)  # alternate the order from round to round
            for variant, network, interval in cases:
                result = run_variant(variant, interval, uris[network], scratch)
                points, dup = count_points(client, result["mlflow_run_id"])
                rows.append({"round": round_index, "variant": variant, "network": network, "interval": interval,
                             "fit_s": result["fit_s"], "ratio": result["fit_s"] / baseline,
                             "exit_s": result["exit_s"], "exit_ratio": result["exit_s"] / baseline_exit, "points": points,
                             "dup": dup, "expected": result["expected_points"]})
                print(f"round {round_index + 1}: {variant:<18} {network:<6} every {interval:>2}: "
                      f"{result['fit_s']:.2f} s ({result['fit_s'] / baseline:.2f}x), {points} points",
                      file=sys.stderr, flush=True)
    finally:
        stop(proxy, server)
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows, args.rounds, args.delay_ms))


def table(rows: list[dict], rounds: int, delay_ms: float) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["variant"], row["network"], row["interval"])].append(row)
    lines = [
        f"{rounds} rounds; ratio = fit time / baseline fit time of the same round; "
        f"proxy = +{delay_ms:g} ms per request",
        "",
        "| variant | network | log every | median fit (s) | ratio median | ratio min–max | to exit: ratio median "
        "| points (min–max) | dup | expected |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {name: i for i, name in enumerate(("baseline", LOCAL, *VARIANTS))}
    for key in sorted(groups, key=lambda k: (k[2], k[1], order[k[0]])):
        group = groups[key]
        variant, network, interval = key
        ratios = [r["ratio"] for r in group]
        fit = statistics.median(r["fit_s"] for r in group)
        if variant == "baseline":
            lines.append(f"| baseline | – | – | {fit:.2f} | 1.00 | – | 1.00 | – | – | – |")
            continue
        if variant == LOCAL:
            lines.append(f"| {variant} | – | {interval} | {fit:.2f} | {statistics.median(ratios):.2f} | "
                         f"{min(ratios):.2f}–{max(ratios):.2f} | "
                         f"{statistics.median(r['exit_ratio'] for r in group):.2f} | – | – | – |")
            continue
        points = [r["points"] for r in group]
        expected = {r["expected"] for r in group if r["expected"] is not None}
        lines.append(
            f"| {variant} | {network} | {interval} | {fit:.2f} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f}–{max(ratios):.2f} | {statistics.median(r['exit_ratio'] for r in group):.2f} | "
            f"{min(points)}–{max(points)} | {max(r['dup'] for r in group)} | "
            f"{'–' if not expected else '/'.join(str(e) for e in sorted(expected))} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
