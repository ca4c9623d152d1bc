"""Benchmark: what the task figures cost the training thread, per epoch (issue 12).

    python bench/bench_media.py --rounds 5
    python bench/bench_media.py --rounds 3 --tasks classification,regression --steps-per-epoch 200

Every reference task trains ``--epochs`` epochs on the CPU in a fresh process, twice per
round, the order of the two alternating from round to round:

  none    Lightning, no logger, no checkpoints, a timer callback: the module still
          returns its validation outputs (that costs nothing by itself)
  media   the same plus MediaRecorder (figures every epoch, defaults: 8 samples, 1024 px)

Per epoch the timer measures train-epoch start to train-epoch end (validation and the
recorder's hooks included, and whatever the media thread, drawing the previous epoch's
figures, takes from the training thread through the GIL). Epoch 1 is left out (warm-up).

Reported per task (medians over rounds): the median epoch of each variant; the ratio
media/none (of each round's pair, and its min-max); the milliseconds added per epoch; per
epoch, the wall time the training thread spends inside the recorder's hooks (waits for the
GIL included), the media thread's busy time (drawing, encoding, writing the epoch's
figures), and the process CPU time the media add (less sensitive than wall time to a busy
machine). torch uses one thread in every variant; matplotlib and Pillow are imported
before the clock starts in both variants.

How to read it: the hooks cost the training thread about a millisecond per epoch; the
drawing runs on the media thread, but matplotlib holds the GIL while it draws, so on the
tiny reference epochs (0.05-1 s) most of the media thread's time shows up as added epoch
time. The added time per epoch is roughly fixed, so the ratio falls with longer epochs
(``--steps-per-epoch``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import load_average, report, run_child  # noqa: E402

from trackbridge.reference import REFERENCE_TASKS as TASKS  # noqa: E402

VARIANTS = ("none", "media")


def child(task: str, variant: str, epochs: int, steps_per_epoch: int | None, workdir: Path) -> dict:
    """One training in this (fresh) process; returns its per-epoch timings."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import lightning.pytorch as pl
    import matplotlib.backends.backend_agg  # noqa: F401  (imported before the clock in both variants)
    import PIL.Image  # noqa: F401
    import torch

    from trackbridge.callbacks.media_recorder import MediaRecorder
    from trackbridge.reference import build_reference

    torch.set_num_threads(1)

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    pl.seed_everything(0, verbose=False)
    module, data = build_reference(task, seed=0, steps_per_epoch=steps_per_epoch)
    timer = EpochTimer()
    callbacks: list[pl.Callback] = [timer]
    recorder = None
    if variant == "media":
        recorder = MediaRecorder(workdir / "run", task)
        callbacks.append(recorder)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        default_root_dir=workdir,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(module, data)
    fit_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    figures = len(recorder.media.record.entries()) if recorder else 0
    return {
        "task": task,
        "variant": variant,
        "epoch_s": timer.seconds,
        "fit_s": fit_s,
        "cpu_s": cpu_s,
        "hook_s": recorder.training_thread_s if recorder else 0.0,
        "draw_s": recorder.media.writer.busy_s if recorder else 0.0,
        "figures": figures,
    }


def measure(task: str, variant: str, args: argparse.Namespace, scratch: Path) -> dict:
    child_args = [task, variant, "--epochs", str(args.epochs)]
    if args.steps_per_epoch:
        child_args += ["--steps-per-epoch", str(args.steps_per_epoch)]
    return run_child(__file__, child_args, scratch, timeout=args.timeout)


def summarize(results: list[dict], epochs: int) -> str:
    rows = [
        f"{'task':<27} {'none s/ep':>9} {'media s/ep':>10} {'ratio':>6} {'min-max':>13} "
        f"{'+ms/ep':>7} {'hook ms/ep':>10} {'draw ms/ep':>10} {'+cpu ms/ep':>10}"
    ]
    for task in dict.fromkeys(r["task"] for r in results):
        by_round: dict[int, dict[str, dict]] = {}
        for r in results:
            if r["task"] == task:
                by_round.setdefault(r["round"], {})[r["variant"]] = r
        medians = {v: [statistics.median(rr[v]["epoch_s"][1:]) for rr in by_round.values()] for v in VARIANTS}
        ratios = [m / n for m, n in zip(medians["media"], medians["none"])]
        media_runs = [rr["media"] for rr in by_round.values()]
        hook = statistics.median(r["hook_s"] / epochs for r in media_runs)
        # one epoch's figures: the media thread's busy time, split evenly over the epochs
        draw = statistics.median(r["draw_s"] / epochs for r in media_runs)
        none_s, media_s = statistics.median(medians["none"]), statistics.median(medians["media"])
        extra_cpu = statistics.median((rr["media"]["cpu_s"] - rr["none"]["cpu_s"]) / epochs for rr in by_round.values())
        rows.append(
            f"{task:<27} {none_s:>9.3f} {media_s:>10.3f} {statistics.median(ratios):>6.3f} "
            f"{min(ratios):>6.3f}-{max(ratios):<6.3f} {(media_s - none_s) * 1000:>7.1f} "
            f"{hook * 1000:>10.2f} {draw * 1000:>10.1f} {extra_cpu * 1000:>10.1f}"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="training batches per epoch [task default]")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report(child(*args.child, args.epochs, args.steps_per_epoch, Path(args.workdir)))
        return
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    results = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-media-") as scratch:
        for round_no in range(args.rounds):
            order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]
            for task in tasks:
                for variant in order:
                    result = measure(task, variant, args, Path(scratch))
                    result["round"] = round_no
                    results.append(result)
                    print(f"round {round_no + 1}/{args.rounds} {task:<27} {variant:<5} "
                          f"median epoch {statistics.median(result['epoch_s'][1:]):.3f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print(f"{args.rounds} rounds, {args.epochs} epochs each (epoch 1 left out), "
          f"steps per epoch: {args.steps_per_epoch or 'task default'}; "
          f"load average before {load_before}, after {load_average()}")
    print(summarize(results, args.epochs))


if __name__ == "__main__":
    main()
